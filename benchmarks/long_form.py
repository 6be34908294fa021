"""Recording (c) of tests/test_long_form.py, out of CI for time: the English clips joined with 1 s gaps, twice
over (about 8 minutes), transcribed by the fp32 and default tiny.en bundles and by faster-whisper float32 and
int8 on the same weights, with condition_on_previous_text on and off; WER side by side, with the tests' bounds
(fp32 <= float32 + 0.5 point; the default bundle is bounded in the tests pooled over recordings).

Run: .venv/bin/python benchmarks/long_form.py FP32_BUNDLE DEFAULT_BUNDLE   (tiny.en bundles)
"""

from __future__ import annotations

import sys
from pathlib import Path

from whisper_tflite.audio import load_audio
from whisper_tflite.evaluation import error_rate, faster_whisper_transcribe, join_clips, read_manifest
from whisper_tflite.runtime import Transcriber
from whisper_tflite.sources import bundled_ct2_folder

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
CT2_SCRATCH = Path(__file__).resolve().parents[1] / ".cache" / "ct2"


def main(fp32: str, default: str) -> None:
    spoken = [c for c in read_manifest(AUDIO) if c.language == "en" and c.reference]
    recording = join_clips("c: English clips twice", spoken * 2, lambda clip: load_audio(clip.path))
    ct2 = bundled_ct2_folder("tiny.en", CT2_SCRATCH)
    print(f"{recording.name}: {recording.duration:.0f} s")
    print("| bundle | faster-whisper | previous text | WER ours | WER faster-whisper | segments ours / theirs |")
    print("|---|---|---|---:|---:|---|")
    for bundle, compute_type in ((fp32, "float32"), (default, "int8")):
        transcriber = Transcriber(bundle, threads=2)
        for condition in (True, False):
            ours = transcriber.transcribe(recording.audio, condition_on_previous_text=condition, beam_size=1,
                                          best_of=1)
            theirs = faster_whisper_transcribe(ct2, recording.audio, compute_type,
                                               condition_on_previous_text=condition)
            wers = [error_rate([recording.reference], [text], "en")
                    for text in (ours.text, " ".join(s.text for s in theirs))]
            print(f"| {Path(bundle).name} | {compute_type} | {'on' if condition else 'off'} | {wers[0]:.2%} | "
                  f"{wers[1]:.2%} | {len(ours.segments)} / {len(theirs)} |", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
