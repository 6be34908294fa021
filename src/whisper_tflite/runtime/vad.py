"""Voice activity detection as faster-whisper 1.2.1 does it (its `vad.py`, MIT, ported), on the bundle's `vad`
model: Silero VAD v6 rebuilt as a LiteRT graph (graphs/vad.py) in place of faster-whisper's onnxruntime session.

`get_speech_timestamps` finds the speech, `collect_chunks` joins it into the audio that is decoded, and
`SpeechTimestampsMap` maps times in that audio back to the original timeline. Names, fields, defaults and
results are faster-whisper's.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # only the older tflite-runtime package: the same interpreter
    from tflite_runtime.interpreter import Interpreter

from ..audio import SAMPLE_RATE
from ..errors import UsageError
from ..native_log import native_stderr_hidden

FRAME = 512  # samples per speech probability: 32 ms
CONTEXT = 64  # samples of the previous frame the network sees in front of each frame
STATE_SHAPE = (2, 1, 128)  # the LSTM's h and c


@dataclass
class VadOptions:
    """faster-whisper's VAD options, with its defaults.

    threshold: a frame whose speech probability is at least this is speech.
    neg_threshold: below this a frame is silence; between the two it continues what came before (default:
        threshold - 0.15, at least 0.01).
    min_speech_duration_ms: speech chunks this short or shorter are dropped.
    max_speech_duration_s: longer chunks are split at the last silence over 98 ms, else just before this.
    min_silence_duration_ms: silence that ends a chunk lasts at least this.
    speech_pad_ms: each chunk is widened by this on both sides (by half the gap where chunks are closer).
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_duration_ms: int = 0
    max_speech_duration_s: float = float("inf")
    min_silence_duration_ms: int = 2000
    speech_pad_ms: int = 400

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise UsageError(f"the VAD threshold is a probability in 0..1, got {self.threshold!r}")
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= 1.0:
            raise UsageError(f"the VAD neg_threshold is a probability in 0..1, got {self.neg_threshold!r}")
        for name in ("min_speech_duration_ms", "max_speech_duration_s", "min_silence_duration_ms",
                     "speech_pad_ms"):
            if not getattr(self, name) >= 0:
                raise UsageError(f"the VAD {name} cannot be negative, got {getattr(self, name)!r}")


class VadModel:
    """A `vad` .tflite file on the LiteRT interpreter: speech probabilities of 512-sample frames."""

    def __init__(self, path: str | Path, threads: int | None = None):
        with native_stderr_hidden():
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
            self.runner = interpreter.get_signature_runner()
        self.interpreter = interpreter  # the runner needs it alive
        self.frames = (int(self.runner.get_input_details()["pcm"]["shape"][0]) - CONTEXT) // FRAME

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """One probability per 512 samples of 16 kHz audio, zero-padded as faster-whisper pads it: by 1 to 512
        samples to a whole frame, the last frame's final 64 samples then zeroed (its framing does that through a
        view). Each frame sees the 64 samples before it (zeros before the first) and the LSTM state of all
        frames before it."""
        padded = np.zeros(len(audio) // FRAME * FRAME + FRAME + CONTEXT, np.float32)
        padded[CONTEXT : CONTEXT + len(audio)] = audio
        padded[-CONTEXT:] = 0
        total = (len(padded) - CONTEXT) // FRAME
        call = np.zeros(CONTEXT + self.frames * FRAME, np.float32)
        state = np.zeros(STATE_SHAPE, np.float32)
        probabilities = []
        for first in range(0, total, self.frames):
            piece = padded[first * FRAME : (first + self.frames) * FRAME + CONTEXT]
            call[: len(piece)] = piece
            call[len(piece) :] = 0  # past the end: frames whose outputs are dropped, after the last real one
            outputs = self.runner(pcm=call, state=state)
            state = outputs["next_state"]
            probabilities.append(outputs["speech_probs"][: total - first])
        return np.concatenate(probabilities)
