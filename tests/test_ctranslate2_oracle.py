"""CTranslate2 itself, on the model.bin the converter reads, against the fp32 bundle: an oracle of the numerics
that shares no code with ours.

The Hugging Face reference (`reference.py`) is built from the weights our CTranslate2 reader maps, so a mapping
error shared by the reader and the converter (a layer's weights in another layer's place, a transposed
projection) would pass every parity test held against it. CTranslate2 reads model.bin with its own loader and
runs its own encoder and greedy search: the encoder's output and the greedy tokens must agree with ours.
"""

from __future__ import annotations

import json

import ctranslate2
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from faster_whisper.feature_extractor import FeatureExtractor

from whisper_tflite.audio import pad_or_trim
from whisper_tflite.runtime import Transcriber
from whisper_tflite.runtime.decoding import LogitFilter, decode_window

# Read speech of five sources, 1.5 s to 18 s, 4 to 67 tokens
ORACLE_CLIPS = ("en_jfk_whisper-cpp.wav", "en_librispeech-test-clean_1320-122617-0001.flac",
                "en_ljspeech_LJ002-0020.wav", "en_harvard-16k.wav", "en_speech-recognition_english.wav")

# Two float32 implementations of one encoder sum in different orders (XNNPACK's kernels, CTranslate2's), and
# those rounding differences of about 1e-7 of a value grow through 4 residual layers. Measured with the bundled
# tiny.en on an AMD EPYC with AVX2 only (family 25, model 1), ORACLE_CLIPS: mean error 1.8e-6 to 2.6e-6 a clip;
# max error 4.3e-5 to 5.9e-5, but 6.6e-3 in en_harvard-16k, where 8 values of one frame differ by more than
# 1e-3; values reach 12.8. The bounds leave 4x room over those. A weight in the wrong place moves every frame:
# with the fc1 weights of encoder layers 1 and 2 swapped in our reader, the mean error was 0.45 to 0.70 and the
# max 15 to 16.
MEAN_ERROR_BOUND = 1e-5
MAX_ERROR_BOUND = 0.03


@pytest.fixture(scope="module")
def oracle(tiny_en_ct2):
    # One thread: CTranslate2's OpenMP threads spin while they wait, which on a busy 2-core machine costs more than
    # the second core gives.
    return ctranslate2.models.Whisper(str(tiny_en_ct2), device="cpu", compute_type="float32", intra_threads=1)


@pytest.fixture(scope="module")
def windows(clip_named, audio_cache, oracle):
    """Each clip's first 30 s as faster-whisper's own log-mel [1, 80, 3000], one array fed to both sides, and
    CTranslate2's encoder output of it."""
    extract = FeatureExtractor()
    encoded = {}
    for name in ORACLE_CLIPS:
        log_mel = extract(pad_or_trim(audio_cache(clip_named(name))), padding=0)[np.newaxis, :, :3000]
        log_mel = np.ascontiguousarray(log_mel, dtype=np.float32)
        encoded[name] = log_mel, oracle.encode(ctranslate2.StorageView.from_array(log_mel), to_cpu=True)
    return encoded


def test_encoder_output_equals_ctranslate2s(tiny_bundle, windows):
    """The encoder model's `hidden` [1, 1500, 384], run by the LiteRT interpreter, against CTranslate2's
    `encode` on the same log-mel."""
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    encoder = Interpreter(model_path=str(tiny_bundle / manifest["models"]["encoder"]["file"]),
                          num_threads=1).get_signature_runner()
    failures = []
    for name, (log_mel, encoded) in windows.items():
        ours = encoder(log_mel=log_mel)["hidden"]
        theirs = np.asarray(encoded)
        assert ours.shape == theirs.shape == (1, 1500, 384), name
        error = np.abs(ours - theirs)
        print(f"{name}: max error {error.max():.2e}, mean {error.mean():.2e}, largest value {np.abs(theirs).max():.1f}")
        if error.mean() > MEAN_ERROR_BOUND or error.max() > MAX_ERROR_BOUND:
            failures.append(f"{name}: max error {error.max():.2e}, mean {error.mean():.2e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("timestamps", [False, True], ids=["no timestamps", "timestamps"])
def test_greedy_tokens_equal_ctranslate2s(timestamps, tiny_bundle, oracle, windows):
    """Greedy decoding of each window from the start-of-transcript prompt, with and without timestamp tokens:
    ours (decoder_step loop, Whisper's suppression and timestamp rules) against CTranslate2's `generate` with
    beam size 1 and its defaults (blank and the config's tokens suppressed, the first timestamp at most 1 s).
    CTranslate2 takes the prompt as token strings, so the special tokens' ids are checked too."""
    transcriber = Transcriber(tiny_bundle, threads=1)
    tokenizer, stepper = transcriber.tokenizer, transcriber.stepper
    manifest = transcriber.bundle.manifest
    logit_filter = LogitFilter(tokenizer, manifest["suppress_tokens"], manifest["begin_suppress_tokens"],
                               timestamps=timestamps)
    prompt = tokenizer.prompt("en", "transcribe", timestamps=timestamps)
    prompt_text = ["<|startoftranscript|>"] + ([] if timestamps else ["<|notimestamps|>"])
    differing = []
    for name, (log_mel, encoded) in windows.items():
        stepper.begin(log_mel)
        ours = decode_window(stepper, tokenizer, logit_filter, prompt).tokens
        theirs = oracle.generate(encoded, [prompt_text], beam_size=1, max_length=448)[0].sequences_ids[0]
        print(f"{name}: {len(ours)} tokens, {'identical' if ours == theirs else 'DIFFERENT'}")
        if ours != theirs:
            first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            differing.append(f"{name}: from token {first} on, ours {tokenizer.decode(ours[first:])[:60]!r}, "
                             f"CTranslate2's {tokenizer.decode(theirs[first:])[:60]!r}")
    assert not differing, "\n".join(differing)
