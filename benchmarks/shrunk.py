"""Shrunk members of the Whisper family (true width, heads, mel bins and vocabulary; two layers each) converted in
float32 and held against the Hugging Face TF model built from the same seeded random weights, as
tests/test_sizes.py holds large-v3: the log-mel against WhisperFeatureExtractor, the encoder's hidden states on the
reference's features, and the decoder step's logits teacher-forced over the prompt and random text tokens.

The suite converts large-v3 alone (1280 wide, 128 mels, 51866 tokens; tiny.en and base, real, cover 384 and 512
wide, 80 mels, both vocabularies); the other widths are the same code at other sizes, measured by this script.

Run: .venv/bin/python benchmarks/shrunk.py [MEMBER ...]   (default: small.en medium; names of whisper_tflite.sizes)
Prints a markdown table: the largest errors, the smallest top-2 margin of the reference's logits, and whether every
teacher-forced position takes the reference's argmax (what the test asserts, with its bounds: mel 2e-3, encoder
1e-4 of the largest value).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from run import machine  # noqa: E402

from whisper_tflite.audio import N_SAMPLES, load_audio, pad_or_trim  # noqa: E402
from whisper_tflite.bundle import Bundle  # noqa: E402
from whisper_tflite.conversion import convert  # noqa: E402
from whisper_tflite.reference import reference_features, reference_logits  # noqa: E402
from whisper_tflite.runtime.models import TfliteStepper  # noqa: E402
from whisper_tflite.sizes import SIZES  # noqa: E402
from whisper_tflite.sources import load_whisper  # noqa: E402
from whisper_tflite.sources.random_weights import write_random_checkpoint  # noqa: E402
from whisper_tflite.tokens import WhisperTokenizer  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "jfk.flac"
TEACHER_FORCED = 20


def measure(name: str, audio: np.ndarray, scratch: Path) -> dict:
    """The test's comparisons for one member (its seed too: the length of the name), as numbers."""
    size = SIZES[name].shrunk(2)
    folder = write_random_checkpoint(size, scratch / "checkpoint", seed=len(name), dtype="float16")
    checkpoint = load_whisper(str(folder))
    convert(checkpoint, scratch / "bundle", quantize="none", models=("features", "encoder", "decoder_step"),
            progress=False)
    stepper = TfliteStepper(Bundle.load(scratch / "bundle"), threads=2)

    expected_mel = reference_features(checkpoint, audio)
    log_mel = stepper.log_mel(pad_or_trim(audio, N_SAMPLES))
    stepper.begin(expected_mel)
    hidden = stepper.encoder.output("hidden")
    expected_hidden = np.asarray(checkpoint.model.model.encoder(expected_mel).last_hidden_state)

    tokenizer = WhisperTokenizer.from_tokenizer(checkpoint.tokenizer.backend_tokenizer, checkpoint.multilingual)
    prompt = tokenizer.prompt("en", "transcribe", timestamps=False)
    rng = np.random.default_rng(0)
    tokens = prompt + [int(t) for t in rng.integers(0, tokenizer.special.eot, TEACHER_FORCED - len(prompt))]
    ours = np.stack([stepper.step(token) for token in tokens])
    expected = reference_logits(checkpoint, expected_mel, tokens)
    top2 = np.sort(expected, axis=-1)[:, -2:]
    return {"member": name, "dims": f"{size.d_model} wide, {size.heads} heads, {size.n_mels} mels, {size.n_vocab}",
            "mel": float(np.abs(log_mel - expected_mel).max()),
            "encoder": float(np.abs(hidden - expected_hidden).max() / np.abs(expected_hidden).max()),
            "logits": float(np.abs(ours - expected).max()), "margin": float((top2[:, 1] - top2[:, 0]).min()),
            "argmax": bool(np.array_equal(ours.argmax(-1), expected.argmax(-1)))}


def main(members: list[str]) -> None:
    audio = load_audio(SAMPLE)
    rows = []
    for name in members:
        with tempfile.TemporaryDirectory(prefix=f"shrunk-{name}-") as scratch:
            rows.append(measure(name, audio, Path(scratch)))
        print(rows[-1], file=sys.stderr, flush=True)
    info = machine()
    print(f"{info['cpu']} ({', '.join(info['simd'])}), whisper-tflite {info['versions']['whisper-tflite']}, "
          f"TensorFlow {info['versions']['tensorflow']}\n")
    print("| member (shrunk to 2 layers) | dimensions | mel error | encoder error (of the largest) | logits error "
          "| smallest top-2 margin | argmax of every position |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['member']} | {r['dims']} | {r['mel']:.1e} | {r['encoder']:.1e} | {r['logits']:.1e} "
              f"| {r['margin']:.1e} | {'the same' if r['argmax'] else 'DIFFERS'} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["small.en", "medium"])
