"""Writers for transcripts: plain text, SubRip, WebVTT, JSON and TSV (milliseconds, as openai/whisper)."""

from __future__ import annotations

import json

from .transcriber import TranscriptionResult

FORMATS = ("txt", "srt", "vtt", "json", "tsv")


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def render(result: TranscriptionResult, fmt: str, file: str | None = None) -> str:
    segments = result.segments
    if fmt == "txt":
        return "".join(s.text.strip() + "\n" for s in segments)
    if fmt == "srt":
        return "".join(
            f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n\n"
            for i, s in enumerate(segments, 1)
        )
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(
            f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n\n" for s in segments
        )
    if fmt == "tsv":
        rows = "".join(f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{s.text.strip()}\n" for s in segments)
        return "start\tend\ttext\n" + rows
    if fmt == "json":
        return json.dumps({"file": file, **result.to_dict()}, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
