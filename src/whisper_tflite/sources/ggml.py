"""Writes a checkpoint in whisper.cpp's ggml format, so whisper.cpp can run the very same weights.

Layout (whisper.cpp `models/convert-h5-to-ggml.py`): magic, 11 int32 hyper-parameters, the mel filters
[n_mels, n_fft/2+1], the byte-level vocabulary up to end-of-text (whisper.cpp names the special tokens itself),
then each tensor under openai/whisper's name: n_dims, name length, type (0 f32, 1 f16), dims innermost first,
name, data. Matrices are f16 (the CTranslate2 weights are f16 already); vectors and positions f32.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from .checkpoint import WhisperCheckpoint

MAGIC = 0x67676D6C  # "ggml"
_NAMES = {
    "self_attn/q_proj": "attn.query", "self_attn/k_proj": "attn.key", "self_attn/v_proj": "attn.value",
    "self_attn/out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
    "encoder_attn/q_proj": "cross_attn.query", "encoder_attn/k_proj": "cross_attn.key",
    "encoder_attn/v_proj": "cross_attn.value", "encoder_attn/out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln", "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln",
}
_TOP = {
    "encoder/conv1": "encoder.conv1", "encoder/conv2": "encoder.conv2",
    "encoder/embed_positions": "encoder.positional_embedding", "encoder/layer_norm": "encoder.ln_post",
    "decoder/embed_tokens": "decoder.token_embedding", "decoder/embed_positions": "decoder.positional_embedding",
    "decoder/layer_norm": "decoder.ln",
}
_SUFFIX = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias", "embeddings": "weight",
           "weight": "weight"}
_LAYER = re.compile(r"^(encoder|decoder)/layers\.(\d+)/(.+)/(\w+)$")


def _openai_name(tf_name: str) -> str:
    """`model/decoder/layers.3/encoder_attn/q_proj/weight` -> `decoder.blocks.3.cross_attn.query.weight`."""
    path = tf_name.removeprefix("model/")
    match = _LAYER.match(path)
    if match:
        side, index, module, leaf = match.groups()
        return f"{side}.blocks.{index}.{_NAMES[module]}.{_SUFFIX[leaf]}"
    module, leaf = path.rsplit("/", 1)
    if module.endswith("embed_positions"):
        return _TOP[module]  # a bare tensor in openai/whisper, not a module
    return f"{_TOP[module]}.{_SUFFIX[leaf]}"


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, reversed: each printable stand-in character -> the byte it encodes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def save_ggml(checkpoint: WhisperCheckpoint, path: str | Path) -> Path:
    path = Path(path)
    config = checkpoint.config
    weights = checkpoint.variables
    filters = np.asarray(checkpoint.feature_extractor.mel_filters, np.float32).T  # [n_mels, 201]
    backend = checkpoint.tokenizer.backend_tokenizer
    eot = checkpoint.special_tokens.eot
    decode = _byte_decoder()
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "wb") as f:
        f.write(struct.pack("<12i", MAGIC, config.vocab_size, config.max_source_positions, config.d_model,
                            config.encoder_attention_heads, config.encoder_layers, config.max_target_positions,
                            config.d_model, config.decoder_attention_heads, config.decoder_layers,
                            config.num_mel_bins, 1))
        f.write(struct.pack("<2i", *filters.shape))
        f.write(filters.tobytes())
        f.write(struct.pack("<i", eot + 1))
        for token_id in range(eot + 1):
            token = backend.id_to_token(token_id) or ""
            data = bytes(decode[c] for c in token) if token_id != eot else token.encode()
            f.write(struct.pack("<i", len(data)) + data)
        for tf_name, variable in weights.items():
            name = _openai_name(tf_name)
            value = variable.numpy()
            if tf_name.endswith("/kernel"):
                value = value.transpose(2, 1, 0)  # a convolution's, to PyTorch's [out, in, width]
            if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                value = value.reshape(-1, 1)
            small = value.ndim < 2 or name.endswith("positional_embedding") or name.endswith("conv1.bias") \
                or name.endswith("conv2.bias")
            data = value.astype(np.float32 if small else np.float16)
            encoded = name.encode()
            f.write(struct.pack("<3i", data.ndim, len(encoded), 0 if small else 1))
            f.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
            f.write(encoded)
            f.write(np.ascontiguousarray(data).tobytes())
    temporary.replace(path)
    return path
