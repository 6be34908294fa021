"""`convert --layout s4y`: whisper-s4y's files, loaded as that project's tests load them (signature runner, by
name) and as its demo app does (input 0, output 0, all 448 tokens detokenized), on real speech. The tokens are
held to the reference's greedy tokens (conftest: checked teacher-forced against Hugging Face)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from tokenizers import Tokenizer

from whisper_tflite.audio import pad_or_trim

from .test_conversion import _check_model_file
from .test_faults import error_lines, run_cli

# whisper-s4y's files for tiny.en (d_model 384, 80 mels), written out from its sources
TINY_EN_S4Y = {
    "features-extractor": ({"normalized_audio": ([480000], "float32")}, {"logmel": ([1, 80, 3000], "float32")}),
    "encoder": ({"input_features": ([1, 80, 3000], "float32")}, {"last_hidden_state": ([1, 1500, 384], "float32")}),
    "decoder": ({"encoder_hidden_states": ([1, 1500, 384], "float32")}, {"tokens": ([1, 448], "int32")}),
    "encoder_decoder": ({"input_features": ([1, 80, 3000], "float32")}, {"tokens": ([1, 448], "int32")}),
    "pcm-encoder": ({"normalized_audio": ([480000], "float32")}, {"last_hidden_state": ([1, 1500, 384], "float32")}),
    "generator": ({"input_features": ([1, 80, 3000], "float32")}, {"sequences": ([1, 448], "int32")}),
}
EOT_EN, EOT = 50256, 50257


def runner(folder, name):
    """As whisper-s4y's tests: the one signature, called by tensor names."""
    interpreter = Interpreter(model_path=str(folder / f"{name}.tflite"), num_threads=2)
    assert list(interpreter.get_signature_list()) == ["serving_default"], name
    return interpreter.get_signature_runner("serving_default")


def by_position(folder, name, values):
    """As whisper-s4y's demo app (mldemo's TfLiteInterpreter): input 0 filled with the values, zero-padded or cut
    to its size, and output 0 read whole."""
    interpreter = Interpreter(model_path=str(folder / f"{name}.tflite"), num_threads=2)
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]
    flat = np.zeros(int(np.prod(given["shape"])), given["dtype"])
    values = np.ravel(values)[: flat.size]
    flat[: values.size] = values
    interpreter.set_tensor(given["index"], flat.reshape(given["shape"]))
    interpreter.invoke()
    return np.ravel(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def padded(tokens, eot):
    """Prompt, text, end-of-text, then end-of-text up to 448: what whisper-s4y's token outputs hold."""
    return tokens + [eot] * (448 - len(tokens))


def test_files_names_and_shapes_are_whisper_s4ys(s4y_tiny_en):
    manifest = json.loads((s4y_tiny_en / "manifest.json").read_text())
    assert manifest["format"] == "whisper-s4y-layout" and manifest["prompt"] == [50257, 50362]
    assert sorted(p.name for p in s4y_tiny_en.glob("*.tflite")) == sorted(f"{n}.tflite" for n in TINY_EN_S4Y)
    assert (s4y_tiny_en / "tokenizer.json").is_file()
    for name, (inputs, outputs) in TINY_EN_S4Y.items():
        _check_model_file(s4y_tiny_en / f"{name}.tflite")
        signature = runner(s4y_tiny_en, name)
        for details, expected in ((signature.get_input_details(), inputs), (signature.get_output_details(), outputs)):
            assert {n: (list(d["shape"]), np.dtype(d["dtype"]).name) for n, d in details.items()} == expected, name


def test_each_file_gives_the_reference_tokens(s4y_tiny_en, tiny_bundle, clip_named, audio_cache, tiny_en_features,
                                              tiny_en_greedy):
    """Every file on 3 clips: the mel equals ours, the hidden states the encoder's, and decoder, encoder_decoder
    and generator give the reference's greedy tokens, prompt included, end-of-text padded."""
    files = {name: runner(s4y_tiny_en, name) for name in TINY_EN_S4Y}
    ours = {role: runner(tiny_bundle, role) for role in ("features", "encoder")}
    for clip in map(clip_named, ("en_jfk_openai-whisper.flac", "en_jfk_whisper-cpp.wav",
                                 "en_librispeech-test-clean_121-127105-0000.flac")):
        pcm = pad_or_trim(audio_cache(clip))
        log_mel = files["features-extractor"](normalized_audio=pcm)["logmel"]
        assert np.array_equal(log_mel, ours["features"](pcm=pcm)["log_mel"]), clip.name
        assert np.abs(log_mel - tiny_en_features(clip)).max() <= 5e-5, clip.name  # Hugging Face's extractor
        hidden = files["encoder"](input_features=log_mel)["last_hidden_state"]
        np.testing.assert_allclose(hidden, ours["encoder"](log_mel=log_mel)["hidden"], atol=1e-5, err_msg=clip.name)
        np.testing.assert_allclose(files["pcm-encoder"](normalized_audio=pcm)["last_hidden_state"], hidden,
                                   atol=1e-4, err_msg=clip.name)
        expected = padded(tiny_en_greedy(clip), EOT_EN)
        assert files["decoder"](encoder_hidden_states=hidden)["tokens"][0].tolist() == expected, clip.name
        assert files["encoder_decoder"](input_features=log_mel)["tokens"][0].tolist() == expected, clip.name
        assert files["generator"](input_features=log_mel)["sequences"][0].tolist() == expected, clip.name


@pytest.mark.slow
def test_demo_app_transcribes_german_with_the_base_model(s4y_base_de, base, clips, audio_cache, base_greedy):
    """whisper-s4y's app: features-extractor then one logmel -> tokens model, both by position, and every one of
    the 448 tokens detokenized with special tokens skipped (it does not stop at end-of-text)."""
    tokenizer = Tokenizer.from_file(str(s4y_base_de / "tokenizer.json"))
    special = base.special_tokens
    for clip in [c for c in clips if c.language == "de"][:2]:
        log_mel = by_position(s4y_base_de, "features-extractor", audio_cache(clip))
        tokens = by_position(s4y_base_de, "encoder_decoder", log_mel).tolist()
        expected = base_greedy(clip, "de")
        assert expected[:4] == [special.sot, special.languages["de"], special.transcribe, special.no_timestamps]
        assert tokens == padded(expected, EOT), clip.name
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        assert text == base.tokenizer.decode(expected, skip_special_tokens=True)
        print(f"{clip.name}: {text}")


def test_layout_refusals_are_one_line(s4y_tiny_en, clip_named, tmp_path):
    jfk = clip_named("en_jfk_openai-whisper.flac").path
    cases = [(("convert", "base", "--layout", "s4y", "--models", "features-extractor"), "give --language"),
             (("convert", "tiny.en", "--layout", "s4y", "--language", "de"), "English-only"),
             (("convert", "tiny.en", "--language", "en"), "--language fixes the language of --layout s4y"),
             (("convert", "tiny.en", "--layout", "s4y", "--models", "decoder_step"), "unknown model file"),
             (("transcribe", jfk, "--model", s4y_tiny_en), "whisper-s4y layout files")]
    for args, message in cases:
        done = run_cli(*args, "--out" if args[0] == "convert" else "--quiet",
                       *([tmp_path / "out"] if args[0] == "convert" else []), timeout=300)
        assert done.returncode == 2 and len(error_lines(done)) == 1 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
