"""Model sources: the CTranslate2 reader, bundled weights, Hugging Face folders, and clear errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from whisper_tflite.bundle import sha256_of
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
    assert weights["model/decoder/layers.0/encoder_attn/k_proj/weight"].shape == (d, d)
    assert weights["model/decoder/layers.0/fc1/weight"].shape == (4 * d, d)  # [out, in]
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


def test_hf_folder_round_trip(tiny_en, tmp_path, audio_cache, clip_named):
    from whisper_tflite.reference import reference_features
    from whisper_tflite.sources.hf import save_hf_checkpoint

    folder = save_hf_checkpoint(tiny_en, tmp_path / "tiny.en-hf")
    reloaded = load_whisper(str(folder))
    features = reference_features(tiny_en, audio_cache(clip_named("en_jfk_openai-whisper.flac")))
    tokens = np.asarray([[50257, 50362, 843, 523]], dtype=np.int32)
    a = tiny_en.model(input_features=features, decoder_input_ids=tokens).logits.numpy()
    b = reloaded.model(input_features=features, decoder_input_ids=tokens).logits.numpy()
    assert np.abs(a - b).max() <= 1e-5
    assert reloaded.generation_config.suppress_tokens == tiny_en.generation_config.suppress_tokens
    assert reloaded.tokenizer.backend_tokenizer.token_to_id("<|0.00|>") == 50363


def pytorch_keys(encoder_layers: int, decoder_layers: int) -> set[str]:
    """The keys of transformers' PyTorch WhisperForConditionalGeneration state dict as save_pretrained writes
    them (proj_out.weight is tied to the token embedding and left out), written down from its modules."""
    def both(*modules: str) -> list[str]:  # a weight and a bias each
        return [f"{module}.{kind}" for module in modules for kind in ("weight", "bias")]

    def attention(prefix: str) -> list[str]:  # k_proj has no bias
        return both(f"{prefix}.q_proj", f"{prefix}.v_proj", f"{prefix}.out_proj") + [f"{prefix}.k_proj.weight"]

    def layer(prefix: str, cross: bool) -> list[str]:
        keys = attention(f"{prefix}.self_attn") + both(*(f"{prefix}.{m}" for m in (
            "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")))
        return keys + (attention(f"{prefix}.encoder_attn") + both(f"{prefix}.encoder_attn_layer_norm") if cross
                       else [])

    keys = both("model.encoder.conv1", "model.encoder.conv2", "model.encoder.layer_norm", "model.decoder.layer_norm")
    keys += ["model.encoder.embed_positions.weight", "model.decoder.embed_tokens.weight",
             "model.decoder.embed_positions.weight"]
    keys += [k for i in range(encoder_layers) for k in layer(f"model.encoder.layers.{i}", cross=False)]
    keys += [k for i in range(decoder_layers) for k in layer(f"model.decoder.layers.{i}", cross=True)]
    return set(keys)


def pytorch_state_dict(checkpoint) -> dict[str, np.ndarray]:
    """The checkpoint's weights in PyTorch's names and layouts: Linear [out, in], Conv1d [out, in, width]."""
    prefix = checkpoint.model.name + "/"
    leaves = {"kernel": "weight", "gamma": "weight", "beta": "bias", "embeddings": "weight"}
    state = {}
    for variable in checkpoint.model.weights:
        *path, leaf = variable.name.removeprefix(prefix).removesuffix(":0").split("/")
        value = variable.numpy()
        if leaf == "kernel":
            value = value.transpose(2, 1, 0) if value.ndim == 3 else value.T
        state[".".join(path + [leaves.get(leaf, leaf)])] = np.ascontiguousarray(value)
    return state


def write_pytorch_layout(checkpoint, folder: Path, shards: int = 1, dtype: str = "float32") -> Path:
    """A Hugging Face folder as PyTorch's save_pretrained writes it: config, tokenizer, preprocessor, generation
    config and model.safetensors (or model-0000i-of-0000n.safetensors and their index) in `dtype`, no TF
    weights. Written through safetensors' TensorFlow side, which has bfloat16 (numpy has not)."""
    import tensorflow as tf
    from safetensors.tensorflow import save_file

    folder.mkdir(parents=True)
    checkpoint.config.to_json_file(folder / "config.json")
    checkpoint.generation_config.save_pretrained(folder)
    checkpoint.tokenizer.save_pretrained(folder)
    checkpoint.feature_extractor.save_pretrained(folder)
    state = {name: tf.cast(value, dtype) for name, value in pytorch_state_dict(checkpoint).items()}
    if shards == 1:
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        return folder
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i::shards]
        save_file({name: state[name] for name in part}, folder / file, metadata={"format": "pt"})
        weight_map |= {name: file for name in part}
    total = sum(value.numpy().nbytes for value in state.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    return folder


LOAD_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # any import of torch fails, as on a machine without it
class Block:  # nor can transformers' TF model classes be imported, as with transformers 5, which has none
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("transformers.modeling_tf", "transformers.models.whisper.modeling_tf")):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
from whisper_tflite.conversion import convert
from whisper_tflite.sources import load_whisper
for folder in sys.argv[1:]:
    weights = {name: v.numpy() for name, v in load_whisper(folder).variables.items()}
    np.savez(folder + ".npz", **{name.replace("/", "|"): value for name, value in weights.items()})
for source in (sys.argv[1], "tiny.en"):  # safetensors, CTranslate2
    convert(source, sys.argv[1] + "-" + source.split("/")[-1] + ".bundle", models=("encoder",), progress=False)
"""


def test_pytorch_safetensors_folders_convert_without_torch(tiny_en, default_bundle, tmp_path):
    """Fine-tunes' usual layout (PyTorch names and transposes, in safetensors, whole or sharded, float32, float16
    or bfloat16) loads with torch unimportable, to exactly the weights of the same model read from CTranslate2
    (as the stored type holds them); it and CTranslate2 folders convert without transformers' TF model classes,
    the bundled tiny.en's encoder to the default bundle's bytes (a conversion is reproducible); a lone
    pytorch_model.bin is refused in one line; a file that lacks a weight is refused, not filled with random
    values."""
    import tensorflow as tf

    state = pytorch_state_dict(tiny_en)
    assert set(state) == pytorch_keys(4, 4)
    expected = {name: v.numpy() for name, v in tiny_en.variables.items()}
    layouts = {dtype: write_pytorch_layout(tiny_en, tmp_path / f"{dtype}-{shards}", shards, dtype)
               for shards, dtype in ((1, "float32"), (3, "float16"), (2, "bfloat16"))}
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_TORCH, *map(str, layouts.values())],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    first = next(iter(layouts.values()))
    for source in (first.name, "tiny.en"):
        assert (tmp_path / f"{first.name}-{source}.bundle" / "encoder.tflite").is_file()
    assert sha256_of(tmp_path / f"{first.name}-tiny.en.bundle" / "encoder.tflite") == \
        sha256_of(default_bundle / "encoder.tflite")
    for dtype, folder in layouts.items():
        loaded = {name.replace("|", "/"): value for name, value in np.load(f"{folder}.npz").items()}
        assert set(loaded) == set(expected)
        assert all(np.array_equal(loaded[name], tf.cast(tf.cast(expected[name], dtype), tf.float32).numpy())
                   for name in expected), dtype

    pickle = tmp_path / "pickle"
    pickle.mkdir()
    for name in ("config.json", "generation_config.json"):
        (pickle / name).write_bytes((tmp_path / "float32-1" / name).read_bytes())
    (pickle / "pytorch_model.bin").write_bytes(b"not read")
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(SourceError, match="pytorch_model.bin is a PyTorch pickle, which needs torch"):
            load_whisper(str(pickle))

    from safetensors.numpy import save_file

    lacking = tmp_path / "float32-1"
    save_file({k: v for k, v in state.items() if k != "model.decoder.layers.2.fc1.bias"},
              lacking / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SourceError, match="the weights lack model.decoder.layers.2.fc1.bias"):
        load_whisper(str(lacking))


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
