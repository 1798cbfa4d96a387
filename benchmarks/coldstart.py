"""Cold start with a full-size checkpoint: `python -m benchmarks.coldstart [--manifest ytvos_swinb] [--folder DIR]`.

Writes a random-weight checkpoint in the official release format (every key and shape of the released Swin-B file,
from the key manifest in `../shared/parity/manifests`, LoRA unmerged, shared modules stored under each name), then
loads it with `load_model` in a fresh process three times: the first load converts it and writes the converted
cache beside it, the second and third load the cache. Each line gives the seconds from the process's start to a
loaded model (imports included), the `load_model` call alone, and the process's peak memory.

Then the app (`app.py --checkpoint` that file, on a free port) is started twice more, from a fresh copy of the file
(so its first start converts): for each start, the seconds from launch until the server answers and until the app
logs that the model is ready (it loads the default checkpoint while the server starts).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from .common import peak_rss_mb, run_isolated

MANIFESTS = Path(__file__).resolve().parents[2] / "shared" / "parity" / "manifests"
VOCAB = MANIFESTS.parent / "vocab.txt"  # bert-base-uncased's vocabulary: the app must not try the Hub
APP = Path(__file__).resolve().parents[1] / "app.py"


def official_checkpoint(path: Path, manifest: str = "ytvos_swinb", seed: int = 0) -> Path:
    """Write a random checkpoint with the keys and shapes of `manifest` at `path`, as the official trainer saves it
    (`{"model_state_dict": ...}`); copies of shared modules hold the same values, as in a real file."""
    import torch

    from referdino_demo.checkpoints.convert import alias_keys

    keys = json.loads((MANIFESTS / f"{manifest}.json").read_text())["keys"]
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, spec in keys.items():
        shape, dtype = spec["shape"], getattr(torch, spec["dtype"])
        if dtype.is_floating_point:
            state[key] = torch.randn(shape, generator=generator, dtype=dtype) * 0.02
        else:
            state[key] = torch.zeros(shape, dtype=dtype)
    for alias, canonical in alias_keys(state).items():
        state[alias] = state[canonical]
    torch.save({"model_state_dict": state}, path)
    return path


def measure(path: str, started: float) -> dict:
    """Load `path` in this process; `started`: the process's start (time.time() before the imports)."""
    from referdino_demo.checkpoints import load_model

    begin = time.perf_counter()
    model = load_model(path)
    load_s = time.perf_counter() - begin
    return {"ready_s": time.time() - started, "load_model_s": load_s, "peak_rss_mb": peak_rss_mb(),
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6}


def app_start(path: Path, vocab: Path, cache: Path, timeout_s: float = 600) -> dict:
    """Launch `app.py` on `path`; -> seconds from launch until its server answers and until it logs "model ready"."""
    import os
    import socket
    import subprocess
    import threading
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, REFERDINO_CACHE=str(cache), GRADIO_ANALYTICS_ENABLED="False")
    begin = time.monotonic()
    app = subprocess.Popen([sys.executable, str(APP), "--checkpoint", str(path), "--vocab", str(vocab), "--port",
                            str(port)], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    times: dict[str, float] = {}

    def poll_server() -> None:
        while app.poll() is None and time.monotonic() - begin < timeout_s:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                times["server_s"] = time.monotonic() - begin
                return
            except OSError:
                time.sleep(0.1)

    poller = threading.Thread(target=poll_server, daemon=True)
    poller.start()
    watchdog = threading.Timer(timeout_s, app.kill)  # ends the read below if the line never comes
    watchdog.start()
    try:
        for line in app.stderr:  # the log: "model ready" comes once the weights are loaded
            if "model ready" in line:
                times["model_ready_s"] = time.monotonic() - begin
                break
        poller.join(max(0.0, timeout_s - (time.monotonic() - begin)))
    finally:
        watchdog.cancel()
        app.kill()
        app.wait()
    if len(times) < 2:
        raise RuntimeError(f"the app did not get ready within {timeout_s:.0f} s: {times}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="ytvos_swinb", help="a key manifest in ../shared/parity/manifests")
    parser.add_argument("--folder", default=None, help="where to write the checkpoint (default: a temporary folder)")
    parser.add_argument("--load", help=argparse.SUPPRESS)  # one load in this process (used by the table)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(measure(args.load, args.started)))
        return
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        path = Path(folder) / f"{args.manifest}.pth"
        begin = time.perf_counter()
        official_checkpoint(path, args.manifest)
        print(f"## cold start: {args.manifest} random weights, {path.stat().st_size / 2**20:.0f} MiB official .pth "
              f"(written in {time.perf_counter() - begin:.1f} s)")
        print(f"{'load':8s} {'ready s':>8s} {'load_model s':>12s} {'peak MiB':>9s}")
        for name in ("first", "second", "third"):
            run = run_isolated("benchmarks.coldstart", "--load", str(path), "--started", str(time.time()))
            print(f"{name:8s} {run['ready_s']:8.2f} {run['load_model_s']:12.2f} {run['peak_rss_mb']:9.0f}")
            sys.stdout.flush()
        fresh = Path(folder) / "app" / path.name
        fresh.parent.mkdir()
        path.rename(fresh)
        print("\n## the app's start with that checkpoint (a fresh copy: the first start converts it)")
        print(f"{'start':8s} {'server s':>9s} {'model ready s':>13s}")
        for name in ("first", "second"):
            run = app_start(fresh, VOCAB, Path(folder) / "cache")
            print(f"{name:8s} {run['server_s']:9.2f} {run['model_ready_s']:13.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
