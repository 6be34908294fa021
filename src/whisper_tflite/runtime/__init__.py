"""The device side: bundle -> text with the LiteRT interpreter, numpy, tokenizers, soundfile and soxr only."""

from .transcriber import Segment, Transcriber, TranscriptionResult

__all__ = ["Segment", "Transcriber", "TranscriptionResult"]
