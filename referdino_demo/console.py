"""How the commands (`referdino`, `referdino evaluate`) talk to a terminal: every error is one line on stderr.

Usage errors exit 2 (argparse's convention), errors a user can fix exit 1, an interrupt exits 130.
"""

from __future__ import annotations

import argparse
import sys

from .errors import ReferDinoError, one_line


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (`prog: error: ...`, exit 2) like every other error, with where to find help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def run_reporting_errors(prog: str, handler, args) -> int:
    """Run a command handler; errors a user can fix become one line on stderr and exit status 1."""
    try:
        return handler(args)
    except ReferDinoError as err:
        _error_line(f"{prog}: error: {one_line(err)}")
        return 1
    except Exception as err:  # out of memory while writing exports (segmenting reports its own MemoryBudgetError)
        from .predictor import is_out_of_memory

        if not is_out_of_memory(err):
            raise
        _error_line(f"{prog}: error: out of memory ({type(err).__name__}); lower --max-frames or --short-side, raise "
                    "--stride, or pass fewer expressions (files already written are complete)")
        return 1
    except KeyboardInterrupt:
        _error_line(f"{prog}: interrupted (rerun the same command; finished work is kept)")
        return 130


def _error_line(text: str) -> None:
    """One write per line: processes sharing a terminal (torchrun's ranks) cannot interleave inside it."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
