"""Live transcription: text while the speaker is still talking, from audio given a piece at a time.

Whisper is not a streaming model; this is the policy of Macháček, Polák and Bojar (2023), "Turning Whisper into
Real-Time Transcription System" (ufal/whisper_streaming, `whisper_online.py`), on the `Transcriber`'s own
decoding: at each new chunk the buffer of audio not yet committed is decoded again, with word timestamps, and
the words that two consecutive decodings agree on from its start are committed (LocalAgreement-2); the rest of
the latest decoding is the tentative tail. Once the buffer is longer than `buffer_trimming` seconds it is cut at
the end of the last segment whose words are all committed, and the committed text before the buffer is the
prompt of the next decodings. So each decoding is one 30 s encoder window and the few tokens of its buffer.

Where it differs from whisper_streaming:
- Greedy decoding by default (beam_size 1): re-decoding every second with beam 5 cost more than a second of
  compute per second of audio with tiny.en on 2 cores, and fell behind real time.
- Two decodings agree on a word by its text without case and surrounding punctuation (a word that gains a
  comma once its sentence goes on is the same word); the committed word is the later decoding's.
- The buffer is kept within `max_buffer` (one encoder window): where no committed segment end lets it be cut, it
  is cut at the last committed word, else the tentative words of its first half are committed.
- Committed words are clamped to stay in time order.
"""

from __future__ import annotations

import dataclasses
import string
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..audio import SAMPLE_RATE
from ..errors import UsageError
from .timing import Word
from .transcriber import TranscriptionOptions, whole_audio

if TYPE_CHECKING:
    from .transcriber import Transcriber

AGREEMENT_NGRAM = 5  # committed words that may come back at the start of a decoding, and are dropped there
EARLY_START = 0.1  # seconds: a decoded word may start this much before the last commit's end and still be new
NEAR_LAST_COMMIT = 1.0  # seconds: only a decoding that starts this close to the last commit repeats its words
PROMPT_CHARACTERS = 200  # of committed text before the buffer, as whisper_streaming's prompt
MIN_DECODED = 0.1  # seconds: a shorter buffer is not decoded
SILENT_KEEP = 2.0  # seconds of a buffer without any word kept for the next decoding (speech may be starting)
NO_SPEECH = 0.9  # segments more likely silence than this give no words (as whisper_streaming)
# A decoding's tokens at most (unless max_new_tokens is given): speech is under 5 a second with the timestamps,
# and a loop stops there instead of at half the context. CTranslate2's limit also halves it with a short prompt.
TOKENS_PER_SECOND = 10
EXTRA_TOKENS = 24


@dataclass
class LiveUpdate:
    """What one call gives: the words committed by it (final, in time order, never given again) and the
    tentative tail after them (the latest decoding's words not yet agreed on; each update replaces it)."""

    committed: list[Word]
    tentative: list[Word]

    @property
    def text(self) -> str:
        """The committed words' text, as it continues the text committed before."""
        return "".join(w.word for w in self.committed)


def _key(word: Word) -> str:
    """What two decodings must agree on: the word without case and surrounding punctuation."""
    text = word.word.strip()
    return text.lower().strip(string.punctuation + "“”‘’¿¡") or text


class LiveTranscription:
    """The audio given so far (`insert_audio`), decoded again at each new chunk (`process`) until `finish`.

    Made by `Transcriber.live`. Not safe to share between threads: one stream, one caller. Each decoding takes one
    of the transcriber's workers for its duration, so many live transcriptions can share a `Transcriber`."""

    def __init__(self, transcriber: Transcriber, language: str | None, task: str, options: TranscriptionOptions,
                 chunk_size: float, buffer_trimming: float, max_buffer: float):
        self.transcriber = transcriber
        self.language = language  # None until the first decoding with words detects it
        self.task = task
        self.options = options
        self.chunk_size = chunk_size
        self.buffer_trimming = buffer_trimming
        self.max_buffer = max_buffer
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0.0  # seconds: where the buffer begins in the stream
        self.committed: list[Word] = []  # every word committed, in order
        self.tentative: list[Word] = []  # the latest decoding's words after the committed ones
        self._decoded_samples = 0  # of the buffer, at the last decoding
        self._finished = False

    @property
    def duration(self) -> float:
        """Seconds of audio given so far."""
        return self.buffer_start + len(self.buffer) / SAMPLE_RATE

    @property
    def pending(self) -> float:
        """Seconds of audio given since the last decoding."""
        return (len(self.buffer) - self._decoded_samples) / SAMPLE_RATE

    @property
    def text(self) -> str:
        """The committed text so far."""
        return "".join(w.word for w in self.committed).strip()

    def insert_audio(self, pcm: np.ndarray) -> None:
        """Appends 16 kHz mono samples: float in -1..1, or int16 (scaled)."""
        if self._finished:
            raise UsageError("this live transcription is finished: start a new one with Transcriber.live")
        pcm = np.asarray(pcm)
        if pcm.ndim != 1:
            raise UsageError(f"insert_audio takes 16 kHz mono samples, one dimension; got the shape {pcm.shape}")
        if pcm.dtype == np.int16:
            pcm = pcm.astype(np.float32) / 32768.0
        elif pcm.dtype.kind != "f":
            raise UsageError(f"insert_audio takes float samples in -1..1 or int16, not {pcm.dtype}")
        self.buffer = np.concatenate([self.buffer, pcm.astype(np.float32, copy=False)])

    def process(self) -> LiveUpdate:
        """Decodes the buffer again if at least `chunk_size` seconds came since the last decoding, commits what it
        agrees on with the one before, and trims the buffer; otherwise nothing is committed."""
        if self._finished:
            raise UsageError("this live transcription is finished: start a new one with Transcriber.live")
        if self.pending < self.chunk_size or len(self.buffer) < MIN_DECODED * SAMPLE_RATE:
            return LiveUpdate([], list(self.tentative))
        segments = self._decode()
        if segments is None:  # a loop: the tentative tail stands, to agree with the next decoding
            return LiveUpdate(self._trim(None), list(self.tentative))
        hypothesis = self._unseen(self._words(segments))
        agreed = 0
        while agreed < min(len(hypothesis), len(self.tentative)) and \
                _key(hypothesis[agreed]) == _key(self.tentative[agreed]):
            agreed += 1
        committed = self._commit(hypothesis[:agreed])
        self.tentative = hypothesis[agreed:]
        committed += self._trim(segments)
        return LiveUpdate(committed, list(self.tentative))

    def finish(self) -> LiveUpdate:
        """The end of the audio: decodes what came since the last decoding, and commits the whole tail."""
        if self._finished:
            return LiveUpdate([], [])
        tail = self.tentative
        if self.pending > 0 and len(self.buffer) >= MIN_DECODED * SAMPLE_RATE:
            segments = self._decode()
            tail = tail if segments is None else self._unseen(self._words(segments))
        self._finished = True
        self.tentative = []
        return LiveUpdate(self._commit(tail), [])

    def _decode(self) -> list | None:
        """The buffer's segments (their times in the stream), decoded after the committed text before it; None
        if the decoding ran into a loop (its text compresses better than `compression_ratio_threshold`)."""
        seconds = len(self.buffer) / SAMPLE_RATE
        limit = self.options.max_new_tokens or min(round(seconds * TOKENS_PER_SECOND) + EXTRA_TOKENS,
                                                   self.transcriber.stepper.n_ctx // 2 - EXTRA_TOKENS)
        options = dataclasses.replace(self.options, initial_prompt=self._prompt(), max_new_tokens=limit)
        stream = self.transcriber.stream(self.buffer, self.language, self.task, options=options,
                                         keep_last_segment=True)
        segments = list(stream.segments)
        self._decoded_samples = len(self.buffer)
        threshold = self.options.compression_ratio_threshold
        if threshold is not None and any(s.compression_ratio > threshold for s in segments):
            return None
        for segment in segments:
            segment.start += self.buffer_start
            segment.end += self.buffer_start
            for word in segment.words:
                word.start += self.buffer_start
                word.end += self.buffer_start
        if self.language is None and any(s.words for s in segments):
            self.language = stream.language
        return segments

    def _prompt(self) -> str | None:
        """The user's initial prompt, then up to `PROMPT_CHARACTERS` of the committed text before the buffer."""
        before = "".join(w.word for w in self.committed if w.end <= self.buffer_start)
        if len(before) > PROMPT_CHARACTERS:  # whole words
            cut = before.find(" ", len(before) - PROMPT_CHARACTERS)
            before = before[cut:] if cut >= 0 else before[-PROMPT_CHARACTERS:]
        parts = [p.strip() for p in (self.options.initial_prompt, before) if p and p.strip()]
        return " ".join(parts) or None

    @staticmethod
    def _words(segments: list) -> list[Word]:
        return [Word(w.start, w.end, w.word, w.probability)
                for s in segments if s.no_speech_prob <= NO_SPEECH for w in s.words]

    def _unseen(self, words: list[Word]) -> list[Word]:
        """The decoded words after the committed ones. Where the decoding repeats the last committed words (up to
        `AGREEMENT_NGRAM`, ending near the last commit's end), the words after them, whatever their times: a word
        right after a commit may be timed a little before its end. Otherwise those starting after the last commit,
        less up to `AGREEMENT_NGRAM` words at their start that repeat the last committed ones."""
        last_end = self.committed[-1].end if self.committed else self.buffer_start
        in_buffer = [w for w in self.committed if w.end > self.buffer_start]
        keys = [_key(w) for w in words]
        for n in range(min(len(in_buffer), AGREEMENT_NGRAM), 0, -1):  # the longest repeat first
            tail = [_key(w) for w in in_buffer[-n:]]
            for i in range(len(words) - n, -1, -1):  # the latest place, as the tail is the text's latest
                if keys[i : i + n] == tail and abs(words[i + n - 1].end - last_end) < NEAR_LAST_COMMIT:
                    return words[i + n :]
        words = [w for w in words if w.start > last_end - EARLY_START]
        if words and in_buffer and abs(words[0].start - last_end) < NEAR_LAST_COMMIT:
            for n in range(1, min(len(in_buffer), len(words), AGREEMENT_NGRAM) + 1):
                if [_key(w) for w in in_buffer[-n:]] == [_key(w) for w in words[:n]]:
                    return words[n:]
        return words

    def _commit(self, words: list[Word]) -> list[Word]:
        """Commits words, each clamped to start no earlier than the one before ended."""
        for word in words:
            last_end = self.committed[-1].end if self.committed else 0.0
            word.start = max(word.start, last_end)
            word.end = max(word.end, word.start)
            self.committed.append(word)
        return words

    def _trim(self, segments: list | None) -> list[Word]:
        """Cuts the buffer: past `buffer_trimming`, at the latest end of a segment that the commits have passed
        (not the last while words after it are tentative); past `max_buffer`, at the last committed word, then if
        still longer after the tentative words of its first half, committed, or by its excess; without any word,
        to its last `SILENT_KEEP` seconds. `segments`: the last decoding's, None if it failed (then only
        `max_buffer` applies). -> the words committed."""
        length = len(self.buffer) / SAMPLE_RATE
        last_end = self.committed[-1].end if self.committed else self.buffer_start
        if segments is not None and not self.tentative and last_end <= self.buffer_start and \
                not any(s.words for s in segments):
            self._cut(self.buffer_start + max(0.0, length - SILENT_KEEP))
            return []
        if segments and length > self.buffer_trimming:
            # The last segment too once every word decoded is committed: a pause, or the speech caught up
            complete = segments if not self.tentative else segments[:-1]
            ends = [s.end for s in complete if self.buffer_start < s.end <= last_end]
            if ends:
                self._cut(ends[-1])
                length = len(self.buffer) / SAMPLE_RATE
        if length <= self.max_buffer:
            return []
        if last_end > self.buffer_start:
            self._cut(last_end)
            length = len(self.buffer) / SAMPLE_RATE
            if length <= self.max_buffer:
                return []
        # Nothing agreed on for max_buffer seconds: the latest decoding's words of the first half are taken as
        # they are; without any there, only the excess goes
        half = self.buffer_start + length / 2
        forced = [w for w in self.tentative if w.end <= half]
        self.tentative = self.tentative[len(forced):]
        committed = self._commit(forced)
        self._cut(max(committed[-1].end if committed else 0.0, self.buffer_start + length - self.max_buffer))
        return committed

    def _cut(self, time_s: float) -> None:
        """Drops the buffer's audio before `time_s` (seconds in the stream)."""
        samples = min(len(self.buffer), max(0, round((time_s - self.buffer_start) * SAMPLE_RATE)))
        self.buffer = self.buffer[samples:]
        self.buffer_start += samples / SAMPLE_RATE
        self._decoded_samples = max(0, self._decoded_samples - samples)


def live_options(options: TranscriptionOptions) -> TranscriptionOptions:
    """`options` for live decoding: word timestamps on; refuses those that cannot apply to a growing buffer."""
    refused = {"batch_size": options.batch_size is not None,
               "clip_timestamps": not whole_audio(options.clip_timestamps), "prefix": options.prefix is not None,
               "without_timestamps": options.without_timestamps, "multilingual": options.multilingual}
    named = [name for name, given in refused.items() if given]
    if named:
        raise UsageError(f"{', '.join(named)}: not with live transcription (it decodes a buffer that grows and is "
                         "cut, a window at a time, with word timestamps)")
    return dataclasses.replace(options, word_timestamps=True)


@dataclass
class Simulation:
    """A live transcription of a recording fed at 1x against a virtual clock (`simulate`)."""

    duration: float  # seconds of audio
    words: list[Word]  # committed, in order
    commit_times: list[float]  # the clock (seconds from the audio's start) when each word was committed
    compute: list[float]  # measured seconds of each call (process, then finish)
    charged: list[float]  # what the clock was charged for each call

    @property
    def text(self) -> str:
        return "".join(w.word for w in self.words).strip()

    @property
    def latencies(self) -> np.ndarray:
        """Seconds from each committed word's end in the audio to its commit."""
        return np.array([t - w.end for w, t in zip(self.words, self.commit_times)])

    @property
    def compute_per_second(self) -> float:
        """Measured compute per second of audio: below 1 keeps up with real time."""
        return sum(self.compute) / self.duration


def simulate(live: LiveTranscription, audio: np.ndarray, charge: float | None = None) -> Simulation:
    """Feeds 16 kHz `audio` to `live` as a microphone would, at 1x on a virtual clock: each call waits until
    `live.chunk_size` seconds more have arrived (or the audio's end), gets everything arrived by then, and
    moves the clock on by its measured compute time, or by `charge` seconds if given (deterministic: the chunks,
    so the text, then do not depend on the machine). Words are stamped with the clock at their commit."""
    total, chunk = len(audio), round(live.chunk_size * SAMPLE_RATE)
    clock, fed = 0.0, 0
    words, times, compute, charged = [], [], [], []

    def call(method) -> None:
        nonlocal clock
        begun = time.perf_counter()
        update = method()
        elapsed = time.perf_counter() - begun
        compute.append(elapsed)
        charged.append(elapsed if charge is None else charge)
        clock += charged[-1]
        words.extend(update.committed)
        times.extend([clock] * len(update.committed))

    while fed < total:
        clock = max(clock, min(fed + chunk, total) / SAMPLE_RATE)  # wait for the next chunk
        arrived = min(total, max(fed + chunk, int(clock * SAMPLE_RATE)))
        live.insert_audio(audio[fed:arrived])
        fed = arrived
        if fed < total:
            call(live.process)
    call(live.finish)
    return Simulation(total / SAMPLE_RATE, words, times, compute, charged)
