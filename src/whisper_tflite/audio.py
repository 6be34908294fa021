"""Audio in: any file libsndfile reads, or an array, as 16 kHz mono float32 (runtime side).

Files are decoded, mixed down and resampled in blocks into one preallocated array, so an hour of 44.1 kHz
stereo never exists in memory whole: only the 16 kHz result does (230 MB an hour).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

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
LOG_MEL_RANGE = 8.0  # decades of mel power kept below the loudest frame
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
BLOCK_SECONDS = 10


def load_audio(source: str | Path | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
    """Decodes a file (or takes an array) and returns 16 kHz mono float32 samples.

    Arrays are [samples] or [samples, channels]; integer arrays are scaled by their type's range.
    `sample_rate` is required for arrays whose rate is not 16 kHz.
    """
    if isinstance(source, np.ndarray):
        samples = _as_float(source, "array")
        if samples.ndim == 2:
            samples = samples.mean(axis=1, dtype=np.float32)
        elif samples.ndim != 1:
            raise AudioError(f"array: expected [samples] or [samples, channels], got shape {samples.shape}")
        rate = sample_rate or SAMPLE_RATE
        _check_rate(rate, "array")
        _check_samples(samples, "array")
        if samples.size == 0:
            raise AudioError("array: holds no samples")
        resampled = samples if rate == SAMPLE_RATE else soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
        return np.ascontiguousarray(resampled, dtype=np.float32)
    return _decode_file(Path(source))


def _decode_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty")
    try:
        with soundfile.SoundFile(str(path)) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
            _check_rate(rate, str(path))
            if f.format == "WAV":
                _check_wav_complete(path)
            if frames <= 0:
                raise AudioError(f"{path}: holds no samples")
            out = np.empty(math.ceil(frames * SAMPLE_RATE / rate) + SAMPLE_RATE, dtype=np.float32)
            filled = 0
            stream = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "float32", "HQ")
            for block in f.blocks(blocksize=rate * BLOCK_SECONDS, dtype="float32", always_2d=True):
                mono = block[:, 0] if channels == 1 else block.mean(axis=1, dtype=np.float32)
                _check_samples(mono, str(path))
                chunk = mono if stream is None else stream.resample_chunk(mono)
                out, filled = _append(out, filled, chunk)
            if stream is not None:
                out, filled = _append(out, filled, stream.resample_chunk(np.empty(0, np.float32), last=True))
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: cannot decode audio ({_first_line(e)})") from None
    if filled == 0:
        raise AudioError(f"{path}: holds no samples")
    return out[:filled]


def _append(out: np.ndarray, filled: int, chunk: np.ndarray) -> tuple[np.ndarray, int]:
    if filled + len(chunk) > len(out):  # the header understated the length: grow once, generously
        out = np.concatenate([out[:filled], np.empty(max(len(chunk), len(out) // 2), np.float32)])
    out[filled : filled + len(chunk)] = chunk
    return out, filled + len(chunk)


def _check_wav_complete(path: Path) -> None:
    """libsndfile silently reads a cut-off WAV up to where it ends; the data chunk's declared size tells."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return  # RF64, W64 and others: trust libsndfile
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size != 0xFFFFFFFF and chunk_size > available:
                    raise AudioError(f"{path}: truncated WAV (its data chunk declares {chunk_size} bytes, "
                                     f"{available} are present)")
                return
            offset += 8 + chunk_size + (chunk_size & 1)


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
    """Whisper's log-mel scale: at most `LOG_MEL_RANGE` decades below the loudest value, then (x + 4) / 4."""
    return (np.maximum(log10_mel, loudest - LOG_MEL_RANGE) + 4.0) / 4.0


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
