"""The log-mel graph against Hugging Face's WhisperFeatureExtractor, on every clip (the reference's tokens from our
log-mel: test_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from whisper_tflite.audio import pad_or_trim
from whisper_tflite.conversion import to_tflite
from whisper_tflite.evaluation import approximate_log_mel_nfft512
from whisper_tflite.graphs.features import FeatureExtractor
from whisper_tflite.reference import reference_features


@pytest.fixture(scope="session")
def features_graph(tiny_en):
    return FeatureExtractor.from_checkpoint(tiny_en)


@pytest.fixture(scope="session")
def features_tflite(features_graph, tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "features.tflite"
    path.write_bytes(to_tflite(features_graph))
    return path


def test_features_match_reference_on_every_clip(clips, audio_cache, tiny_en, features_graph, features_tflite):
    runner = Interpreter(model_path=str(features_tflite)).get_signature_runner()
    rows = []
    for clip in clips:
        pcm = pad_or_trim(audio_cache(clip))
        reference = reference_features(tiny_en, pcm)
        ours_tf = features_graph(pcm=pcm)["log_mel"].numpy()
        ours_tflite = runner(pcm=pcm)["log_mel"]
        approx = approximate_log_mel_nfft512(pcm)
        assert ours_tflite.shape == reference.shape == (1, 80, 3000)
        rows.append((clip.name, *(np.abs(x - reference).max() for x in (ours_tf, ours_tflite, approx)),
                     *(np.abs(x - reference).mean() for x in (ours_tf, ours_tflite, approx))))
    print(f"\n{'clip':48s} {'max tf':>9s} {'max tfl':>9s} {'max 512':>9s} {'mean tf':>9s} {'mean tfl':>9s} "
          f"{'mean 512':>9s}")
    for row in rows:
        print(f"{row[0]:48s} " + " ".join(f"{v:9.2e}" for v in row[1:]))
    worst = np.max(np.array([r[1:] for r in rows]), axis=0)
    # Measured: max 3.1e-5, mean 1.2e-7 (float32 rounding); 1e-4 leaves room for other CPUs.
    assert worst[0] <= 1e-4 and worst[1] <= 1e-4, "max abs difference"
    assert worst[3] <= 1e-6 and worst[4] <= 1e-6, "mean abs difference"
    # The approximation we replace is clearly worse: that is the point of the exact graph.
    assert worst[2] > 10 * max(worst[0], worst[1])


def test_features_model_holds_only_builtin_ops(features_tflite):
    interpreter = Interpreter(model_path=str(features_tflite))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops and not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    detail = interpreter.get_signature_runner().get_input_details()["pcm"]
    assert list(detail["shape"]) == [480000]
