"""Audio in: files libsndfile or FFmpeg read, stdin, bytes or arrays, as 16 kHz mono float32 (runtime side).

Files are decoded, mixed down and resampled in blocks into one preallocated array, so an hour of 44.1 kHz
stereo never exists in memory whole: only the 16 kHz result does (230 MB an hour).
"""

from __future__ import annotations

import io
import math
import struct
import sys
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile
import soxr

from .errors import AudioError

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples in a 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames a second
LOG_MEL_RANGE = 8.0  # decades of mel power kept below the loudest frame
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
BLOCK_SECONDS = 10
MAX_CHANNELS = 8

AudioSource = Union[str, Path, bytes, bytearray, memoryview, BinaryIO, np.ndarray]


def load_audio(source: AudioSource, sample_rate: int | None = None) -> np.ndarray:
    """Decodes a file, "-" (standard input), bytes or a binary file object, or takes an array, and returns
    16 kHz mono float32 samples.

    Arrays are [samples], [samples, channels] or [channels, samples] (as librosa and torchaudio give them: the
    shorter axis, if it has at most 8 entries, is the channels); integer arrays are scaled by their type's range.
    `sample_rate` is required for arrays whose rate is not 16 kHz.
    """
    name = source_name(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, sample_rate)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(source), name)
    if hasattr(source, "read"):
        if isinstance(source, io.TextIOBase):
            raise AudioError(f"{name}: opened as text; open audio in binary mode ('rb')")
        return _decode(source if _seekable(source) else io.BytesIO(source.read()), name)
    if name == "stdin":
        return _decode(io.BytesIO(sys.stdin.buffer.read()), name)
    path = Path(source)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        with open(path, "rb") as f:
            return _decode(f, str(path))
    except OSError as e:  # unreadable (permissions, I/O error): a problem with this input, not the program
        raise AudioError(f"{path}: cannot read it ({e.strerror or e})") from None


def source_name(source: AudioSource) -> str:
    """How messages name an audio input: its path, "stdin", or its kind."""
    if isinstance(source, np.ndarray):
        return "array"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "bytes"
    if hasattr(source, "read"):
        return str(getattr(source, "name", "file object"))
    return "stdin" if str(source) == "-" else str(source)


def _from_array(source: np.ndarray, sample_rate: int | None) -> np.ndarray:
    samples = _as_float(source, "array")
    if samples.ndim == 2:
        channels_first = samples.shape[0] < samples.shape[1] and samples.shape[0] <= MAX_CHANNELS
        samples = samples.mean(axis=0 if channels_first else 1, dtype=np.float32)
    elif samples.ndim != 1:
        raise AudioError(f"array: expected [samples] or [samples, channels], got shape {samples.shape}")
    rate = sample_rate or SAMPLE_RATE
    _check_rate(rate, "array")
    _check_samples(samples, "array")
    if samples.size == 0:
        raise AudioError("array: holds no samples")
    resampled = samples if rate == SAMPLE_RATE else soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(resampled, dtype=np.float32)


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError):
        return False


def _decode(stream: BinaryIO, name: str) -> np.ndarray:
    """libsndfile first (exact, and the WAV truncation check); what it cannot read goes to FFmpeg (PyAV)."""
    start = stream.tell()
    if stream.seek(0, io.SEEK_END) == start:
        raise AudioError(f"{name}: the file is empty" if name not in ("stdin", "bytes") else f"{name}: no data")
    stream.seek(start)
    try:
        samples = _decode_with_libsndfile(stream, name)
    except soundfile.LibsndfileError as e:
        if "Format not recognised" not in str(e):
            raise AudioError(f"{name}: cannot decode audio ({_first_line(e)})") from None
        stream.seek(start)
        samples = _decode_with_ffmpeg(stream, name)
    except (RuntimeError, TypeError) as e:
        raise AudioError(f"{name}: cannot decode audio ({_first_line(e)})") from None
    if samples.size == 0:
        raise AudioError(f"{name}: holds no samples")
    return samples


def _decode_with_libsndfile(stream: BinaryIO, name: str) -> np.ndarray:
    with soundfile.SoundFile(stream) as f:
        rate, channels, frames = f.samplerate, f.channels, f.frames
        _check_rate(rate, name)
        if f.format == "WAV":
            _check_wav_complete(stream, name)
        if frames <= 0:
            raise AudioError(f"{name}: holds no samples")
        out = np.empty(math.ceil(frames * SAMPLE_RATE / rate) + SAMPLE_RATE, dtype=np.float32)
        filled = 0
        resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "float32", "HQ")
        for block in f.blocks(blocksize=rate * BLOCK_SECONDS, dtype="float32", always_2d=True):
            mono = block[:, 0] if channels == 1 else block.mean(axis=1, dtype=np.float32)
            _check_samples(mono, name)
            out, filled = _append(out, filled, mono if resampler is None else resampler.resample_chunk(mono))
        if resampler is not None:
            out, filled = _append(out, filled, resampler.resample_chunk(np.empty(0, np.float32), last=True))
    return out[:filled]


def _decode_with_ffmpeg(stream: BinaryIO, name: str) -> np.ndarray:
    """The first audio stream of any container FFmpeg reads (m4a, mp4, webm, mkv, ...), mixed down and
    resampled by FFmpeg frame by frame, as faster-whisper decodes."""
    import av

    try:
        with av.open(stream, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(f"{name}: has no audio stream")
            seconds = container.duration / av.time_base if container.duration else CHUNK_SECONDS
            out = np.empty(math.ceil(seconds * SAMPLE_RATE) + SAMPLE_RATE, dtype=np.float32)
            filled = 0
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(container.streams.audio[0]):
                for mono in resampler.resample(frame):
                    out, filled = _append(out, filled, _checked(mono.to_ndarray().reshape(-1), name))
            for mono in resampler.resample(None):
                out, filled = _append(out, filled, _checked(mono.to_ndarray().reshape(-1), name))
    except av.FFmpegError as e:
        raise AudioError(f"{name}: cannot decode audio ({getattr(e, 'strerror', None) or _first_line(e)}); readable are the formats of "
                         f"libsndfile (wav, flac, ogg, mp3, ...) and FFmpeg (m4a, mp4, webm, mkv, ...)") from None
    return out[:filled]


def _checked(samples: np.ndarray, name: str) -> np.ndarray:
    _check_samples(samples, name)
    return samples


def _append(out: np.ndarray, filled: int, chunk: np.ndarray) -> tuple[np.ndarray, int]:
    if filled + len(chunk) > len(out):  # the header understated the length: grow once, generously
        out = np.concatenate([out[:filled], np.empty(max(len(chunk), len(out) // 2), np.float32)])
    out[filled : filled + len(chunk)] = chunk
    return out, filled + len(chunk)


def _check_wav_complete(stream: BinaryIO, name: str) -> None:
    """libsndfile silently reads a cut-off WAV up to where it ends; the data chunk's declared size tells."""
    here = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    try:
        stream.seek(0)
        header = stream.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return  # RF64, W64 and others: trust libsndfile
        offset = 12
        while offset + 8 <= size:
            stream.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", stream.read(8))
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size != 0xFFFFFFFF and chunk_size > available:
                    raise AudioError(f"{name}: truncated WAV (its data chunk declares {chunk_size} bytes, "
                                     f"{available} are present)")
                return
            offset += 8 + chunk_size + (chunk_size & 1)
    finally:
        stream.seek(here)


def _as_float(samples: np.ndarray, name: str) -> np.ndarray:
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        half = 2.0 ** (info.bits - 1)
        offset = 0.0 if info.min < 0 else half  # unsigned PCM (8-bit wav) is centred on half its range
        return ((samples.astype(np.float64) - offset) / half).astype(np.float32)
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    raise AudioError(f"{name}: samples of type {samples.dtype} are not audio")


def _check_rate(rate: int, name: str) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{name}: sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")


def _check_samples(samples: np.ndarray, name: str) -> None:
    if not np.isfinite(samples).all():
        raise AudioError(f"{name}: holds NaN or infinite samples")


def pad_or_trim(samples: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    """Zero-pads or cuts to exactly `length` samples, as Whisper's reference does before the mel."""
    if samples.shape[-1] >= length:
        return samples[..., :length]
    return np.pad(samples, [(0, 0)] * (samples.ndim - 1) + [(0, length - samples.shape[-1])])


def normalize_log_mel(log10_mel: np.ndarray, loudest: float) -> np.ndarray:
    """Whisper's log-mel scale: at most `LOG_MEL_RANGE` decades below the loudest value, then (x + 4) / 4.
    In place: for an hour of audio each temporary copy would be 115 MB."""
    np.maximum(log10_mel, loudest - LOG_MEL_RANGE, out=log10_mel)
    log10_mel += 4.0
    log10_mel /= 4.0
    return log10_mel


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
