"""Benchmark: latency of ``medseg interactive`` under concurrent clients, on 127.0.0.1 only.

Starts the real server (``python -m medseg interactive``) in a subprocess with a promptable model (an untrained
network of the default design: the cost of a network does not depend on its weights) and a BraTS FLAIR volume
(240x240x155, from ``../shared/data``; a synthetic volume of the same size without it). Then ``--clients`` threads,
each with its own keep-alive connection, send ``--requests`` requests each, all on that one image, mixed as a page
does: the PNG of a slice (40 %), a click on a slice (40 %), the mask of a slice (20 %); or (``--mix scroll``) one
client clicks while the others scroll through slices (PNG 70 %, mask 30 %), the case of a prompt that must not
wait for slice rendering. Every client works on its
own two slices, so that the prompts of one never change the slices that another reads; before the timed part,
one click on each of those slices, one at a time, pays for their embeddings (the encoder runs once per slice and
the server keeps 64 per image), as a page user pays once per slice. Latency per request is measured by the
client, end to end (connection kept, body read).

    python bench/serve_load.py --label after                # 20 clients x 50 requests
    python bench/serve_load.py --mix scroll --label after_scroll   # one client clicks while 19 scroll
    python bench/serve_load.py --clients 1 --label serial   # the same requests, one at a time

Writes ``bench/results/serve_load.json`` (runs merged by label) and prints p50/p95 per request kind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "serve_load.json"
TOKEN = "bench-token"
KINDS = ("slice_png", "prompt", "mask")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_image(folder: Path) -> Path:
    """The BraTS FLAIR of the first case, or a synthetic 155x240x240 volume when the data are absent."""
    brats = sorted((DATA / "brats2013_mini" / "imagesTr").glob("*_0000.nii.gz"))
    if brats:
        return brats[0]
    from medseg.io import Image, write_image

    volume = np.random.default_rng(0).normal(0, 1, (155, 240, 240)).astype(np.float32)
    return write_image(Image.from_array(volume), folder / "synthetic.nii.gz")


def bench_model(folder: Path) -> Path:
    from medseg.interactive.predictor import save_model

    try:
        from medseg.nets.promptable_unet import PromptableConfig, PromptableUNet
    except ImportError:  # the layout before 2026-12-02 (to measure an older server)
        from medseg.interactive.model import PromptableConfig, PromptableUNet

    return save_model(PromptableUNet(PromptableConfig()), folder / "model")


def start_server(model: Path, image: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "medseg", "interactive", "--model", str(model), "--image", str(image),
               "--port", str(port), "--token", TOKEN, "--allow-root", str(image.parent)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 120.0) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()[-2000:]}")
        try:
            images = httpx.get(f"{base}/api/images", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
            if images:
                return images[0]
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not start in time")


def own_slices(client: int, slices: int) -> list[int]:
    """The two slices a client works on, spread over the volume."""
    return [(client * 7 + k * 3) % slices for k in range(2)]


def client_plan(client: int, requests: int, info: dict, seed: int,
                mix: str = "mixed") -> list[tuple[str, str, dict | None]]:
    """``requests`` (kind, path, json body) for one client: its own slices, seeded click positions. ``mix``:
    "mixed" 40 % slice PNGs, 40 % clicks, 20 % masks for every client; "scroll" client 0 clicks only while the
    others scroll (70 % slice PNGs, 30 % masks)."""
    rng = np.random.default_rng(seed + client)
    slices = info["num_slices"]
    height, width = info["slice_shape"]
    own = own_slices(client, slices)
    api = f"/api/images/{info['id']}"
    plan = []
    for j in range(requests):
        index = own[j % len(own)]
        draw = rng.random()
        if mix == "scroll":
            draw = 0.5 if client == 0 else (0.0 if draw < 0.7 else 0.9)
            index = index if client == 0 else (client * 7 + j) % slices
        if draw < 0.4:
            plan.append(("slice_png", f"{api}/slices/{index}/image.png", None))
        elif draw < 0.8:
            point = [float(rng.uniform(0.3, 0.7) * height), float(rng.uniform(0.3, 0.7) * width)]
            plan.append(("prompt", f"{api}/prompts", {"slice": index, "type": "click", "point": point,
                                                      "positive": bool(rng.random() < 0.7)}))
        else:
            plan.append(("mask", f"{api}/slices/{index}/mask", None))
    return plan


def run_client(base: str, plan: list, barrier: threading.Barrier, out: list) -> None:
    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as client:
        barrier.wait()
        for kind, path, body in plan:
            start = time.perf_counter()
            response = client.post(path, json=body) if body is not None else client.get(path)
            response.read()
            out.append((kind, (time.perf_counter() - start) * 1000, response.status_code))


def summarise(values: list[float]) -> dict:
    ordered = np.sort(np.asarray(values))
    if not ordered.size:
        return {}
    return {"n": int(ordered.size), "p50_ms": round(float(np.percentile(ordered, 50)), 1),
            "p95_ms": round(float(np.percentile(ordered, 95)), 1),
            "p99_ms": round(float(np.percentile(ordered, 99)), 1), "max_ms": round(float(ordered[-1]), 1),
            "mean_ms": round(statistics.fmean(ordered), 1)}


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def load(clients: int, requests: int, seed: int, mix: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="medseg-serve-load-") as folder:
        folder = Path(folder)
        image, model, port = bench_image(folder), bench_model(folder), free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(model, image, port)
        try:
            info = wait_ready(base, server)
            warm = [("prompt", f"/api/images/{info['id']}/prompts", {"slice": index, "type": "click",
                                                                    "point": [s / 2 for s in info["slice_shape"]]})
                    for c in range(clients if mix == "mixed" else 1) for index in own_slices(c, info["num_slices"])]
            first_clicks: list = []  # each slice's first click embeds it (the encoder), one at a time
            run_client(base, warm, threading.Barrier(1), first_clicks)
            results: list = []
            barrier = threading.Barrier(clients)
            threads = [threading.Thread(target=run_client, args=(base, client_plan(c, requests, info, seed, mix),
                                                                 barrier, results)) for c in range(clients)]
            load_before = os.getloadavg()
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
            rss = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    errors = sum(1 for _, _, status in results if status != 200)
    return {
        "clients": clients, "requests_per_client": requests, "mix": mix, "image": image.name,
        "image_shape": info["spatial_shape"], "wall_s": round(wall, 2),
        "requests_per_s": round(len(results) / wall, 1), "errors": errors,
        "first_click_serial": summarise([ms for _, ms, _ in first_clicks]),
        "all": summarise([ms for _, ms, _ in results]),
        **{kind: summarise([ms for k, ms, _ in results if k == kind]) for kind in KINDS},
        "server_peak_rss_mb": rss, "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mix", choices=("mixed", "scroll"), default="mixed",
                        help="mixed: every client clicks and scrolls; scroll: one client clicks, the others scroll")
    parser.add_argument("--label", default="run", help="name of this run in the results file")
    args = parser.parse_args()
    result = load(args.clients, args.requests, args.seed, args.mix)
    result.update(date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
                  command=" ".join(["python", "bench/serve_load.py", *sys.argv[1:]]))
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    merged["runs"][args.label] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
    for kind in ("all", *KINDS):
        s = result[kind]
        print(f"{kind:10s} n={s['n']:5d}  p50 {s['p50_ms']:8.1f} ms  p95 {s['p95_ms']:8.1f} ms  "
              f"max {s['max_ms']:8.1f} ms")
    print(f"{result['requests_per_s']} requests/s, {result['errors']} errors, server peak RSS "
          f"{result['server_peak_rss_mb']} MB, load {result['load_average_before']}")


if __name__ == "__main__":
    main()
