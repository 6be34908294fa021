"""Word timestamps from the alignment heads' cross-attention, in numpy alone.

Ports openai/whisper `timing.py` (normalized attention, median filter, DTW, words split with the tokenizer,
punctuation merged) and faster-whisper 1.2.1's `add_word_timestamps` (the heuristics for long words at sentence
and segment boundaries, `last_speech_timestamp`), whose output the tests hold ours against. One difference by
design: a word's probability is the mean probability of its tokens as the decoding sampled them (with the
timestamp rules), not as a teacher-forced pass without timestamps scores them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from ..tokens import TIMESTAMP_STEP, WhisperTokenizer

MEDIAN_FILTER_WIDTH = 7
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"
NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}  # split by unicode units, not at spaces


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class WordTiming:
    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window of odd `width` along the last axis, reflect-padded (as openai/whisper)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.partition(windows, pad, axis=-1)[..., pad]  # the middle of an odd width: 2x faster than np.median


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The monotonic path of least total cost through [tokens, frames]: (token indices, frame indices).

    openai's recurrence, with ties broken as it does (a step in time last), computed one anti-diagonal at a
    time so that numpy does the inner loop: every cell of a diagonal depends only on the two before it."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf, np.float32)
    trace = np.full((n + 1, m + 1), -1, np.int8)
    total[0, 0] = 0
    for diagonal in range(2, n + m + 1):
        i = np.arange(max(1, diagonal - m), min(n, diagonal - 1) + 1)
        j = diagonal - i
        c0, c1, c2 = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        step = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        total[i, j] = cost[i - 1, j - 1] + np.choose(step, [c0, c1, c2])
        trace[i, j] = step
    trace[0, :], trace[:, 0] = 2, 1
    path = []
    i, j = n, m
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    path = np.array(path[::-1])
    return path[:, 0], path[:, 1]


def split_to_word_tokens(tokenizer: WhisperTokenizer, tokens: list[int], language: str
                         ) -> tuple[list[str], list[list[int]]]:
    """Words and their tokens: at spaces and punctuation, or at every whole unicode character for languages
    written without spaces (openai's `split_to_word_tokens`)."""
    subwords, subword_tokens = _split_on_unicode(tokenizer, tokens)
    if language in NO_SPACE_LANGUAGES:
        return subwords, subword_tokens
    words, word_tokens = [], []
    for subword, pieces in zip(subwords, subword_tokens):
        if subword.startswith(" ") or subword.strip() in string.punctuation or not words:
            words.append(subword)
            word_tokens.append(pieces)
        else:
            words[-1] += subword
            word_tokens[-1].extend(pieces)
    return words, word_tokens


def _split_on_unicode(tokenizer: WhisperTokenizer, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
    """Splits where the tokens so far decode to whole characters (a token may hold part of a UTF-8 sequence)."""
    decode = tokenizer.decode
    full = decode(tokens)
    words, word_tokens, current, offset = [], [], [], 0
    for token in tokens:
        current.append(token)
        decoded = decode(current)
        broken = decoded.find("\ufffd")
        if broken < 0 or (offset + broken < len(full) and full[offset + broken] == "\ufffd"):
            words.append(decoded)
            word_tokens.append(current)
            current = []
            offset += len(decoded)
    return words, word_tokens


def find_alignment(weights: np.ndarray, tokenizer: WhisperTokenizer, text_tokens: list[int],
                   token_probs: list[float], num_frames: int, start_length: int, language: str
                   ) -> list[WordTiming]:
    """Word timings within a window from the alignment heads' attention `weights` [heads, >= tokens, 1500] over
    the sequence start sequence (`start_length` tokens) + <|notimestamps|> + text + end-of-text."""
    if not text_tokens:
        return []
    length = start_length + len(text_tokens) + 2
    # The softmax over the window's real frames, from the graph's softmax over all 1500 (the same numbers).
    weights = weights[:, :length, : num_frames // 2].astype(np.float32)
    weights = weights / weights.sum(axis=-1, keepdims=True)
    mean = weights.mean(axis=-2, keepdims=True)
    std = weights.std(axis=-2, keepdims=True)
    weights = median_filter((weights - mean) / std, MEDIAN_FILTER_WIDTH)
    matrix = weights.mean(axis=0)[start_length:-1]
    text_indices, time_indices = dtw(-matrix)

    words, word_tokens = split_to_word_tokens(tokenizer, text_tokens, language)
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] * TIMESTAMP_STEP
    return [WordTiming(word, tokens, float(jump_times[i]), float(jump_times[j]), float(np.mean(token_probs[i:j])))
            for word, tokens, i, j in zip(words, word_tokens, boundaries[:-1], boundaries[1:])]


def merge_punctuations(alignment: list[WordTiming], prepended: str = PREPEND_PUNCTUATIONS,
                       appended: str = APPEND_PUNCTUATIONS) -> None:
    """Opening punctuation joins the next word and closing punctuation the previous one; the emptied entries
    stay (with no tokens) so that token counts still line up."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        previous, following = alignment[i], alignment[j]
        if previous.word.startswith(" ") and previous.word.strip() in prepended:
            following.word = previous.word + following.word
            following.tokens = previous.tokens + following.tokens
            previous.word, previous.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        previous, following = alignment[i], alignment[j]
        if not previous.word.endswith(" ") and following.word in appended:
            previous.word += following.word
            previous.tokens = previous.tokens + following.tokens
            following.word, following.tokens = "", []
        else:
            i = j
        j += 1


def add_word_timestamps(segments: list, weights: np.ndarray, tokenizer: WhisperTokenizer, start_length: int,
                        num_frames: int, time_offset: float, language: str, last_speech_timestamp: float,
                        prepend_punctuations: str = PREPEND_PUNCTUATIONS,
                        append_punctuations: str = APPEND_PUNCTUATIONS) -> None:
    """Sets `words` on the segments of one window (faster-whisper's `add_word_timestamps`), moving a segment's
    start and end to its words' unless a word looks too long. `last_speech_timestamp`: where the speech before
    this window ended (the caller keeps it, as faster-whisper's `generate_segments` does). The punctuation sets
    join the next and the previous word.

    Each segment needs `tokens` and `token_logprobs` (as sampled, timestamps included), `start` and `end`."""
    eot = tokenizer.special.eot
    per_segment = [[t for t in s.tokens if t < eot] for s in segments]
    probs = [float(np.exp(p)) for s in segments for t, p in zip(s.tokens, s.token_logprobs) if t < eot]
    text_tokens = [t for tokens in per_segment for t in tokens]
    alignment = find_alignment(weights, tokenizer, text_tokens, probs, num_frames, start_length, language)

    durations = np.array([w.end - w.start for w in alignment])
    durations = durations[durations.nonzero()]
    median_duration = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    max_duration = median_duration * 2
    if len(durations):
        # Words at sentence boundaries are at most twice the median word long (a VAD would do better).
        for i in range(1, len(alignment)):
            if alignment[i].end - alignment[i].start > max_duration:
                if alignment[i].word in SENTENCE_END_MARKS:
                    alignment[i].end = alignment[i].start + max_duration
                elif alignment[i - 1].word in SENTENCE_END_MARKS:
                    alignment[i].start = alignment[i].end - max_duration
    merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    index = 0
    for segment, tokens in zip(segments, per_segment):
        saved, words = 0, []
        while index < len(alignment) and saved < len(tokens):
            timing = alignment[index]
            if timing.word:
                words.append(Word(round(time_offset + timing.start, 2), round(time_offset + timing.end, 2),
                                  timing.word, timing.probability))
            saved += len(timing.tokens)
            index += 1
        if words:
            # The first and second word after a pause are at most twice the median word long.
            if words[0].end - last_speech_timestamp > median_duration * 4 and (
                    words[0].end - words[0].start > max_duration
                    or (len(words) > 1 and words[1].end - words[0].start > max_duration * 2)):
                if len(words) > 1 and words[1].end - words[1].start > max_duration:
                    boundary = max(words[1].end / 2, words[1].end - max_duration)
                    words[0].end = words[1].start = boundary
                words[0].start = max(0, words[0].end - max_duration)
            # The segment's own timestamps win over a first or last word that looks too long.
            if segment.start < words[0].end and segment.start - 0.5 > words[0].start:
                words[0].start = max(0, min(words[0].end - median_duration, segment.start))
            else:
                segment.start = words[0].start
            if segment.end > words[-1].start and segment.end + 0.5 < words[-1].end:
                words[-1].end = max(words[-1].start + median_duration, segment.end)
            else:
                segment.end = words[-1].end
            last_speech_timestamp = segment.end
        segment.words = words
