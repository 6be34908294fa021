"""The default bundle against faster-whisper int8 alone: wall time and peak RSS, side by side, in minutes.

The same clips, long recording, workers and interleaving as `run.py` (whose full run, with every system and
rounds, takes most of an hour), for a quick look on a new machine or after a change: each system in a worker
process of its own, clip by clip in turn, then the 249 s recording (greedy only), then each worker's peak RSS.
Prints the CPU and its ISA flags, which the ratios depend on. Writes nothing to docs/.

Run: .venv/bin/python benchmarks/head_to_head.py [--models tiny.en,base] [--rounds 1] [--beam-size 1]
"""

from __future__ import annotations

import argparse
import statistics

from run import Worker, cached_bundle, choose_clips, ct2_folder, long_recording, machine


def compare(model: str, rounds: int, threads: int, beam_size: int) -> None:
    clips = choose_clips(model)
    workers = [Worker("whisper-tflite default", "tflite", cached_bundle(model, "dynamic-int8"), threads, 0, beam_size),
               Worker("faster-whisper int8", "faster-whisper-int8", ct2_folder(model), threads, 0, beam_size)]
    clip_walls = {w.name: [] for w in workers}
    long_walls = {w.name: [] for w in workers}
    long_path, recording = long_recording()
    for _ in range(rounds):
        totals = dict.fromkeys(clip_walls, 0.0)
        for clip in clips:
            for worker in workers:
                totals[worker.name] += worker.ask(clip.path, clip.language)["wall_s"]
        for name, total in totals.items():
            clip_walls[name].append(total)
        if beam_size == 1:
            for worker in workers:
                long_walls[worker.name].append(worker.ask(long_path, "en")["wall_s"])
    peaks = {worker.name: worker.close() for worker in workers}
    print(f"\n{model}, {'greedy' if beam_size == 1 else f'beam {beam_size}'}, {rounds} round(s), median wall s: "
          f"{len(clips)} clips ({sum(c.duration for c in clips):.0f} s)"
          + (f", then the {recording.duration:.0f} s recording" if beam_size == 1 else ""))
    print(f"| system | clips wall s | {'long wall s | ' if beam_size == 1 else ''}peak RSS MB |")
    for name in peaks:
        long = f"{statistics.median(long_walls[name]):.2f} | " if beam_size == 1 else ""
        print(f"| {name} | {statistics.median(clip_walls[name]):.2f} | {long}{peaks[name]:.0f} |")
    ours, theirs = (statistics.median(walls) for walls in clip_walls.values())
    (ours_peak, theirs_peak) = peaks.values()
    ratios = f"clips x{ours / theirs:.2f}"
    if beam_size == 1:
        ours_long, theirs_long = (statistics.median(walls) for walls in long_walls.values())
        ratios += f", long recording x{ours_long / theirs_long:.2f}"
    print(f"default bundle vs faster-whisper int8: wall {ratios}, peak RSS x{ours_peak / theirs_peak:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam-size", type=int, default=1)
    args = parser.parse_args()
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores ({', '.join(info['simd'])}), {args.threads} threads; "
          + ", ".join(f"{name} {version}" for name, version in info["versions"].items()))
    for model in args.models.split(","):
        compare(model, args.rounds, args.threads, args.beam_size)


if __name__ == "__main__":
    main()
