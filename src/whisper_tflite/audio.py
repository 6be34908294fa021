"""Audio in: any file libsndfile reads, or an array, as 16 kHz mono float32 (runtime side)."""

from __future__ import annotations

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
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000


def load_audio(source: str | Path | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
    """Decodes a file (or takes an array) and returns 16 kHz mono float32 samples in [-1, 1].

    Arrays are [samples] or [samples, channels]; integer arrays are scaled by their type's range.
    `sample_rate` is required for arrays whose rate is not 16 kHz.
    """
    if isinstance(source, np.ndarray):
        return _to_mono_16k(_as_float(source, "array"), sample_rate or SAMPLE_RATE, "array")
    path = Path(source)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({_first_line(e)})") from None
    return _to_mono_16k(data, rate, str(path))


def _as_float(samples: np.ndarray, name: str) -> np.ndarray:
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        half = 2.0 ** (info.bits - 1)
        offset = 0.0 if info.min < 0 else half  # unsigned PCM (8-bit wav) is centred on half its range
        return ((samples.astype(np.float64) - offset) / half).astype(np.float32)
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    raise AudioError(f"{name}: samples of type {samples.dtype} are not audio")


def _to_mono_16k(samples: np.ndarray, rate: int, name: str) -> np.ndarray:
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    elif samples.ndim != 1:
        raise AudioError(f"{name}: expected [samples] or [samples, channels], got shape {samples.shape}")
    if samples.size == 0:
        raise AudioError(f"{name}: holds no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{name}: holds NaN or infinite samples")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{name}: sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def pad_or_trim(samples: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    """Zero-pads or cuts to exactly `length` samples, as Whisper's reference does before the mel."""
    if samples.shape[-1] >= length:
        return samples[..., :length]
    return np.pad(samples, [(0, 0)] * (samples.ndim - 1) + [(0, length - samples.shape[-1])])


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
