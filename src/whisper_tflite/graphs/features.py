"""Whisper's log-mel front end as a graph of builtin TFLite ops, numerically the reference's.

`tf.signal.stft` only converts with a power-of-two FFT length (hence the n_fft 512 approximation elsewhere);
here the 400-point DFT is a matmul with a windowed cos/sin basis, so n_fft, window and padding are exact. The
basis is stored half: the periodic Hann window is symmetric and zero at sample 0, so sample n and sample 400 - n
meet the same cosine and opposite sines; a frame is folded first (their sum against the cosines, their
difference against the sines), which halves both the stored basis and the multiplications.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..audio import HOP_LENGTH, LOG_MEL_RANGE, N_FFT, N_FRAMES, N_SAMPLES
from .base import GraphModule

FRAME_ROWS = 300  # frames of the DFT computed at a time


def folded_dft_basis(n_fft: int = N_FFT) -> tuple[np.ndarray, np.ndarray]:
    """The one-sided DFT of a periodic-Hann-windowed frame, for folded frames: cos [n_fft/2, bins] against
    samples 1..n_fft/2 (x[n] + x[n_fft - n], and x[n_fft/2] alone), -sin [n_fft/2 - 1, bins] against samples
    1..n_fft/2 - 1 (x[n] - x[n_fft - n]); bins = n_fft/2 + 1."""
    half = n_fft // 2
    k = np.arange(half + 1)
    n = np.arange(1, half + 1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann, as torch.hann_window and HF
    angle = 2 * np.pi * np.outer(n, k) / n_fft
    return window[:, None] * np.cos(angle), -(window[:, None] * np.sin(angle))[:-1]


class FeatureExtractor(GraphModule):
    """PCM [480000] (30 s at 16 kHz, zero-padded by the caller) -> log_mel [1, n_mels, 3000], normalized by the
    window's loudest frame as Hugging Face's extractor does, and log10_mel [1, n_mels, 3000], the log10 mel power
    before that normalization: the runtime normalizes a whole file by its loudest frame, as openai/whisper and
    faster-whisper do for long audio."""

    role = "features"

    def __init__(self, mel_filters: np.ndarray):
        """`mel_filters`: [n_fft//2 + 1, n_mels] Slaney filters, e.g. `WhisperFeatureExtractor.mel_filters`."""
        super().__init__()
        self.n_mels = mel_filters.shape[1]
        self.cos_basis, self.sin_basis = (basis.astype(np.float32) for basis in folded_dft_basis())
        self.mel_filters = mel_filters.astype(np.float32)

    @classmethod
    def from_checkpoint(cls, checkpoint) -> "FeatureExtractor":
        return cls(np.asarray(checkpoint.feature_extractor.mel_filters))

    @property
    def input_signature(self):
        return [tf.TensorSpec([N_SAMPLES], tf.float32, name="pcm")]

    def call(self, inputs):
        pcm = inputs["pcm"]
        half = N_FFT // 2
        # center=True with reflect padding: 200 samples mirrored at each end, edges excluded. Frame i spans
        # samples 160 i - 200 to 160 i + 200; only the first 3000 of the 3001 frames are built (Whisper drops
        # the last one).
        before, after = tf.reverse(pcm[1 : half + 1], [0]), tf.reverse(pcm[-half - 1 : -1], [0])
        # FRAME_ROWS frames at a time, each block waiting on the one before (as attend_in_chunks): one block's
        # samples, frames and spectra are alive at once, not the window's.
        blocks = []
        for first in range(0, N_FRAMES, FRAME_ROWS):
            start = first * HOP_LENGTH - half
            end = start + (FRAME_ROWS + 2) * HOP_LENGTH
            with tf.control_dependencies(blocks[-1:]):
                pieces = [before[start:]] if start < 0 else []  # the first block reaches before the window
                pieces.append(pcm[max(start, 0) : min(end, N_SAMPLES)])
                if end > N_SAMPLES:  # the last, after it
                    pieces.append(after[: end - N_SAMPLES])
                samples = tf.concat(pieces, 0) if len(pieces) > 1 else tf.identity(pieces[0])
            blocks.append(self._mel_power(tf.reshape(samples, [FRAME_ROWS + 2, HOP_LENGTH])))
        mel = tf.concat(blocks, axis=0)  # [3000, n_mels]
        log10_mel = tf.reshape(tf.transpose(tf.math.log(tf.maximum(mel, 1e-10)) * (1.0 / np.log(10.0))),
                               [1, self.n_mels, N_FRAMES])
        log_mel = (tf.maximum(log10_mel, tf.reduce_max(log10_mel) - LOG_MEL_RANGE) + 4.0) / 4.0
        return {"log_mel": log_mel, "log10_mel": log10_mel}

    def _mel_power(self, rows: tf.Tensor) -> tf.Tensor:
        """Mel power [frames, n_mels] of the frames starting at each row of `rows` [frames + 2, 160] but the last
        two: frame i = row i, row i+1, first 80 samples of row i+2."""
        frames = tf.concat([rows[:-2], rows[1:-1], rows[2:, : N_FFT - 2 * HOP_LENGTH]], axis=1)
        half = N_FFT // 2
        mirrored = tf.reverse(frames[:, half + 1 :], [1])  # samples 399 down to 201
        even = tf.concat([frames[:, 1:half] + mirrored, frames[:, half : half + 1]], axis=1)  # [frames, 200]
        odd = frames[:, 1:half] - mirrored  # [frames, 199]
        power = tf.square(tf.matmul(even, self.cos_basis)) + tf.square(tf.matmul(odd, self.sin_basis))
        return tf.matmul(power, self.mel_filters)
