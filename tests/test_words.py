"""Word timestamps, held against faster-whisper's `word_timestamps=True` on the same CTranslate2 weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from whisper_tflite.errors import BundleError
from whisper_tflite.evaluation import faster_whisper_transcribe, word_agreement
from whisper_tflite.runtime import Transcriber
from whisper_tflite.runtime.timing import dtw, median_filter


@pytest.fixture(scope="module")
def fp32_words(tiny_bundle, tiny_en_ct2, english_clips, audio_cache):
    """(our segments, faster-whisper float32's segments) per English clip, greedy, previous text on (both)."""
    transcriber = Transcriber(tiny_bundle, threads=2)
    runs = []
    for clip in english_clips:
        audio = audio_cache(clip)
        ours = transcriber.transcribe(audio, language="en", word_timestamps=True, beam_size=1, best_of=1)
        theirs = faster_whisper_transcribe(tiny_en_ct2, audio, "float32", word_timestamps=True)  # greedy too
        runs.append((clip, ours, theirs))
    return runs


def test_fp32_words_match_faster_whisper(fp32_words):
    agreement = word_agreement([([w for s in ours.segments for w in s.words], [w for s in theirs for w in s.words])
                                for _, ours, theirs in fp32_words])
    print(f"\nfp32 tiny.en vs faster-whisper float32: {agreement.summary()}")
    assert agreement.words >= 400
    assert agreement.same >= 0.95
    assert np.median(agreement.start_differences) <= 0.06
    assert np.percentile(agreement.start_differences, 95) <= 0.2


def test_words_are_ordered_inside_their_segments(fp32_words):
    for clip, ours, _ in fp32_words:
        words = []
        for segment in ours.segments:
            assert segment.words, f"{clip.name}: a segment without words"
            assert "".join(w.word for w in segment.words) == segment.text, clip.name
            for word in segment.words:
                assert segment.start <= word.start <= word.end <= segment.end, (clip.name, segment, word)
                assert 0.0 <= word.probability <= 1.0
            words += segment.words
        assert all(a.end <= b.start for a, b in zip(words, words[1:])), f"{clip.name}: words overlap"


def test_words_in_json(tiny_bundle, english_clips, capsys):
    from whisper_tflite.cli import main

    jfk = next(c for c in english_clips if c.name == "en_jfk_whisper-cpp.wav")
    assert main(["transcribe", str(jfk.path), "--model", str(tiny_bundle), "--format", "json", "--threads", "2",
                 "--word-timestamps"]) == 0
    segments = json.loads(capsys.readouterr().out)["segments"]
    words = [w for s in segments for w in s["words"]]
    assert [w["word"].strip(" ,.") for w in words[:3]] == ["And", "so", "my"]  # beam 5 writes "so,"
    assert set(words[0]) == {"start", "end", "word", "probability"}
    assert main(["transcribe", str(jfk.path), "--model", str(tiny_bundle), "--format", "json", "--threads", "2"]) == 0
    assert "words" not in json.loads(capsys.readouterr().out)["segments"][0]


def test_bundle_without_alignment_refuses_words(tiny_bundle, tmp_path, english_clips, capsys):
    """An older bundle (no alignment role, no alignment_heads) still loads and transcribes; words fail in one
    line."""
    from whisper_tflite.cli import main

    bundle = tmp_path / "old"
    shutil.copytree(tiny_bundle, bundle, ignore=shutil.ignore_patterns("alignment.tflite"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["models"]["alignment"], manifest["alignment_heads"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    transcriber = Transcriber(bundle, threads=2)
    jfk = next(c for c in english_clips if c.name == "en_jfk_whisper-cpp.wav")
    with pytest.raises(BundleError, match="no alignment model"):
        transcriber.transcribe(jfk.path, word_timestamps=True)
    assert main(["transcribe", str(jfk.path), "--model", str(bundle), "--word-timestamps"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no alignment model" in error


def test_dtw_and_median_filter_follow_openai():
    # The path openai's `dtw_cpu` takes through this cost (also checked against it on random matrices).
    tokens, frames = dtw(-np.eye(3, 5, dtype=np.float32))
    assert tokens.tolist() == [0, 1, 1, 2, 2, 2, 2] and frames.tolist() == [0, 0, 1, 1, 2, 3, 4]
    x = np.array([[1.0, 9.0, 2.0, 3.0, 8.0, 4.0]])
    assert median_filter(x, 3).tolist() == [[9.0, 2.0, 3.0, 3.0, 4.0, 8.0]]


def test_words_split_at_spaces_or_characters(tiny_bundle):
    from whisper_tflite.tokens import WhisperTokenizer
    from whisper_tflite.runtime.timing import split_to_word_tokens

    tokenizer = WhisperTokenizer.from_file(tiny_bundle / "tokenizer.json.gz", multilingual=False)
    words, tokens = split_to_word_tokens(tokenizer, tokenizer.encode(" Hello, wonderful world!"), "en")
    assert words == [" Hello", ",", " wonderful", " world", "!"]
    assert [t for piece in tokens for t in piece] == tokenizer.encode(" Hello, wonderful world!")
    # Without spaces: at every whole character, never inside one's UTF-8 bytes.
    words, _ = split_to_word_tokens(tokenizer, tokenizer.encode("你好世界"), "zh")
    assert "".join(words) == "你好世界" and all("\ufffd" not in w for w in words) and len(words) >= 2


def test_word_subtitles_through_the_cli(default_bundle, english_clips, capsys):
    import io

    import srt
    import webvtt

    from whisper_tflite.cli import main

    jfk = next(c for c in english_clips if c.name == "en_jfk_whisper-cpp.wav")
    assert main(["transcribe", str(jfk.path), "--model", str(default_bundle), "--format", "srt", "--quiet",
                 "--word-timestamps", "--max-line-width", "24", "--max-line-count", "2"]) == 0
    cues = list(srt.parse(capsys.readouterr().out))
    lines = [line for c in cues for line in c.content.splitlines()]
    assert len(cues) >= 2 and all(len(c.content.splitlines()) <= 2 for c in cues)
    assert all(len(line) <= 24 or " " not in line for line in lines), lines
    assert [c.start for c in cues] == sorted(c.start for c in cues)
    assert main(["transcribe", str(jfk.path), "--model", str(default_bundle), "--format", "vtt", "--quiet",
                 "--word-timestamps", "--highlight-words"]) == 0
    captions = webvtt.from_buffer(io.StringIO(capsys.readouterr().out)).captions
    assert sum("<u>" in c.raw_text for c in captions) == 22  # one cue per word of "And so my fellow Americans..."
    for option in (["--highlight-words"], ["--max-line-width", "24"], ["--max-line-count", "2"],
                   ["--max-words-per-line", "3"]):
        assert main(["transcribe", str(jfk.path), "--model", str(default_bundle), *option, "--quiet"]) == 2, option
        assert "need --word-timestamps" in capsys.readouterr().err, option
