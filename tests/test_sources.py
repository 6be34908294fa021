"""Model sources: the CTranslate2 reader, bundled weights, Hugging Face folders, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_tflite.errors import SourceError
from whisper_tflite.sources import BUNDLED, _bundled_files, load_whisper
from whisper_tflite.sources.ct2 import dimensions, hf_weights, read_model_bin

# Published architecture of each bundled model (openai/whisper's model dimensions), not read from the files.
EXPECTED = {
    "tiny.en": dict(n_mels=80, n_vocab=51864, d_model=384, encoder_layers=4, decoder_layers=4, encoder_heads=6),
    "base": dict(n_mels=80, n_vocab=51865, d_model=512, encoder_layers=6, decoder_layers=6, encoder_heads=8),
}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_ct2_reader_consumes_every_variable_with_expected_shapes(name):
    _, parts = _bundled_files(name)
    variables = read_model_bin(parts)
    dims = dimensions(variables)
    for field, value in EXPECTED[name].items():
        assert getattr(dims, field) == value, field
    weights = hf_weights(variables, dims)  # raises if any weight variable is left unmapped
    d = dims.d_model
    assert weights["model/encoder/conv1/kernel"].shape == (3, dims.n_mels, d)
    assert weights["model/decoder/embed_tokens/embeddings"].shape == (dims.n_vocab, d)
    assert weights["model/decoder/layers.0/encoder_attn/k_proj/kernel"].shape == (d, d)
    assert "model/decoder/layers.0/encoder_attn/k_proj/bias" not in weights
    # CT2 fuses q,k,v with a zero k bias: the reader must have found zeros there.
    fused_bias = variables["encoder/layer_0/self_attention/linear_0/bias"]
    assert np.all(fused_bias[d : 2 * d] == 0)
    assert len(weights) == len(hf_weight_names(name))


def hf_weight_names(name):
    """Weight names of a freshly built HF TF Whisper of the bundled model's size."""
    from transformers import TFWhisperForConditionalGeneration, WhisperConfig

    e = EXPECTED[name]
    config = WhisperConfig(vocab_size=e["n_vocab"], num_mel_bins=e["n_mels"], d_model=e["d_model"],
                           encoder_layers=e["encoder_layers"], decoder_layers=e["decoder_layers"],
                           encoder_attention_heads=e["encoder_heads"], decoder_attention_heads=e["encoder_heads"],
                           encoder_ffn_dim=4 * e["d_model"], decoder_ffn_dim=4 * e["d_model"])
    model = TFWhisperForConditionalGeneration(config)
    model.build_in_name_scope()
    return [w.name for w in model.weights]


@pytest.mark.slow
def test_tokenizer_has_timestamp_tokens(tiny_en, base):
    for checkpoint, no_timestamps in ((tiny_en, 50362), (base, 50363)):
        backend = checkpoint.tokenizer.backend_tokenizer
        assert backend.token_to_id("<|notimestamps|>") == no_timestamps
        assert backend.token_to_id("<|0.00|>") == no_timestamps + 1
        assert backend.token_to_id("<|30.00|>") == no_timestamps + 1 + 1500
    assert base.special_tokens.languages["de"] == 50261
    assert tiny_en.languages == ["en"] and len(base.languages) == 99


def test_hf_folder_round_trip(tiny_en, tmp_path, audio_cache, english_clips):
    from whisper_tflite.reference import reference_features
    from whisper_tflite.sources.hf import save_hf_checkpoint

    folder = save_hf_checkpoint(tiny_en, tmp_path / "tiny.en-hf")
    reloaded = load_whisper(str(folder))
    features = reference_features(tiny_en, audio_cache(english_clips[0]))
    tokens = np.asarray([[50257, 50362, 843, 523]], dtype=np.int32)
    a = tiny_en.model(input_features=features, decoder_input_ids=tokens).logits.numpy()
    b = reloaded.model(input_features=features, decoder_input_ids=tokens).logits.numpy()
    assert np.abs(a - b).max() <= 1e-5
    assert reloaded.generation_config.suppress_tokens == tiny_en.generation_config.suppress_tokens
    assert reloaded.tokenizer.backend_tokenizer.token_to_id("<|0.00|>") == 50363


def test_unknown_name_is_a_clear_error():
    with pytest.raises(SourceError, match="not a bundled model"):
        load_whisper("tiny.de")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="not a bundled model"):
        load_whisper(str(tmp_path / "nothing-here"))


def test_folder_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no Whisper weights"):
        load_whisper(str(tmp_path))


def test_corrupt_model_bin_is_a_clear_error(tmp_path):
    folder, parts = _bundled_files("tiny.en")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "model.bin").write_bytes(parts[0].read_bytes()[:1_000_000])
    with pytest.raises(SourceError, match="truncated or corrupt"):
        load_whisper(str(tmp_path))
    (tmp_path / "model.bin").write_bytes(b"\x07\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(SourceError, match="binary version 7"):
        load_whisper(str(tmp_path))
