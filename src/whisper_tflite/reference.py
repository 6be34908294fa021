"""The reference: Hugging Face TF Whisper. Every converted model is held against it: its greedy `generate`, or
teacher-forced, its own greedy choice at every position of a given sequence (one forward pass instead of one per
token; a sequence that passes is exactly what greedy `generate` would produce, up to float rounding)."""

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


def reference_disagreement(
    checkpoint: WhisperCheckpoint, features: np.ndarray, tokens: list[int], prompt_length: int
) -> tuple[int, float] | None:
    """None if every token of `tokens` after the prompt is the reference's greedy choice given the tokens before
    it, with the suppression `generate` applies. Otherwise (index of the first token that is not, how far its
    logit lies below the reference's choice): a small margin is a near tie, a large one a defect."""
    logits = reference_logits(checkpoint, features, tokens[:-1]).astype(np.float64)
    logits[:, checkpoint.suppress_tokens] = -np.inf
    logits[prompt_length - 1, checkpoint.begin_suppress_tokens] = -np.inf
    for index in range(prompt_length, len(tokens)):
        row = logits[index - 1]
        if row.argmax() != tokens[index]:
            return index, float(row.max() - row[tokens[index]])
    return None
