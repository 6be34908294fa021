"""faster-whisper's `WhisperModel` API (whisper_tflite.WhisperModel), held against faster-whisper 1.2.1 itself on
the same CTranslate2 weights: its README's usage code runs with only the import line changed."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest

from whisper_tflite import WhisperModel
from whisper_tflite.audio import N_SAMPLES, load_audio, pad_or_trim
from whisper_tflite.errors import UsageError
from whisper_tflite.evaluation import error_rate, join_clips

# faster-whisper's README: transcription, word timestamps, VAD filter with parameters ("large-v3" on a GPU there)
README = '''
from faster_whisper import WhisperModel

model = WhisperModel(model_size, device="cpu", compute_type="int8")

segments, info = model.transcribe(audio, beam_size=5)

print("Detected language '%s' with probability %f" % (info.language, info.language_probability))

for segment in segments:
    print("[%.2fs -> %.2fs] %s" % (segment.start, segment.end, segment.text))

segments, _ = model.transcribe(audio, word_timestamps=True)

for segment in segments:
    for word in segment.words:
        print("[%.2fs -> %.2fs] %s" % (word.start, word.end, word.word))

segments, _ = model.transcribe(
    audio,
    vad_filter=True,
    vad_parameters=dict(min_silence_duration_ms=500),
)
for segment in segments:
    print("[%.2fs -> %.2fs] %s" % (segment.start, segment.end, segment.text))
'''


def _run(code: str, model_size: str, audio: str) -> list[str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {"model_size": model_size, "audio": audio})
    return printed.getvalue().splitlines()


def test_readme_usage_runs_with_the_import_changed(default_bundle, tiny_en_ct2, clip_named):
    audio = str(clip_named("en_jfk_whisper-cpp.wav").path)
    theirs = _run(README, str(tiny_en_ct2), audio)
    ours = _run(README.replace("from faster_whisper import", "from whisper_tflite import"), str(default_bundle),
                audio)
    assert ours[0] == theirs[0] == "Detected language 'en' with probability 1.000000"
    # the same words, in order, over the three transcripts (segments and punctuation vary with the int8 rounding)
    texts = [[line.split("] ", 1)[1] for line in lines[1:]] for lines in (ours, theirs)]
    assert error_rate([" ".join(texts[1])], [" ".join(texts[0])], "en") == 0.0, (ours, theirs)


def test_segments_come_as_each_window_is_decoded(default_bundle, english_clips, audio_cache):
    model = WhisperModel(str(default_bundle))
    stepper = model.transcriber.stepper
    begun = []
    real_begin = stepper.begin
    stepper.begin = lambda log_mel: (begun.append(1), real_begin(log_mel))[1]
    recording = join_clips("English clips", [c for c in english_clips if c.reference][:8], audio_cache)
    assert len(recording.audio) > 2 * N_SAMPLES
    segments, info = model.transcribe(recording.audio, beam_size=1)
    assert not begun and info.duration == pytest.approx(len(recording.audio) / 16000)
    first = next(segments)
    assert len(begun) == 1 and first.id == 0 and first.start < 30
    rest = list(segments)
    assert len(begun) > 2 and [s.id for s in rest] == list(range(1, len(rest) + 1))


def test_language_detection_options_match_faster_whisper(base_bundle, clip_named):
    """Two windows, neither sure enough for the threshold: both decide the language by majority, and their
    languages rank alike."""
    from faster_whisper import WhisperModel as TheirModel

    from whisper_tflite.sources import bundled_ct2_folder

    clips = [load_audio(clip_named(name).path) for name in ("de_picovoice-leopard.wav", "fr_picovoice-leopard.wav")]
    audio = np.concatenate([pad_or_trim(clip, N_SAMPLES) for clip in clips])
    ct2 = bundled_ct2_folder("base", Path(__file__).resolve().parents[1] / ".cache" / "ct2")
    theirs = TheirModel(str(ct2), compute_type="float32",
                        cpu_threads=2).detect_language(audio, language_detection_segments=2,
                                                       language_detection_threshold=1.0)
    ours = WhisperModel(str(base_bundle)).detect_language(audio, language_detection_segments=2,
                                                         language_detection_threshold=1.0)
    print(f"\nours {ours[:2]} {ours[2][:3]}, faster-whisper's {theirs[:2]} {theirs[2][:3]}")
    assert ours[0] == theirs[0] == "de"
    assert [code for code, _ in ours[2][:3]] == [code for code, _ in theirs[2][:3]]


@pytest.mark.parametrize("arguments, message", [
    (dict(device="cuda"), "whisper-tflite runs on the CPU"),
    (dict(compute_type="int16"), "compute_type 'int16': choose one of"),
])
def test_unavailable_devices_and_types_are_one_line(default_bundle, arguments, message):
    with pytest.raises(UsageError, match=message):
        WhisperModel(str(default_bundle), **arguments)


def test_options_not_there_yet_are_one_line(default_bundle, clip_named):
    model = WhisperModel(str(default_bundle))
    with pytest.raises(UsageError, match=r"hotwords='names': not in whisper-tflite yet"):
        model.transcribe(str(clip_named("en_jfk_whisper-cpp.wav").path), hotwords="names")


def test_a_model_name_is_found_where_it_was_converted(default_bundle, tmp_path):
    os.symlink(default_bundle, tmp_path / "tiny.en-default")
    assert WhisperModel("tiny.en", download_root=str(tmp_path)).model_path == tmp_path / "tiny.en-default"
    with pytest.raises(UsageError, match="not converted yet"):
        WhisperModel("tiny.en", download_root=str(tmp_path / "empty"), local_files_only=True)
