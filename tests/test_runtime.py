"""The runtime: no TensorFlow, accuracy against the reference, languages, long audio, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from whisper_tflite.evaluation import error_rate
from whisper_tflite.reference import reference_long_form
from whisper_tflite.runtime import Transcriber

CLI = Path(sys.executable).with_name("whisper-tflite")
LONG_CLIPS = ("en_osr_us_000_0030_16k.wav", "en_earnings22_4482311_3_62.wav")


@pytest.fixture(scope="module")
def tiny(tiny_bundle):
    return Transcriber(tiny_bundle)


def test_runtime_never_imports_tensorflow(tiny_bundle, english_clips):
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "transformers", "tf_keras", "keras"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from whisper_tflite import Transcriber
        result = Transcriber({str(tiny_bundle)!r}).transcribe({str(english_clips[0].path)!r})
        print(result.text)
        assert not any(m.split(".")[0] in ("tensorflow", "transformers") for m in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ask not what your country can do for you" in done.stdout


def test_tiny_bundle_wer_matches_reference(tiny, english_clips, audio_cache, tiny_en_reference):
    dev = [c for c in english_clips if c.reference and c.duration <= 30]
    ours = [tiny.transcribe(audio_cache(c)).text for c in dev]
    reference = [tiny_en_reference(c)[1].text for c in dev]
    ours_wer = error_rate([c.reference for c in dev], ours, "en")
    reference_wer = error_rate([c.reference for c in dev], reference, "en")
    print(f"\nWER on {len(dev)} English clips: runtime {ours_wer:.2%}, reference {reference_wer:.2%}")
    assert ours_wer <= reference_wer + 0.005


@pytest.mark.slow
def test_base_bundle_detects_languages(base_bundle, clips, audio_cache):
    transcriber = Transcriber(base_bundle)
    foreign = [c for c in clips if c.language != "en"]
    detected = {c.name: transcriber.transcribe(audio_cache(c)).language for c in foreign}
    print(detected)
    wrong = {name: lang for name, lang in detected.items() if lang != name.split("_")[0]}
    assert not wrong


@pytest.mark.parametrize("name", LONG_CLIPS)
def test_long_audio_transcribed_whole(name, tiny, tiny_en, clips, audio_cache):
    clip = next(c for c in clips if c.name == name)
    audio = audio_cache(clip)
    ours = tiny.transcribe(audio)
    reference = reference_long_form(tiny_en, audio)
    ours_wer = error_rate([clip.reference], [ours.text], "en")
    reference_wer = error_rate([clip.reference], [reference.text], "en")
    print(f"\n{name}: runtime WER {ours_wer:.2%}, reference long-form WER {reference_wer:.2%}")
    assert ours_wer <= reference_wer + 0.02
    starts = [s.start for s in ours.segments]
    assert starts == sorted(starts) and len(ours.segments) >= 3
    assert all(0 <= s.start < s.end <= clip.duration + 0.01 for s in ours.segments)
    assert ours.segments[-1].end > clip.duration - 5  # reaches the end of the audio


def test_audio_inputs_agree(tiny, clips):
    """A stereo 24-bit 44.1 kHz FLAC, its 16 kHz WAV twin, and int16 / float arrays give the same words."""
    flac = next(c for c in clips if c.name == "en_jfk_openai-whisper.flac")
    wav = next(c for c in clips if c.name == "en_jfk_whisper-cpp.wav")
    import soundfile

    samples, rate = soundfile.read(wav.path, dtype="int16")
    texts = [tiny.transcribe(flac.path).text, tiny.transcribe(wav.path).text,
             tiny.transcribe(samples, sample_rate=rate).text,
             tiny.transcribe(np.stack([samples, samples], 1).astype(np.float32) / 32768, sample_rate=rate).text]
    normalized = {" ".join(t.lower().replace(",", "").split()) for t in texts}
    assert len(normalized) == 1, texts


def test_cli_json_lines(tiny_bundle, english_clips):
    files = [str(c.path) for c in english_clips[:2]]
    done = subprocess.run([str(CLI), "transcribe", *files, "--model", str(tiny_bundle), "--format", "json",
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == files
    for line in lines:
        assert set(line) == {"file", "language", "language_probability", "text", "segments"}
        assert line["language"] == "en" and line["text"]
        assert all(set(s) == {"start", "end", "text"} for s in line["segments"])


@pytest.mark.parametrize("fmt", ["txt", "srt", "vtt", "tsv"])
def test_cli_writes_formats_to_output_dir(fmt, tiny_bundle, english_clips, tmp_path):
    clip = english_clips[1]
    done = subprocess.run([str(CLI), "transcribe", str(clip.path), "--model", str(tiny_bundle), "--format", fmt,
                           "--output-dir", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / f"{clip.path.stem}.{fmt}").read_text()
    assert "ask not what your country" in text.lower().replace(",", "")
    first_line = {"txt": "and so", "srt": "1", "vtt": "WEBVTT", "tsv": "start\tend\ttext"}[fmt]
    assert text.lower().startswith(first_line.lower())
    if fmt == "srt":
        assert "00:00:00,000 --> " in text


@pytest.mark.parametrize("fmt, subtype", [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"), ("WAV", "PCM_U8")])
def test_compressed_and_8bit_files(fmt, subtype, tiny, clips, audio_cache, tmp_path):
    """Ogg Vorbis, MP3 (libsndfile reads both) and unsigned 8-bit WAV at 22.05 kHz, written from a clip.
    All three are lossy, so the bound is on WER against the human transcript, not exact words."""
    import soundfile
    import soxr

    clip = next(c for c in clips if c.name == "en_jfk_whisper-cpp.wav")
    path = tmp_path / f"jfk.{fmt.lower()}"
    soundfile.write(path, soxr.resample(audio_cache(clip), 16000, 22050), 22050, format=fmt, subtype=subtype)
    text = tiny.transcribe(path).text
    print(f"{fmt}/{subtype}: {text}")
    assert error_rate([clip.reference], [text], "en") <= 0.15


@pytest.mark.slow
def test_base_translates_to_english(base_bundle, clips):
    """German and Spanish speech, translated: English words come out, the source language's do not."""
    transcriber = Transcriber(base_bundle)
    expected = {"de_picovoice-leopard.wav": ("portal", "der"), "es_picovoice-leopard.wav": ("sand", "arenas")}
    for name, (english, foreign) in expected.items():
        clip = next(c for c in clips if c.name == name)
        result = transcriber.transcribe(clip.path, task="translate")
        print(name, result.language, result.text)
        words = set(result.text.lower().replace(".", " ").replace(",", " ").split())
        assert result.language == clip.language
        assert english in words and foreign not in words
