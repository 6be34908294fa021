"""The ggml export: whisper.cpp runs the very same weights and says the same words."""

from __future__ import annotations

import struct

import numpy as np

from whisper_tflite.sources.ggml import MAGIC, save_ggml


def test_whisper_cpp_transcribes_our_ggml_export(tiny_en, tmp_path, clips, audio_cache):
    from pywhispercpp.model import Model

    path = save_ggml(tiny_en, tmp_path / "ggml-tiny.en.bin")
    with open(path, "rb") as f:
        header = struct.unpack("<12i", f.read(48))
        n_mels, n_bins = struct.unpack("<2i", f.read(8))
        filters = np.frombuffer(f.read(4 * n_mels * n_bins), np.float32).reshape(n_mels, n_bins)
    assert header == (MAGIC, 51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1)
    np.testing.assert_array_equal(filters, np.asarray(tiny_en.feature_extractor.mel_filters, np.float32).T)
    model = Model(str(path), n_threads=2, print_progress=False, print_realtime=False)
    jfk = next(c for c in clips if c.name == "en_jfk_whisper-cpp.wav")
    text = " ".join(s.text for s in model.transcribe(audio_cache(jfk), language="en")).lower()
    assert "ask not what your country can do for you" in text.replace(",", "")
