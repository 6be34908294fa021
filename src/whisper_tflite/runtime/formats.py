"""Writers for transcripts: plain text, SubRip, WebVTT, JSON and TSV (milliseconds, as openai/whisper)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .transcriber import TranscriptionResult

FORMATS = ("txt", "srt", "vtt", "json", "tsv")


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


@dataclass(frozen=True)
class SubtitleLayout:
    """openai-whisper's subtitle options, for results with word timestamps (its `--highlight_words`,
    `--max_line_width`, `--max_line_count`, `--max_words_per_line`)."""

    highlight_words: bool = False
    max_line_width: int | None = None
    max_line_count: int | None = None
    max_words_per_line: int | None = None


def cues(result: TranscriptionResult, layout: SubtitleLayout = SubtitleLayout()) -> list[tuple[float, float, str]]:
    """(start, end, text) of each subtitle. A segment a cue; with words, openai/whisper's `iterate_result`: lines
    filled up to `max_line_width` characters, a cue broken after `max_line_count` lines or a pause over 3 s (or at
    each segment when either is unset), at most `max_words_per_line` words a line, and with `highlight_words`
    one cue per word with that word underlined."""
    segments = result.segments
    if not segments or segments[0].words is None:
        return [(s.start, s.end, s.text.strip().replace("-->", "->")) for s in segments]
    out = []
    for subtitle in _subtitles(segments, layout):
        text = "".join(word for _, _, word in subtitle)
        if not layout.highlight_words:
            out.append((subtitle[0][0], subtitle[-1][1], text))
            continue
        last = subtitle[0][0]
        for i, (start, end, _) in enumerate(subtitle):
            if _clock(last, ".") != _clock(start, "."):
                out.append((last, start, text))
            out.append((start, end, "".join(re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", word) if j == i else word
                                            for j, (_, _, word) in enumerate(subtitle))))
            last = end
    return out


def _subtitles(segments, layout: SubtitleLayout):
    """openai/whisper's `iterate_subtitles`: lists of (start, end, word) whose words carry their line breaks."""
    preserve_segments = layout.max_line_count is None or layout.max_line_width is None
    max_line_width = layout.max_line_width or 1000
    max_words_per_line = layout.max_words_per_line or 1000
    line_len, line_count, subtitle = 0, 1, []
    last = segments[0].start
    for segment in segments:
        if not segment.words:  # a window whose text did not fit the alignment model: its text, as one cue
            if subtitle:
                yield subtitle
            yield [(segment.start, segment.end, segment.text.strip())]
            line_len, line_count, subtitle = 0, 1, []
            continue
        for chunk in range(0, len(segment.words), max_words_per_line):
            for i, timing in enumerate(segment.words[chunk : chunk + max_words_per_line]):
                word = timing.word
                long_pause = not preserve_segments and timing.start - last > 3.0
                has_room = line_len + len(word) <= max_line_width
                segment_break = i == 0 and len(subtitle) > 0 and preserve_segments
                if line_len > 0 and has_room and not long_pause and not segment_break:
                    line_len += len(word)  # the line goes on
                else:
                    word = word.strip()
                    if (subtitle and layout.max_line_count is not None
                            and (long_pause or line_count >= layout.max_line_count)) or segment_break:
                        yield subtitle  # a new cue
                        subtitle, line_count = [], 1
                    elif line_len > 0:  # a new line in the cue
                        line_count += 1
                        word = "\n" + word
                    line_len = len(word.strip())
                subtitle.append((timing.start, timing.end, word))
                last = timing.start
    if subtitle:
        yield subtitle


def render(result: TranscriptionResult, fmt: str, file: str | None = None,
           layout: SubtitleLayout = SubtitleLayout()) -> str:
    segments = result.segments
    if fmt == "txt":
        return "".join(s.text.strip() + "\n" for s in segments)
    if fmt == "srt":
        return "".join(f"{i}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n\n"
                       for i, (start, end, text) in enumerate(cues(result, layout), 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n\n"
                                       for start, end, text in cues(result, layout))
    if fmt == "tsv":
        rows = "".join(f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{s.text.strip()}\n" for s in segments)
        return "start\tend\ttext\n" + rows
    if fmt == "json":
        return json.dumps({"file": file, **result.to_dict()}, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
