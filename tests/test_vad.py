"""The `vad` model and the VAD filter, held against faster-whisper 1.2.1: its Silero VAD ONNX model on
onnxruntime, its `get_speech_timestamps`, and its `transcribe(..., vad_filter=True)` on the same CTranslate2
weights.

The gapped recording is built at test time: every English clip with a transcript, the gaps between them 8-25 s
of silence, low noise, mains hum and a sustained chord in turn (about 9 minutes).
"""

from __future__ import annotations

import numpy as np
import pytest

from whisper_tflite.evaluation import gapped_recording
from whisper_tflite.runtime.vad import VadModel

PROBABILITY_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def gapped(english_clips, audio_cache):
    return gapped_recording("English clips with gaps", [c for c in english_clips if c.reference], audio_cache)


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    from whisper_tflite.graphs.vad import SileroVad

    path = tmp_path_factory.mktemp("vad") / "vad.tflite"
    SileroVad.from_checkpoint().tflite(path)
    return VadModel(path, threads=2)


def onnx_probabilities(audio: np.ndarray) -> np.ndarray:
    """faster-whisper's speech probabilities, padded as its `get_speech_timestamps` pads the audio."""
    from faster_whisper.vad import get_vad_model

    return get_vad_model()(np.pad(audio, (0, 512 - len(audio) % 512)))


def test_speech_probabilities_match_faster_whisper(vad, clips, audio_cache, gapped):
    audios = [(clip.name, audio_cache(clip)) for clip in clips] + [(gapped.name, gapped.audio)]
    worst = 0.0
    for name, audio in audios:
        ours, theirs = vad(audio), onnx_probabilities(audio)
        assert ours.shape == theirs.shape, name
        difference = float(np.abs(ours - theirs).max())
        assert difference <= PROBABILITY_TOLERANCE, f"{name}: {difference:.2e}"
        worst = max(worst, difference)
    print(f"\nlargest speech probability difference over {len(audios)} recordings "
          f"({sum(len(a) for _, a in audios) / 16000 / 60:.1f} min): {worst:.2e}")
