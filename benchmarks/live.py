"""Live transcription (runtime/live.py) of a long recording fed at 1x: compute per second of audio, latency from
each word's end to its commit, and the final text's WER against offline transcription of the same recording.

The recording is the English clips of ../shared/audio joined with 1 s gaps (about 4 minutes, recording (a) of
tests/test_long_form.py). It is fed as a microphone would feed it, against a virtual clock that charges each
decoding its measured wall time (`live.simulate`): a call waits for the next chunk unless decoding has fallen
behind, so the latencies are those a speaker would see on this machine. The machine may be shared: the load
average before and after is printed, and the CPU time beside the wall time.

Run: .venv/bin/python benchmarks/live.py [BUNDLE] [--chunk-size 1] [--beam-size 1] [--threads 2] [--charge S]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from run import machine
from whisper_tflite.audio import SAMPLE_RATE, load_audio
from whisper_tflite.evaluation import error_rate, join_clips, read_manifest
from whisper_tflite.runtime import Transcriber
from whisper_tflite.runtime.live import simulate

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO.parent / "shared" / "audio"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", default=str(REPO / "bundles" / "tiny.en"))
    parser.add_argument("--chunk-size", type=float, default=1.0)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--charge", type=float, help="charge each call this many seconds instead of its wall time")
    args = parser.parse_args()

    info = machine()
    spoken = [c for c in read_manifest(AUDIO) if c.language == "en" and c.reference]
    recording = join_clips("English clips", spoken, lambda clip: load_audio(clip.path))
    transcriber = Transcriber(args.bundle, threads=args.threads)
    print(f"{info['cpu']}, {info['cores']} cores ({', '.join(info['simd'])}), {args.threads} threads; "
          f"{Path(args.bundle).name}; {recording.name}: {recording.duration:.1f} s, {len(spoken)} clips")

    def wer(text: str) -> float:
        return error_rate([recording.reference], [text], "en")

    offline = {beam: wer(transcriber.transcribe(recording.audio, beam_size=beam).text) for beam in (5, 1)}
    warm = transcriber.live()  # the aligner's arena is made at its first call
    warm.insert_audio(recording.audio[: 2 * SAMPLE_RATE])
    warm.finish()
    load_before = os.getloadavg()[0]
    live = transcriber.live(chunk_size=args.chunk_size, beam_size=args.beam_size)
    cpu_begun = time.process_time()
    run = simulate(live, recording.audio, args.charge)
    cpu = time.process_time() - cpu_begun
    load_after = os.getloadavg()[0]
    latencies = run.latencies
    print(f"live, chunk {args.chunk_size:g} s, beam {args.beam_size}, "
          f"{'measured wall time' if args.charge is None else f'{args.charge:g} s'} charged a call: "
          f"{len(run.compute)} decodings, {len(run.words)} words")
    print(f"compute per second of audio: {run.compute_per_second:.3f} s wall, {cpu / run.duration:.3f} s CPU; "
          f"slowest call {max(run.compute):.2f} s; load average {load_before:.1f} before, {load_after:.1f} after")
    print(f"latency from a word's end to its commit: median {np.median(latencies):.2f} s, "
          f"p90 {np.percentile(latencies, 90):.2f} s, max {latencies.max():.2f} s")
    print(f"WER: live {wer(run.text):.2%}; offline transcribe {offline[1]:.2%} greedy, {offline[5]:.2%} beam 5")


if __name__ == "__main__":
    main()
