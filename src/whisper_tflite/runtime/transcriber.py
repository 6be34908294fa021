"""Transcription of audio of any length: Whisper's sequential long-form algorithm over 30 s windows.

Follows faster-whisper's `generate_segments` (itself openai/whisper's `transcribe.py`): each window is decoded
with timestamps after a prompt of the previous windows' tokens, timestamp tokens included; the next window
starts at the end of the last complete segment; temperature fallback guards against repetition loops
(compression ratio) and unsure output (average log-probability); windows the model calls silence are skipped.
The options carry faster-whisper's names and defaults. faster-whisper on the same CTranslate2 weights is the
oracle the tests hold this module against.

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
- No `clip_timestamps`, `prefix`, `hotwords` or `hallucination_silence_threshold`.
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE, AudioSource, load_audio, source_name
from ..bundle import CHUNKS_MODEL, TOKENIZER, Bundle
from ..errors import AudioError, BundleError, UsageError
from ..tokens import TIMESTAMP_STEP, WhisperTokenizer
from .decoding import (DecodingResult, LogitFilter, Stepper, beam_search, decode_window, detect_language,
                       max_finished_hypotheses, sample_best_of)
from .batched import BatchedDecoder, batched_vad_options
from .timing import Word, add_word_timestamps
from .vad import SpeechTimestampsMap, VadModel, VadOptions, collect_chunks, get_speech_timestamps

# Audio quieter than -80 dBFS RMS holds no speech: decoding a window of it makes Whisper invent " you", and a
# window that starts with seconds of it puts the first segment's start there (a first timestamp is at most 1 s).
SILENCE_RMS = 1e-4
MIN_SKIPPED_SILENCE = 200  # mel frames: shorter leading silence is decoded as it is
SILENCE_MARGIN = 20  # mel frames of silence kept before the speech
FRAMES_PER_TOKEN = 2  # mel frames per timestamp step (0.02 s)


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
    beam_size: int = 5  # at temperature 0; 1 is greedy decoding
    best_of: int = 5  # samples at each temperature above 0
    patience: float = 1.0  # beam search stops after round(beam_size * patience) finished hypotheses
    length_penalty: float = 1.0  # hypotheses rank by log-probability / length ** length_penalty
    word_timestamps: bool = False
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


def suppressed_tokens(tokenizer: WhisperTokenizer, suppress: list[int]) -> list[int]:
    """The checkpoint's suppress list plus the control tokens that never belong in a transcript (faster-whisper's
    and openai's `suppress_tokens=[-1]`)."""
    special = tokenizer.special
    controls = [special.transcribe, special.translate, special.sot, special.sot_prev, special.sot_lm,
                special.no_speech]
    return sorted(set(suppress) | set(controls))


class LongFormDecoder:
    """The long-form algorithm on any `Stepper`."""

    def __init__(self, stepper: Stepper, tokenizer: WhisperTokenizer, suppress: list[int],
                 begin_suppress: list[int]):
        self.stepper = stepper
        self.tokenizer = tokenizer
        self.filter = LogitFilter(tokenizer, suppressed_tokens(tokenizer, suppress), begin_suppress,
                                  timestamps=True)

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
               progress: Callable[[int, int], None] | None = None,
               seed: int = 0) -> tuple[str, float, list[tuple[str, float]] | None, Iterator[Segment]]:
        """The language (detected now if not given), its probability, every language's where it was detected,
        and the segments as each window is decoded."""
        self.check(options)
        log_mel = self.stepper.whole_log_mel(audio)
        language, probability, probabilities = self.language(log_mel, language, options)
        return language, probability, probabilities, self._segments(audio, log_mel, language, task, options,
                                                                    progress, seed)

    def _segments(self, audio: np.ndarray, log_mel: np.ndarray, language: str, task: str,
                  options: TranscriptionOptions, progress: Callable[[int, int], None] | None,
                  seed: int) -> Iterator[Segment]:
        tokenizer = self.tokenizer
        rng = np.random.default_rng(seed)
        content_frames = log_mel.shape[1]
        duration = round(len(audio) / SAMPLE_RATE, 3)
        start_sequence = tokenizer.prompt(language, task, timestamps=True)
        max_previous = self.stepper.n_ctx // 2 - 1
        ids = itertools.count()
        all_tokens: list[int] = []
        if options.initial_prompt is not None:
            all_tokens = tokenizer.encode(" " + options.initial_prompt.strip())
        prompt_reset_since = 0
        last_speech_timestamp = 0.0
        seek = 0
        while seek < content_frames:
            previous_seek = seek
            segment_frames = min(N_FRAMES, content_frames - seek)
            silent = _leading_silence(audio[seek * HOP_LENGTH : (seek + segment_frames) * HOP_LENGTH])
            if silent == segment_frames:
                seek += segment_frames
            elif silent >= MIN_SKIPPED_SILENCE:
                seek += silent - SILENCE_MARGIN  # start the window just before the speech
            else:
                self.stepper.begin(_window(log_mel, seek, segment_frames))
                previous = all_tokens[prompt_reset_since:][-max_previous:]
                prompt = ([tokenizer.special.sot_prev] + previous if previous else []) + start_sequence
                result, temperature = self._decode_with_fallback(prompt, options, rng)
                if self._is_silence(result, options):
                    seek += segment_frames
                else:
                    window_seek = seek
                    new_segments, seek, single_timestamp_ending = self._split(result, temperature, seek,
                                                                              segment_frames)
                    if options.word_timestamps:
                        self._add_words(new_segments, start_sequence, segment_frames, window_seek, language,
                                        last_speech_timestamp)
                        last_word_end = _last_end(new_segments)
                        # As faster-whisper: the next window starts after the last word, not the last timestamp.
                        if not single_timestamp_ending and last_word_end is not None and \
                                last_word_end > window_seek * HOP_LENGTH / SAMPLE_RATE:
                            seek = round(last_word_end * SAMPLE_RATE / HOP_LENGTH)
                        if last_word_end is not None:
                            last_speech_timestamp = last_word_end
                    kept = [s for s in new_segments if s.start != s.end and s.text.strip()]
                    for segment in kept:
                        all_tokens.extend(segment.tokens)
                    if not options.condition_on_previous_text or temperature > options.prompt_reset_on_temperature:
                        prompt_reset_since = len(all_tokens)
                    for segment in kept:
                        segment.id = next(ids)
                        yield _within(segment, duration)
            if progress is not None:
                progress(min(seek, content_frames) - previous_seek, content_frames)

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

    def _decode_with_fallback(self, prompt: list[int], options: TranscriptionOptions,
                              rng: np.random.Generator) -> tuple[DecodingResult, float]:
        """Beam search (or greedy) first, then sampling at rising temperatures while the output looks like a loop
        or is unsure.

        Returns the result and the last temperature tried (which decides whether the prompt is reset). If every
        temperature fails, the most confident attempt among those that are not loops wins, as in faster-whisper.
        """
        attempts, not_loops = [], []
        for temperature in options.temperature:
            if temperature == 0 and options.beam_size > 1:
                result = beam_search(self.stepper, self.tokenizer, self.filter, prompt, options.beam_size,
                                     options.patience, options.length_penalty)
            elif temperature > 0 and options.best_of > 1:
                result = sample_best_of(self.stepper, self.tokenizer, self.filter, prompt, temperature, rng,
                                        options.best_of, options.length_penalty)
            else:
                result = decode_window(self.stepper, self.tokenizer, self.filter, prompt, temperature, rng)
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

    def _add_words(self, segments: list[Segment], start_sequence: list[int], segment_frames: int, seek: int,
                   language: str, last_speech_timestamp: float) -> None:
        """Words of one window's segments, from one alignment call on the begun window (none without text)."""
        special = self.tokenizer.special
        text = [t for s in segments for t in s.tokens if t < special.eot]
        weights = None
        if text:
            weights = self.stepper.alignment_weights(start_sequence + [special.no_timestamps] + text + [special.eot])
            if weights is None:  # more text than the context holds (a runaway window): no words rather than wrong
                for segment in segments:
                    segment.words = []
                return
        add_word_timestamps(segments, weights, self.tokenizer, len(start_sequence), segment_frames,
                                   seek * HOP_LENGTH / SAMPLE_RATE, language, last_speech_timestamp)

    def _split(self, result: DecodingResult, temperature: float, seek: int,
               segment_frames: int) -> tuple[list[Segment], int, bool]:
        """Segments between timestamp pairs, the next window's first mel frame, and whether the window ended
        with a single timestamp (no speech after it)."""
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
                    single_timestamp_ending)
        if single_timestamp_ending:
            boundaries.append(len(tokens))
        segments, last = [], 0
        for current in boundaries:
            segments.append(segment(last, current, time_offset + (tokens[last] - begin) * TIMESTAMP_STEP,
                                    time_offset + (tokens[current - 1] - begin) * TIMESTAMP_STEP))
            last = current
        if single_timestamp_ending:  # no speech after the last timestamp
            return segments, seek + segment_frames, True
        # The last segment is unfinished: the next window starts where the last complete one ended.
        return segments, seek + (tokens[last - 1] - begin) * FRAMES_PER_TOKEN, False


def _last_end(segments: list[Segment]) -> float | None:
    """The end of the window's last word, or of its last segment if it has no words (faster-whisper's
    `get_end`)."""
    ends = [w.end for s in segments for w in s.words or []]
    return ends[-1] if ends else segments[-1].end if segments else None


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


def _leading_silence(samples: np.ndarray) -> int:
    """How many 10 ms frames (mel frames) from the start are digital silence (below -80 dBFS RMS)."""
    frames = samples[: len(samples) // HOP_LENGTH * HOP_LENGTH].reshape(-1, HOP_LENGTH)
    loud = np.mean(np.square(frames, dtype=np.float64), axis=1) >= SILENCE_RMS**2
    return int(np.argmax(loud)) if loud.any() else len(frames)


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
        self.tokenizer = WhisperTokenizer.from_file(self.bundle.folder / TOKENIZER, self.multilingual)
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
        beam_size: int = TranscriptionOptions.beam_size,
        best_of: int = TranscriptionOptions.best_of,
        patience: float = TranscriptionOptions.patience,
        length_penalty: float = TranscriptionOptions.length_penalty,
        word_timestamps: bool = False,
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
        that concern previous text and temperature fallback then do nothing, as in faster-whisper's.
        """
        options = TranscriptionOptions(
            temperature=temperature, compression_ratio_threshold=compression_ratio_threshold,
            log_prob_threshold=log_prob_threshold, no_speech_threshold=no_speech_threshold,
            condition_on_previous_text=condition_on_previous_text,
            prompt_reset_on_temperature=prompt_reset_on_temperature, initial_prompt=initial_prompt,
            beam_size=beam_size, best_of=best_of, patience=patience, length_penalty=length_penalty,
            word_timestamps=word_timestamps, vad_filter=vad_filter, vad_parameters=vad_parameters,
            language_detection_threshold=language_detection_threshold,
            language_detection_segments=language_detection_segments, batch_size=batch_size)
        stream = self.stream(audio, language, task, sample_rate, options, progress)
        segments = list(stream.segments)
        text = "".join(s.text for s in segments).strip()
        return TranscriptionResult(text, stream.language, stream.language_probability, segments, stream.duration)

    def stream(self, audio: AudioSource, language: str | None = None, task: str = "transcribe",
               sample_rate: int | None = None, options: TranscriptionOptions = TranscriptionOptions(),
               progress: Callable[[int, int], None] | None = None) -> TranscriptionStream:
        """`transcribe`, its options as one `TranscriptionOptions`, with the segments as each window is decoded
        (batched, as each batch is). A worker is taken until the segments are exhausted or closed."""
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
                    self._batched[worker] = BatchedDecoder(worker.stepper, self.tokenizer, worker.filter.suppress,
                                                           worker.filter.begin_suppress)
                result = self._batched[worker].transcribe(samples, speech_chunks, language, task, options, progress)
                self._free.put(worker)
                spoken = sum(chunk["end"] - chunk["start"] for chunk in speech_chunks) / SAMPLE_RATE
                return TranscriptionStream(result.language, result.language_probability, duration, spoken, None,
                                           iter(result.segments))
            chunks = None
            speech = samples
            if options.vad_filter:
                with self._vad_lock:  # one VAD model for every worker: it runs in a moment
                    chunks = get_speech_timestamps(samples, self.vad, options.vad_parameters)
                speech = np.concatenate(collect_chunks(samples, chunks)[0])
            if speech.size < HOP_LENGTH:  # no speech: no text
                log_mel = worker.stepper.whole_log_mel(samples[:N_SAMPLES])
                language, probability, probabilities = worker.language(log_mel, language, options)
                self._free.put(worker)
                return TranscriptionStream(language, probability, duration, 0.0, probabilities, iter(()))
            language, probability, probabilities, segments = worker.stream(speech, language, task, options,
                                                                           progress)
        except BaseException:
            self._free.put(worker)
            raise
        return TranscriptionStream(language, probability, duration, len(speech) / SAMPLE_RATE, probabilities,
                                   self._returning(worker, segments, chunks))

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
