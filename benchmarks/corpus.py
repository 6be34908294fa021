"""Corpus throughput: audio seconds per wall second of `transcribe-corpus` with 1 and 2 local workers and on a
local Ray, on the English clips of ../shared/audio taken `--copies` times (links in a temporary folder).

Run: .venv/bin/python benchmarks/corpus.py [BUNDLE] [--copies N]   (default bundles/tiny.en, 3 copies)
Each configuration runs in a fresh process, as a user would start it, the bundle's load and Ray's start included.
The table replaces the "Corpus throughput" section of docs/benchmarks.md (run.py keeps that section).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import KEPT_SECTIONS, machine, write_report

from whisper_tflite.evaluation import read_manifest

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
SECTION = KEPT_SECTIONS[0]
CLI = Path(sys.executable).with_name("whisper-tflite")
CONFIGURATIONS = {  # name: extra arguments
    "1 worker x 2 threads": ["--workers", "1", "--threads", "2"],
    "2 workers x 1 thread": ["--workers", "2", "--threads", "1"],
    "Ray (local, 1-thread tasks, one a core)": ["--ray", "local", "--threads", "1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default="bundles/tiny.en")
    parser.add_argument("--copies", type=int, default=3)
    args = parser.parse_args()
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores, ISA: {', '.join(info['simd'])}")
    clips = [c for c in read_manifest(AUDIO) if c.language == "en"]
    with tempfile.TemporaryDirectory() as folder:
        for copy in range(args.copies):
            Path(folder, str(copy)).mkdir()
            for clip in clips:
                Path(folder, str(copy), clip.path.name).symlink_to(clip.path)
        lines = [SECTION, "", f"`benchmarks/corpus.py` on {info['cpu']}, {info['cores']} cores "
                 f"({', '.join(info['simd'])}): bundle {Path(args.bundle).name} (default policy), "
                 f"{len(clips) * args.copies} files ({args.copies} copies of the English clips), default "
                 "decoding options (beam 5); each run a fresh `whisper-tflite transcribe-corpus` process, its "
                 "start, the bundle's load and Ray's start included.", "",
                 "| configuration | wall s | audio s | audio s per wall s |", "|---|---:|---:|---:|"]
        print("\n".join(lines))
        for name, extra in CONFIGURATIONS.items():
            output = Path(folder, f"{len(extra)}-{time.monotonic_ns()}.jsonl")
            start = time.perf_counter()
            done = subprocess.run([str(CLI), "transcribe-corpus", folder, "--model", args.bundle, "--output",
                                   str(output), "--quiet", *extra], capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(done.stderr)
            audio = sum(json.loads(line)["duration"] or 0 for line in output.read_text().splitlines())
            lines.append(f"| {name} | {wall:.1f} | {audio:.0f} | {audio / wall:.1f} |")
            print(lines[-1], flush=True)
    write_report(section="\n".join(lines))
    print("wrote the corpus section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
