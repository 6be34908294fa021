"""Draws one clip's log-mel: reference, ours (TFLite), their difference, and the n_fft 512 approximation's error.

Regenerate with: .venv/bin/python docs/plot_features.py   (writes docs/features.png)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from whisper_tflite.audio import load_audio, pad_or_trim
from whisper_tflite.conversion import to_tflite
from whisper_tflite.evaluation import approximate_log_mel_nfft512
from whisper_tflite.graphs.features import FeatureExtractor
from whisper_tflite.reference import reference_features
from whisper_tflite.sources import load_whisper

HERE = Path(__file__).resolve().parent
CLIP = HERE.parent / "samples" / "jfk.flac"  # the manifest's en_jfk_whisper-cpp.wav, losslessly


def main(clip: Path = CLIP, out: Path = HERE / "features.png") -> None:
    checkpoint = load_whisper("tiny.en")
    pcm = pad_or_trim(load_audio(clip))
    reference = reference_features(checkpoint, pcm)[0]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "features.tflite"
        path.write_bytes(to_tflite(FeatureExtractor.from_checkpoint(checkpoint)))
        ours = Interpreter(model_path=str(path)).get_signature_runner()(pcm=pcm)["log_mel"][0]
    approx = approximate_log_mel_nfft512(pcm)[0]
    frames = int(np.ceil(len(load_audio(clip)) / 160)) + 50  # the speech, not the zero padding
    panels = [
        ("reference (Hugging Face WhisperFeatureExtractor)", reference, "magma", None),
        ("whisper-tflite features.tflite (n_fft 400)", ours, "magma", None),
        (f"|ours - reference|, max {np.abs(ours - reference).max():.1e}", np.abs(ours - reference), "viridis",
         (0, 2e-3)),
        (f"|n_fft 512 approximation - reference|, max {np.abs(approx - reference).max():.2f}",
         np.abs(approx - reference), "viridis", (0, 0.5)),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 10), constrained_layout=True)
    for axis, (title, image, cmap, limits) in zip(axes, panels):
        shown = axis.imshow(image[:, :frames], origin="lower", aspect="auto", cmap=cmap,
                            vmin=None if limits is None else limits[0], vmax=None if limits is None else limits[1])
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("mel bin")
        figure.colorbar(shown, ax=axis)
    axes[-1].set_xlabel(f"frame (10 ms) - {clip.name}")
    figure.savefig(out, dpi=90)
    print(out)


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:]))
