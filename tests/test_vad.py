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
from whisper_tflite.runtime.vad import (SpeechTimestampsMap, VadModel, VadOptions, collect_chunks,
                                         get_speech_timestamps)

PROBABILITY_TOLERANCE = 1e-3
# faster-whisper's defaults, on every recording; on the gapped one, the options its BatchedInferencePipeline uses
# and tighter ones that split long speech at its pauses and drop short chunks
OPTION_SETS = [{}, {"max_speech_duration_s": 30, "min_silence_duration_ms": 160},
               {"threshold": 0.6, "min_speech_duration_ms": 250, "max_speech_duration_s": 8,
                "min_silence_duration_ms": 500, "speech_pad_ms": 100}]


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


@pytest.mark.parametrize("options", OPTION_SETS, ids=["defaults", "batched", "tight"])
def test_speech_timestamps_match_faster_whisper(options, vad, clips, audio_cache, gapped):
    from faster_whisper import vad as theirs

    audios = [(clip.name, audio_cache(clip)) for clip in clips if not options] + [(gapped.name, gapped.audio)]
    chunks = 0
    for name, audio in audios:
        expected = theirs.get_speech_timestamps(audio, theirs.VadOptions(**options))
        assert get_speech_timestamps(audio, vad, VadOptions(**options)) == expected, name
        chunks += len(expected)
    print(f"\n{chunks} speech chunks in {len(audios)} recordings, all as faster-whisper's")
    assert chunks >= len(audios) and (not options or chunks >= len(gapped.spans))


def test_chunks_and_time_map_match_faster_whisper(vad, gapped):
    """On the gapped recording's speech: the joined pieces, their metadata, and times mapped back."""
    from faster_whisper import vad as theirs

    speech = theirs.get_speech_timestamps(gapped.audio, theirs.VadOptions(min_silence_duration_ms=160))
    assert len(speech) >= 2 * len(gapped.spans)
    for max_duration in (float("inf"), 30.0):
        ours_pieces, ours_metadata = collect_chunks(gapped.audio, speech, max_duration=max_duration)
        their_pieces, their_metadata = theirs.collect_chunks(gapped.audio, speech, max_duration=max_duration)
        assert ours_metadata == their_metadata
        assert len(ours_pieces) == len(their_pieces)
        assert all(np.array_equal(a, b) for a, b in zip(ours_pieces, their_pieces))
    ours_map, their_map = SpeechTimestampsMap(speech, 16000), theirs.SpeechTimestampsMap(speech, 16000)
    speech_seconds = sum(c["end"] - c["start"] for c in speech) / 16000
    ends = [c / 16000 for c in their_map.chunk_end_sample]  # exactly at chunk boundaries too
    for time in [*np.linspace(0, speech_seconds, 500).round(3), *ends]:
        for is_end in (False, True):
            assert ours_map.get_original_time(time, is_end=is_end) == their_map.get_original_time(time, is_end=is_end)
    assert collect_chunks(gapped.audio, [])[1] == theirs.collect_chunks(gapped.audio, [])[1]
