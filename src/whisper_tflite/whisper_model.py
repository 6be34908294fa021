"""faster-whisper's `WhisperModel` API over a bundle, so that its users switch with one import line.

`WhisperModel(model_size_or_path, device="cpu", compute_type="default", cpu_threads=0, num_workers=1)` takes a
bundle folder, or a model name (`convert` takes it) that is converted on first use into a cache folder (this needs
the `convert` extra). `transcribe` returns `(segments, info)` as faster-whisper 1.2.1's does: `segments` yields
each `Segment` as its window is decoded; `info` is a `TranscriptionInfo`. The options keep faster-whisper's names
and defaults; a `chunk_length` other than the encoder's 30 s is refused in one line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from .bundle import MANIFEST, user_cache_folder
from .errors import UsageError
from .runtime.timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS
from .runtime.transcriber import Segment, Transcriber, TranscriptionOptions
from .runtime.vad import VadOptions

# CTranslate2's compute types on a CPU -> the quantization policy of the bundle a model name is converted with
COMPUTE_TYPES = {"default": None, "auto": None, "int8": None, "int8_float32": None, "int8_float16": None,
                 "int8_bfloat16": None, "float32": "none", "float16": "fp16", "bfloat16": "fp16", "int4": "int4"}


@dataclass
class TranscriptionInfo:
    language: str
    language_probability: float
    duration: float
    duration_after_vad: float
    all_language_probs: list[tuple[str, float]] | None
    transcription_options: TranscriptionOptions
    vad_options: VadOptions


class WhisperModel:
    """A bundle behind faster-whisper's `WhisperModel` interface (see the module's docstring)."""

    def __init__(self, model_size_or_path: str, device: str = "cpu", device_index: int | list[int] = 0,
                 compute_type: str = "default", cpu_threads: int = 0, num_workers: int = 1,
                 download_root: str | None = None, local_files_only: bool = False, files: dict | None = None,
                 **model_kwargs):
        if device not in ("cpu", "auto"):
            raise UsageError(f"device {device!r}: whisper-tflite runs on the CPU (LiteRT with XNNPACK); use "
                             "device='cpu'")
        if compute_type not in COMPUTE_TYPES:
            raise UsageError(f"compute_type {compute_type!r}: choose one of {', '.join(COMPUTE_TYPES)}")
        if files is not None or model_kwargs:
            raise UsageError(f"{'files' if files is not None else next(iter(model_kwargs))}: not an option of "
                             "whisper-tflite's WhisperModel")
        folder = Path(model_size_or_path)
        if not (folder / MANIFEST).is_file():
            folder = _converted(model_size_or_path, COMPUTE_TYPES[compute_type], download_root, local_files_only)
        self.transcriber = Transcriber(folder, threads=cpu_threads or None, num_workers=num_workers)
        self.model_path = folder

    @property
    def supported_languages(self) -> list[str]:
        return self.transcriber.languages

    def transcribe(
        self,
        audio: str | BinaryIO | np.ndarray,
        language: str | None = None,
        task: str = "transcribe",
        log_progress: bool = False,
        beam_size: int = 5,
        best_of: int = 5,
        patience: float = 1,
        length_penalty: float = 1,
        repetition_penalty: float = 1,
        no_repeat_ngram_size: int = 0,
        temperature: float | list[float] | tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        compression_ratio_threshold: float | None = 2.4,
        log_prob_threshold: float | None = -1.0,
        no_speech_threshold: float | None = 0.6,
        condition_on_previous_text: bool = True,
        prompt_reset_on_temperature: float = 0.5,
        initial_prompt: str | Iterable[int] | None = None,
        prefix: str | None = None,
        suppress_blank: bool = True,
        suppress_tokens: list[int] | None = (-1,),
        without_timestamps: bool = False,
        max_initial_timestamp: float = 1.0,
        word_timestamps: bool = False,
        prepend_punctuations: str = PREPEND_PUNCTUATIONS,
        append_punctuations: str = APPEND_PUNCTUATIONS,
        multilingual: bool = False,
        vad_filter: bool = False,
        vad_parameters: dict | VadOptions | None = None,
        max_new_tokens: int | None = None,
        chunk_length: int | None = None,
        clip_timestamps: str | list[float] = "0",
        hallucination_silence_threshold: float | None = None,
        hotwords: str | None = None,
        language_detection_threshold: float | None = 0.5,
        language_detection_segments: int = 1,
    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """faster-whisper's `WhisperModel.transcribe`: the segments as they are decoded, and what is known before
        the first (language, durations, options)."""
        # every other parameter is the `TranscriptionOptions` field of its name
        options = {name: value for name, value in locals().items() if name not in ("self", "audio", "language",
                                                                                     "task", "log_progress")}
        return self._transcribe(audio, language, task, log_progress, **options)

    def _transcribe(self, audio, language: str | None, task: str, log_progress: bool, chunk_length: int | None,
                    initial_prompt: str | Iterable[int] | None, **options) -> tuple[Iterator[Segment],
                                                                                    TranscriptionInfo]:
        if chunk_length not in (None, 30):
            raise UsageError(f"chunk_length {chunk_length!r}: the bundle's encoder takes 30 s windows")
        if initial_prompt is not None and not isinstance(initial_prompt, str):
            initial_prompt = self.transcriber.tokenizer.decode(initial_prompt)
        options = TranscriptionOptions(initial_prompt=initial_prompt, **options)
        bar = _ProgressBar() if log_progress else None
        stream = self.transcriber.stream(audio, language, task, options=options, progress=bar)
        info = TranscriptionInfo(stream.language, stream.language_probability, stream.duration,
                                 stream.duration_after_vad, stream.all_language_probs, options,
                                 options.vad_parameters)
        return (_closing(stream.segments, bar) if bar is not None else stream.segments), info

    def detect_language(self, audio: np.ndarray | None = None, features: np.ndarray | None = None,
                        vad_filter: bool = False, vad_parameters: dict | VadOptions | None = None,
                        language_detection_segments: int = 1,
                        language_detection_threshold: float = 0.5) -> tuple[str, float, list[tuple[str, float]]]:
        """faster-whisper's `detect_language` on 16 kHz samples (`features` are refused: the bundle computes its
        own log-mel)."""
        if audio is None:
            raise UsageError("detect_language takes audio: 16 kHz samples (the bundle computes its own log-mel)")
        return self.transcriber.detect_language(audio, vad_filter, vad_parameters,
                                                language_detection_segments, language_detection_threshold)


class BatchedInferencePipeline:
    """faster-whisper's `BatchedInferencePipeline(model)`: the speech the VAD finds, in chunks of up to 30 s decoded
    `batch_size` at a time on the bundle's decoder_chunks model (runtime/batched.py), a segment a chunk."""

    def __init__(self, model: WhisperModel):
        self.model = model

    def transcribe(
        self,
        audio: str | BinaryIO | np.ndarray,
        language: str | None = None,
        task: str = "transcribe",
        log_progress: bool = False,
        beam_size: int = 5,
        best_of: int = 5,
        patience: float = 1,
        length_penalty: float = 1,
        repetition_penalty: float = 1,
        no_repeat_ngram_size: int = 0,
        temperature: float | list[float] | tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        compression_ratio_threshold: float | None = 2.4,
        log_prob_threshold: float | None = -1.0,
        no_speech_threshold: float | None = 0.6,
        condition_on_previous_text: bool = True,
        prompt_reset_on_temperature: float = 0.5,
        initial_prompt: str | Iterable[int] | None = None,
        prefix: str | None = None,
        suppress_blank: bool = True,
        suppress_tokens: list[int] | None = (-1,),
        without_timestamps: bool = True,
        max_initial_timestamp: float = 1.0,
        word_timestamps: bool = False,
        prepend_punctuations: str = PREPEND_PUNCTUATIONS,
        append_punctuations: str = APPEND_PUNCTUATIONS,
        multilingual: bool = False,
        vad_filter: bool = True,
        vad_parameters: dict | VadOptions | None = None,
        max_new_tokens: int | None = None,
        chunk_length: int | None = None,
        clip_timestamps: list[dict] | None = None,
        hallucination_silence_threshold: float | None = None,
        batch_size: int = 8,
        hotwords: str | None = None,
        language_detection_threshold: float | None = 0.5,
        language_detection_segments: int = 1,
    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """faster-whisper's `BatchedInferencePipeline.transcribe`, with its defaults (the VAD filter on, no
        timestamps, 8 chunks a batch). Refused in one line: speech chunks given as `clip_timestamps`, timestamps
        inside chunks, and the VAD filter off."""
        if clip_timestamps is not None:
            raise UsageError("clip_timestamps: not with batched transcription in whisper-tflite yet (the VAD "
                             "filter finds the chunks)")
        if not without_timestamps:
            raise UsageError("without_timestamps=False: batched chunks are decoded without timestamps in "
                             "whisper-tflite (word_timestamps=True gives times within them)")
        if not vad_filter:
            raise UsageError("vad_filter=False: batched transcription decodes the speech the VAD filter finds; "
                             "leave it on")
        # every other parameter is the `TranscriptionOptions` field of its name
        options = {name: value for name, value in locals().items() if name not in ("self", "audio", "language",
                                                                                     "task", "log_progress")}
        return self.model._transcribe(audio, language, task, log_progress, **options | {"clip_timestamps": "0"})


def _converted(source: str, quantize: str | None, download_root: str | None, local_files_only: bool) -> Path:
    """The bundle of `source` (a model name, a CTranslate2 or Hugging Face folder) in the cache, converted the
    first time it is asked for."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).name or source)
    if Path(source).exists():  # a folder of weights: one bundle per folder
        name += "-" + hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:8]
    folder = Path(download_root or user_cache_folder() / "bundles") / f"{name}-{quantize or 'default'}"
    if (folder / MANIFEST).is_file():
        return folder
    if local_files_only:
        raise UsageError(f"{source}: not converted yet ({folder} has no bundle) and local_files_only is set")
    try:
        from .conversion import convert
    except ImportError as error:
        raise UsageError(f"{source}: converting it needs the conversion extra (pip install "
                         f"'whisper-tflite[convert]'; {error.name} is missing), or give a bundle folder") from None
    return convert(source, folder, quantize=quantize, force=True)


class _ProgressBar:
    """faster-whisper's `log_progress`: a bar over the audio's frames on stderr."""

    def __init__(self):
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frames")
        self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _closing(segments: Iterator[Segment], bar: _ProgressBar) -> Iterator[Segment]:
    try:
        yield from segments
    finally:
        bar.close()


__all__ = ["BatchedInferencePipeline", "Segment", "TranscriptionInfo", "WhisperModel"]
