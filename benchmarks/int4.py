"""--quantize int4 beside the default policy and fp32: bundle bytes, English WER (beam 5 and greedy), speed.

Run: .venv/bin/python benchmarks/int4.py [MODEL] [OUT_DIR]   (default tiny.en; prints a markdown table)
Needs ai-edge-quantizer (the convert extra). The bundles go to OUT_DIR (default: a temporary folder).
WER: the English clips of ../shared/audio with a reference, Whisper's English normalizer, language given; on the
runtime's default path (CompiledModel where available) and, beam 5, on LiteRT's Interpreter.
Speed: the minimum of 3 runs each - encoder (one 30 s window), mean of 20 decoder steps, the whole jfk clip
greedy and beam 5 - on 2 threads; times of a shared machine are noisy, compare them within one run only.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from whisper_tflite.audio import load_audio
from whisper_tflite.bundle import TEXT_DECODER_ROLES, Bundle
from whisper_tflite.conversion import convert
from whisper_tflite.evaluation import error_rate, read_manifest
from whisper_tflite.runtime import Transcriber, compiled
from whisper_tflite.runtime.models import TfliteStepper

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
THREADS = 2
PLANS = {  # name: `convert`'s quantize
    "none (fp32)": "none",
    "default (dynamic-int8)": None,
    "int4": "int4",
    "int4, encoder int4 too": {"encoder": "int4", **{role: "int4" for role in TEXT_DECODER_ROLES}},
}


def wer(transcriber: Transcriber, clips, audio, **options) -> tuple[float, float]:
    """WER over all the clips, and over those up to 30 s."""
    hyps = [transcriber.transcribe(audio[c.path], language="en", **options).text for c in clips]
    short = [i for i, c in enumerate(clips) if c.duration <= 30]
    return (error_rate([c.reference for c in clips], hyps, "en"),
            error_rate([clips[i].reference for i in short], [hyps[i] for i in short], "en"))


def speed(bundle: Path, jfk) -> dict[str, float]:
    from whisper_tflite.runtime.transcriber import _window

    stepper = TfliteStepper(Bundle.load(bundle), threads=THREADS)
    log_mel = stepper.whole_log_mel(jfk)
    window = _window(log_mel, 0, log_mel.shape[1])
    encoder, step = [], []
    for _ in range(3):
        start = time.perf_counter()
        stepper.begin(window)
        encoder.append(time.perf_counter() - start)
        start = time.perf_counter()
        for token in range(20):
            stepper.step(token + 1000)
        step.append((time.perf_counter() - start) / 20)
    transcriber = Transcriber(bundle, threads=THREADS)
    greedy, beam = [], []
    for _ in range(3):
        start = time.perf_counter()
        transcriber.transcribe(jfk, language="en", beam_size=1, best_of=1)
        greedy.append(time.perf_counter() - start)
        start = time.perf_counter()
        transcriber.transcribe(jfk, language="en")
        beam.append(time.perf_counter() - start)
    return {"encoder_ms": 1e3 * min(encoder), "step_ms": 1e3 * min(step), "jfk_greedy_ms": 1e3 * min(greedy),
            "jfk_beam_ms": 1e3 * min(beam)}


def main(model: str = "tiny.en", out: str | None = None) -> None:
    clips = [c for c in read_manifest(AUDIO) if c.language == "en" and c.reference]
    audio = {c.path: load_audio(c.path) for c in clips}
    jfk = next(audio[c.path] for c in clips if "jfk" in c.name)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(out or scratch)
        rows = []
        for name, quantize in PLANS.items():
            bundle = folder / name.split()[0].strip(",")
            if name.startswith("int4,"):
                bundle = folder / "int4-encoder-int4"
            convert(model, bundle, quantize=quantize, progress=False, force=True)
            size = sum(path.stat().st_size for path in bundle.iterdir() if path.is_file())
            transcriber = Transcriber(bundle, threads=THREADS)
            beam5 = wer(transcriber, clips, audio)
            greedy = wer(transcriber, clips, audio, beam_size=1, best_of=1)
            available, compiled.available = compiled.available, lambda: False
            try:  # the same bundle on LiteRT's Interpreter instead of its CompiledModel
                interpreted = wer(Transcriber(bundle, threads=THREADS), clips, audio)
            finally:
                compiled.available = available
            rows.append((name, size, beam5, greedy, interpreted, speed(bundle, jfk)))
            print(name, rows[-1][1:], file=sys.stderr, flush=True)
    short = sum(c.duration <= 30 for c in clips)
    print(f"\n{model}, {len(clips)} English clips ({short} up to 30 s), {THREADS} threads\n")
    print("| `--quantize` | bundle bytes | WER beam 5 | WER beam 5, <= 30 s | WER greedy | WER greedy, <= 30 s | "
          "WER beam 5, Interpreter | encoder ms | ms/step | jfk greedy ms | jfk beam 5 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, size, beam5, greedy, interpreted, s in rows:
        print(f"| {name} | {size:,} | {beam5[0]:.2%} | {beam5[1]:.2%} | {greedy[0]:.2%} | {greedy[1]:.2%} | "
              f"{interpreted[0]:.2%} | {s['encoder_ms']:.0f} | {s['step_ms']:.2f} | {s['jfk_greedy_ms']:.0f} | "
              f"{s['jfk_beam_ms']:.0f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
