"""Live transcription (runtime/live.py, `whisper-tflite stream`): a minute of speech fed at 1x against a virtual
clock, held against offline transcription of the same recording; the command on a pipe, bad input, Ctrl-C.

The clock charges every decoding a fixed 0.5 s, so the chunks each decoding sees, hence the text, do not depend
on the machine's speed or load; benchmarks/live.py charges the measured time and reports the latencies.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

import numpy as np
import pytest

from whisper_tflite.errors import UsageError
from whisper_tflite.evaluation import error_rate, join_clips, normalize
from whisper_tflite.runtime import Transcriber, TranscriptionOptions
from whisper_tflite.runtime.live import simulate

from .test_everyday import DEMO_SENTENCE
from .test_faults import CLI, default_sigint

# About a minute: jfk, read speech and the Harvard sentences (short sentences, so the buffer is cut often)
CLIPS = ("en_jfk_whisper-cpp.wav", "en_librispeech-test-clean_1320-122617-0001.flac", "en_harvard-16k.wav",
         "en_librispeech-test-clean_2300-131720-0008.flac", "en_librispeech-dev-clean_1272-128104-0000.wav")
CHARGE = 0.5  # seconds the clock is charged a decoding
WER_EXCESS = 0.02  # live may be 2 points worse than offline with the same decoding


@pytest.fixture(scope="module")
def transcriber(default_bundle):
    return Transcriber(default_bundle, threads=2)


@pytest.fixture(scope="module")
def recording(clip_named, audio_cache):
    return join_clips("a minute of English", [clip_named(name) for name in CLIPS], audio_cache)


@pytest.fixture(scope="module")
def live_run(transcriber, recording):
    return simulate(transcriber.live(), recording.audio, charge=CHARGE)


def _repeats(text: str) -> int:
    """Runs of 1 to 5 words said twice in a row."""
    words = normalize(text, "en").split()
    return sum(words[i:i + n] == words[i + n:i + 2 * n] for n in range(1, 6) for i in range(len(words) - 2 * n + 1))


def test_live_text_is_as_good_as_offline(transcriber, recording, live_run):
    offline = transcriber.transcribe(recording.audio, beam_size=1)
    live_wer = error_rate([recording.reference], [live_run.text], "en")
    offline_wer = error_rate([recording.reference], [offline.text], "en")
    print(f"\n{recording.duration:.0f} s fed at 1x in 1 s chunks, {CHARGE} s a decoding: WER live {live_wer:.2%}, "
          f"offline greedy {offline_wer:.2%}; {len(live_run.compute)} decodings, latency median "
          f"{np.median(live_run.latencies):.2f} s")
    assert live_wer <= offline_wer + WER_EXCESS, live_run.text
    # Nothing committed twice: no word or phrase repeated where the speech does not repeat it
    assert _repeats(live_run.text) <= _repeats(recording.reference), live_run.text


def test_live_words_are_committed_in_time_order(recording, live_run):
    words, times = live_run.words, live_run.commit_times
    assert len(words) >= 0.9 * len(recording.reference.split())
    assert all(0 <= w.start <= w.end <= recording.duration for w in words)
    assert all(a.end <= b.start for a, b in zip(words, words[1:])), "words overlap or go back in time"
    assert times == sorted(times)
    # A word is committed after it is heard: its end has arrived by the time of its commit
    assert all(w.end <= t + 1e-6 for w, t in zip(words, times))
    assert live_run.charged == [CHARGE] * len(live_run.compute)
    for start, end, text in recording.spans:  # every clip's speech has committed words
        assert any(start - 0.5 <= w.start <= end for w in words), f"nothing committed in {text[:40]!r}"


def test_live_updates_and_refusals(transcriber, clip_named, audio_cache):
    """Each update gives new words after the earlier ones and a tentative tail; finish commits the tail; options
    that cannot apply to a live buffer are refused."""
    samples = audio_cache(clip_named("en_jfk_whisper-cpp.wav"))
    live = transcriber.live(chunk_size=2.0)
    committed, tails = [], []
    for start in range(0, len(samples), 16000):
        live.insert_audio((samples[start:start + 16000] * 32767).astype(np.int16))  # int16 is scaled
        update = live.process()
        committed += update.committed
        tails.append(update.tentative)
    assert any(tails) and live.pending < 2.0
    final = live.finish()
    assert final.tentative == [] and committed + final.committed == live.committed
    assert error_rate([DEMO_SENTENCE], [live.text], "en") == 0, live.text
    with pytest.raises(UsageError, match="finished"):
        live.insert_audio(samples[:16000])
    # With the VAD filter each buffer's speech is decoded and its times mapped back to the stream
    padded = np.concatenate([np.zeros(3 * 16000, np.float32), samples])
    filtered = simulate(transcriber.live(chunk_size=2.0, vad_filter=True), padded, charge=CHARGE)
    assert error_rate([DEMO_SENTENCE], [filtered.text], "en") == 0, filtered.text
    # (the speech chunk starts the VAD's 400 ms of padding early, and the first word with it)
    assert 2.6 <= filtered.words[0].start and filtered.words[-1].end <= len(padded) / 16000
    for options in ({"prefix": "And so"}, {"batch_size": 4}, {"without_timestamps": True}, {"chunk_size": 0},
                    {"buffer_trimming": 40.0}, {"bogus": 1}):
        with pytest.raises(UsageError):
            transcriber.live(**options)


def test_stream_flags_are_the_live_defaults(transcriber):
    """`stream` decodes as `Transcriber.live` does by default, and has no flag of windows decoded in sequence."""
    from whisper_tflite.cli import _options, _parser

    assert _options(_parser().parse_args(["stream", "-"])) == transcriber.live().options
    assert transcriber.live().options == TranscriptionOptions(beam_size=1, temperature=0.0, word_timestamps=True)
    for flag in ("--prefix", "--batch-size", "--clip-timestamps", "--without-timestamps", "--multilingual"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["stream", "-", flag, "1"])


def _pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def _stream(bundle, data: bytes, *args):
    return subprocess.run([str(CLI), "stream", "-", "--model", str(bundle), *args], input=data, capture_output=True,
                          timeout=120)


def test_stream_command_prints_a_piped_file(default_bundle, clip_named, audio_cache):
    done = _stream(default_bundle, _pcm(audio_cache(clip_named("en_jfk_whisper-cpp.wav"))))
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert error_rate([DEMO_SENTENCE], [done.stdout.decode()], "en") == 0, done.stdout


@pytest.mark.parametrize("data, args, message", [
    (b"\x01\x00\x02", (), "odd number of bytes"),
    (b"fLaC\x00\x00\x00\x22" + bytes(64), (), "FLAC data, not raw PCM"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00\x44\xac\x00\x00\x10\xb1\x02\x00\x04\x00\x10\x00"
     b"data\x00\x00\x00\x00", (), "WAV of 44100 Hz, 2 channel"),
    (bytes(3200), ("--sample-rate", "44100"), "must be 16000 Hz"),
], ids=["odd-bytes", "flac", "wav-44k-stereo", "sample-rate"])
def test_stream_command_bad_input(default_bundle, data, args, message):
    done = _stream(default_bundle, data, *args)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr


def test_stream_command_flushes_on_ctrl_c(default_bundle, clip_named, audio_cache):
    """Ctrl-C while the input is still open prints the tentative rest and exits 0."""
    process = subprocess.Popen([str(CLI), "stream", "-", "--model", str(default_bundle)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint)
    pcm = _pcm(audio_cache(clip_named("en_jfk_whisper-cpp.wav")))
    try:
        for start in range(0, len(pcm), 32000):  # a second at a time, faster than real time
            process.stdin.write(pcm[start:start + 32000])
            process.stdin.flush()
            time.sleep(0.25)
        printed, deadline = b"", time.monotonic() + 60
        while not printed and time.monotonic() < deadline:  # the first commit: the command is decoding
            if select.select([process.stdout], [], [], 1.0)[0]:
                printed = os.read(process.stdout.fileno(), 4096)
        assert printed, "nothing committed"
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    assert error_rate([DEMO_SENTENCE], [(printed + rest).decode()], "en") == 0, printed + rest
