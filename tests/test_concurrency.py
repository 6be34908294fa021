"""One Transcriber shared by many threads: every call gets the result it gets alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from whisper_tflite.errors import UsageError
from whisper_tflite.runtime import Transcriber

# English read speech of 1.5 to 11 s; word timestamps on some calls load the alignment model in a worker mid-run
CALLS = [("en_jfk_whisper-cpp.wav", True), ("en_librispeech-test-clean_121-127105-0000.flac", False),
         ("en_ljspeech_LJ002-0020.wav", True), ("en_pocketsphinx-cards_005.wav", False),
         ("en_librispeech-dev-clean_1272-128104-0000.wav", False), ("en_librispeech-test-clean_1320-122612-0008.flac", True),
         ("en_jfk_whisper-cpp.wav", False)]


def test_threads_share_one_transcriber(default_bundle, english_clips):
    """Seven threads on two workers: each call waits for a free one, and none sees another's interpreters."""
    paths = {clip.path.name: clip.path for clip in english_clips}
    transcriber = Transcriber(default_bundle, threads=1, num_workers=2)

    def transcribe(call):
        name, words = call
        return transcriber.transcribe(paths[name], word_timestamps=words).to_dict()

    alone = [transcribe(call) for call in CALLS]
    with ThreadPoolExecutor(len(CALLS)) as pool:
        together = list(pool.map(transcribe, CALLS))
    assert [r["text"] for r in together] == [r["text"] for r in alone]
    assert together == alone  # segments, words and probabilities too
    assert "ask not what your country can do for you" in alone[0]["text"]


@pytest.mark.parametrize("workers", [0, 1.5, True])
def test_num_workers_is_checked(default_bundle, workers):
    with pytest.raises(UsageError, match="num_workers must be a whole number of at least 1"):
        Transcriber(default_bundle, num_workers=workers)
