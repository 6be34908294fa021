"""Word timestamps against faster-whisper's on the same weights, both greedy: same words, start/end differences,
and the cost of the alignment call.

Run: .venv/bin/python benchmarks/words.py BUNDLE [CT2_FOLDER|-] [COMPUTE_TYPE]
(defaults, or -: the bundled tiny.en as CTranslate2 in .cache/ct2; float32), on the English clips of
../shared/audio.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from whisper_tflite.audio import load_audio
from whisper_tflite.evaluation import faster_whisper_transcribe, read_manifest, word_agreement
from whisper_tflite.runtime import Transcriber

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO.parent / "shared" / "audio"
THREADS = 2


def main(bundle: str, ct2: str | None = None, compute_type: str = "float32") -> None:
    if ct2 in (None, "-"):
        from whisper_tflite.sources import bundled_ct2_folder

        ct2 = bundled_ct2_folder("tiny.en", REPO / ".cache" / "ct2")
    transcriber = Transcriber(bundle, threads=THREADS)
    clips = [c for c in read_manifest(AUDIO) if c.language == "en"]
    pairs, align_times = [], []
    align = transcriber.stepper.alignment_weights

    def timed(tokens):
        start = time.perf_counter()
        weights = align(tokens)
        align_times.append(time.perf_counter() - start)
        return weights

    transcriber.stepper.alignment_weights = timed
    for clip in clips:
        audio = load_audio(clip.path)
        ours = transcriber.transcribe(audio, language="en", word_timestamps=True, beam_size=1, best_of=1)
        theirs = faster_whisper_transcribe(ct2, audio, compute_type, word_timestamps=True)
        pairs.append(([w for s in ours.segments for w in s.words], [w for s in theirs for w in s.words]))
    print(f"{bundle} vs faster-whisper {compute_type}, {len(clips)} English clips: {word_agreement(pairs).summary()}")
    print(f"alignment call: {len(align_times)} windows, median {np.median(align_times) * 1000:.0f} ms "
          f"(first, with the model's loading: {align_times[0] * 1000:.0f} ms)")


if __name__ == "__main__":
    main(*sys.argv[1:])
