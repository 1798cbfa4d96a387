"""Parity with the official implementation: `python -m referdino_demo.parity FIXTURE_DIR`.

A fixture (format: `../shared/parity/README.md`) holds the official code's tensors for a random-weight
model, its checkpoint in the release format, the raw frames and the expression. This tool builds our model
from the fixture's `config.json`, loads the checkpoint through the converter, runs it on the fixture's inputs
and compares every recorded tensor as the fixture prescribes: continuous tensors within a tolerance (rows
aligned by encoder token id where order carries no meaning), selected sets identical, the chosen query
identical, final masks identical wherever |logit| > 1e-4. Then the path users run, `ReferDinoPredictor.segment` on
the fixture's uint8 frames (chunked with kept mask features, and with the features recomputed), must give the
official chosen query, scores, boxes and masks. One line per comparison; exit status 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .checkpoints.convert import convert_official_state_dict
from .model import ReferDinoConfig, ReferDinoModel
from .postprocess import above_threshold, frame_scores, mean_scores, select_query, upsample_logits
from .predictor import ReferDinoPredictor
from .preprocess.frames import preprocess_frames
from .preprocess.text import TextInputs, caption_for, load_tokenizer, tokenize

MASK_LOGIT_MARGIN = 1e-4  # binary masks may legitimately differ where the logit is this close to 0
FLOAT16_ROUNDING = 2.0**-11  # relative error of the predictor's float16 storage of stride-4 mask logits
# The predictor runs: chunks that split the clip, with mask features kept (one pass) or recomputed (two).
PREDICTOR_RUNS = {"chunked": dict(chunk_size=2, feature_budget_mb=1024),
                  "recomputed": dict(chunk_size=3, feature_budget_mb=0)}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name:42s} {self.detail}"


def _close(name: str, ours: torch.Tensor, ref: torch.Tensor, tol: float, slack: torch.Tensor | None = None) -> Check:
    """|ours - ref| <= tol, or <= tol + slack elementwise where a known rounding (slack, ref's shape) is allowed."""
    if ours.shape != ref.shape:
        return Check(name, False, f"shape {tuple(ours.shape)} vs expected {tuple(ref.shape)}")
    diff = (ours.double() - ref.double()).abs()
    if slack is not None:
        diff = diff - slack.double()
    finite = torch.isfinite(ref)
    same_inf = torch.equal(ours[~finite], ref[~finite]) if (~finite).any() else True
    worst = diff[finite].max().item() if finite.any() else 0.0
    what = "max |diff|" if slack is None else "max |diff| - float16 rounding"
    return Check(name, worst <= tol and same_inf, f"{what} {worst:.3e} (tol {tol:g})")


def _same(name: str, ours: torch.Tensor, ref: torch.Tensor, what: str = "identical") -> Check:
    ok = ours.shape == ref.shape and torch.equal(ours, ref)
    return Check(name, ok, what if ok else f"differs: {ours.flatten()[:8].tolist()} vs {ref.flatten()[:8].tolist()}")


def _same_sets(name: str, ours: torch.Tensor, ref: torch.Tensor) -> Check:
    """Per-frame sets (T, N) of encoder token ids."""
    ok = ours.shape == ref.shape and all(set(a.tolist()) == set(b.tolist()) for a, b in zip(ours, ref))
    return Check(name, ok, "same set per frame" if ok else "the selected sets differ")


def _align(x: torch.Tensor, ours_ids: torch.Tensor, ref_ids: torch.Tensor) -> torch.Tensor:
    """Reorder rows of x (T, N, ...) from our id order to the reference id order (ids unique per frame)."""
    rows = []
    for t in range(x.shape[0]):
        position = {int(i): n for n, i in enumerate(ours_ids[t])}
        rows.append(x[t][[position[int(i)] for i in ref_ids[t]]])
    return torch.stack(rows)


def build_model(fixture: Path) -> tuple[ReferDinoModel, dict]:
    """Our model from the fixture's official hyper-parameters, loaded through the checkpoint converter."""
    meta = json.loads((fixture / "config.json").read_text())
    model_meta = meta["model"]
    config = ReferDinoConfig.from_official(model_meta["GroundingDINO_args"], model_meta.get("swin"),
                                           model_meta.get("bert"))
    config.lora_alpha = float(model_meta.get("lora", {}).get("alpha", config.lora_alpha))
    model = ReferDinoModel(config).eval()
    checkpoint = fixture / meta.get("checkpoint", {}).get("file", "referdino_tiny_official.pth")
    official = torch.load(checkpoint, map_location="cpu", weights_only=True)["model_state_dict"]
    state, _ = convert_official_state_dict(official, model.state_dict(), config.lora_alpha)
    model.load_state_dict(state, strict=True)
    return model, meta


def _fixture_text(inputs: dict[str, torch.Tensor], caption: str) -> TextInputs:
    return TextInputs(caption, inputs["input_ids"], inputs["attention_mask"].bool(), inputs["token_type_ids"],
                      inputs["position_ids"], inputs["text_self_attention_masks"])


def run(fixture: Path, tol: float = 1e-4, device: str = "cpu") -> list[Check]:
    """Every check, with the model on `device` in float32 (on CUDA without TF32, which rounds matmul inputs to
    10 bits); the comparisons run on the CPU."""
    fixture = Path(fixture)
    model, meta = build_model(fixture)
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model.to(device)
    inputs = load_file(str(fixture / "inputs.safetensors"))
    expected = load_file(str(fixture / "expected.safetensors"))
    checks: list[Check] = []

    tokenizer = load_tokenizer(fixture / "vocab.txt")
    text = tokenize(caption_for(meta["text"]["expression"]), tokenizer, model.config.max_text_len)
    for ours, key in ((text.input_ids, "input_ids"), (text.position_ids, "position_ids"),
                      (text.token_type_ids, "token_type_ids"), (text.attention_mask, "attention_mask"),
                      (text.self_attention_mask, "text_self_attention_masks")):
        ref = inputs[key].bool() if key == "attention_mask" else inputs[key]
        checks.append(_same(f"tokenization.{key}", ours, ref))
    frames = np.load(fixture / "frames.npy")
    pixels = preprocess_frames(frames, meta["preprocessing"]["resize_short_side"])
    checks.append(_close("preprocessing.pixel_values", pixels, inputs["pixel_values"][0], 1e-3))

    # The model stages run on the fixture's own inputs, so each comparison isolates one stage.
    out = model(inputs["pixel_values"][0].to(device), _fixture_text(inputs, text.caption), trace=True)
    trace = {name: value.cpu() if torch.is_tensor(value) else value for name, value in dict(out.trace).items()}
    logits, boxes, masks = out.pred_logits.cpu(), out.pred_boxes.cpu(), out.pred_masks.cpu()
    trace.update(_postprocess(logits, boxes, masks, frames.shape[1:3]))
    trace["out.pred_logits"] = logits[None, ..., None]
    trace["out.pred_boxes"] = boxes[None]
    trace["out.pred_masks"] = masks[None]
    trace["two_stage.init_ref_boxes"] = trace["two_stage.init_ref_unsigmoid"].sigmoid()
    checks += compare(trace, expected, tol)
    checks += check_predictor(ReferDinoPredictor(model, tokenizer, device=device, dtype="float32"), frames, meta,
                              expected, _slot_alignment(trace, expected), tol)
    return checks


def check_predictor(predictor: ReferDinoPredictor, frames: np.ndarray, meta: dict, expected: dict[str, torch.Tensor],
                    slot_order: torch.Tensor | None, tol: float) -> list[Check]:
    """`segment` on the fixture's frames (T, H, W, 3) uint8, once per `PREDICTOR_RUNS`, against the official
    post-processing. Our slots are put in the official order as `forward`'s tracker token ids align them; the
    upsampled mask logits may differ by the float16 rounding of the stride-4 logits they interpolate."""
    official = int(expected["post.query_index"][0])
    ref_logits = expected["post.mask_logits_upsampled"]
    stride4 = expected["out.pred_masks"][0][:, official].abs()
    rounding = FLOAT16_ROUNDING * upsample_logits(stride4, tuple(frames.shape[1:3]))
    confident = ref_logits.abs() > MASK_LOGIT_MARGIN + rounding
    short_side = meta["preprocessing"]["resize_short_side"]
    checks = []
    for run, options in PREDICTOR_RUNS.items():
        name = f"segment.{run}"
        seg = predictor.segment(frames, meta["text"]["expression"], short_side=short_side, max_long_side=None,
                                memory_budget_mb=None, **options)
        result = seg[0]
        passes = seg.timings["mask_feature_passes"]
        checks.append(Check(f"{name}.mask_feature_passes", passes == (1 if options["feature_budget_mb"] else 2),
                            f"{passes} ({options})"))
        query = _reorder_slots("post.query_index", torch.tensor([result.query]), slot_order)
        checks.append(_same(f"{name}.query_index", query, expected["post.query_index"]))
        means = _reorder_slots("post.mean_scores", torch.from_numpy(result.mean_scores), slot_order)
        checks.append(_close(f"{name}.mean_scores", means, expected["post.mean_scores"], tol))
        checks.append(_close(f"{name}.frame_scores", torch.from_numpy(result.frame_scores),
                             expected["post.frame_scores"], tol))
        checks.append(_close(f"{name}.boxes", torch.from_numpy(result.boxes[:, result.query]),
                             expected["post.boxes"], tol))
        checks.append(_close(f"{name}.mask_logits_upsampled", torch.from_numpy(result.upsampled_logits()[0]),
                             ref_logits, tol, slack=rounding))
        masks = torch.from_numpy(result.masks())
        ok = masks.shape == ref_logits.shape and torch.equal(masks[confident], expected["post.masks"][confident])
        checks.append(Check(f"{name}.masks", ok, f"identical where |logit| > {MASK_LOGIT_MARGIN:g} + float16 rounding "
                                                 f"({int(confident.sum())} of {confident.numel()} pixels)"))
    return checks


def _postprocess(pred_logits, pred_boxes, pred_masks, size) -> dict[str, torch.Tensor]:
    scores = frame_scores(pred_logits)
    query = select_query(scores)
    logits = upsample_logits(pred_masks[:, query], tuple(size))
    probs = logits.sigmoid()
    return {"post.query_index": torch.tensor([query]), "post.mean_scores": mean_scores(scores),
            "post.frame_scores": scores[:, query], "post.boxes": pred_boxes[:, query],
            "post.mask_logits_upsampled": logits, "post.mask_probs": probs,
            "post.masks": torch.from_numpy(above_threshold(logits.cpu().numpy(), 0.5))}


def compare(ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], tol: float) -> list[Check]:
    """Compare every expected tensor with ours, applying the fixture's rules for order and sets."""
    checks = []
    topk = "two_stage.topk_indices"
    layers = sorted({int(m.group(1)) for k in expected if (m := re.match(r"decoder\.layer(\d+)\.", k))})
    # Identity of a query = the encoder token its proposal came from; ids entering each layer.
    input_ids = {0: (ours[topk], expected[topk])}
    for layer in layers:
        input_ids[layer + 1] = (ours[f"decoder.layer{layer}.kept_token_ids"],
                                expected[f"decoder.layer{layer}.kept_token_ids"])
    slot_order = _slot_alignment(ours, expected)
    for name in sorted(expected):
        ref = expected[name]
        if name not in ours:
            checks.append(Check(name, False, "not produced by our model"))
            continue
        value = ours[name]
        m = re.match(r"decoder\.layer(\d+)\.(\w+)$", name)
        if name == topk:
            checks.append(_same_sets(name, value, ref))
        elif name in ("two_stage.init_ref_unsigmoid", "two_stage.init_ref_boxes"):
            checks.append(_close(name, _align(value, *input_ids[0]), ref, tol))
        elif m and m.group(2) in ("kept_token_ids",):
            checks.append(_same_sets(name, value, ref))
        elif m and m.group(2) in ("keep_indices", "kept_query_ids"):
            checks.append(Check(name, True, "order-dependent ids; compared as kept_token_ids sets"))
        elif m and m.group(2) in ("hs", "reference"):
            checks.append(_close(name, _align(value, *input_ids[int(m.group(1)) + 1]), ref, tol))
        elif m and m.group(2) in ("ref_input", "gate"):
            checks.append(_close(name, _align(value, *input_ids[int(m.group(1))]), ref, tol))
        elif name == "decoder.final_ref_out":
            checks.append(_close(name, _align(value, *input_ids[layers[-1] + 1]), ref, tol))
        elif name == "tracker.perm":
            checks.append(Check(name, True, "order-dependent; compared as tracker.token_ids slots"))
        elif name == "post.masks":
            confident = expected["post.mask_logits_upsampled"].abs() > MASK_LOGIT_MARGIN
            ok = value.shape == ref.shape and torch.equal(value[confident], ref[confident])
            checks.append(Check(name, ok, f"identical where |logit| > {MASK_LOGIT_MARGIN:g} "
                                          f"({int(confident.sum())} of {confident.numel()} pixels)"))
        else:
            value = _reorder_slots(name, value, slot_order)
            if value.is_floating_point():
                checks.append(_close(name, value, ref, tol))
            else:
                checks.append(_same(name, value, ref))
    return checks


def _slot_alignment(ours, expected) -> torch.Tensor | None:
    """Our output slots in the reference's slot order (slots may swap on near-tied final gates)."""
    mine, ref = ours.get("tracker.token_ids"), expected.get("tracker.token_ids")
    if mine is None or ref is None or torch.equal(mine, ref):
        return None
    position = {int(i): n for n, i in enumerate(mine[0])}
    if set(position) != set(ref[0].tolist()):
        return None
    return torch.tensor([position[int(i)] for i in ref[0]])


def _reorder_slots(name: str, value: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    if order is None:
        return value
    if name.startswith(("tracker.", "temporal.hs", "mask.embed", "mask.query_pos")):
        return value[:, order]
    if name.startswith("out."):
        return value[:, :, order]
    if name == "post.mean_scores":
        return value[order]
    if name == "post.query_index":
        return torch.nonzero(order == value[0]).flatten()
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m referdino_demo.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("fixture", type=Path, help="folder with config.json, the .pth, inputs and expected tensors")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |diff| for continuous tensors")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="where the model runs, in float32: cpu (default) or cuda")
    args = parser.parse_args(argv)
    if not (args.fixture / "config.json").is_file():
        print(f"error: {args.fixture} is not a parity fixture (no config.json)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    checks = run(args.fixture, args.tolerance, args.device)
    for check in checks:
        print(check)
    failed = [c for c in checks if not c.ok]
    failures = f"; FAILED: {len(failed)}" if failed else ""
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed{failures}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
