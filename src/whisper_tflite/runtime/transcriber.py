"""Transcription of audio of any length: Whisper's sequential long-form algorithm over 30 s windows.

Follows faster-whisper's `generate_segments` (itself openai/whisper's `transcribe.py`): each window is decoded
with timestamps after a prompt of the previous windows' tokens, timestamp tokens included; the next window
starts at the end of the last complete segment; temperature fallback guards against repetition loops
(compression ratio) and unsure output (average log-probability); windows the model calls silence are skipped.
The options carry faster-whisper's names and defaults, all of its `transcribe`'s: clips, a prefix, hotwords, the
logit options (suppressed tokens, repetition penalty, repeated n-grams, the first timestamp's limit), windows
without timestamps or each in its own language, skipped hallucinations. faster-whisper on the same CTranslate2
weights is the oracle the tests hold this module against.

Where this module deliberately differs from faster-whisper 1.2.1:
- The log-mel is faster-whisper's (one STFT over the file, normalized by its loudest frame, sliced per window,
  zero-padded in the log-mel domain), computed 30 s at a time by the bundle's features model with real
  neighbours at every chunk edge; faster-whisper also counts a frame of the 160 zeros it appends in the maximum.
- Digital silence (below -80 dBFS) is skipped without decoding: a window of it, or 2 s or more of it at the
  start of a window (the window then starts 0.2 s before the sound). Decoded, Whisper says " you" in it, or
  starts the next segment within 1 s of where the window starts (the first timestamp's limit), up to 29 s early.
- The maximum number of tokens a window decodes is CTranslate2's (half the context) in beam search and best-of
  sampling, but what the context leaves after the prompt in greedy decoding and single samples.
- Segment times are rounded to the millisecond and clamped to the audio's duration.
- Word probabilities are the decoding's own token probabilities (see `timing.py`), and words are clamped into
  their segment (faster-whisper's heuristics can start its first word before it or end its last word after it).
- With the VAD filter, times are mapped back to the original audio to the millisecond, not to 10 ms; on audio
  without speech, the language is still detected (on its first 30 s) when it is not given.
- The hotwords and the previous text share the prompt's n_text_ctx // 2 - 1 tokens (the prefill's width), the
  previous text cut from its start; faster-whisper gives each that many.
- A window's language detected with `multilingual` is not reported per segment (as in faster-whisper) but decides
  its prompt and its words' split.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Generator, Iterator

import numpy as np

from ..audio import (FRAMES_PER_SECOND, HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE, AudioSource, load_audio,
                     source_name)
from ..bundle import CHUNKS_MODEL, Bundle
from ..errors import AudioError, BundleError, UsageError
from ..tokens import TIMESTAMP_STEP, WhisperTokenizer
from .decoding import (DecodingResult, LogitFilter, Stepper, beam_search, decode_window, detect_language,
                       length_limit, max_finished_hypotheses, sample_best_of)
from .batched import BatchedDecoder, batched_vad_options
from .timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS, Word, add_word_timestamps
from .vad import SpeechTimestampsMap, VadModel, VadOptions, collect_chunks, get_speech_timestamps

if TYPE_CHECKING:
    from .live import LiveTranscription

# Audio quieter than -80 dBFS RMS holds no speech: decoding a window of it makes Whisper invent " you", and a
# window that starts with seconds of it puts the first segment's start there (a first timestamp is at most 1 s).
SILENCE_RMS = 1e-4
MIN_SKIPPED_SILENCE = 200  # mel frames: shorter leading silence is decoded as it is
SILENCE_MARGIN = 20  # mel frames of silence kept before the speech
FRAMES_PER_TOKEN = 2  # mel frames per timestamp step (0.02 s)
# Words within this text are punctuation, which faster-whisper leaves out when it scores words as hallucinations
HALLUCINATION_PUNCTUATION = PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS


@dataclass(frozen=True)
class TranscriptionOptions:
    """The long-form options, named and defaulted as faster-whisper's `transcribe` (and openai-whisper's)."""

    temperature: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    prompt_reset_on_temperature: float = 0.5
    initial_prompt: str | None = None
    prefix: str | None = None  # the text the first window (at 0 s) starts with, forced
    hotwords: str | None = None  # prompt text of every window, before the previous text; not with a prefix
    beam_size: int = 5  # at temperature 0; 1 is greedy decoding
    best_of: int = 5  # samples at each temperature above 0
    patience: float = 1.0  # beam search stops after round(beam_size * patience) finished hypotheses
    length_penalty: float = 1.0  # hypotheses rank by log-probability / length ** length_penalty
    repetition_penalty: float = 1.0  # the logits of the tokens so far: / it if positive, * it if negative
    no_repeat_ngram_size: int = 0  # no n-gram of this many tokens twice in a window (0: off)
    suppress_blank: bool = True  # no blank (a space or end-of-text) first
    # Token ids never sampled; -1 stands for the checkpoint's list (its non-speech symbols). The control tokens
    # are added to a list, but an empty list (or None) suppresses nothing, as in faster-whisper.
    suppress_tokens: tuple[int, ...] | None = (-1,)
    without_timestamps: bool = False  # text tokens only: a window is one segment
    max_initial_timestamp: float = 1.0  # seconds: the latest a window's first timestamp may be
    max_new_tokens: int | None = None  # tokens a window decodes at most, as faster-whisper caps them
    # Clips to transcribe: "start,end,start,end,..." in seconds or a list of them, the last end defaulting to the
    # end of the audio; they replace the VAD filter.
    clip_timestamps: str | tuple[float, ...] = "0"
    multilingual: bool = False  # multilingual models: each window's language is detected anew
    word_timestamps: bool = False
    prepend_punctuations: str = PREPEND_PUNCTUATIONS  # word timestamps: these join the next word
    append_punctuations: str = APPEND_PUNCTUATIONS  # and these the previous one
    # With word timestamps: skip silences longer than this (seconds) around a likely hallucination
    hallucination_silence_threshold: float | None = None
    vad_filter: bool = False  # decode only the speech Silero VAD finds, as faster-whisper's vad_filter
    vad_parameters: VadOptions | dict | None = None  # VadOptions or a dict of its fields; None: its defaults
    # Language detection (multilingual models, no language given): up to this many 30 s windows, until one's
    # likeliest language is more probable than the threshold (None: the first window decides); else the
    # language most windows found.
    language_detection_threshold: float | None = 0.5
    language_detection_segments: int = 1
    # Decode the speech in chunks of up to 30 s, this many at a time, as faster-whisper's BatchedInferencePipeline
    # (runtime/batched.py); vad_parameters then default as its (`batched_vad_options`).
    batch_size: int | None = None

    def __post_init__(self):
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise UsageError(f"batch_size must be a whole number of at least 1, got {self.batch_size!r}")
        object.__setattr__(self, "vad_parameters", VadOptions.of(self.vad_parameters) if self.batch_size is None
                           else batched_vad_options(self.vad_parameters))
        for name in ("beam_size", "best_of", "language_detection_segments"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a whole number of at least 1, got {value!r}")
        if not self.patience > 0 or max_finished_hypotheses(self.beam_size, self.patience) < 1:  # as CTranslate2
            raise UsageError(f"patience {self.patience!r} leaves beam search no hypothesis to finish: "
                             "round(beam_size * patience) must be at least 1")
        temperatures = self.temperature
        if isinstance(temperatures, (int, float)):
            temperatures = (temperatures,)
        temperatures = tuple(float(t) for t in temperatures)
        if not temperatures or any(not 0.0 <= t <= 2.0 for t in temperatures):
            raise UsageError(f"temperature must be a value or a list of values in 0..2, got {self.temperature!r}")
        object.__setattr__(self, "temperature", temperatures)
        if self.suppress_tokens is not None:
            tokens = (self.suppress_tokens,) if isinstance(self.suppress_tokens, int) else self.suppress_tokens
            if isinstance(tokens, str) or any(isinstance(t, bool) or not isinstance(t, int) or t < -1
                                              for t in tokens):
                raise UsageError(f"suppress_tokens must be token ids (-1: the default set), got "
                                 f"{self.suppress_tokens!r}")
            object.__setattr__(self, "suppress_tokens", tuple(tokens))
        object.__setattr__(self, "clip_timestamps", clip_times(self.clip_timestamps))
        if self.batch_size is not None and not whole_audio(self.clip_timestamps):
            raise UsageError("clip_timestamps: not with batch_size in whisper-tflite yet (batched transcription "
                             "decodes the speech the VAD finds)")
        for name, least in (("max_new_tokens", 1), ("no_repeat_ngram_size", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise UsageError(f"{name} must be a whole number of at least {least}, got {value!r}")
        if not self.repetition_penalty > 0:  # as CTranslate2
            raise UsageError(f"repetition_penalty must be more than 0, got {self.repetition_penalty!r}")
        for name in ("max_initial_timestamp", "hallucination_silence_threshold"):
            value = getattr(self, name)
            if (value is not None or name == "max_initial_timestamp") and not (
                    isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise UsageError(f"{name} must be a number of seconds, 0 or more, got {value!r}")
        for name in ("prefix", "hotwords", "prepend_punctuations", "append_punctuations"):
            value = getattr(self, name)
            if not isinstance(value, str) and (value is not None or name.endswith("punctuations")):
                raise UsageError(f"{name} must be text, got {value!r}")


@dataclass
class Segment:
    start: float
    end: float
    text: str
    tokens: list[int] = field(repr=False, default_factory=list)  # as sampled: timestamp tokens included
    token_logprobs: list[float] = field(repr=False, default_factory=list)  # one per token
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    compression_ratio: float = 0.0
    words: list[Word] | None = None  # with word_timestamps only
    seek: int = 0  # the first mel frame of the window it was decoded in
    id: int = 0  # its place in the transcript, from 0


@dataclass
class TranscriptionResult:
    text: str
    language: str
    language_probability: float
    segments: list[Segment]
    duration: float

    def to_dict(self) -> dict:
        return {
            "language": self.language,
            "language_probability": self.language_probability,
            "text": self.text,
            "segments": [_segment_dict(s) for s in self.segments],
        }


@dataclass
class TranscriptionStream:
    """A transcription whose segments come as each window is decoded (`Transcriber.stream`)."""

    language: str
    language_probability: float
    duration: float  # seconds of the audio given
    duration_after_vad: float  # seconds decoded: the speech the VAD filter kept, else `duration`
    all_language_probs: list[tuple[str, float]] | None  # where the language was detected, the likeliest first
    segments: Iterator[Segment]


def _segment_dict(segment: Segment) -> dict:
    """openai-whisper's segment fields, so its users' code reads ours."""
    entry = {"id": segment.id, "seek": segment.seek, "start": segment.start, "end": segment.end, "text": segment.text,
             "tokens": segment.tokens, "temperature": segment.temperature, "avg_logprob": segment.avg_logprob,
             "compression_ratio": segment.compression_ratio, "no_speech_prob": segment.no_speech_prob}
    if segment.words is not None:
        entry["words"] = [{"start": w.start, "end": w.end, "word": w.word, "probability": round(w.probability, 4)}
                          for w in segment.words]
    return entry


def clip_times(clip_timestamps) -> tuple[float, ...]:
    """`clip_timestamps` in seconds: "start,end,..." (or numbers) -> a tuple of floats."""
    try:
        if isinstance(clip_timestamps, str):
            times = tuple(float(t) for t in clip_timestamps.split(",")) if clip_timestamps.strip() else ()
        else:
            times = tuple(float(t) for t in clip_timestamps)
    except (TypeError, ValueError):
        raise UsageError(f"clip_timestamps {clip_timestamps!r}: give start,end,start,end,... in seconds") from None
    if any(not 0 <= t < math.inf for t in times):
        raise UsageError(f"clip_timestamps {clip_timestamps!r}: times are seconds, 0 or more")
    return times


def whole_audio(clip_timestamps: tuple[float, ...]) -> bool:
    """Whether the clips are the default, the whole audio (with which the VAD filter may run)."""
    return clip_timestamps in ((), (0.0,))


def _clips(times: tuple[float, ...], content_frames: int) -> list[tuple[int, int]]:
    """faster-whisper's clips in mel frames: pairs of `times`, the last end the end of the audio."""
    points = [round(t * FRAMES_PER_SECOND) for t in times] or [0]
    if len(points) % 2:
        points.append(content_frames)
    return list(zip(points[::2], points[1::2]))


def logit_filter(tokenizer: WhisperTokenizer, options: TranscriptionOptions, suppress: list[int],
                 begin_suppress: list[int], timestamps: bool) -> LogitFilter:
    """The logit rules of `options` (the checkpoint's `suppress` and `begin_suppress` lists: its
    suppress_tokens=-1 and blank tokens), as faster-whisper hands them to CTranslate2."""
    return LogitFilter(tokenizer, suppressed_tokens(tokenizer, options.suppress_tokens, suppress),
                       begin_suppress if options.suppress_blank else [], timestamps,
                       max_initial_timestamp_index=round(options.max_initial_timestamp / TIMESTAMP_STEP),
                       repetition_penalty=options.repetition_penalty,
                       no_repeat_ngram_size=options.no_repeat_ngram_size)


def suppressed_tokens(tokenizer: WhisperTokenizer, suppress_tokens: tuple[int, ...] | None,
                      default: list[int]) -> list[int]:
    """faster-whisper's `get_suppressed_tokens`: the ids given, -1 standing for the checkpoint's list
    (`default`), and the control tokens that never belong in a transcript; nothing for no ids."""
    if not suppress_tokens:
        return []
    special = tokenizer.special
    controls = [special.transcribe, special.translate, special.sot, special.sot_prev, special.sot_lm,
                special.no_speech]
    chosen = {t for t in suppress_tokens if t >= 0} | (set(default) if -1 in suppress_tokens else set())
    return sorted(chosen | set(controls))


def previous_text(tokenizer: WhisperTokenizer, hotwords: str | None, previous: list[int], room: int) -> list[int]:
    """The prompt before the start sequence, as faster-whisper's `get_prompt` makes it: <|startofprev|>, the
    hotwords' tokens and the previous text's, nothing if there are neither. They share `room` tokens (the
    prefill's; faster-whisper gives each as many), the previous text cut from its start."""
    hotwords = tokenizer.encode(" " + hotwords.strip())[:room] if hotwords else []
    previous = previous[max(0, len(previous) - (room - len(hotwords))):]
    return [tokenizer.special.sot_prev] + hotwords + previous if hotwords or previous else []


@dataclass
class _State:
    """What a transcription's windows carry from one to the next."""

    language: str
    rng: np.random.Generator
    rules: LogitFilter
    all_tokens: list[int] = field(default_factory=list)  # the text so far, from the initial prompt on
    prompt_reset_since: int = 0  # where the previous text of the prompt begins in it
    last_speech_timestamp: float = 0.0
    ids: Iterator[int] = field(default_factory=itertools.count)


@dataclass
class _Window:
    """What one window decodes after: its prompt, forced prefix, and the start sequence its words align after."""

    language: str
    prompt: list[int]
    prefix: list[int]
    start_sequence: list[int]


class LongFormDecoder:
    """The long-form algorithm on any `Stepper`."""

    def __init__(self, stepper: Stepper, tokenizer: WhisperTokenizer, suppress: list[int],
                 begin_suppress: list[int]):
        self.stepper = stepper
        self.tokenizer = tokenizer
        self.suppress = suppress  # the checkpoint's suppress_tokens (-1) and begin_suppress_tokens (blank)
        self.begin_suppress = begin_suppress

    def check(self, options: TranscriptionOptions) -> None:
        """Refuses options this bundle cannot decode with."""
        batch = self.stepper.batch_size
        if options.beam_size > 1 and batch == 1:
            raise UsageError(f"beam_size {options.beam_size} needs the decoder_batch model, which this bundle lacks "
                             "(convert it again, or use beam_size 1)")
        if options.beam_size > batch:
            raise UsageError(f"beam_size {options.beam_size} is larger than this bundle's decoder_batch batch of "
                             f"{batch}")

    def transcribe(self, audio: np.ndarray, language: str | None = None, task: str = "transcribe",
                   options: TranscriptionOptions = TranscriptionOptions(),
                   progress: Callable[[int, int], None] | None = None, seed: int = 0) -> TranscriptionResult:
        language, language_probability, _, segments = self.stream(audio, language, task, options, progress, seed)
        segments = list(segments)
        text = "".join(s.text for s in segments).strip()
        return TranscriptionResult(text, language, language_probability, segments, len(audio) / SAMPLE_RATE)

    def stream(self, audio: np.ndarray, language: str | None = None, task: str = "transcribe",
               options: TranscriptionOptions = TranscriptionOptions(),
               progress: Callable[[int, int], None] | None = None, seed: int = 0,
               keep_last_segment: bool = False) -> tuple[str, float, list[tuple[str, float]] | None,
                                                         Iterator[Segment]]:
        """The language (detected now if not given, from the first clip's start), its probability, every
        language's where it was detected, and the segments as each window is decoded. `keep_last_segment`: the
        window that reaches the end of the audio keeps its unfinished last segment, where long-form decoding
        would decode the audio again from that segment's start (live transcription: the audio ends there for
        now, and the window is one encoder call less)."""
        self.check(options)
        log_mel = self.stepper.whole_log_mel(audio)
        start = int(options.clip_timestamps[0] * FRAMES_PER_SECOND) if options.clip_timestamps else 0
        start = start if start < log_mel.shape[1] else 0  # as faster-whisper
        language, probability, probabilities = self.language(log_mel[:, start:], language, options)
        # The window loop reads which frames are silent, not the samples: they are freed once this returns
        # (an hour of them is 230 MB).
        return language, probability, probabilities, self._segments(
            _loud_frames(audio), round(len(audio) / SAMPLE_RATE, 3), log_mel, language, task, options, progress,
            seed, keep_last_segment)

    def _segments(self, loud: np.ndarray, duration: float, log_mel: np.ndarray, language: str, task: str,
                  options: TranscriptionOptions, progress: Callable[[int, int], None] | None,
                  seed: int, keep_last_segment: bool = False) -> Iterator[Segment]:
        content_frames = log_mel.shape[1]
        state = _State(language, np.random.default_rng(seed),
                       logit_filter(self.tokenizer, options, self.suppress, self.begin_suppress,
                                    timestamps=not options.without_timestamps))
        if options.initial_prompt is not None:
            state.all_tokens = self.tokenizer.encode(" " + options.initial_prompt.strip())
        for clip_start, clip_end in _clips(options.clip_timestamps, content_frames):
            clip_end = min(clip_end, content_frames)
            seek = clip_start
            while seek < clip_end:
                previous_seek = seek
                segment_frames = min(N_FRAMES, clip_end - seek)
                silent = _leading_silence(loud[seek : seek + segment_frames])
                if silent == segment_frames:
                    seek += segment_frames
                elif silent >= MIN_SKIPPED_SILENCE:
                    seek += silent - SILENCE_MARGIN  # start the window just before the speech
                else:
                    seek = yield from self._window_segments(state, log_mel, seek, segment_frames, task, options,
                                                            duration,
                                                            keep_last_segment and seek + segment_frames >= clip_end)
                if progress is not None:
                    progress(min(seek, content_frames) - previous_seek, content_frames)

    def _window_segments(self, state: _State, log_mel: np.ndarray, seek: int, segment_frames: int, task: str,
                         options: TranscriptionOptions, duration: float,
                         keep_unfinished: bool = False) -> Generator[Segment, None, int]:
        """Decodes the window of `segment_frames` frames at `seek` and yields its segments (its unfinished last
        one too if `keep_unfinished`); -> the next window's first frame."""
        self.stepper.begin(_window(log_mel, seek, segment_frames))
        window = self._window_prompt(state.all_tokens[state.prompt_reset_since:], state.language, task, options,
                                     first=seek == 0)
        state.language = window.language
        result, temperature = self._decode_with_fallback(window, options, state.rules, state.rng)
        if self._is_silence(result, options):
            return seek + segment_frames
        segments, next_seek, single_timestamp_ending = self._split(result, temperature, seek, segment_frames,
                                                                   keep_unfinished)
        if options.word_timestamps:
            self._add_words(segments, window, segment_frames, seek, state.last_speech_timestamp, options)
            last_word_end = _last_end(segments)
            # As faster-whisper: the next window starts after the last word, not the last timestamp.
            if not single_timestamp_ending and last_word_end is not None and \
                    last_word_end > seek / FRAMES_PER_SECOND:
                next_seek = round(last_word_end * FRAMES_PER_SECOND)
            if options.hallucination_silence_threshold is not None:
                skipped = _skip_hallucinations(segments, options.hallucination_silence_threshold, seek,
                                               segment_frames, log_mel.shape[1], state.last_speech_timestamp)
                if skipped is not None:
                    next_seek, segments, leading = skipped
                    if leading:  # silence, then a likely hallucination: the window again after the silence
                        return next_seek
            last_word_end = _last_end(segments)
            if last_word_end is not None:
                state.last_speech_timestamp = last_word_end
        kept = [s for s in segments if s.start != s.end and s.text.strip()]
        for segment in kept:
            state.all_tokens.extend(segment.tokens)
        if not options.condition_on_previous_text or temperature > options.prompt_reset_on_temperature:
            state.prompt_reset_since = len(state.all_tokens)
        for segment in kept:
            segment.id = next(state.ids)
            yield _within(segment, duration)
        return next_seek

    def _window_prompt(self, previous: list[int], language: str, task: str, options: TranscriptionOptions,
                       first: bool) -> _Window:
        """faster-whisper's `get_prompt` for the begun window: the hotwords (unless a prefix is forced) and the
        previous text (`previous_text`), then the start sequence in the window's language (detected on it with
        `multilingual`); the prefix only in the window at 0 s."""
        tokenizer, special = self.tokenizer, self.tokenizer.special
        room = self.stepper.n_ctx // 2 - 1
        if options.multilingual and tokenizer.multilingual:
            language = detect_language(self.stepper, tokenizer, tokenizer.languages)[0][0]
        prefix = tokenizer.encode(" " + options.prefix.strip())[:room] if options.prefix and first else []
        prompt = previous_text(tokenizer, None if prefix else options.hotwords, previous, room)
        start_sequence = tokenizer.prompt(language, task, timestamps=True)
        if options.without_timestamps:
            prompt += start_sequence + [special.no_timestamps]
        else:
            prompt += start_sequence
            prefix = [special.timestamp_begin] + prefix if prefix else []
        if len(prompt) + len(prefix) >= self.stepper.n_ctx:
            raise UsageError(f"prefix: its {len(prefix)} tokens after a prompt of {len(prompt)} leave no room in the "
                             f"model's {self.stepper.n_ctx}-token context; shorten it or the initial prompt")
        return _Window(language, prompt, prefix, start_sequence)

    def language(self, log_mel: np.ndarray, language: str | None,
                 options: TranscriptionOptions = TranscriptionOptions(), whole_windows: bool = False
                 ) -> tuple[str, float, list[tuple[str, float]] | None]:
        """The language to decode, its probability and, where it was detected, every language's: English for
        English-only models, else `language`, else as faster-whisper detects it (`TranscriptionOptions`).

        The windows tried are those of faster-whisper's `transcribe`: from the start while they begin at most
        `language_detection_segments` windows in (a second is tried after an unsure first, even for one
        segment); `whole_windows`, those of its `detect_language`: the first `language_detection_segments`."""
        if not self.tokenizer.multilingual:
            return "en", 1.0, None
        if language is not None:
            return language, 1.0, None
        found: dict[str, list[float]] = {}
        frames = log_mel.shape[1]
        last = min(N_FRAMES * options.language_detection_segments, frames) - (1 if whole_windows else 0)
        for seek in range(0, last + 1, N_FRAMES):
            self.stepper.begin(_window(log_mel, seek, min(N_FRAMES, frames - seek)))
            probabilities = detect_language(self.stepper, self.tokenizer, self.tokenizer.languages)
            language, probability = probabilities[0]
            threshold = options.language_detection_threshold
            if threshold is None or probability > threshold:
                return language, probability, probabilities
            found.setdefault(language, []).append(probability)
        language = max(found, key=lambda code: len(found[code]))
        return language, max(found[language]), probabilities

    @staticmethod
    def _is_silence(result: DecodingResult, options: TranscriptionOptions) -> bool:
        """Likely no speech, unless the text was decoded confidently all the same."""
        if options.no_speech_threshold is None or result.no_speech_prob <= options.no_speech_threshold:
            return False
        return options.log_prob_threshold is None or result.avg_logprob <= options.log_prob_threshold

    def _decode_with_fallback(self, window: _Window, options: TranscriptionOptions, rules: LogitFilter,
                              rng: np.random.Generator) -> tuple[DecodingResult, float]:
        """Beam search (or greedy) first, then sampling at rising temperatures while the output looks like a loop
        or is unsure.

        Returns the result and the last temperature tried (which decides whether the prompt is reset). If every
        temperature fails, the most confident attempt among those that are not loops wins, as in faster-whisper.
        """
        prompt, prefix = window.prompt, window.prefix
        max_length = None if options.max_new_tokens is None else \
            length_limit(len(prompt), self.stepper.n_ctx, len(prefix), options.max_new_tokens)
        attempts, not_loops = [], []
        for temperature in options.temperature:
            if temperature == 0 and options.beam_size > 1:
                result = beam_search(self.stepper, self.tokenizer, rules, prompt, options.beam_size,
                                     options.patience, options.length_penalty, max_length, prefix)
            elif temperature > 0 and options.best_of > 1:
                result = sample_best_of(self.stepper, self.tokenizer, rules, prompt, temperature, rng,
                                        options.best_of, options.length_penalty, max_length, prefix)
            else:
                result = decode_window(self.stepper, self.tokenizer, rules, prompt, temperature, rng, max_length,
                                       prefix)
            needs_fallback = False
            if options.compression_ratio_threshold is not None:
                if result.compression_ratio > options.compression_ratio_threshold:
                    needs_fallback = True  # too repetitive
                else:
                    not_loops.append(result)
            if options.log_prob_threshold is not None and result.avg_logprob < options.log_prob_threshold:
                needs_fallback = True  # too unsure
                if options.no_speech_threshold is not None and result.no_speech_prob > options.no_speech_threshold:
                    needs_fallback = False  # silence: skipped by the caller
            if not needs_fallback:
                return result, temperature
            attempts.append(result)
        return max(not_loops or attempts, key=lambda r: r.avg_logprob), options.temperature[-1]

    def _add_words(self, segments: list[Segment], window: _Window, segment_frames: int, seek: int,
                   last_speech_timestamp: float, options: TranscriptionOptions) -> None:
        """Words of one window's segments, from one alignment call on the begun window (none without text)."""
        special = self.tokenizer.special
        start_sequence = window.start_sequence
        text = [t for s in segments for t in s.tokens if t < special.eot]
        weights = None
        if text:
            weights = self.stepper.alignment_weights(start_sequence + [special.no_timestamps] + text + [special.eot])
            if weights is None:  # more text than the context holds (a runaway window): no words rather than wrong
                for segment in segments:
                    segment.words = []
                return
        add_word_timestamps(segments, weights, self.tokenizer, len(start_sequence), segment_frames,
                            seek / FRAMES_PER_SECOND, window.language, last_speech_timestamp,
                            options.prepend_punctuations, options.append_punctuations)

    def _split(self, result: DecodingResult, temperature: float, seek: int, segment_frames: int,
               keep_unfinished: bool = False) -> tuple[list[Segment], int, bool]:
        """Segments between timestamp pairs (and the unfinished one after them if `keep_unfinished`, ending at the
        window's end), the next window's first mel frame, and whether the window ended with a single timestamp
        (no speech after it) or kept its unfinished segment: whether it is done."""
        begin = self.tokenizer.special.timestamp_begin
        time_offset = seek * HOP_LENGTH / SAMPLE_RATE
        tokens = result.tokens
        single_timestamp_ending = len(tokens) >= 2 and tokens[-2] < begin <= tokens[-1]
        boundaries = [i for i in range(1, len(tokens)) if tokens[i] >= begin and tokens[i - 1] >= begin]

        def segment(first: int, last: int, start: float, end: float) -> Segment:
            piece = tokens[first:last]
            return Segment(start=round(start, 3), end=round(end, 3), text=self.tokenizer.decode(piece),
                           tokens=piece, token_logprobs=result.token_logprobs[first:last],
                           avg_logprob=result.avg_logprob, no_speech_prob=result.no_speech_prob,
                           temperature=temperature, compression_ratio=result.compression_ratio, seek=seek)

        if not boundaries:
            stamps = [t for t in tokens if t >= begin]
            length = segment_frames * HOP_LENGTH / SAMPLE_RATE
            if stamps and stamps[-1] != begin:
                length = (stamps[-1] - begin) * TIMESTAMP_STEP
            return ([segment(0, len(tokens), time_offset, time_offset + length)], seek + segment_frames,
                    single_timestamp_ending or keep_unfinished)
        if single_timestamp_ending:
            boundaries.append(len(tokens))
        segments, last = [], 0
        for current in boundaries:
            segments.append(segment(last, current, time_offset + (tokens[last] - begin) * TIMESTAMP_STEP,
                                    time_offset + (tokens[current - 1] - begin) * TIMESTAMP_STEP))
            last = current
        if single_timestamp_ending:  # no speech after the last timestamp
            return segments, seek + segment_frames, True
        if keep_unfinished:
            if any(t < begin for t in tokens[last:]):
                segments.append(segment(last, len(tokens), time_offset + (tokens[last] - begin) * TIMESTAMP_STEP,
                                        time_offset + segment_frames * HOP_LENGTH / SAMPLE_RATE))
            return segments, seek + segment_frames, True
        # The last segment is unfinished: the next window starts where the last complete one ended.
        return segments, seek + (tokens[last - 1] - begin) * FRAMES_PER_TOKEN, False


def _last_end(segments: list[Segment]) -> float | None:
    """The end of the window's last word, or of its last segment if it has no words (faster-whisper's
    `get_end`)."""
    ends = [w.end for s in segments for w in s.words or []]
    return ends[-1] if ends else segments[-1].end if segments else None


def _word_anomaly(word: Word) -> float:
    """How unlike speech a word looks: improbable, very short or very long (openai/whisper's score)."""
    duration = word.end - word.start
    score = 1.0 if word.probability < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def _is_anomaly(segment: Segment | None) -> bool:
    """Whether a segment's first eight words (punctuation aside) look like a hallucination."""
    if segment is None or not segment.words:
        return False
    words = [w for w in segment.words if w.word not in HALLUCINATION_PUNCTUATION][:8]
    score = sum(_word_anomaly(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def _next_with_words(segments: list[Segment]) -> Segment | None:
    return next((s for s in segments if s.words), None)


def _skip_hallucinations(segments: list[Segment], threshold: float, seek: int, segment_frames: int,
                         content_frames: int, last_speech_timestamp: float
                         ) -> tuple[int, list[Segment], bool] | None:
    """faster-whisper's (and openai/whisper's) `hallucination_silence_threshold` on a window decoded at `seek`
    with words: None if nothing looks like a hallucination after a silence longer than `threshold` seconds; else
    the next window's first frame, the segments kept, and whether the window is to be decoded again after its
    leading silence (nothing kept)."""
    time_offset = seek / FRAMES_PER_SECOND
    window_end_time = (seek + N_FRAMES) / FRAMES_PER_SECOND
    first = _next_with_words(segments)
    if _is_anomaly(first):
        gap = first.start - time_offset
        if gap > threshold:
            return seek + round(gap * FRAMES_PER_SECOND), [], True
    last_end = last_speech_timestamp
    for index, segment in enumerate(segments):
        if not segment.words:
            continue
        if _is_anomaly(segment):
            following = _next_with_words(segments[index + 1 :])
            next_start = following.words[0].start if following is not None else \
                time_offset + segment_frames / FRAMES_PER_SECOND
            silence_before = (segment.start - last_end > threshold or segment.start < threshold
                              or segment.start - time_offset < 2.0)
            silence_after = (next_start - segment.end > threshold or _is_anomaly(following)
                             or window_end_time - segment.end < 2.0)
            if silence_before and silence_after:
                next_seek = round(max(time_offset + 1, segment.start) * FRAMES_PER_SECOND)
                if content_frames / FRAMES_PER_SECOND - segment.end < threshold:
                    next_seek = content_frames
                return next_seek, segments[:index], False
        last_end = segment.end
    return None


def restore_speech_timestamps(segments: list[Segment], chunks: list[dict]) -> None:
    """Maps segment and word times in the joined speech `chunks` back to the original audio, as faster-whisper's
    `restore_speech_timestamps`: a word by the chunk its middle lies in, a segment with words by its first and
    last word."""
    times = SpeechTimestampsMap(chunks, SAMPLE_RATE, time_precision=3)
    for segment in segments:
        if segment.words:
            for word in segment.words:
                chunk = times.get_chunk_index((word.start + word.end) / 2)
                word.start = times.get_original_time(word.start, chunk)
                word.end = times.get_original_time(word.end, chunk)
            segment.start, segment.end = segment.words[0].start, segment.words[-1].end
        else:
            segment.start = times.get_original_time(segment.start)
            segment.end = times.get_original_time(segment.end, is_end=True)


def _within(segment: Segment, duration: float) -> Segment:
    """The segment ending by the end of the audio, its words within it (the heuristics may stretch a word past
    its segment)."""
    segment.end = min(segment.end, duration)
    segment.start = min(segment.start, segment.end)
    for word in segment.words or []:
        word.start = min(max(word.start, segment.start), segment.end)
        word.end = min(max(word.end, word.start), segment.end)
    return segment


def _window(log_mel: np.ndarray, seek: int, frames: int) -> np.ndarray:
    """[1, n_mels, 3000]: `frames` frames from `seek`, zero-padded in the log-mel domain (as openai/whisper and
    faster-whisper pad the last window)."""
    window = np.zeros((1, log_mel.shape[0], N_FRAMES), np.float32)
    window[0, :, :frames] = log_mel[:, seek : seek + frames]
    return window


def _loud_frames(samples: np.ndarray, block: int = 6000) -> np.ndarray:
    """Which 10 ms frames (mel frames) are not digital silence (-80 dBFS RMS or louder); a minute at a time, so
    the float64 squares stay small."""
    frames = samples[: len(samples) // HOP_LENGTH * HOP_LENGTH].reshape(-1, HOP_LENGTH)
    return np.concatenate([np.mean(np.square(frames[first : first + block], dtype=np.float64), axis=1) >=
                           SILENCE_RMS**2 for first in range(0, len(frames), block)] or [np.zeros(0, bool)])


def _leading_silence(loud: np.ndarray) -> int:
    """How many frames from the start of `_loud_frames` are digital silence."""
    return int(np.argmax(loud)) if loud.any() else len(loud)


class Transcriber:
    """Transcribes audio with a converted bundle, on the LiteRT interpreter alone (no TensorFlow).

    Safe to call from many threads: each call takes one of `num_workers` workers, each with interpreters of its
    own, for the whole call (language detection included), and waits while all are busy. An interpreter is not
    thread-safe, and a worker's decoding state (KV cache, begun window) lives in them. Every call decodes as it
    would alone: sampling restarts from the same seed at each call.
    """

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True,
                 num_workers: int = 1):
        """`threads`: interpreter threads of each worker [min(4, cores // num_workers), at least 1]."""
        from .models import TfliteStepper

        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise UsageError(f"num_workers must be a whole number of at least 1, got {num_workers!r}")
        self.bundle = Bundle.load(bundle_dir, verify=verify)
        manifest = self.bundle.manifest
        self.multilingual = bool(manifest["dims"]["multilingual"])
        self.tokenizer = WhisperTokenizer.from_file(self.bundle.tokenizer_path, self.multilingual)
        if threads is not None and (not isinstance(threads, int) or threads < 0):
            raise UsageError(f"threads must be a positive number, or 0 or None for the default (got {threads!r})")
        self.num_workers = num_workers
        self.threads = threads or max(1, min(4, (os.cpu_count() or 1) // num_workers))
        workers = [LongFormDecoder(TfliteStepper(self.bundle, self.threads), self.tokenizer,
                                   manifest["suppress_tokens"], manifest["begin_suppress_tokens"])
                   for _ in range(num_workers)]
        self._free: queue.Queue[LongFormDecoder] = queue.Queue()
        for worker in workers:
            self._free.put(worker)
        self._vad_lock = threading.Lock()
        self._batched: dict[LongFormDecoder, BatchedDecoder] = {}  # each worker's, made at its first batched call
        # The first worker's, for tools and tests that drive its models directly while no `transcribe` runs
        self.decoder = workers[0]
        self.stepper = self.decoder.stepper

    @property
    def languages(self) -> list[str]:
        return self.tokenizer.languages

    def check_request(self, language: str | None, task: str, word_timestamps: bool = False,
                      vad_filter: bool = False, batch_size: int | None = None) -> str | None:
        """The language code to decode with (None: detect). Refuses a language the model does not know,
        translation with an English-only model, or word timestamps (the VAD filter, batched transcription) from a
        bundle without the alignment (vad, decoder_chunks) model."""
        code = None if language in (None, "auto") else self.tokenizer.language_code(language)
        if word_timestamps and "alignment" not in self.bundle.models:
            raise BundleError(f"{self.bundle.folder} has no alignment model, which word timestamps need; "
                              "convert the bundle again")
        if vad_filter and "vad" not in self.bundle.models:
            raise BundleError(f"{self.bundle.folder} has no vad model, which the VAD filter needs; "
                              "convert the bundle again")
        for role in ("vad", CHUNKS_MODEL) if batch_size is not None else ():
            if role not in self.bundle.models:
                raise BundleError(f"{self.bundle.folder} has no {role} model, which batched transcription needs; "
                                  "convert the bundle again")
        if task not in ("transcribe", "translate"):
            raise UsageError(f"unknown task {task!r}: choose transcribe or translate")
        if code is not None and code not in self.languages:
            raise UsageError(f"unknown language {language!r} for this model (known: {', '.join(self.languages)})")
        if task == "translate" and not self.multilingual:
            raise UsageError(f"{self.bundle.folder} is an English-only model: it cannot translate")
        return code

    def transcribe(
        self,
        audio: AudioSource,
        language: str | None = None,
        task: str = "transcribe",
        sample_rate: int | None = None,
        *,
        temperature: float | tuple[float, ...] | list[float] = TranscriptionOptions.temperature,
        compression_ratio_threshold: float | None = TranscriptionOptions.compression_ratio_threshold,
        log_prob_threshold: float | None = TranscriptionOptions.log_prob_threshold,
        no_speech_threshold: float | None = TranscriptionOptions.no_speech_threshold,
        condition_on_previous_text: bool = TranscriptionOptions.condition_on_previous_text,
        prompt_reset_on_temperature: float = TranscriptionOptions.prompt_reset_on_temperature,
        initial_prompt: str | None = None,
        prefix: str | None = None,
        hotwords: str | None = None,
        beam_size: int = TranscriptionOptions.beam_size,
        best_of: int = TranscriptionOptions.best_of,
        patience: float = TranscriptionOptions.patience,
        length_penalty: float = TranscriptionOptions.length_penalty,
        repetition_penalty: float = TranscriptionOptions.repetition_penalty,
        no_repeat_ngram_size: int = TranscriptionOptions.no_repeat_ngram_size,
        suppress_blank: bool = TranscriptionOptions.suppress_blank,
        suppress_tokens: tuple[int, ...] | list[int] | None = TranscriptionOptions.suppress_tokens,
        without_timestamps: bool = False,
        max_initial_timestamp: float = TranscriptionOptions.max_initial_timestamp,
        max_new_tokens: int | None = None,
        clip_timestamps: str | tuple[float, ...] | list[float] = TranscriptionOptions.clip_timestamps,
        multilingual: bool = False,
        word_timestamps: bool = False,
        prepend_punctuations: str = TranscriptionOptions.prepend_punctuations,
        append_punctuations: str = TranscriptionOptions.append_punctuations,
        hallucination_silence_threshold: float | None = None,
        vad_filter: bool = False,
        vad_parameters: VadOptions | dict | None = None,
        language_detection_threshold: float | None = TranscriptionOptions.language_detection_threshold,
        language_detection_segments: int = TranscriptionOptions.language_detection_segments,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> TranscriptionResult:
        """Text, language and timed segments of any length of audio: a file path, "-" (stdin), bytes, a binary
        file object, or an array at `sample_rate` (see `load_audio`).

        The decoding options are faster-whisper's, with its defaults; see `TranscriptionOptions`. With
        `vad_filter`, only the speech the bundle's vad model finds (`vad_parameters`: `VadOptions` or a dict of
        its fields) is decoded, joined as faster-whisper joins it, and every time is mapped back to `audio`. With
        `batch_size`, faster-whisper's batched transcription (runtime/batched.py): that speech in chunks of up to
        30 s, decoded `batch_size` at a time, without previous text or timestamps, a segment a chunk; the options
        that concern previous text, temperature fallback, timestamps, the prefix and hallucinations then do
        nothing, as in faster-whisper's.
        """
        options = TranscriptionOptions(
            temperature=temperature, compression_ratio_threshold=compression_ratio_threshold,
            log_prob_threshold=log_prob_threshold, no_speech_threshold=no_speech_threshold,
            condition_on_previous_text=condition_on_previous_text,
            prompt_reset_on_temperature=prompt_reset_on_temperature, initial_prompt=initial_prompt, prefix=prefix,
            hotwords=hotwords, beam_size=beam_size, best_of=best_of, patience=patience,
            length_penalty=length_penalty, repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size, suppress_blank=suppress_blank,
            suppress_tokens=suppress_tokens, without_timestamps=without_timestamps,
            max_initial_timestamp=max_initial_timestamp, max_new_tokens=max_new_tokens,
            clip_timestamps=clip_timestamps, multilingual=multilingual, word_timestamps=word_timestamps,
            prepend_punctuations=prepend_punctuations, append_punctuations=append_punctuations,
            hallucination_silence_threshold=hallucination_silence_threshold, vad_filter=vad_filter,
            vad_parameters=vad_parameters,
            language_detection_threshold=language_detection_threshold,
            language_detection_segments=language_detection_segments, batch_size=batch_size)
        stream = self.stream(audio, language, task, sample_rate, options, progress)
        segments = list(stream.segments)
        text = "".join(s.text for s in segments).strip()
        return TranscriptionResult(text, stream.language, stream.language_probability, segments, stream.duration)

    def stream(self, audio: AudioSource, language: str | None = None, task: str = "transcribe",
               sample_rate: int | None = None, options: TranscriptionOptions = TranscriptionOptions(),
               progress: Callable[[int, int], None] | None = None, *,
               keep_last_segment: bool = False) -> TranscriptionStream:
        """`transcribe`, its options as one `TranscriptionOptions`, with the segments as each window is decoded
        (batched, as each batch is). A worker is taken until the segments are exhausted or closed.
        `keep_last_segment` (not batched): see `LongFormDecoder.stream`."""
        language = self.check_request(language, task, options.word_timestamps, options.vad_filter,
                                      options.batch_size)
        samples = load_audio(audio, sample_rate)
        if samples.size < HOP_LENGTH:
            raise AudioError(f"{source_name(audio)}: shorter than 10 ms")
        duration = len(samples) / SAMPLE_RATE
        worker = self._free.get()
        try:
            if options.batch_size is not None:
                with self._vad_lock:
                    speech_chunks = get_speech_timestamps(samples, self.vad, options.vad_parameters)
                if worker not in self._batched:
                    self._batched[worker] = BatchedDecoder(worker.stepper, self.tokenizer, worker.suppress,
                                                           worker.begin_suppress)
                result = self._batched[worker].transcribe(samples, speech_chunks, language, task, options, progress)
                self._free.put(worker)
                spoken = sum(chunk["end"] - chunk["start"] for chunk in speech_chunks) / SAMPLE_RATE
                return TranscriptionStream(result.language, result.language_probability, duration, spoken, None,
                                           iter(result.segments))
            chunks = None
            speech = samples
            if options.vad_filter and whole_audio(options.clip_timestamps):  # clips replace the VAD filter
                with self._vad_lock:  # one VAD model for every worker: it runs in a moment
                    chunks = get_speech_timestamps(samples, self.vad, options.vad_parameters)
                speech = np.concatenate(collect_chunks(samples, chunks)[0])
            if speech.size < HOP_LENGTH:  # no speech: no text
                log_mel = worker.stepper.whole_log_mel(samples[:N_SAMPLES])
                language, probability, probabilities = worker.language(log_mel, language, options)
                self._free.put(worker)
                return TranscriptionStream(language, probability, duration, 0.0, probabilities, iter(()))
            language, probability, probabilities, segments = worker.stream(
                speech, language, task, options, progress, keep_last_segment=keep_last_segment)
        except BaseException:
            self._free.put(worker)
            raise
        return TranscriptionStream(language, probability, duration, len(speech) / SAMPLE_RATE, probabilities,
                                   self._returning(worker, segments, chunks))

    def live(self, language: str | None = None, task: str = "transcribe", *, chunk_size: float = 1.0,
             buffer_trimming: float = 15.0, max_buffer: float = 25.0, options: TranscriptionOptions | None = None,
             **decoding) -> LiveTranscription:
        """A live transcription (runtime/live.py): give it audio as it comes (`insert_audio`), call `process` for
        the words committed and the tentative tail, and `finish` at the end.

        `decoding`: `transcribe`'s options (`TranscriptionOptions` fields, over `options` if given), greedy by
        default (beam_size 1); word timestamps are always on; a prefix, clips, batches, windows without
        timestamps or in languages of their own do not apply. The buffer is decoded again whenever `chunk_size`
        seconds more have come; past `buffer_trimming` seconds it is cut at a committed segment's end, and it
        never holds more than `max_buffer` (at most 30 s: one encoder window). A multilingual model without
        `language` detects it on the buffer until the first words, then keeps it."""
        from .live import LiveTranscription, live_options

        try:
            options = dataclasses.replace(options or TranscriptionOptions(beam_size=1, temperature=0.0), **decoding)
        except TypeError:
            unknown = sorted(set(decoding) - set(TranscriptionOptions.__dataclass_fields__))
            raise UsageError(f"unknown option {', '.join(unknown)} for live transcription") from None
        options = live_options(options)
        for name, value in (("chunk_size", chunk_size), ("buffer_trimming", buffer_trimming),
                            ("max_buffer", max_buffer)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UsageError(f"{name} must be a number of seconds above 0, got {value!r}")
        if not chunk_size <= buffer_trimming < max_buffer <= N_SAMPLES / SAMPLE_RATE:
            raise UsageError(f"chunk_size {chunk_size}, buffer_trimming {buffer_trimming} and max_buffer {max_buffer} "
                             f"must be in that order, max_buffer at most {N_SAMPLES // SAMPLE_RATE} s")
        language = self.check_request(language, task, True, options.vad_filter)
        self.decoder.check(options)
        return LiveTranscription(self, language, task, options, chunk_size, buffer_trimming, max_buffer)

    def _returning(self, worker: LongFormDecoder, segments: Iterator[Segment],
                   chunks: list[dict] | None) -> Iterator[Segment]:
        """The segments, their times mapped back to the whole audio (VAD filter), and the worker given back at
        the end."""
        try:
            for segment in segments:
                if chunks is not None:
                    restore_speech_timestamps([segment], chunks)
                yield segment
        finally:
            self._free.put(worker)

    def detect_language(self, audio: AudioSource, vad_filter: bool = False,
                        vad_parameters: VadOptions | dict | None = None, language_detection_segments: int = 1,
                        language_detection_threshold: float | None = 0.5) -> tuple[str, float, list[tuple[str, float]]]:
        """The language of the audio's first windows (its speech with `vad_filter`), its probability and every
        language's, as faster-whisper's `WhisperModel.detect_language`."""
        options = TranscriptionOptions(vad_filter=vad_filter, vad_parameters=vad_parameters,
                                       language_detection_segments=language_detection_segments,
                                       language_detection_threshold=language_detection_threshold)
        self.check_request(None, "transcribe", vad_filter=vad_filter)
        samples = load_audio(audio)
        if vad_filter:
            with self._vad_lock:
                chunks = get_speech_timestamps(samples, self.vad, options.vad_parameters)
            samples = np.concatenate(collect_chunks(samples, chunks)[0]) if chunks else samples[:0]
        if samples.size < HOP_LENGTH:
            raise AudioError("no audio to detect a language in" + (" (the VAD found no speech)" if vad_filter else ""))
        worker = self._free.get()
        try:
            log_mel = worker.stepper.whole_log_mel(samples[: language_detection_segments * N_SAMPLES])
            language, probability, probabilities = worker.language(log_mel, None, options, whole_windows=True)
        finally:
            self._free.put(worker)
        return language, probability, probabilities or [(language, probability)]

    @functools.cached_property
    def vad(self) -> VadModel:
        """The bundle's vad model, loaded at the first use of the VAD filter."""
        return VadModel.from_bundle(self.bundle, self.threads)
