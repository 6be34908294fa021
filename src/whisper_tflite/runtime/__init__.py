"""The device side: bundle -> text with the LiteRT interpreter, numpy, tokenizers, soundfile and soxr only."""

from .transcriber import Segment, Transcriber, TranscriptionOptions, TranscriptionResult

__all__ = ["Segment", "Transcriber", "TranscriptionOptions", "TranscriptionResult"]
