#!/usr/bin/env bash
# GPU check, a few minutes on one GPU: `bash benchmarks/gpu_check.sh` from anywhere in the repository.
#
# 1. The environment: torch, CUDA, the GPU (installs the package with `pip install -e .` only if it cannot be
#    imported; nothing else).
# 2. The parity tool (on CUDA if it has a --device option, else on the CPU: it checks the code paths the CPU takes),
#    with the fixture in ${PARITY_DIR:-../shared/parity}; skipped with a note if that folder is absent.
# 3. `benchmarks.stages` for Swin-B (random weights, 8 frames at 360x640) on cuda in float32, float16 and bfloat16:
#    the per-stage GFLOP/s table against the GPU's matmul throughput in that dtype, and frames/s.
# Each step has its own time limit, so a hang costs minutes, not the session.
set -uo pipefail
cd "$(dirname "$0")/.."
PARITY_DIR="${PARITY_DIR:-../shared/parity}"
status=0

echo "## environment"
if ! python -c "import referdino_demo" 2>/dev/null; then
    pip install -e . --quiet || { echo "pip install -e . failed"; exit 1; }
fi
python - <<'EOF' || exit 1
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device: nothing to check here")
props = torch.cuda.get_device_properties(0)
print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 supported: {torch.cuda.is_bf16_supported()}")
EOF

echo; echo "## parity"
if [ -d "$PARITY_DIR" ]; then
    if python -m referdino_demo.parity --help | grep -q -- "--device"; then
        timeout 300 python -m referdino_demo.parity "$PARITY_DIR" --device cuda | tail -n 5 || status=1
    else
        echo "(the parity tool has no --device option: it runs on the CPU)"
        timeout 300 python -m referdino_demo.parity "$PARITY_DIR" | tail -n 5 || status=1
    fi
else
    echo "skipped: no parity fixture at $PARITY_DIR (set PARITY_DIR)"
fi

for dtype in float32 float16 bfloat16; do
    echo; echo "## swin_b on cuda, $dtype"
    out=$(timeout 240 python -m benchmarks.stages --config swin_b --frames 8 --device cuda --dtype "$dtype" \
          --repeats 3) || { echo "failed or timed out"; status=1; continue; }
    echo "$out" | sed '$d'  # the table
    echo "$out" | tail -n 1 | python -c "
import json, sys
run = json.loads(sys.stdin.read())
print(f\"model frames/s: {run['model_fps']:.2f} ({run['frames']} frames, {run['model_seconds']:.3f} s), \"
      f\"peak RSS {run['peak_rss_mb']:.0f} MiB\")"
done
exit $status
