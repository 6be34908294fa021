"""Audio people have: compressed and video files (through FFmpeg), standard input, bytes, file objects, arrays."""

from __future__ import annotations

import io
import subprocess

import av
import numpy as np
import pytest
import soxr

from whisper_tflite.audio import SAMPLE_RATE, load_audio
from whisper_tflite.errors import AudioError

from .test_faults import CLI, run_cli

JFK = "ask not what your country can do for you"


def _write_with_pyav(path, samples, codec, rate, video=False):
    """Stereo `samples` (16 kHz) encoded with `codec` at `rate`, beside a black video stream if `video`."""
    stereo = np.stack([soxr.resample(samples, SAMPLE_RATE, rate)] * 2).astype(np.float32)
    with av.open(str(path), "w") as container:
        audio = container.add_stream(codec, rate=rate, layout="stereo")
        if video:
            picture = container.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
            black = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for _ in range(int(10 * stereo.shape[1] / rate)):
                container.mux(picture.encode(black))
            container.mux(picture.encode(None))
        for start in range(0, stereo.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, start:start + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))


@pytest.fixture(scope="module")
def jfk(clips, audio_cache):
    clip = next(c for c in clips if c.name == "en_jfk_openai-whisper.flac")
    return clip.path, audio_cache(clip)


@pytest.fixture(scope="module")
def encoded(jfk, tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoded")
    files = {"phone.m4a": ("aac", 44100, False), "video.mp4": ("aac", 44100, True),
             "voice.webm": ("libopus", 48000, False), "video.mkv": ("libopus", 48000, True)}
    for name, (codec, rate, video) in files.items():
        _write_with_pyav(folder / name, jfk[1], codec, rate, video)
    return [folder / name for name in files]


def test_compressed_and_video_files_transcribe(encoded, jfk, default_bundle):
    for path in encoded:
        samples = load_audio(path)
        assert abs(len(samples) - len(jfk[1])) < 0.1 * SAMPLE_RATE, path.name  # codec padding only
    done = run_cli("transcribe", *encoded, "--model", default_bundle, "--format", "txt", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout.lower().replace(",", "").count(JFK) == len(encoded), done.stdout


def test_standard_input(jfk, default_bundle):
    done = subprocess.run([str(CLI), "transcribe", "-", "--model", str(default_bundle), "--quiet"],
                          input=jfk[0].read_bytes(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert JFK in done.stdout.decode().lower().replace(",", "")


def test_empty_standard_input_is_one_line(default_bundle):
    done = subprocess.run([str(CLI), "transcribe", "-", "--model", str(default_bundle), "--quiet"],
                          input=b"", capture_output=True, timeout=300)
    stderr = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in stderr
    assert "stdin: no data" in stderr.splitlines()[0]


def test_bytes_file_objects_and_channels_first_arrays(jfk):
    path, samples = jfk
    data = path.read_bytes()
    with open(path, "rb") as f:
        from_file = load_audio(f)
    for other in (load_audio(data), load_audio(io.BytesIO(data)), from_file):
        np.testing.assert_array_equal(other, samples)
    stereo = np.stack([samples, samples])  # [channels, samples], as librosa and torchaudio give it
    np.testing.assert_allclose(load_audio(stereo), samples, atol=1e-7)
    np.testing.assert_allclose(load_audio(stereo.T), samples, atol=1e-7)


def test_undecodable_file_names_what_is_readable(tmp_path, default_bundle):
    (tmp_path / "broken.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 200)
    with pytest.raises(AudioError, match="broken.m4a: cannot decode audio .*FFmpeg \\(m4a, mp4, webm"):
        load_audio(tmp_path / "broken.m4a")
    done = run_cli("transcribe", tmp_path / "broken.m4a", "--model", default_bundle, "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "cannot decode audio" in done.stderr


def test_text_mode_file_objects_are_refused_in_one_line(jfk):
    with open(jfk[0], encoding="latin-1") as text:
        with pytest.raises(AudioError, match="opened as text; open audio in binary mode"):
            load_audio(text)
