"""Quantization per component: WER, size and speed for every encoder x decoder combination (the decoder's
quantization applies to decoder_step and prefill alike).

Run: .venv/bin/python benchmarks/quantization.py [MODEL]   (default tiny.en; prints a markdown table)
The default policy in `whisper_tflite.conversion.DEFAULT_POLICY` is chosen from this table.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from whisper_tflite.audio import N_SAMPLES, load_audio
from whisper_tflite.conversion import QUANTIZATIONS, convert
from whisper_tflite.evaluation import error_rate, read_manifest
from whisper_tflite.runtime import Transcriber

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
THREADS = 2
TIMED_CLIP = "en_jfk_openai-whisper.flac"  # the window whose encoder and steps are timed


def measure(bundle: Path, clips, audio) -> dict:
    transcriber = Transcriber(bundle, threads=THREADS)
    hyps = [transcriber.transcribe(audio[c.path], beam_size=1, best_of=1).text for c in clips]
    stepper = transcriber.stepper
    window = audio[next(c for c in clips if c.name == TIMED_CLIP).path][:N_SAMPLES]
    encoder_times, step_times = [], []
    for _ in range(5):
        start = time.perf_counter()
        stepper.begin(stepper.log_mel(window))
        encoder_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for token in range(20):
            stepper.step(token + 1000)
        step_times.append((time.perf_counter() - start) / 20)
    sizes = {role: (bundle / e["file"]).stat().st_size for role, e in transcriber.bundle.models.items()}
    return {
        "wer": error_rate([c.reference for c in clips], hyps, "en"),
        "encoder_ms": 1000 * float(np.median(encoder_times)),
        "step_ms": 1000 * float(np.median(step_times)),
        "encoder_mb": sizes["encoder"] / 1e6,
        "decoder_mb": sizes["decoder_step"] / 1e6,
        "prefill_mb": sizes["prefill"] / 1e6,
    }


def main(model: str = "tiny.en") -> None:
    clips = [c for c in read_manifest(AUDIO) if c.language == "en" and c.reference and c.duration <= 30]
    audio = {c.path: load_audio(c.path) for c in clips}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for encoder_q, decoder_q in itertools.product(QUANTIZATIONS, QUANTIZATIONS):
            bundle = Path(folder) / f"{encoder_q}-{decoder_q}"
            convert(model, bundle, quantize={"encoder": encoder_q, "decoder_step": decoder_q, "prefill": decoder_q},
                    progress=False)
            rows.append((encoder_q, decoder_q, measure(bundle, clips, audio)))
            print(f"{encoder_q:>12s} x {decoder_q:<12s} {rows[-1][2]}", file=sys.stderr)
    print(f"\n{model}, {len(clips)} English clips, {THREADS} threads; encoder time includes the features model\n")
    print("| encoder | decoder_step, prefill | WER | encoder MB | decoder_step MB | prefill MB | encoder ms | "
          "ms/token |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for encoder_q, decoder_q, m in rows:
        print(f"| {encoder_q} | {decoder_q} | {m['wer']:.2%} | {m['encoder_mb']:.1f} | {m['decoder_mb']:.1f} | "
              f"{m['prefill_mb']:.1f} | {m['encoder_ms']:.0f} | {m['step_ms']:.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
