"""A bounded load run against `whisper-tflite serve`: 50 requests, 8 at a time, over loopback.

Starts the server as a child process on a free 127.0.0.1 port, sends the English clips of ../shared/audio up to
30 s in turn through the official openai client, and checks every answer against `Transcriber.transcribe` of the
same file in this process. Prints throughput, p50/p95 latency and the server's resident memory, sampled through
the run (it should stay flat once each worker has loaded its models), beside the command line and the CPU.
Stops by itself; writes nothing.

Run: .venv/bin/python benchmarks/serve_load.py [--model bundles/tiny.en] [--workers 2] [--requests 50]
     [--concurrency 8]   (needs the dev extra)
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from run import AUDIO, REPO, machine
from whisper_tflite.evaluation import read_manifest
from whisper_tflite.runtime import Transcriber


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server stopped: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit("the server did not answer /health within 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "bundles" / "tiny.en")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if not (args.model / "manifest.json").is_file():
        sys.exit(f"no bundle at {args.model}: whisper-tflite convert tiny.en --out {args.model}")

    clips = [c.path for c in read_manifest(AUDIO) if c.language == "en" and c.duration <= 30]
    audio_s = {c.path: c.duration for c in read_manifest(AUDIO)}
    reference = Transcriber(args.model, num_workers=args.workers)  # the server's threads per worker
    expected = {path: reference.transcribe(path).text for path in clips}
    threads = reference.threads
    del reference

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "whisper_tflite.cli", "serve", "--model", str(args.model), "--port", str(port),
               "--workers", str(args.workers), "--queue", str(args.concurrency)]
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(url, server, Path(log.name))
            idle = rss_mb(server.pid)
            samples: list[tuple[int, float]] = []  # (answers so far, RSS)
            answered = []  # (latency, correct)
            done = threading.Event()

            def sample():
                while not done.is_set():
                    samples.append((len(answered), rss_mb(server.pid)))
                    time.sleep(0.05)

            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)

            def request(index: int) -> None:
                path = clips[index % len(clips)]
                started = time.perf_counter()
                text = client.audio.transcriptions.create(model="whisper-1", file=path).text
                answered.append((time.perf_counter() - started, text == expected[path]))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(request, range(args.requests)))
            wall = time.perf_counter() - started
            done.set()
            sampler.join()
            peak = rss_mb(server.pid, "VmHWM")
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)

    latencies = sorted(latency for latency, _ in answered)
    p95 = statistics.quantiles(latencies, n=20, method="inclusive")[18]
    seconds = sum(audio_s[clips[i % len(clips)]] for i in range(args.requests))
    info = machine()
    bounds = [0, args.concurrency, (args.concurrency + args.requests) // 2, args.requests]
    windows = {(lo, hi): max((rss for count, rss in samples if lo <= count < hi), default=float("nan"))
               for lo, hi in zip(bounds, bounds[1:])}
    rows = [
        ("command", " ".join([Path(sys.executable).name, *sys.argv])),
        ("server", f"whisper-tflite serve --model {args.model.name} --workers {args.workers} "
                   f"({threads} interpreter thread{'s' if threads > 1 else ''} each), beam 5 (the default)"),
        ("cpu", f"{info['cpu']}, {info['cores']} cores ({', '.join(info['simd'])}); load average at the end "
                f"{os.getloadavg()[0]:.1f}"),
        ("load", f"{args.requests} requests, {args.concurrency} at a time, {len(clips)} English clips in turn "
                 f"({seconds:.0f} s of audio)"),
        ("answers", f"{len(answered)} answered, {sum(ok for _, ok in answered)} equal to Transcriber.transcribe's"),
        ("throughput", f"{len(answered) / wall:.2f} requests/s, {seconds / wall:.1f} s of audio per s "
                       f"({wall:.1f} s wall)"),
        ("latency", f"p50 {statistics.median(latencies):.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s"),
        ("server RSS", f"idle {idle:.0f} MB; highest sampled while answers " +
                       ", ".join(f"{lo}-{hi} came: {mb:.0f} MB" for (lo, hi), mb in windows.items()) +
                       f"; peak (VmHWM) {peak:.0f} MB"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    if sum(ok for _, ok in answered) != args.requests:
        sys.exit("some answers differ from Transcriber.transcribe's")


if __name__ == "__main__":
    main()
