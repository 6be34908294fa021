"""whisper-tflite: Whisper checkpoints -> TFLite/LiteRT bundles, and a runtime that needs no TensorFlow.

The public names are imported lazily, so `from whisper_tflite import Transcriber` never loads TensorFlow.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["BatchedInferencePipeline", "Segment", "Transcriber", "TranscriptionOptions", "TranscriptionResult",
           "WhisperModel", "convert", "load_whisper"]
_RUNTIME = ("Segment", "Transcriber", "TranscriptionOptions", "TranscriptionResult")


def __getattr__(name: str):
    if name in _RUNTIME:
        from . import runtime

        return getattr(runtime, name)
    if name in ("WhisperModel", "BatchedInferencePipeline"):
        from . import whisper_model

        return getattr(whisper_model, name)
    if name == "convert":
        from .conversion import convert

        return convert
    if name == "load_whisper":
        from .sources import load_whisper

        return load_whisper
    raise AttributeError(f"module 'whisper_tflite' has no attribute {name!r}")
