#!/usr/bin/env bash
# GPU check, at most 8 minutes on one GPU (its step limits add up to 480 s):
# `bash benchmarks/gpu_check.sh [REPORT]` from anywhere in the repository.
# Everything printed also goes to one report file: REPORT, default $OUT/gpu_report.txt where $OUT is set (the
# device machine's output folder), else gpu_report.txt.
#
# 1. The environment: torch, CUDA, the GPU (installs the package with `pip install -e .` only if it cannot be
#    imported; nothing else).
# 2. The parity tool on CUDA in float32 (TF32 off), with the fixture in ${PARITY_DIR:-../shared/parity}.
# 3. bf16 and fp16 results against fp32 on the parity fixture (`benchmarks.device_checks agreement`).
# 4. `benchmarks.run --device cuda --configs swin_b`: the stage table with GFLOP/s against the GPU's matmul, the
#    optimisation table (which includes transformers' grid_sample deformable sampler against ours, both on CUDA),
#    the dtype table, chunk sizes, the predictor end to end.
# 5. The torch.compile decision (`benchmarks.device_checks compile`): Swin-B's backbone eager vs compiled.
# Each step has its own time limit, so a hang costs minutes, not the session; a step that fails is reported and the
# others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
PARITY_DIR="${PARITY_DIR:-../shared/parity}"
REPORT="${1:-${OUT:+$OUT/}gpu_report.txt}"
status=0

step() {  # step TITLE SECONDS COMMAND...: run COMMAND with a time limit, note a failure
    local title=$1 limit=$2
    shift 2
    echo; echo "## $title"
    local started=$SECONDS
    timeout "$limit" "$@" || { echo "FAILED or timed out after $((SECONDS - started)) s (limit $limit s)"; status=1; }
    echo "($((SECONDS - started)) s)"
}

{
    echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo; echo "## environment"
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
    if [ -d "$PARITY_DIR" ]; then
        step "parity on cuda, float32" 100 python -u -m referdino_demo.parity "$PARITY_DIR" --device cuda
        step "reduced precision against float32" 80 python -u -m benchmarks.device_checks agreement --device cuda
    else
        echo; echo "parity and agreement skipped: no parity fixture at $PARITY_DIR (set PARITY_DIR)"; status=1
    fi
    step "benchmarks.run on cuda (Swin-B)" 220 python -u -m benchmarks.run --device cuda --configs swin_b
    step "torch.compile decision" 80 python -u -m benchmarks.device_checks compile --device cuda
    echo; echo "status: $([ $status -eq 0 ] && echo ok || echo 'some steps failed')"
    exit $status
} 2>&1 | tee "$REPORT"
exit "${PIPESTATUS[0]}"
