"""The parity tool against the official fixture, and proof that it can fail."""

import subprocess
import sys

import torch

from referdino_demo import parity


def test_parity_tool_passes_on_the_official_fixture(parity_dir):
    done = subprocess.run([sys.executable, "-m", "referdino_demo.parity", str(parity_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(tuple(str(n) for n in range(10))) and "FAILED" not in last
    assert "post.masks" in done.stdout and "decoder.layer5.kept_token_ids" in done.stdout
    for run in parity.PREDICTOR_RUNS:  # the path users run, with kept and with recomputed mask features
        assert f"ok   segment.{run}.query_index" in done.stdout and f"ok   segment.{run}.masks" in done.stdout


def test_parity_tool_detects_a_wrong_weight(parity_dir, monkeypatch):
    build = parity.build_model

    def perturbed(fixture):
        model, meta = build(fixture)
        with torch.no_grad():
            model.mask_decoder.layers[-1].fc2.weight.mul_(1.5)  # a uniform bias shift would vanish in the LayerNorm
        return model, meta

    monkeypatch.setattr(parity, "build_model", perturbed)
    failed = {c.name for c in parity.run(parity_dir) if not c.ok}
    assert "mask.embed" in failed and "out.pred_masks" in failed
    assert {f"segment.{run}.mask_logits_upsampled" for run in parity.PREDICTOR_RUNS} <= failed
    assert "encoder.memory" not in failed  # earlier stages still agree: each check isolates its stage
