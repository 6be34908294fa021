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

from ..audio import SAMPLE_RATE
from ..bundle import Bundle
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

    @classmethod
    def of(cls, parameters: "VadOptions | dict | None") -> "VadOptions":
        """What `vad_parameters` takes, as faster-whisper's `transcribe` does: options, a dict of their fields,
        or None for the defaults."""
        if parameters is None or isinstance(parameters, VadOptions):
            return parameters or cls()
        if not isinstance(parameters, dict):
            raise UsageError(f"vad_parameters must be VadOptions or a dict of its fields, got {parameters!r}")
        unknown = set(parameters) - set(cls.__dataclass_fields__)
        if unknown:
            raise UsageError(f"unknown VAD option {sorted(unknown)[0]!r}: choose from "
                             f"{', '.join(cls.__dataclass_fields__)}")
        return cls(**parameters)


class VadModel:
    """A `vad` .tflite file on the LiteRT interpreter: speech probabilities of 512-sample frames."""

    def __init__(self, path: str | Path, threads: int | None = None):
        try:  # here, not at the top: the options above are imported where no model runs (`convert`)
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # only the older tflite-runtime package: the same interpreter
            from tflite_runtime.interpreter import Interpreter

        with native_stderr_hidden():
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
            self.runner = interpreter.get_signature_runner()
        self.interpreter = interpreter  # the runner needs it alive
        self.frames = (int(self.runner.get_input_details()["pcm"]["shape"][0]) - CONTEXT) // FRAME

    @classmethod
    def from_bundle(cls, bundle: Bundle, threads: int | None = None) -> "VadModel":
        return cls(bundle.path("vad"), threads)

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


def get_speech_timestamps(audio: np.ndarray, model: VadModel, vad_options: VadOptions | None = None,
                          **kwargs) -> list[dict]:
    """Speech chunks of 16 kHz audio as [{"start": sample, "end": sample}, ...], found with `model` as
    faster-whisper finds them; `kwargs` are VadOptions fields, when `vad_options` is not given."""
    options = vad_options or VadOptions(**kwargs)
    threshold = options.threshold
    neg_threshold = options.neg_threshold
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    min_speech_samples = SAMPLE_RATE * options.min_speech_duration_ms / 1000
    speech_pad_samples = SAMPLE_RATE * options.speech_pad_ms / 1000
    max_speech_samples = SAMPLE_RATE * options.max_speech_duration_s - FRAME - 2 * speech_pad_samples
    min_silence_samples = SAMPLE_RATE * options.min_silence_duration_ms / 1000
    min_silence_samples_at_max_speech = SAMPLE_RATE * 98 / 1000

    triggered = False
    speeches, current = [], {}
    temp_end = 0  # where the silence that may end the current chunk began
    prev_end = next_start = 0  # where to split the current chunk if it grows past the maximum
    for i, probability in enumerate(model(audio)):
        position = FRAME * i
        if probability >= threshold and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = position
        if probability >= threshold and not triggered:
            triggered = True
            current["start"] = position
            continue
        if triggered and position - current["start"] > max_speech_samples:
            if prev_end:  # split at the last long enough silence
                current["end"] = prev_end
                speeches.append(current)
                current = {}
                if next_start < prev_end:  # still in that silence
                    triggered = False
                else:
                    current["start"] = next_start
                prev_end = next_start = temp_end = 0
            else:  # no silence to split at: cut here
                current["end"] = position
                speeches.append(current)
                current = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue
        if probability < neg_threshold and triggered:
            if not temp_end:
                temp_end = position
            if position - temp_end > min_silence_samples_at_max_speech:
                prev_end = temp_end
            if position - temp_end < min_silence_samples:
                continue
            current["end"] = temp_end
            if current["end"] - current["start"] > min_speech_samples:
                speeches.append(current)
            current = {}
            prev_end = next_start = temp_end = 0
            triggered = False
    if current and len(audio) - current["start"] > min_speech_samples:
        current["end"] = len(audio)
        speeches.append(current)

    for i, speech in enumerate(speeches):  # padding: half the gap where two chunks are closer than twice it
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - speech_pad_samples))
        if i == len(speeches) - 1:
            speech["end"] = int(min(len(audio), speech["end"] + speech_pad_samples))
            continue
        following = speeches[i + 1]
        silence = following["start"] - speech["end"]
        if silence < 2 * speech_pad_samples:
            speech["end"] += int(silence // 2)
            following["start"] = int(max(0, following["start"] - silence // 2))
        else:
            speech["end"] = int(min(len(audio), speech["end"] + speech_pad_samples))
            following["start"] = int(max(0, following["start"] - speech_pad_samples))
    return speeches


def collect_chunks(audio: np.ndarray, chunks: list[dict], sampling_rate: int = SAMPLE_RATE,
                   max_duration: float = float("inf")) -> tuple[list[np.ndarray], list[dict]]:
    """The chunks' audio joined into pieces of at most `max_duration` seconds, with each piece's offset and
    duration in the joined audio (seconds) and its chunks (`segments`); one empty piece if there is no chunk."""
    pieces, metadata = [], []
    current, segments, duration, offset = [], [], 0, 0
    for chunk in chunks:
        length = chunk["end"] - chunk["start"]
        if duration + length > max_duration * sampling_rate:
            # As faster-whisper: the chunk that starts a new piece is not listed in its `segments`.
            pieces.append(np.concatenate(current or [np.zeros(0, np.float32)]))
            metadata.append({"offset": offset / sampling_rate, "duration": duration / sampling_rate,
                             "segments": segments})
            offset += duration
            current, segments, duration = [audio[chunk["start"] : chunk["end"]]], [], length
        else:
            current.append(audio[chunk["start"] : chunk["end"]])
            segments.append(chunk)
            duration += length
    pieces.append(np.concatenate(current or [np.zeros(0, np.float32)]))
    metadata.append({"offset": offset / sampling_rate, "duration": duration / sampling_rate, "segments": segments})
    return pieces, metadata


class SpeechTimestampsMap:
    """Maps times in the joined speech chunks back to the original audio."""

    def __init__(self, chunks: list[dict], sampling_rate: int = SAMPLE_RATE, time_precision: int = 2):
        self.sampling_rate = sampling_rate
        self.time_precision = time_precision
        self.chunk_end_sample = []  # each chunk's end in the joined audio
        self.total_silence_before = []  # seconds cut before each chunk
        previous_end = silent_samples = 0
        for chunk in chunks:
            silent_samples += chunk["start"] - previous_end
            previous_end = chunk["end"]
            self.chunk_end_sample.append(chunk["end"] - silent_samples)
            self.total_silence_before.append(silent_samples / sampling_rate)

    def get_original_time(self, time: float, chunk_index: int | None = None, is_end: bool = False) -> float:
        if chunk_index is None:
            chunk_index = self.get_chunk_index(time, is_end)
        return round(self.total_silence_before[chunk_index] + time, self.time_precision)

    def get_chunk_index(self, time: float, is_end: bool = False) -> int:
        """The chunk `time` falls in; a time exactly at a chunk's end belongs to that chunk if `is_end`, else
        to the next."""
        sample = int(time * self.sampling_rate)
        if is_end and sample in self.chunk_end_sample:
            return self.chunk_end_sample.index(sample)
        return min(bisect.bisect(self.chunk_end_sample, sample), len(self.chunk_end_sample) - 1)
