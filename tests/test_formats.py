"""The transcript writers, read back with real parsers (srt, webvtt-py, json, csv)."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
import srt
import webvtt

from whisper_tflite.runtime import Segment, TranscriptionResult
from whisper_tflite.runtime.formats import render

SEGMENTS = [
    Segment(0.0, 2.5, " And so, my fellow Americans,"),
    Segment(2.5, 61.0015, " ask not"),  # rounds up to the next millisecond, and crosses a minute
    Segment(3599.9996, 3725.25, " what your country can do for you."),  # rounds to 01:00:00.000, past an hour
    Segment(36000.0, 36001.0, " Ten hours in: «ünïcödé» and a line\nbreak."),
]
RESULT = TranscriptionResult(text="".join(s.text for s in SEGMENTS).strip(), language="en",
                             language_probability=1.0, segments=SEGMENTS, duration=36001.0)


def test_srt_parses_with_exact_times():
    cues = list(srt.parse(render(RESULT, "srt")))
    assert [c.index for c in cues] == [1, 2, 3, 4]
    assert [(c.start, c.end) for c in cues] == [
        (timedelta(0), timedelta(seconds=2.5)),
        (timedelta(seconds=2.5), timedelta(seconds=61, milliseconds=2)),
        (timedelta(hours=1), timedelta(hours=1, minutes=2, seconds=5, milliseconds=250)),
        (timedelta(hours=10), timedelta(hours=10, seconds=1)),
    ]
    assert [c.content for c in cues[:3]] == [s.text.strip() for s in SEGMENTS[:3]]
    assert "«ünïcödé»" in cues[3].content


def test_vtt_parses_with_exact_times():
    captions = webvtt.from_buffer(io.StringIO(render(RESULT, "vtt"))).captions
    assert [(c.start, c.end) for c in captions] == [
        ("00:00:00.000", "00:00:02.500"), ("00:00:02.500", "00:01:01.002"),
        ("01:00:00.000", "01:02:05.250"), ("10:00:00.000", "10:00:01.000")]
    assert [c.text for c in captions[:3]] == [s.text.strip() for s in SEGMENTS[:3]]


def test_tsv_has_milliseconds_and_a_header():
    rows = list(csv.reader(io.StringIO(render(RESULT, "tsv")), delimiter="\t"))
    assert rows[0] == ["start", "end", "text"]
    assert [(int(r[0]), int(r[1])) for r in rows[1:4]] == [(0, 2500), (2500, 61002), (3600000, 3725250)]


def test_json_has_the_documented_fields():
    data = json.loads(render(RESULT, "json", file="speech.flac"))
    assert set(data) == {"file", "language", "language_probability", "text", "segments"}
    assert data["file"] == "speech.flac" and data["text"] == RESULT.text
    assert data["segments"][1] == {"start": 2.5, "end": 61.0015, "text": " ask not"}


def test_txt_is_one_segment_a_line():
    assert render(RESULT, "txt").splitlines()[:3] == [s.text.strip() for s in SEGMENTS[:3]]


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format"):
        render(RESULT, "docx")
