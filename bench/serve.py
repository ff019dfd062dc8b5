"""Benchmark: ``medseg serve`` under concurrent clients, on 127.0.0.1 only, against predicting in process.

Starts the real service (``python -m medseg serve``) in a subprocess with a 2d model folder (``--model``, or one
trained 4 steps by ``medseg train`` on ``medseg example-data``: the cost of a network does not depend on how long
it trained) and ``--workers`` worker threads. Then ``--clients`` threads, each with its own keep-alive connection,
submit ``--jobs`` jobs in all (uploads of 2D NIfTI slices, 64 x 64, cut from the example-data volumes), wait for
each (``GET /v1/jobs/{id}?wait=30``, a long poll) and download its label file. A job's latency is measured by its client, from the upload to
the last byte of the label file. The run stops by itself after ``--time-limit`` seconds, counting unfinished
jobs as errors. The server's peak RSS is its ``VmHWM`` (/proc) at the end.

The baseline in the same run: ``Predictor.predict`` of the same images in this process, one at a time (what the
service adds is the HTTP round trips, the queue, SQLite and the file writes and reads).

    python bench/serve.py                          # 8 clients, 64 jobs, 2 workers
    python bench/serve.py --clients 16 --jobs 128

Writes ``bench/results/serve.json``: ``requests`` (jobs submitted), ``errors``, ``p50_ms``, ``p95_ms``,
``peak_rss_mb``, and the throughput, the baseline and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import free_port, peak_rss_mb  # noqa: E402  (the interactive server's benchmark, same folder)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "serve.json"
TOKEN = "bench-serve-token-0123456789"


def medseg(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "medseg", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"medseg {args[0]} failed: {result.stderr[-2000:]}")


def bench_model(folder: Path) -> tuple[Path, Path]:
    """A 2d model trained 4 steps on ``medseg example-data`` (4 cases), and that dataset."""
    dataset, plans, model = folder / "shapes", folder / "plans.json", folder / "model"
    medseg("example-data", str(dataset), "--cases", "4")
    medseg("plan", str(dataset), "-o", str(plans), "--flops", "1e10", "--budget", "60", "--set",
           "2d.patch_size=[32,32]", "--set", "2d.batch_size=4")
    medseg("train", str(dataset), "-c", "2d", "-f", "0", "-o", str(model), "-p", str(plans), "--max-iterations",
           "4", "--iterations-per-epoch", "2", "--workers", "0", "--budget", "600")
    return model, dataset


def bench_images(dataset: Path, folder: Path, count: int = 8) -> list[Path]:
    """``count`` 2D slices (NIfTI) of the dataset's volumes, spread over their depth."""
    from medseg.io import Image, read_image, write_image

    volumes = sorted((dataset / "imagesTr").glob("*.nii.gz"))
    paths = []
    for index in range(count):
        volume = read_image(volumes[index % len(volumes)])
        z = (index * 5 + 6) % volume.spatial_shape[0]
        paths.append(write_image(Image.from_array(volume.array[0, z], spacing=volume.spacing[1:]),
                                 folder / f"slice_{index:02d}.nii.gz"))
    return paths


def start_server(model: Path, state: Path, tokens: Path, port: int, workers: int, queue: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "medseg", "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--tokens", str(tokens), "--state", str(state), "--workers", str(workers), "--queue", str(queue),
               "--rate-limit", "0"]
    return subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"medseg serve exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit("medseg serve did not become ready")


def run_clients(base: str, images: list[Path], *, clients: int, jobs: int, time_limit: float) -> dict:
    """Each client takes the next job number until ``jobs`` were taken or the time is up."""
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    timings: list[dict] = []  # the server's own per-job timings (seconds)
    errors: list[str] = []
    counter = iter(range(jobs))
    lock = threading.Lock()
    deadline = time.time() + time_limit
    http_requests = [0]  # changed under lock

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as session:
            while time.time() < deadline:
                with lock:
                    number = next(counter, None)
                if number is None:
                    return
                path = images[number % len(images)]
                start = time.perf_counter()
                try:
                    outcome, made, info = one_job(session, path, deadline)
                except httpx.HTTPError as error:
                    outcome, made, info = f"{type(error).__name__}: {error}", 1, {}
                with lock:
                    http_requests[0] += made
                    if outcome is None:
                        latencies.append((time.perf_counter() - start) * 1000)
                        timings.append(info["timings"])
                    else:
                        errors.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    unfinished = jobs - len(latencies) - len(errors)
    server = {key: round(float(np.mean([t[key] for t in timings])) * 1000, 1) for key in timings[0]} if timings else {}
    return {"latencies": latencies, "errors": errors + ["not run: time limit"] * unfinished, "wall_s": wall,
            "http_requests": http_requests[0], "server_mean_ms": server}


def one_job(session, path: Path, deadline: float) -> tuple[str | None, int, dict]:
    """Submit, wait until done, download: (None when the label file came back, else what went wrong; the HTTP
    requests made; the job's last status)."""
    response = session.post("/v1/jobs", files={"file": (path.name, path.read_bytes())})
    if response.status_code != 202:
        return f"submit {response.status_code}: {response.text[:200]}", 1, {}
    job_id, made = response.json()["id"], 1
    while time.time() < deadline:
        wait = max(0.0, min(30.0, deadline - time.time()))
        info = session.get(f"/v1/jobs/{job_id}", params={"wait": f"{wait:.2f}"})  # a long poll
        made += 1
        status = info.json()["status"]
        if status == "failed":
            return f"job failed: {info.json()['error']}", made, info.json()
        if status == "done":
            result = session.get(f"/v1/jobs/{job_id}/result")
            ok = result.status_code == 200 and result.content
            return (None if ok else f"result {result.status_code}"), made + 1, info.json()
    return "timed out", made, {}


def direct_baseline(model: Path, images: list[Path], repeats: int) -> list[float]:
    """ms per ``Predictor.predict`` of each image in this process (one thread, as each server worker)."""
    import torch

    from medseg.inference.predictor import Predictor
    from medseg.io import read_image

    torch.set_num_threads(1)
    predictor = Predictor.from_folder(model)
    loaded = [read_image(path) for path in images]
    predictor.predict(loaded[0])  # warm-up, as the server's first job would be
    times = []
    for _ in range(repeats):
        for image in loaded:
            start = time.perf_counter()
            predictor.predict(image)
            times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a 2d model folder (default: train one for 4 steps)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds before the clients stop")
    args = parser.parse_args()
    if not (1 <= args.clients <= 64 and 1 <= args.jobs <= 2000 and 1 <= args.workers <= 16):
        raise SystemExit("--clients 1..64, --jobs 1..2000, --workers 1..16")
    with tempfile.TemporaryDirectory(prefix="medseg-bench-serve-") as temporary:
        folder = Path(temporary)
        model, dataset = (args.model, None) if args.model else bench_model(folder)
        if dataset is None:
            medseg("example-data", str(folder / "shapes"), "--cases", "4")
            dataset = folder / "shapes"
        images = bench_images(dataset, folder)
        tokens = folder / "tokens.txt"
        tokens.write_text(TOKEN + "\n")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(model, folder / "state", tokens, port, args.workers, queue=args.jobs)
        try:
            wait_ready(base, server)
            run = run_clients(base, images, clients=args.clients, jobs=args.jobs, time_limit=args.time_limit)
            peak = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        direct = direct_baseline(model, images, repeats=2)
    latencies = np.asarray(run["latencies"]) if run["latencies"] else np.asarray([np.nan])
    result = {
        "requests": args.jobs, "errors": len(run["errors"]),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "peak_rss_mb": peak,
        "throughput_jobs_per_s": round(len(run["latencies"]) / run["wall_s"], 2),
        "wall_s": round(run["wall_s"], 2), "http_requests": run["http_requests"],
        "server_mean_ms": run["server_mean_ms"],
        "direct_predict_p50_ms": round(float(np.percentile(direct, 50)), 1),
        "direct_predict_jobs_per_s_per_worker": round(1000 / float(np.mean(direct)), 2),
        "clients": args.clients, "workers": args.workers, "image": "2D NIfTI 64x64 (example-data slices)",
        "first_errors": run["errors"][:5],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average": list(os.getloadavg()),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
