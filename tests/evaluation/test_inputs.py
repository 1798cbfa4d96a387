"""Tests of the evaluation's input checks: every user error is one ReferDinoError line naming the option, or
the file relative to the data root, raised before the checkpoint loads (or, for damage found only by decoding,
before the model runs), and a refused run leaves nothing behind. Corruptions are applied in loops, property
style: each must be refused the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from referdino_demo.cli import main as referdino_main
from referdino_demo.errors import ConfigError, ReferDinoError, VideoReadError
from referdino_demo.evaluation.cli import main
from referdino_demo.evaluation.datasets import DatasetError, FrameError, open_dataset
from referdino_demo.evaluation.runner import evaluate
from referdino_demo.evaluation.synthetic import make_synthetic
from referdino_demo.predictor import ReferDinoPredictor

from eval_fakes import PerfectPredictor  # beside this file (pytest puts the test folder on sys.path)

REPO = Path(__file__).resolve().parents[2]
KINDS = ["ytvos", "mevis", "davis"]  # not `benchmark`: pytest-benchmark owns that fixture name
SPLIT = {"ytvos": "valid", "davis": "valid", "mevis": "valid_u"}
META = {"ytvos": "meta_expressions/valid/meta_expressions.json",
        "davis": "meta_expressions/valid/meta_expressions.json",
        "mevis": "valid_u/meta_expressions.json"}


@pytest.fixture
def model_use(monkeypatch):
    """Counts the checkpoint loads and model runs of ReferDinoPredictor (the CLI's predictor)."""
    use = {"loads": 0, "runs": 0}
    load, segment = ReferDinoPredictor.from_pretrained, ReferDinoPredictor.segment

    def counted_load(*args, **kwargs):
        use["loads"] += 1
        return load(*args, **kwargs)

    def counted_segment(self, *args, **kwargs):
        use["runs"] += 1
        return segment(self, *args, **kwargs)

    monkeypatch.setattr(ReferDinoPredictor, "from_pretrained", counted_load)
    monkeypatch.setattr(ReferDinoPredictor, "segment", counted_segment)
    return use


def _synthetic(kind: str, root: Path, **options):
    return make_synthetic(kind, root / "data", videos=2, frames=3, **({"objects": 1} if kind == "davis" else {}),
                          **options)


def _argv(root: Path, out: Path, kind: str = "ytvos", *extra: str) -> list[str]:
    return ["--benchmark", kind, "--data-root", str(root), "--out", str(out), "--checkpoint", "tiny-random",
            "--short-side", "128", "--no-progress", *extra]


def _refused(capsys, argv: list[str], entry=main, status: int = 1) -> str:
    """Run the evaluation CLI in this process; assert exit ``status`` (1: an error a user can fix, 2: a usage
    error), exactly one error line and no traceback. Returns the message."""
    try:
        code = entry(argv)
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == status and len(errors) == 1 and "Traceback" not in err, err
    return errors[0].split("error: ", 1)[1]


def _never():
    raise AssertionError("the model was loaded although the input is refused")


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _edit(change: Callable[[object], object]) -> Callable[[object], object]:
    """A JSON corruption that changes the parsed data in place (the others return the file's new content)."""
    def apply(data):
        change(data)
        return data
    return apply


def _write_json(path: Path, content) -> None:
    """``content``: the file's text (str) or data to dump."""
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")


def _restore(path: Path, original: bytes) -> None:
    if path.is_dir():
        path.rmdir()
    path.write_bytes(original)


# --------------------------------------------------------------------------- frames

# Damage an image header shows: refused before the checkpoint loads. The others are found by decoding every
# frame to predict, after the checkpoint loads but before the model runs.
FOUND_BY_HEADER = {"zero bytes", "text renamed .jpg", "random bytes", "header overwritten", "another size",
                   "missing", "a folder"}


def _frame_corruptions(original: bytes) -> dict[str, Callable[[Path], None]]:
    n = len(original)
    cases = {f"truncated to {k} bytes": _write(original[:k]) for k in (1, 10, 200, n // 2, n - 150)}
    cases.update({
        "zero bytes": _write(b""),
        "text renamed .jpg": _write(b"this is not a picture\n"),
        "random bytes": _write(np.random.default_rng(0).bytes(n)),
        "header overwritten": _write(b"\0" * 64 + original[64:]),
        "another size": lambda path: Image.new("RGB", (64, 64)).save(path, format="JPEG"),
        "missing": lambda path: path.unlink(),
        "a folder": _replace_with_folder,
    })
    return cases


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_frames_are_refused_naming_the_file(tmp_path, capsys, model_use, kind):
    synthetic = _synthetic(kind, tmp_path)
    video = sorted(synthetic.first_frames)[1]
    frame = sorted((synthetic.root / SPLIT[kind] / "JPEGImages" / video).iterdir())[1]
    original, out = frame.read_bytes(), tmp_path / "out"
    for case, damage in _frame_corruptions(original).items():
        damage(frame)
        message = _refused(capsys, _argv(synthetic.root, out, kind))
        assert message.startswith(f"frame {SPLIT[kind]}/JPEGImages/{video}/{frame.name} of video {video} "), case
        assert "restore it from the benchmark download" in message and str(tmp_path) not in message, case
        assert model_use["runs"] == 0 and not out.exists(), case
        if case in FOUND_BY_HEADER:
            assert model_use["loads"] == 0, case
        model_use["loads"] = 0
        _restore(frame, original)
    dataset = open_dataset(kind, synthetic.root)  # intact again: nothing is refused
    dataset.check(dataset.video_ids)
    assert all(len(sample.load_frames()) == 3 for sample in dataset)


def test_frame_errors_are_dataset_and_video_read_errors(tmp_path):
    synthetic = _synthetic("mevis", tmp_path)
    sample = open_dataset("mevis", synthetic.root)[sorted(synthetic.first_frames)[0]]
    sample.frame_paths[2].write_bytes(sample.frame_paths[2].read_bytes()[:-150])
    with pytest.raises(FrameError) as info:
        sample.load_frames()
    assert isinstance(info.value, DatasetError) and isinstance(info.value, VideoReadError)
    assert sample.check_frames() == (72, 128)  # the header is intact: only decoding finds this damage


@pytest.mark.parametrize("emptied", ["all frames deleted", "folder deleted"])
def test_empty_frame_folder_is_named(tmp_path, emptied):
    synthetic = _synthetic("ytvos", tmp_path)
    video = sorted(synthetic.first_frames)[0]
    folder = synthetic.root / "valid/JPEGImages" / video
    for frame in folder.iterdir():
        frame.unlink()
    if emptied == "folder deleted":
        folder.rmdir()
    state = "empty" if folder.exists() else "missing"
    with pytest.raises(FrameError, match=f"the folder valid/JPEGImages/{video} is {state}"):
        evaluate(_never, synthetic.root, tmp_path / "out", benchmark="ytvos", progress=False)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- ground truth


def _annotation_corruptions(original: bytes, size: tuple[int, int]) -> dict[str, Callable[[Path], None]]:
    height, width = size

    def image(mode: str, shape: tuple[int, int]) -> Callable[[Path], None]:
        return lambda path: Image.new(mode, shape[::-1]).save(path, format="PNG")

    cases = {f"truncated to {k} bytes": _write(original[:k]) for k in (0, 10, 60, len(original) // 2)}
    cases.update({
        "text renamed .png": _write(b"label ids\n"),
        "an RGB image": image("RGB", size),
        "a grayscale image": image("L", size),
        "a palette image of another size": image("P", (height // 2, width)),
        "a folder": _replace_with_folder,
    })
    return cases


@pytest.mark.parametrize("kind", ["ytvos", "davis"])
def test_damaged_annotations_are_refused_before_the_model_loads(tmp_path, kind):
    synthetic = _synthetic(kind, tmp_path)
    video = sorted(synthetic.first_frames)[1]
    folder = "valid/Annotations" if kind == "ytvos" else "DAVIS/Annotations_unsupervised/480p"
    annotation = sorted((synthetic.root / folder / video).iterdir())[1]
    original, out = annotation.read_bytes(), tmp_path / "out"
    cases = _annotation_corruptions(original, (72, 128))
    if kind == "ytvos":  # DAVIS lists whatever PNGs the folder has
        cases["missing"] = lambda path: path.unlink()
    for case, damage in cases.items():
        damage(annotation)
        with pytest.raises(DatasetError) as info:
            evaluate(_never, synthetic.root, out, benchmark=kind, progress=False)
        message = str(info.value)
        assert message.startswith(f"annotation {folder}/{video}/{annotation.name} of video {video} "), case
        assert "restore it" in message and str(tmp_path) not in message and not out.exists(), case
        _restore(annotation, original)
    assert evaluate(PerfectPredictor(synthetic), synthetic.root, out, benchmark=kind,
                    progress=False).metrics["J&F"] == 1.0


def _mask_dict_corruptions(key: str) -> dict[str, Callable[[dict], object]]:
    """case -> function from the parsed mask_dict.json to the damaged file's content."""
    def rle(change: dict) -> Callable[[dict], object]:
        return _edit(lambda masks: masks[key][1].update(change))

    return {
        "not JSON": lambda masks: "{not json",
        "a list": lambda masks: [],
        "anno_id missing": _edit(lambda masks: masks.pop(key)),
        "not a list": _edit(lambda masks: masks.update({key: masks[key][0]})),
        "fewer masks than frames": _edit(lambda masks: masks.update({key: masks[key][:1]})),
        "an RLE of another size": rle({"size": [36, 128]}),
        "an RLE without counts": _edit(lambda masks: masks[key][1].pop("counts")),
        "a number instead of an RLE": _edit(lambda masks: masks[key].__setitem__(1, 7)),
        "garbled counts": rle({"counts": "garbage!!"}),
        "counts that do not add up": rle({"counts": [5, 3]}),
    }


def test_damaged_mask_dict_is_refused_before_the_model_loads(tmp_path):
    synthetic = _synthetic("mevis", tmp_path)
    path, out = synthetic.root / "valid_u/mask_dict.json", tmp_path / "out"
    video = sorted(synthetic.first_frames)[1]
    meta = json.loads((synthetic.root / META["mevis"]).read_text())
    key = str(meta["videos"][video]["expressions"]["1"]["anno_id"][0])
    original = path.read_text()
    for case, damage in _mask_dict_corruptions(key).items():
        _write_json(path, damage(json.loads(original)))
        with pytest.raises(DatasetError) as info:
            evaluate(_never, synthetic.root, out, benchmark="mevis", progress=False)
        message = str(info.value)
        assert "valid_u/mask_dict.json" in message and str(tmp_path) not in message and not out.exists(), case
        if case not in ("not JSON", "a list"):
            assert f"anno_id {key} ({video}/1)" in message, case
        assert "restore it" in message, case
    path.write_text(original)
    assert evaluate(PerfectPredictor(synthetic), synthetic.root, out, benchmark="mevis",
                    progress=False).metrics["J&F"] == 1.0


# --------------------------------------------------------------------------- meta files


def _meta_corruptions(video: str) -> dict[str, Callable[[dict], object]]:
    """case -> function from the parsed meta file to the damaged file's content (bytes: written as they are)."""
    def entry(change: Callable[[dict], object]) -> Callable[[dict], object]:
        return _edit(lambda meta: change(meta["videos"][video]))

    def expression(change: Callable[[dict], object]) -> Callable[[dict], object]:
        return _edit(lambda meta: change(meta["videos"][video]["expressions"]["0"]))

    return {
        "not JSON": lambda meta: '{"videos": ',
        "not UTF-8": lambda meta: b"\xff\xfe\x00garbage",
        "a list": lambda meta: [],
        "no videos": lambda meta: {"video": meta["videos"]},
        "a video that is not an object": _edit(lambda meta: meta["videos"].__setitem__(video, "frames")),
        "no frames list": entry(lambda v: v.pop("frames")),
        "an empty frames list": entry(lambda v: v.update(frames=[])),
        "a frame listed twice": entry(lambda v: v.update(frames=[v["frames"][0]] * 2)),
        "a frame outside its folder": entry(lambda v: v["frames"].__setitem__(1, "../../outside")),
        "a frame name that is not a name": entry(lambda v: v["frames"].__setitem__(1, {"name": 1})),
        "expressions as a list": entry(lambda v: v.update(expressions=[])),
        "an expression id with a slash": entry(lambda v: v["expressions"].update({"a/b": {"exp": "x"}})),
        "an expression without text": expression(lambda e: e.pop("exp")),
        "a text that is not a string": expression(lambda e: e.update(exp=3)),
        "an obj_id that is not a number": expression(lambda e: e.update(obj_id="abc")),
        "a video id with a slash": _edit(lambda meta: meta["videos"].__setitem__(f"{video}/..",
                                                                                  meta["videos"][video])),
    }


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_meta_files_are_refused_naming_the_file_and_video(tmp_path, kind):
    synthetic = _synthetic(kind, tmp_path)
    path, video = synthetic.root / META[kind], sorted(synthetic.first_frames)[1]
    original = path.read_text()
    for case, damage in _meta_corruptions(video).items():
        content = damage(json.loads(original))
        path.write_bytes(content) if isinstance(content, bytes) else _write_json(path, content)
        with pytest.raises(DatasetError) as info:
            open_dataset(kind, synthetic.root)
        message = str(info.value)
        assert message.startswith(META[kind]) and str(tmp_path) not in message and "restore it" in message, case
        if case not in ("not JSON", "not UTF-8", "a list", "no videos"):
            assert f"video '{video}" in message, case
    path.write_text(original)
    assert len(open_dataset(kind, synthetic.root)) == 2


# --------------------------------------------------------------------------- options and folders


def _bad_options(tmp_path: Path) -> list[tuple[str, list[str], int, str]]:
    """(benchmark, extra arguments, exit status, words of the message) of options refused before the dataset
    is read: numbers while parsing (usage errors, 2), the others by the checks of the predictor (1)."""
    binary, empty = tmp_path / "vocab.bin", tmp_path / "empty.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 8)
    empty.write_text("\n")
    numbers = [("--threshold", v) for v in ("-0.1", "1.5", "nan", "inf", "half")]
    numbers += [("--obj-threshold", v) for v in ("-1", "nan", "2")]
    numbers += [("--max-frames", v) for v in ("0", "-3", "2.5")]
    numbers += [("--short-side", v) for v in ("0", "-360", "8", "1e9")]
    numbers += [("--query-decay", v) for v in ("0", "-0.5", "1.5", "nan", "inf")]
    cases = [("mevis", [f"{option}={value}"], 2, f"argument {option}:") for option, value in numbers]
    return cases + [
        ("ytvos", ["--dtype", "float8"], 1, "unknown dtype 'float8'"),
        ("ytvos", ["--device", "gpu"], 1, "unknown device 'gpu'"),
        ("ytvos", ["--device", "cuda:99"], 1, "cuda:99"),
        ("ytvos", ["--device", "meta"], 1, "device meta is not supported"),
        ("ytvos", ["--split", "vaild"], 1, "unknown split 'vaild' for ytvos; choose one of valid, test, train"),
        ("ytvos", ["--vocab", str(tmp_path / "missing.txt")], 1, "vocabulary file missing.txt"),
        ("ytvos", ["--vocab", str(binary)], 1, "vocab"),
        ("ytvos", ["--vocab", str(empty)], 1, "vocab"),
        ("ytvos", ["--vocab", str(tmp_path)], 1, "vocab"),
        ("ytvos", ["--davis-root", str(tmp_path)], 1, "--davis-root applies to --benchmark davis only"),
        ("davis", ["--davis-root", str(tmp_path / "nowhere")], 1, "--davis-root"),
        ("nope", [], 2, "argument --benchmark: invalid choice: 'nope'"),
    ]


def test_bad_options_are_refused_before_anything_is_read(tmp_path, capsys, model_use):
    out = tmp_path / "out"
    for kind, extra, status, expected in _bad_options(tmp_path):
        message = _refused(capsys, _argv(tmp_path / "no-data-needed", out, kind, *extra), status=status)
        assert expected in message, (extra, message)
        assert model_use["loads"] == 0 and not out.exists(), extra


@pytest.mark.parametrize("options", [
    {"threshold": float("nan")}, {"threshold": "half"}, {"multi_target": -0.2}, {"max_frames": 2.5},
    {"max_frames": True}, {"short_side": 31}, {"query_decay": 0.0}])
def test_python_options_are_checked_too(tmp_path, options):
    name = next(iter(options))
    keywords = {"obj_threshold": options[name]} if name == "multi_target" else options  # evaluate's name for it
    with pytest.raises(ConfigError, match=f"^{name} .* must be"):
        evaluate(_never, tmp_path / "no-data-needed", tmp_path / "out", benchmark="mevis", **keywords)


def test_data_root_and_output_folder_problems(tmp_path, capsys, model_use, monkeypatch):
    synthetic = _synthetic("ytvos", tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert _refused(capsys, _argv(a_file, tmp_path / "out")).startswith(f"dataset folder {a_file} is a file")
    assert _refused(capsys, _argv(synthetic.root, a_file)).startswith(f"output folder {a_file} is not a folder")
    assert "which is not a folder" in _refused(capsys, _argv(synthetic.root, a_file / "out"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root may write anywhere: make this folder read-only for the check too
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: not (Path(path) == locked and mode & os.W_OK)
                            and access(path, mode, **kw))
    for out in (locked, locked / "out"):
        assert "cannot be written" in _refused(capsys, _argv(synthetic.root, out))
    assert model_use["loads"] == 0 and list(locked.iterdir()) == []


# --------------------------------------------------------------------------- nothing half-written


class BreaksOnSecondVideo(PerfectPredictor):
    """The second video's last expression comes back one frame short: the writer refuses it half-way."""

    def segment(self, video, expressions, **options):
        frames = list(video)
        segmentation = super().segment(frames, expressions, **options)
        if len(self.calls) == 2:
            segmentation.results[expressions[-1]] = super().segment(frames[:-1], expressions[-1:])[expressions[-1]]
        return segmentation


def test_a_video_refused_half_way_leaves_nothing_behind(tmp_path):
    synthetic = _synthetic("mevis", tmp_path)
    first, second = sorted(synthetic.first_frames)
    out = tmp_path / "out"
    with pytest.raises(ReferDinoError, match=f"the prediction of {second} has 2 frames, expected 3"):
        evaluate(BreaksOnSecondVideo(synthetic), synthetic.root, out, benchmark="mevis", progress=False)
    assert (out / f".done/{first}.json").is_file() and len(list((out / "Annotations" / first).rglob("*.png"))) == 6
    assert not (out / "Annotations" / second).exists() and not (out / f".done/{second}.json").exists()
    assert not list(out.rglob("*.part")) and not (out / "metrics.json").exists()


def test_a_damaged_prediction_is_named_with_what_to_do(tmp_path):
    synthetic = _synthetic("ytvos", tmp_path)
    video, out = sorted(synthetic.first_frames)[0], tmp_path / "out"
    evaluate(PerfectPredictor(synthetic), synthetic.root, out, benchmark="ytvos", progress=False)
    png = out / f"Annotations/{video}/0/00005.png"
    png.write_bytes(png.read_bytes()[:50])
    with pytest.raises(ReferDinoError) as info:
        evaluate(PerfectPredictor(synthetic), synthetic.root, out, benchmark="ytvos", progress=False)
    assert str(info.value).startswith(f"prediction Annotations/{video}/0/00005.png cannot be read")
    assert f"delete .done/{video}.json" in str(info.value) and str(tmp_path) not in str(info.value)
    (out / f".done/{video}.json").unlink()  # as the message says
    assert evaluate(PerfectPredictor(synthetic), synthetic.root, out, benchmark="ytvos",
                    progress=False).metrics["J&F"] == 1.0


# --------------------------------------------------------------------------- the real commands


def test_referdino_evaluate_subcommand_prints_one_line(tmp_path, capsys, model_use):
    synthetic = _synthetic("davis", tmp_path)
    (synthetic.root / META["davis"]).write_text('{"videos": {"x": {"frames": ["00000"]}}}')
    message = _refused(capsys, ["evaluate", *_argv(synthetic.root, tmp_path / "out", "davis")], referdino_main)
    assert message.startswith(f"{META['davis']}: video 'x' needs a 'frames' list and an 'expressions' object")
    assert model_use["loads"] == 0


def test_module_cli_prints_no_traceback_for_a_truncated_frame(tmp_path):
    synthetic = _synthetic("ytvos", tmp_path)
    video = sorted(synthetic.first_frames)[0]
    frame = synthetic.root / f"valid/JPEGImages/{video}/00010.jpg"
    frame.write_bytes(frame.read_bytes()[:-150])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "referdino_demo.evaluation", *_argv(synthetic.root, tmp_path / "out")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert run.returncode == 1 and "Traceback" not in run.stderr and len(errors) == 1, run.stderr[-3000:]
    assert errors[0].startswith(f"referdino evaluate: error: frame valid/JPEGImages/{video}/00010.jpg of video "
                                f"{video} cannot be read")
    assert not (tmp_path / "out").exists()


def test_a_refusal_in_one_torchrun_process_stops_all_of_them(tmp_path):
    synthetic = _synthetic("mevis", tmp_path)
    video = sorted(synthetic.first_frames)[1]  # in the shard of rank 1 only
    (synthetic.root / f"valid_u/JPEGImages/{video}/00001.jpg").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "referdino_demo.evaluation", *_argv(synthetic.root, tmp_path / "out", "mevis"),
                          "--device", "cpu"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    errors = [line for line in run.stderr.splitlines() if line.startswith("referdino evaluate: error:")]
    assert run.returncode != 0 and len(errors) == 2, run.stderr[-3000:]  # both processes, not one left waiting
    assert all(f"frame valid_u/JPEGImages/{video}/00001.jpg of video {video} is not an image" in e for e in errors)
    assert "model:" not in run.stderr and not (tmp_path / "out").exists()


def test_the_davis_palette_source_is_read_or_named(tmp_path):
    from referdino_demo.evaluation.writers import davis_palette

    source = tmp_path / "valid/Annotations/blackswan/00000.png"
    source.parent.mkdir(parents=True)
    image = Image.fromarray(np.zeros((4, 5), np.uint8))
    image.putpalette([7, 8, 9] * 256)
    image.save(source)
    assert davis_palette(tmp_path)[:6] == [7, 8, 9, 7, 8, 9]
    source.write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"^valid/Annotations/blackswan/00000\.png \(the palette of the "
                                           r"predictions\) is not an image"):
        davis_palette(tmp_path)
