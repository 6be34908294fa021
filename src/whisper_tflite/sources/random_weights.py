"""Whisper checkpoints with seeded random weights at a family member's true dimensions (`sizes.SIZES`).

The package ships no weights of small, medium or large, but a model of the right shapes exercises every
shape, limit and memory figure that the real one does. A checkpoint is written as fine-tunes on the Hugging
Face hub ship it (config, generation config, tokenizer, preprocessor config and PyTorch-layout
`model.safetensors`), so it goes through the same `load_whisper` and `convert` as a real one.

The tokenizer is a real one of the right vocabulary: tiny.en's for the English-only members, base's for the
multilingual ones, and base's with `<|yue|>` inserted after `<|su|>` for large-v3's 51866 tokens (every
special token after it moves up by one, as in large-v3's own tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import SourceError
from ..sizes import N_AUDIO_CTX, N_TEXT_CTX, WhisperSize
from ..tokens import SpecialTokens
from . import bundled_folder
from .ct2 import complete_tokenizer_json, read_config, read_vocabulary

INIT_STD = 0.02  # transformers' WhisperConfig.init_std, the scale of its random initialization
_YUE_AFTER = "<|su|>"


def write_random_checkpoint(size: WhisperSize, folder: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Writes a Hugging Face folder of `size` with random weights drawn from `seed`, stored as `dtype`
    (float32 or float16, what the hub ships)."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperTokenizerFast

    from .checkpoint import whisper_generation_config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_json, suppress, begin_suppress = _tokenizer_of(size)
    backend = Tokenizer.from_str(json.dumps(tokenizer_json))
    if backend.get_vocab_size() != size.n_vocab:
        raise SourceError(f"the tokenizer built for {size.name} has {backend.get_vocab_size()} tokens, "
                          f"not {size.n_vocab}")
    special = SpecialTokens.from_lookup(backend.token_to_id, backend.id_to_token)
    WhisperTokenizerFast(tokenizer_object=backend).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=size.n_mels).save_pretrained(folder)
    WhisperConfig(
        vocab_size=size.n_vocab, num_mel_bins=size.n_mels, d_model=size.d_model,
        encoder_layers=size.encoder_layers, decoder_layers=size.decoder_layers,
        encoder_attention_heads=size.heads, decoder_attention_heads=size.heads,
        encoder_ffn_dim=4 * size.d_model, decoder_ffn_dim=4 * size.d_model,
        max_source_positions=N_AUDIO_CTX, max_target_positions=N_TEXT_CTX,
        decoder_start_token_id=special.sot, bos_token_id=special.eot, eos_token_id=special.eot,
        pad_token_id=special.eot,
    ).to_json_file(folder / "config.json")
    whisper_generation_config(special, not size.english_only, suppress, begin_suppress, alignment_heads=[],
                              max_length=N_TEXT_CTX).save_pretrained(folder)
    save_file(random_state_dict(size, seed, dtype), folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def random_state_dict(size: WhisperSize, seed: int = 0, dtype: str = "float32") -> dict[str, np.ndarray]:
    """transformers' PyTorch Whisper state dict at `size` (Linear [out, in], Conv1d [out, in, 3]): weights and
    biases normal with INIT_STD, layer norms near (1, 0), the encoder's sinusoidal positions as Whisper's."""
    rng = np.random.default_rng(seed)
    d, ffn = size.d_model, 4 * size.d_model
    state: dict[str, np.ndarray] = {}

    def normal(name: str, *shape: int, mean: float = 0.0) -> None:
        state[name] = (rng.standard_normal(shape, np.float32) * INIT_STD + mean).astype(dtype)

    def linear(name: str, inputs: int, outputs: int, bias: bool = True) -> None:
        normal(f"{name}.weight", outputs, inputs)
        if bias:
            normal(f"{name}.bias", outputs)

    def norm(name: str) -> None:
        normal(f"{name}.weight", d, mean=1.0)
        normal(f"{name}.bias", d)

    def attention(name: str) -> None:
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear(f"{name}.{projection}", d, d, bias=projection != "k_proj")

    def layer(name: str, cross: bool) -> None:
        attention(f"{name}.self_attn")
        norm(f"{name}.self_attn_layer_norm")
        if cross:
            attention(f"{name}.encoder_attn")
            norm(f"{name}.encoder_attn_layer_norm")
        linear(f"{name}.fc1", d, ffn)
        linear(f"{name}.fc2", ffn, d)
        norm(f"{name}.final_layer_norm")

    normal("model.encoder.conv1.weight", d, size.n_mels, 3)
    normal("model.encoder.conv1.bias", d)
    normal("model.encoder.conv2.weight", d, d, 3)
    normal("model.encoder.conv2.bias", d)
    state["model.encoder.embed_positions.weight"] = sinusoids(N_AUDIO_CTX, d).astype(dtype)
    for i in range(size.encoder_layers):
        layer(f"model.encoder.layers.{i}", cross=False)
    norm("model.encoder.layer_norm")
    normal("model.decoder.embed_tokens.weight", size.n_vocab, d)
    normal("model.decoder.embed_positions.weight", N_TEXT_CTX, d)
    for i in range(size.decoder_layers):
        layer(f"model.decoder.layers.{i}", cross=True)
    norm("model.decoder.layer_norm")
    return state


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> np.ndarray:
    """openai/whisper's `sinusoids`: the encoder's fixed position embedding."""
    increment = np.log(max_timescale) / (channels // 2 - 1)
    inverse = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inverse[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1)


def _tokenizer_of(size: WhisperSize) -> tuple[dict, list[int], list[int]]:
    """(tokenizer.json, suppress_tokens, begin_suppress_tokens) of `size`'s vocabulary, from a bundled model."""
    folder = bundled_folder("tiny.en" if size.english_only else "base")
    tokenizer = complete_tokenizer_json(read_config(folder / "tokenizer.json"),
                                        read_vocabulary(folder / "vocabulary.txt"))
    config = read_config(folder / "config.json")
    suppress, begin_suppress = list(config["suppress_ids"]), list(config["suppress_ids_begin"])
    if size.n_vocab == 51866:
        yue = next(token["id"] for token in tokenizer["added_tokens"] if token["content"] == _YUE_AFTER) + 1
        for token in tokenizer["added_tokens"]:
            if token["id"] >= yue:
                token["id"] += 1
        tokenizer["added_tokens"].append({**tokenizer["added_tokens"][-1], "id": yue, "content": "<|yue|>",
                                          "special": True})
        tokenizer["added_tokens"].sort(key=lambda token: token["id"])
        suppress = [t + 1 if t >= yue else t for t in suppress]
        begin_suppress = [t + 1 if t >= yue else t for t in begin_suppress]
    return tokenizer, suppress, begin_suppress
