"""Transcription of audio of any length: Whisper's sequential long-form algorithm over 30 s windows.

Follows openai/whisper `transcribe.py`: each window is decoded with timestamps; the next window starts at the
end of the last complete segment; temperature fallback guards against repetition loops (compression ratio)
and low-confidence output (average log-probability); windows that are likely silence are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE, load_audio
from ..bundle import TOKENIZER, Bundle
from ..errors import AudioError, UsageError
from ..tokens import TIMESTAMP_STEP, WhisperTokenizer
from .decoding import DecodingResult, LogitFilter, Stepper, decode_window, detect_language

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPRESSION_RATIO_THRESHOLD = 2.4
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
# A window quieter than -80 dBFS RMS holds no speech; decoding it anyway makes Whisper invent " you".
SILENCE_RMS = 1e-4
MAX_PROMPT_TOKENS = 223  # openai's n_text_ctx // 2 - 1: previous text kept as context
FRAMES_PER_TOKEN = 2  # mel frames per timestamp step (0.02 s)


@dataclass
class Segment:
    start: float
    end: float
    text: str
    tokens: list[int] = field(repr=False, default_factory=list)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    compression_ratio: float = 0.0


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
            "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in self.segments],
        }


class LongFormDecoder:
    """The long-form algorithm on any `Stepper`: shared by the TFLite runtime and the reference model."""

    def __init__(self, stepper: Stepper, tokenizer: WhisperTokenizer, suppress: list[int],
                 begin_suppress: list[int]):
        self.stepper = stepper
        self.tokenizer = tokenizer
        self.filter = LogitFilter(tokenizer, suppress, begin_suppress, timestamps=True)

    def transcribe(self, audio: np.ndarray, language: str | None = None, task: str = "transcribe",
                   condition_on_previous_text: bool = True, progress=None, seed: int = 0) -> TranscriptionResult:
        tokenizer = self.tokenizer
        rng = np.random.default_rng(seed)
        content_frames = len(audio) // HOP_LENGTH
        duration = len(audio) / SAMPLE_RATE
        language_probability = 1.0
        if not tokenizer.multilingual:
            language = "en"
        elif language is None:
            self.stepper.begin(audio[:N_SAMPLES])
            language, language_probability = detect_language(self.stepper, tokenizer, tokenizer.languages)
        start_sequence = tokenizer.prompt(language, task, timestamps=True)
        segments: list[Segment] = []
        all_tokens: list[int] = []
        prompt_reset_since = 0
        seek = 0
        while seek < content_frames:
            time_offset = seek * HOP_LENGTH / SAMPLE_RATE
            window = audio[seek * HOP_LENGTH : seek * HOP_LENGTH + N_SAMPLES]
            segment_frames = min(N_FRAMES, content_frames - seek)
            if _rms(window[: segment_frames * HOP_LENGTH]) < SILENCE_RMS:
                seek += segment_frames
                if progress is not None:
                    progress(segment_frames, content_frames)
                continue
            self.stepper.begin(window)
            previous = all_tokens[prompt_reset_since:][-MAX_PROMPT_TOKENS:]
            prompt = ([tokenizer.special.sot_prev] + previous if previous else []) + start_sequence
            result = self._decode_with_fallback(prompt, rng)
            previous_seek = seek
            if result.no_speech_prob > NO_SPEECH_THRESHOLD and result.avg_logprob < LOGPROB_THRESHOLD:
                seek += segment_frames  # most likely silence: skip the window
            else:
                new_segments, advance = self._split(result, time_offset, segment_frames)
                seek += advance
                for segment in new_segments:
                    if segment.end > segment.start and segment.text.strip():
                        segments.append(segment)
                        all_tokens.extend(segment.tokens)
                if not condition_on_previous_text or result.temperature > 0.5:
                    prompt_reset_since = len(all_tokens)
            if progress is not None:
                progress(min(seek, content_frames) - previous_seek, content_frames)
        for segment in segments:
            segment.end = min(segment.end, duration)
            segment.start = min(segment.start, segment.end)
        text = "".join(s.text for s in segments).strip()
        return TranscriptionResult(text, language, language_probability, segments, duration)

    def _decode_with_fallback(self, prompt: list[int], rng: np.random.Generator) -> DecodingResult:
        """Greedy first, then sampling at rising temperatures while the output looks like a loop or is unsure.

        If every temperature fails, the most confident attempt wins (as faster-whisper does), not the last one
        as in openai/whisper: at temperature 1.0 the last one is often noise ("Theなら ball" for a Spanish
        translation whose greedy attempt was right).
        """
        attempts, unrepetitive = [], []
        for temperature in TEMPERATURES:
            result = decode_window(self.stepper, self.tokenizer, self.filter, prompt, temperature, rng)
            too_repetitive = result.compression_ratio > COMPRESSION_RATIO_THRESHOLD
            too_unsure = result.avg_logprob < LOGPROB_THRESHOLD
            silent = result.no_speech_prob > NO_SPEECH_THRESHOLD
            if not too_repetitive and (not too_unsure or silent):
                return result
            attempts.append(result)
            if not too_repetitive:
                unrepetitive.append(result)
        return max(unrepetitive or attempts, key=lambda r: r.avg_logprob)

    def _split(self, result: DecodingResult, time_offset: float, segment_frames: int):
        """Segments between timestamp pairs, and how many mel frames to advance."""
        begin = self.tokenizer.special.timestamp_begin
        tokens = result.tokens
        is_stamp = [t >= begin for t in tokens]
        single_timestamp_ending = is_stamp[-2:] == [False, True]
        boundaries = [i + 1 for i in range(len(tokens) - 1) if is_stamp[i] and is_stamp[i + 1]]
        segments = []
        if boundaries:
            if single_timestamp_ending:
                boundaries.append(len(tokens))
            last = 0
            for current in boundaries:
                piece = tokens[last:current]
                segments.append(self._segment(piece, time_offset + (piece[0] - begin) * TIMESTAMP_STEP,
                                              time_offset + (piece[-1] - begin) * TIMESTAMP_STEP, result))
                last = current
            if single_timestamp_ending:
                advance = segment_frames
            else:
                advance = (tokens[last - 1] - begin) * FRAMES_PER_TOKEN
        else:
            stamps = [t for t in tokens if t >= begin]
            length = segment_frames * HOP_LENGTH / SAMPLE_RATE
            if stamps and stamps[-1] != begin:
                length = (stamps[-1] - begin) * TIMESTAMP_STEP
            segments.append(self._segment(tokens, time_offset, time_offset + length, result))
            advance = segment_frames
        return segments, max(advance, 1)

    def _segment(self, tokens: list[int], start: float, end: float, result: DecodingResult) -> Segment:
        return Segment(
            start=round(start, 3),
            end=round(end, 3),
            text=self.tokenizer.decode(tokens),
            tokens=[t for t in tokens if t < self.tokenizer.special.eot],
            avg_logprob=result.avg_logprob,
            no_speech_prob=result.no_speech_prob,
            temperature=result.temperature,
            compression_ratio=result.compression_ratio,
        )


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0


class Transcriber:
    """Transcribes audio with a converted bundle, on the LiteRT interpreter alone (no TensorFlow)."""

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True):
        from .models import TfliteStepper

        self.bundle = Bundle.load(bundle_dir, verify=verify)
        manifest = self.bundle.manifest
        self.multilingual = bool(manifest["dims"]["multilingual"])
        self.tokenizer = WhisperTokenizer.from_file(self.bundle.folder / TOKENIZER, self.multilingual)
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.stepper = TfliteStepper(self.bundle, self.threads)
        self.decoder = LongFormDecoder(self.stepper, self.tokenizer, manifest["suppress_tokens"],
                                       manifest["begin_suppress_tokens"])

    @property
    def languages(self) -> list[str]:
        return self.tokenizer.languages

    def check_request(self, language: str | None, task: str) -> None:
        """Refuses a language the model does not know, or translation with an English-only model."""
        if task not in ("transcribe", "translate"):
            raise UsageError(f"unknown task {task!r}: choose transcribe or translate")
        if language is not None and language not in self.languages:
            raise UsageError(f"unknown language {language!r} for this model (known: {', '.join(self.languages)})")
        if task == "translate" and not self.multilingual:
            raise UsageError(f"{self.bundle.folder} is an English-only model: it cannot translate")

    def transcribe(self, audio: str | Path | np.ndarray, language: str | None = None, task: str = "transcribe",
                   sample_rate: int | None = None, condition_on_previous_text: bool = True,
                   progress=None) -> TranscriptionResult:
        """Text, language and timed segments of a file or an array (any length; arrays at `sample_rate`)."""
        self.check_request(language, task)
        samples = load_audio(audio, sample_rate)
        if samples.size < HOP_LENGTH:
            raise AudioError(f"{audio if not isinstance(audio, np.ndarray) else 'array'}: shorter than 10 ms")
        return self.decoder.transcribe(samples, language, task, condition_on_previous_text, progress)
