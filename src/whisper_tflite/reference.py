"""The reference: Hugging Face TF Whisper, greedy `generate`. Every converted model is held against it."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .audio import N_SAMPLES, SAMPLE_RATE, pad_or_trim
from .sources import WhisperCheckpoint


@dataclass(frozen=True)
class ReferenceResult:
    tokens: list[int]  # the whole sequence: prompt, text tokens and the final end-of-text
    text: str


def reference_features(checkpoint: WhisperCheckpoint, audio: np.ndarray) -> np.ndarray:
    """Log-mel [1, n_mels, 3000] of the first 30 s, by the Hugging Face `WhisperFeatureExtractor`."""
    features = checkpoint.feature_extractor(
        pad_or_trim(audio, N_SAMPLES), sampling_rate=SAMPLE_RATE, return_tensors="np"
    ).input_features
    return features.astype(np.float32)


def reference_transcribe(
    checkpoint: WhisperCheckpoint,
    audio: np.ndarray | None = None,
    language: str | None = None,
    task: str = "transcribe",
    features: np.ndarray | None = None,
    max_length: int | None = None,
) -> ReferenceResult:
    """Greedy transcription of the first 30 s, without timestamps.

    Language and task are passed explicitly on a fresh copy of the generation config: TF `generate` writes them
    into the config it is given, and a shared one would leak them into later calls.
    """
    if features is None:
        features = reference_features(checkpoint, audio)
    config = copy.deepcopy(checkpoint.generation_config)
    if max_length is not None:
        config.max_length = max_length
    options = {}
    if checkpoint.multilingual:
        options = {"language": language or "en", "task": task}
    elif language not in (None, "en") or task != "transcribe":
        raise ValueError(f"{checkpoint.source} is English-only: it cannot {task} {language}")
    output = checkpoint.model.generate(features, generation_config=config, **options)
    tokens = [int(t) for t in np.asarray(output)[0]]
    return ReferenceResult(tokens, checkpoint.tokenizer.decode(tokens, skip_special_tokens=True).strip())


def reference_logits(checkpoint: WhisperCheckpoint, features: np.ndarray, tokens: list[int]) -> np.ndarray:
    """Raw next-token logits [len(tokens), vocab] with `tokens` teacher-forced: row i predicts token i+1."""
    output = checkpoint.model(input_features=features, decoder_input_ids=np.asarray([tokens], dtype=np.int32))
    return np.asarray(output.logits)[0]
