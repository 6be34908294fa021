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
from whisper_tflite.runtime.formats import SubtitleLayout, cues, render
from whisper_tflite.runtime.timing import Word

SEGMENTS = [
    Segment(0.0, 2.5, " And so, my fellow Americans,", id=0),
    Segment(2.5, 61.0015, " ask not", id=1),  # rounds up to the next millisecond, and crosses a minute
    Segment(3599.9996, 3725.25, " what your country can do for you.", id=2),  # rounds to 01:00:00.000, past an hour
    Segment(36000.0, 36001.0, " Ten hours in: «ünïcödé» and a line\nbreak.", id=3),
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
    assert data["segments"][1] == {"id": 1, "seek": 0, "start": 2.5, "end": 61.0015, "text": " ask not", "tokens": [],
                                   "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0,
                                   "no_speech_prob": 0.0}


def test_txt_is_one_segment_a_line():
    assert render(RESULT, "txt").splitlines()[:3] == [s.text.strip() for s in SEGMENTS[:3]]


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format"):
        render(RESULT, "docx")


def _timed(start, words):
    """A segment whose words are 0.5 s apart, each 0.4 s long."""
    timed = [Word(start + 0.5 * i, start + 0.5 * i + 0.4, word, 0.9) for i, word in enumerate(words)]
    return Segment(timed[0].start, timed[-1].end, "".join(words), words=timed)


WORDY = TranscriptionResult(text="", language="en", language_probability=1.0, duration=20.0, segments=[
    _timed(0.0, [" And", " so", " my", " fellow", " Americans,"]),
    _timed(10.0, [" ask", " not."]),
])


def test_word_cues_follow_openai_layout():
    # By hand, after openai/whisper's iterate_result: a cue a segment by default...
    assert cues(WORDY) == [(0.0, 2.4, "And so my fellow Americans,"), (10.0, 10.9, "ask not.")]
    # ...lines of at most 12 characters, two lines a cue, and a new cue after a pause of over 3 s
    assert cues(WORDY, SubtitleLayout(max_line_width=12, max_line_count=2)) == [
        (0.0, 1.9, "And so my\nfellow"), (2.0, 2.4, "Americans,"), (10.0, 10.9, "ask not.")]
    # ...at most two words a line: each chunk its own cue while segments are kept
    assert [text for _, _, text in cues(WORDY, SubtitleLayout(max_words_per_line=2))] == [
        "And so", "my fellow", "Americans,", "ask not."]
    highlighted = cues(WORDY, SubtitleLayout(highlight_words=True))
    assert highlighted[:3] == [(0.0, 0.4, "<u>And</u> so my fellow Americans,"),
                               (0.4, 0.5, "And so my fellow Americans,"),
                               (0.5, 0.9, "And <u>so</u> my fellow Americans,")]


def test_highlighted_words_parse_as_vtt_and_srt():
    layout = SubtitleLayout(highlight_words=True)
    captions = webvtt.from_buffer(io.StringIO(render(WORDY, "vtt", layout=layout))).captions
    underlined = [c for c in captions if "<u>" in c.raw_text]
    assert len(underlined) == 7 and all(c.raw_text.count("<u>") == 1 for c in underlined)
    parsed = list(srt.parse(render(WORDY, "srt", layout=layout)))
    assert [c.start for c in parsed] == sorted(c.start for c in parsed) and len(parsed) == len(captions)


def test_segments_without_words_keep_their_text_in_subtitles():
    """A window whose text did not fit the alignment model has no words: its text still becomes a cue."""
    result = TranscriptionResult(text="", language="en", language_probability=1.0, duration=30.0, segments=[
        WORDY.segments[0], Segment(5.0, 8.0, " no words here", words=[]), WORDY.segments[1]])
    assert [text for _, _, text in cues(result)] == ["And so my fellow Americans,", "no words here", "ask not."]
