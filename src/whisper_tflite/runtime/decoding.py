"""Decoding one 30 s window: Whisper's logit filters, greedy search or sampling, language detection.

Follows openai/whisper `decoding.py`; works on any `Stepper` (the TFLite bundle, or the reference model), so
the same algorithm can be held against the reference.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..tokens import WhisperTokenizer

MAX_INITIAL_TIMESTAMP_INDEX = 50  # the first timestamp is at most 1.0 s


class Stepper(Protocol):
    n_ctx: int

    def whole_log_mel(self, audio: np.ndarray) -> np.ndarray:
        """[n_mels, frames] of a whole recording, normalized by its loudest frame."""

    def begin(self, log_mel: np.ndarray) -> None:
        """Encodes a window [1, n_mels, 3000]; the token sequence starts empty."""

    def reset(self) -> None: ...

    def prefill(self, tokens: list[int]) -> None:
        """Feeds tokens whose logits are not needed (the previous-text prompt), from the first position."""

    def step(self, token: int) -> np.ndarray: ...

    def alignment_weights(self, tokens: list[int]) -> np.ndarray | None:
        """The alignment heads' cross-attention [heads, >= len(tokens), frames] of `tokens` from the first position
        on the begun window, softmax over the frames (word timestamps); None if they do not fit."""


@dataclass
class DecodingResult:
    tokens: list[int]  # sampled tokens, without the prompt and the final end-of-text
    token_logprobs: list[float]  # each sampled token's log-probability (word probabilities)
    text: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float = field(init=False)

    def __post_init__(self):
        self.compression_ratio = compression_ratio(self.text)


def compression_ratio(text: str) -> float:
    """How much zlib shrinks the text: repetition loops compress far better than speech."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def logsumexp(logits: np.ndarray) -> float:
    peak = logits.max()
    if peak == -np.inf:
        return -np.inf
    return float(peak + np.log(np.exp(logits - peak).sum()))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return logits - logsumexp(logits)


class LogitFilter:
    """Whisper's rules on the next-token logits: suppressed tokens, blank start, timestamp grammar."""

    def __init__(self, tokenizer: WhisperTokenizer, suppress: list[int], begin_suppress: list[int],
                 timestamps: bool):
        self.special = tokenizer.special
        self.suppress = np.asarray(sorted(set(suppress)), dtype=np.int64)
        self.begin_suppress = np.asarray(sorted(set(begin_suppress)), dtype=np.int64)
        self.timestamps = timestamps

    def __call__(self, logits: np.ndarray, sampled: list[int]) -> np.ndarray:
        logits = np.array(logits, dtype=np.float32)  # float32, as openai/whisper and CTranslate2 filter
        if not sampled:
            logits[self.begin_suppress] = -np.inf
        logits[self.suppress] = -np.inf
        if self.timestamps:
            self._timestamp_rules(logits, sampled)
        return logits

    def _timestamp_rules(self, logits: np.ndarray, sampled: list[int]) -> None:
        begin, eot = self.special.timestamp_begin, self.special.eot
        logits[self.special.no_timestamps] = -np.inf
        last_was_timestamp = len(sampled) >= 1 and sampled[-1] >= begin
        penultimate_was_timestamp = len(sampled) < 2 or sampled[-2] >= begin
        if last_was_timestamp:
            if penultimate_was_timestamp:  # a pair is closed: text must follow
                logits[begin:] = -np.inf
            else:  # an open timestamp must be closed (or the text ended)
                logits[:eot] = -np.inf
        stamps = [t for t in sampled if t >= begin]
        if stamps:
            # Timestamps never decrease, and a segment has a nonzero length.
            last = stamps[-1] if last_was_timestamp and not penultimate_was_timestamp else stamps[-1] + 1
            logits[begin:last] = -np.inf
        if not sampled:
            logits[:begin] = -np.inf  # a window starts with a timestamp
            logits[begin + MAX_INITIAL_TIMESTAMP_INDEX + 1 :] = -np.inf
        # Timestamps together outweigh any text token: take one. (Compared as logits: the softmax's
        # normalizer is the same on both sides.)
        if logsumexp(logits[begin:]) > logits[:begin].max():
            logits[:begin] = -np.inf


def detect_language(stepper: Stepper, tokenizer: WhisperTokenizer, allowed: list[str]) -> tuple[str, float]:
    """Language with the highest probability at the first step after start-of-transcript (on the begun window)."""
    stepper.reset()
    logits = stepper.step(tokenizer.special.sot).astype(np.float64)
    ids = np.asarray([tokenizer.special.languages[code] for code in allowed])
    probs = np.exp(log_softmax(logits[ids]))
    best = int(probs.argmax())
    return allowed[best], float(probs[best])


def decode_window(
    stepper: Stepper,
    tokenizer: WhisperTokenizer,
    logit_filter: LogitFilter,
    prompt: list[int],
    temperature: float = 0.0,
    rng: np.random.Generator | None = None,
    sample_len: int | None = None,
) -> DecodingResult:
    """Decodes the begun window after `prompt` (previous text and start-of-transcript sequence).

    At most `sample_len` tokens are sampled, by default as many as the context has room for (as faster-whisper;
    openai/whisper stops at half the context).
    """
    special = tokenizer.special
    stepper.reset()
    sot_index = prompt.index(special.sot)
    stepper.prefill(prompt[:sot_index])
    for i, token in enumerate(prompt[sot_index:]):
        logits = stepper.step(token)
        if i == 0:
            no_speech_prob = float(np.exp(logits[special.no_speech] - logsumexp(logits)))
    sample_len = sample_len or stepper.n_ctx - len(prompt)
    sampled: list[int] = []
    logprobs: list[float] = []
    sum_logprob = 0.0
    while True:
        filtered = logit_filter(logits, sampled)
        if temperature == 0.0:
            token = int(np.argmax(filtered))
        else:
            probs = np.exp(log_softmax(filtered / temperature), dtype=np.float64)
            token = int(rng.choice(len(probs), p=probs / probs.sum()))
        logprob = float(filtered[token]) - logsumexp(filtered)
        sum_logprob += logprob
        if token == special.eot:
            break
        sampled.append(token)
        logprobs.append(logprob)
        if len(sampled) >= sample_len or len(prompt) + len(sampled) >= stepper.n_ctx:
            break
        logits = stepper.step(token)
    return DecodingResult(
        tokens=sampled,
        token_logprobs=logprobs,
        text=tokenizer.decode(sampled),
        avg_logprob=sum_logprob / (len(sampled) + 1),
        no_speech_prob=no_speech_prob,
        temperature=temperature,
    )
