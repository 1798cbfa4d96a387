"""`python -m referdino_demo.evaluation ...` and `torchrun --nproc-per-node N -m referdino_demo.evaluation ...`."""

import sys

from .cli import main

sys.exit(main())
