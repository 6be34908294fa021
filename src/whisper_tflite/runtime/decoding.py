"""Decoding one 30 s window: Whisper's logit filters, greedy search, beam search or sampling, language detection.

Follows openai/whisper `decoding.py`, and for beam search and best-of sampling CTranslate2's `BeamSearch` and
`GreedySearch` as faster-whisper calls them. Works on a `Stepper` (the bundle's models: `models.TfliteStepper`);
faster-whisper on the same weights, not this code, is what its behaviour is held against.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import UsageError
from ..tokens import WhisperTokenizer

DEFAULT_MAX_INITIAL_TIMESTAMP_INDEX = 50  # the first timestamp is at most 1.0 s


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

    batch_size: int  # rows of `step_batch`; 1 without a batch model

    def fork(self, slots: int | None = None) -> None:
        """Every row of the batch continues the sequence fed so far, filling at most `slots` cache slots."""

    def step_batch(self, tokens: np.ndarray, origins: np.ndarray | None = None) -> np.ndarray:
        """Row j takes over row origins[j]'s sequence, then is fed tokens[j]; -> logits [batch, vocab]."""

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


def logsumexp(logits: np.ndarray) -> float | np.ndarray:
    """log(sum(exp(logits))) over the last axis: a float for one row, an array for rows; -inf where every logit
    is -inf."""
    peak = logits.max(axis=-1, keepdims=True)
    peak[peak == -np.inf] = 0.0
    with np.errstate(divide="ignore"):  # log(0) of an all -inf row is its -inf
        total = peak[..., 0] + np.log(np.exp(logits - peak).sum(axis=-1))
    return float(total) if logits.ndim == 1 else total


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return logits - logsumexp(logits)


class LogitFilter:
    """Whisper's rules on the next-token logits, in CTranslate2's order: repetition penalty, repeated n-grams,
    suppressed tokens, blank start (`begin_suppress`), timestamp grammar.

    A sequence's first `sample_begin` tokens are a forced prefix: the blank-start and timestamp rules start after
    it, and as in CTranslate2 (not openai/whisper) a window must start with a timestamp only without one."""

    def __init__(self, tokenizer: WhisperTokenizer, suppress: list[int], begin_suppress: list[int],
                 timestamps: bool, max_initial_timestamp_index: int = DEFAULT_MAX_INITIAL_TIMESTAMP_INDEX,
                 repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0):
        self.special = tokenizer.special
        self.suppress = np.asarray(sorted(set(suppress)), dtype=np.int64)
        self.begin_suppress = np.asarray(sorted(set(begin_suppress)), dtype=np.int64)
        self.timestamps = timestamps
        self.max_initial_timestamp_index = max_initial_timestamp_index
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram_size = no_repeat_ngram_size

    def __call__(self, logits: np.ndarray, sampled: list[int], sample_begin: int = 0) -> np.ndarray:
        return self.rows(logits[np.newaxis], [sampled], sample_begin)[0]

    def rows(self, logits: np.ndarray, sequences: list[list[int]], sample_begin: int = 0) -> np.ndarray:
        """The rules on each row of logits [rows, vocab], row i continuing sequences[i] (the beams of a step);
        the whole-vocabulary passes run once for all rows."""
        logits = np.array(logits, dtype=np.float32)  # float32, as openai/whisper and CTranslate2 filter
        for row, sampled in zip(logits, sequences):
            if self.repetition_penalty != 1 and sampled:  # CTranslate2's: on the raw logits of the tokens so far
                seen = np.unique(sampled)
                row[seen] = np.where(row[seen] < 0, row[seen] * self.repetition_penalty,
                                     row[seen] / self.repetition_penalty)
            if self.no_repeat_ngram_size:
                row[repeated_ngram_ends(sampled, self.no_repeat_ngram_size)] = -np.inf
        logits[:, self.suppress] = -np.inf
        weigh = np.zeros(len(logits), bool)  # rows where timestamps may outweigh the text
        for i, (row, sampled) in enumerate(zip(logits, sequences)):
            if len(sampled) == sample_begin:
                row[self.begin_suppress] = -np.inf
            if self.timestamps:
                weigh[i] = self._timestamp_grammar(row, sampled[sample_begin:], sample_begin == 0)
        if weigh.any():
            # Timestamps together outweigh any text token: take one. (Compared as logits: the softmax's
            # normalizer is the same on both sides.)
            begin = self.special.timestamp_begin
            rows = np.flatnonzero(weigh)
            outweigh = logsumexp(logits[rows, begin:]) > logits[rows, :begin].max(axis=-1)
            logits[rows[outweigh], :begin] = -np.inf
        return logits

    def _timestamp_grammar(self, logits: np.ndarray, sampled: list[int], window_start: bool) -> bool:
        """CTranslate2's `ApplyTimestampRules` on one row after `sampled` (the tokens after the prefix); -> whether
        the timestamps' total may then outweigh the text (after text, or after an opening timestamp)."""
        begin, eot = self.special.timestamp_begin, self.special.eot
        logits[self.special.no_timestamps] = -np.inf
        if not sampled:
            if window_start:  # a window starts with a timestamp, at most max_initial_timestamp in
                logits[:begin] = -np.inf
                logits[begin + self.max_initial_timestamp_index + 1 :] = -np.inf
            return False
        last = sampled[-1]
        if last >= begin:
            if len(sampled) < 2 or sampled[-2] >= begin:  # a pair is closed: text must follow
                logits[begin:] = -np.inf
                return False
            logits[:eot] = -np.inf  # an open timestamp must be closed (or the text ended), not before itself
            logits[begin:last] = -np.inf
            return True
        stamp = next((t for t in reversed(sampled) if t >= begin), None)
        if stamp is not None:  # timestamps never decrease, and a segment has a nonzero length
            logits[begin : stamp + 1] = -np.inf
        return True


def repeated_ngram_ends(sequence: list[int], size: int) -> np.ndarray:
    """The tokens that would repeat an n-gram of `size` tokens already in the sequence (CTranslate2's
    `NoRepeatNgram`: after each earlier occurrence of the last size - 1 tokens, the token that followed)."""
    if len(sequence) < size:
        return np.zeros(0, np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(sequence, np.int64), size)
    tail = windows[-1, 1:]
    return windows[(windows[:, :-1] == tail).all(axis=1), -1]


def detect_language(stepper: Stepper, tokenizer: WhisperTokenizer,
                    allowed: list[str]) -> list[tuple[str, float]]:
    """Every allowed language with its probability at the first step after start-of-transcript (on the begun
    window), the likeliest first."""
    stepper.reset()
    logits = stepper.step(tokenizer.special.sot).astype(np.float64)
    ids = np.asarray([tokenizer.special.languages[code] for code in allowed])
    probs = np.exp(log_softmax(logits[ids]))
    return [(allowed[i], float(probs[i])) for i in np.argsort(-probs, kind="stable")]


def decode_window(
    stepper: Stepper,
    tokenizer: WhisperTokenizer,
    logit_filter: LogitFilter,
    prompt: list[int],
    temperature: float = 0.0,
    rng: np.random.Generator | None = None,
    max_length: int | None = None,
    prefix: list[int] = (),
) -> DecodingResult:
    """Decodes the begun window after `prompt` (previous text and start-of-transcript sequence) and the forced
    `prefix` tokens, which open the result with a log-probability of 0 each (as CTranslate2's prefix).

    The result holds at most `max_length` tokens, the prefix's included, by default as many as the context has
    room for (as faster-whisper; openai/whisper stops at half the context).
    """
    special = tokenizer.special
    logits, no_speech_prob = feed_prompt(stepper, tokenizer, prompt + list(prefix))
    max_length = max_length or stepper.n_ctx - len(prompt)
    sampled: list[int] = list(prefix)
    logprobs: list[float] = [0.0] * len(prefix)
    sum_logprob = 0.0
    while True:
        filtered = logit_filter(logits, sampled, len(prefix))
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
        if len(sampled) >= max_length or len(prompt) + len(sampled) >= stepper.n_ctx:
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


def feed_prompt(stepper: Stepper, tokenizer: WhisperTokenizer, prompt: list[int]) -> tuple[np.ndarray, float]:
    """Feeds the prompt from the first position: the logits after it, and the no-speech probability (read at
    start-of-transcript)."""
    special = tokenizer.special
    stepper.reset()
    sot_index = prompt.index(special.sot)
    stepper.prefill(prompt[:sot_index])
    for i, token in enumerate(prompt[sot_index:]):
        logits = stepper.step(token)
        if i == 0:
            no_speech_prob = float(np.exp(logits[special.no_speech] - logsumexp(logits)))
    return logits, no_speech_prob


def length_limit(prompt_length: int, n_ctx: int, prefix_length: int = 0, max_new_tokens: int | None = None) -> int:
    """CTranslate2's limit on the tokens a window's result holds, a prefix's included: half its max_length, or
    what the prompt leaves of it (the prompt's last token is the first one the search feeds). Its max_length is
    the context, or with faster-whisper's `max_new_tokens` the prompt and prefix plus that many, refused (as
    faster-whisper's ValueError) where that passes the context."""
    total = n_ctx if max_new_tokens is None else prompt_length + prefix_length + max_new_tokens
    if total > n_ctx:
        raise UsageError(f"max_new_tokens {max_new_tokens}: with the {prompt_length + prefix_length} prompt and "
                         f"prefix tokens before it, it passes the model's {n_ctx}-token context; lower it")
    return min(total // 2, total - prompt_length + 1)


def max_finished_hypotheses(beam_size: int, patience: float) -> int:
    """CTranslate2's round(beam_size * patience), which rounds halves up (Python's round would make 2.5 2)."""
    return math.floor(beam_size * patience + 0.5)


Hypothesis = tuple[float, list[int], list[float]]  # cumulative log-probability, tokens, each token's log-probability


def _best(hypotheses: list[Hypothesis], length_penalty: float, tokenizer: WhisperTokenizer,
          no_speech_prob: float, temperature: float) -> DecodingResult:
    """The hypothesis with CTranslate2's best final score, cumulative / length ** length_penalty, with the
    average log-probability faster-whisper recovers from that score: the cumulative log-probability (end-of-text
    included) over the token count plus one."""
    cumulative, tokens, logprobs = max(hypotheses,
                                       key=lambda h: h[0] / len(h[1]) ** length_penalty if h[1] else -np.inf)
    return DecodingResult(tokens=tokens, token_logprobs=logprobs[:len(tokens)], text=tokenizer.decode(tokens),
                          avg_logprob=cumulative / (len(tokens) + 1), no_speech_prob=no_speech_prob,
                          temperature=temperature)


def _top_extensions(filtered: np.ndarray, scores: np.ndarray,
                    count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The `count` best (beam, token) extensions by cumulative log-probability, best first: their beams, tokens,
    the tokens' log-probabilities and the cumulative ones. `filtered`: each beam's filtered logits [beams, vocab];
    `scores`: each beam's cumulative log-probability.

    Only the extensions within a margin of the best are normalized and ranked: the smallest of 8, 10, ... 16 that
    holds `count` of them (8 at 93 % of the steps on the English clips, 12 at most). A wider margin could
    hold most of the beams x vocabulary values, and a log-softmax and sort of them all took twice as long.
    """
    normalizers = logsumexp(filtered)
    offsets = scores - normalizers  # cumulative log-probability = logit + offset
    best = float((filtered.max(axis=-1) + offsets).max())
    for margin in (8.0, 10.0, 12.0, 14.0, 16.0):
        near = np.flatnonzero(filtered > (best - margin - offsets)[:, np.newaxis])
        if len(near) >= count:
            break
    else:
        near = np.arange(filtered.size)
    beams, tokens = np.divmod(near, filtered.shape[1])
    logprobs = filtered[beams, tokens] - normalizers[beams]
    totals = logprobs + scores[beams]
    if len(near) > count:
        kept = np.sort(np.argpartition(-totals, count - 1)[:count])
        beams, tokens, logprobs, totals = beams[kept], tokens[kept], logprobs[kept], totals[kept]
    order = np.argsort(-totals, kind="stable")  # ties: the lower beam, then the lower token
    return beams[order], tokens[order], logprobs[order], totals[order]


class BeamSearch:
    """One window's beam search, as CTranslate2's `BeamSearch`: each step ranks the 2 * beam_size best (beam, token)
    extensions by cumulative log-probability; an end-of-text among the first beam_size finishes that hypothesis
    and the next candidate that is not one takes its place; the search stops once round(beam_size * patience)
    hypotheses are finished, or at `max_length` tokens (where the live beams count as finished). The hypothesis
    with the best cumulative log-probability / length ** length_penalty wins.

    A forced `prefix` opens every hypothesis with a log-probability of 0 and counts in `max_length`; as in
    CTranslate2, an end-of-text right after it finishes only the best candidate (the others become dead beams).

    The caller runs the model: `advance` takes the live beams' filtered logits (at first the prompt's single
    sequence) and says which beams go on with which tokens."""

    def __init__(self, beam_size: int, patience: float, max_length: int, eot: int, prefix: list[int] = ()):
        self.beam_size, self.max_length, self.eot = beam_size, max_length, eot
        self.max_finished = max_finished_hypotheses(beam_size, patience)
        self.prefix_length = len(prefix)
        self.sequences: list[list[int]] = [list(prefix)]  # the live beams' tokens
        self.logprobs: list[list[float]] = [[0.0] * len(prefix)]
        self.scores = np.zeros(1, np.float32)
        self.finished: list[Hypothesis] = []
        self.steps = len(prefix)

    def advance(self, filtered: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """`filtered`: the live beams' filtered logits [beams, vocab]. Returns the next step's beams, each as the
        beam it continues (its origin) and the token it is fed; None once the search is over."""
        beam_size, eot = self.beam_size, self.eot
        candidates = 2 * beam_size
        beams, tokens, gains, totals = _top_extensions(filtered, self.scores, candidates)
        if 0 < self.prefix_length == self.steps:
            dead = np.flatnonzero(tokens[1:] == eot) + 1
            tokens[dead], totals[dead] = 0, -1e10
        self.steps += 1
        last_step = self.steps >= self.max_length
        chosen, secondary = [], beam_size
        for k in range(beam_size):
            pick = k
            if tokens[k] == eot or last_step:
                ended = self.sequences[beams[k]] + ([] if tokens[k] == eot else [int(tokens[k])])
                self.finished.append((float(totals[k]), ended, self.logprobs[beams[k]] + [float(gains[k])]))
                for j in range(secondary, candidates):  # the best candidate left that goes on
                    if tokens[j] != eot:
                        pick, secondary = j, j + 1
                        break
            chosen.append(pick)
        if last_step or len(self.finished) >= self.max_finished:
            return None
        origins, next_tokens = beams[chosen], tokens[chosen]
        self.sequences = [self.sequences[b] + [int(t)] for b, t in zip(origins, next_tokens)]
        self.logprobs = [self.logprobs[b] + [float(gain)] for b, gain in zip(origins, gains[chosen])]
        self.scores = totals[chosen]
        return origins, next_tokens

    def best(self, length_penalty: float, tokenizer: WhisperTokenizer, no_speech_prob: float) -> DecodingResult:
        return _best(self.finished, length_penalty, tokenizer, no_speech_prob, 0.0)


def beam_search(stepper: Stepper, tokenizer: WhisperTokenizer, logit_filter: LogitFilter, prompt: list[int],
                beam_size: int, patience: float = 1.0, length_penalty: float = 1.0, max_length: int | None = None,
                prefix: list[int] = ()) -> DecodingResult:
    """`BeamSearch` on the begun window after `prompt` and `prefix`, at most `max_length` tokens long (by default
    CTranslate2's `max_length`). The first step extends the prompt's single sequence; then the beams are the rows
    of `stepper.step_batch`."""
    logits, no_speech_prob = feed_prompt(stepper, tokenizer, prompt + list(prefix))
    max_length = max_length or length_limit(len(prompt), stepper.n_ctx)
    search = BeamSearch(beam_size, patience, max_length, tokenizer.special.eot, prefix)
    rows = logits[np.newaxis]
    padding = stepper.batch_size - beam_size  # spare rows repeat the first beam; their logits are dropped
    first = True
    while (going := search.advance(logit_filter.rows(rows, search.sequences, len(prefix)))) is not None:
        origins, next_tokens = going
        if first:
            stepper.fork(len(prompt) + search.max_length - 1)  # the last step feeds no token
            origins, first = None, False
        else:
            origins = np.concatenate([origins, np.repeat(origins[:1], padding)])
        rows = stepper.step_batch(np.concatenate([next_tokens, np.repeat(next_tokens[:1], padding)]),
                                  origins)[:beam_size]
    return search.best(length_penalty, tokenizer, no_speech_prob)


def sample_best_of(stepper: Stepper, tokenizer: WhisperTokenizer, logit_filter: LogitFilter, prompt: list[int],
                   temperature: float, rng: np.random.Generator, best_of: int, length_penalty: float = 1.0,
                   max_length: int | None = None, prefix: list[int] = ()) -> DecodingResult:
    """`best_of` independent samples at `temperature` over the whole vocabulary (CTranslate2's `GreedySearch`
    with `num_hypotheses=best_of`, `sampling_topk=0`), each after `prefix` and at most `max_length` tokens long
    (by default CTranslate2's); the best by cumulative log-probability / length ** length_penalty wins. The
    samples run as rows of `stepper.step_batch`, `batch_size` at a time."""
    eot = tokenizer.special.eot
    max_length = max_length or length_limit(len(prompt), stepper.n_ctx)
    steps = max(1, max_length - len(prefix))
    samples: list[Hypothesis] = []
    while len(samples) < best_of:
        lanes = min(stepper.batch_size, best_of - len(samples))
        logits, no_speech_prob = feed_prompt(stepper, tokenizer, prompt + list(prefix))
        rows = np.repeat(logits[np.newaxis], lanes, axis=0)
        sequences: list[list[int]] = [list(prefix) for _ in range(lanes)]
        logprobs: list[list[float]] = [[0.0] * len(prefix) for _ in range(lanes)]
        cumulative = np.zeros(lanes)
        alive = np.ones(lanes, bool)
        for step in range(steps):
            tokens = np.full(stepper.batch_size, eot, np.int32)
            for lane in np.flatnonzero(alive):
                filtered = logit_filter(rows[lane], sequences[lane], len(prefix))
                probs = np.exp(log_softmax(filtered / temperature), dtype=np.float64)
                token = int(rng.choice(len(probs), p=probs / probs.sum()))
                logprob = float(filtered[token]) - logsumexp(filtered)
                cumulative[lane] += logprob
                logprobs[lane].append(logprob)
                tokens[lane] = token
                if token == eot:
                    alive[lane] = False
                else:
                    sequences[lane].append(token)
            if not alive.any() or step + 1 == steps:
                break
            if lanes == 1:  # one sample at a time on the single-sequence model
                rows = stepper.step(int(tokens[0]))[np.newaxis]
                continue
            if step == 0:
                stepper.fork(len(prompt) + max_length - 1)
            rows = stepper.step_batch(tokens)
        samples += zip(cumulative.tolist(), sequences, logprobs)
    return _best(samples, length_penalty, tokenizer, no_speech_prob, temperature)
