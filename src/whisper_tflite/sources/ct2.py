"""Reader for CTranslate2 (faster-whisper) Whisper checkpoints: `model.bin`, `config.json`, `vocabulary.txt`.

The `model.bin` layout (binary version 6): a header (version, spec name, spec revision), then each variable as
name, rank, dims, dtype id, byte count and raw little-endian data, then a table of aliases.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SourceError

SUPPORTED_BINARY_VERSIONS = (5, 6)
# CTranslate2's DataType enum, in order.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


class _Cursor:
    """Reads little-endian fields from a buffer, turning a short read into a clear error."""

    def __init__(self, data: bytes, name: str):
        self.data = memoryview(data)
        self.pos = 0
        self.name = name

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise SourceError(f"{self.name} is truncated or corrupt (needed {size} bytes at offset {self.pos})")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))

    def string(self) -> str:
        (length,) = self.unpack("H")
        raw = bytes(self.take(length))
        if not raw.endswith(b"\0"):
            raise SourceError(f"{self.name} is corrupt (a name is not NUL-terminated at offset {self.pos})")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"{self.name} is corrupt (a name is not UTF-8 at offset {self.pos})") from None


def read_model_bin(parts: Sequence[Path]) -> dict[str, np.ndarray]:
    """Reads a Whisper `model.bin` (given whole or as parts to concatenate) into named arrays, aliases resolved."""
    name = str(parts[0]) if len(parts) == 1 else f"{parts[0]} (+{len(parts) - 1} parts)"
    try:
        data = b"".join(Path(p).read_bytes() for p in parts)
    except OSError as e:
        raise SourceError(f"cannot read {e.filename}: {e.strerror}") from None
    cur = _Cursor(data, name)
    (version,) = cur.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise SourceError(
            f"{name} is not a supported CTranslate2 model (binary version {version}, "
            f"expected one of {SUPPORTED_BINARY_VERSIONS})"
        )
    spec = cur.string()
    cur.unpack("I")  # spec revision
    if spec != "WhisperSpec":
        raise SourceError(f"{name} holds a {spec!r} model, not Whisper")
    (count,) = cur.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        var_name = cur.string()
        (rank,) = cur.unpack("B")
        shape = cur.unpack("I" * rank)
        dtype_id, nbytes = cur.unpack("BI")
        if dtype_id not in _DTYPES:
            raise SourceError(f"{name}: variable {var_name} has unsupported dtype id {dtype_id} (quantized model?)")
        dtype = np.dtype(_DTYPES[dtype_id])
        if nbytes != dtype.itemsize * int(np.prod(shape)):
            raise SourceError(f"{name} is corrupt: {var_name} has {nbytes} bytes for shape {shape}")
        variables[var_name] = np.frombuffer(cur.take(nbytes), dtype=dtype).reshape(shape).copy()
    (alias_count,) = cur.unpack("I")
    for _ in range(alias_count):
        alias, target = cur.string(), cur.string()
        if target not in variables:
            raise SourceError(f"{name} is corrupt: alias {alias} points to missing {target}")
        variables[alias] = variables[target]
    if cur.pos != len(data):
        raise SourceError(f"{name} is corrupt: {len(data) - cur.pos} unexpected bytes after the alias table")
    return variables


@dataclass(frozen=True)
class Ct2Dimensions:
    """Model hyper-parameters derived from the variables themselves, so they cannot disagree with the weights."""

    n_mels: int
    n_vocab: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn: int
    decoder_ffn: int
    n_audio_ctx: int
    n_text_ctx: int


def dimensions(variables: dict[str, np.ndarray]) -> Ct2Dimensions:
    layers = {"encoder": set(), "decoder": set()}
    for key in variables:
        match = _LAYER.match(key)
        if match:
            layers[match.group(1)].add(int(match.group(2)))
    try:
        n_vocab, d_model = variables["decoder/embeddings/weight"].shape
        return Ct2Dimensions(
            n_mels=variables["encoder/conv1/weight"].shape[1],
            n_vocab=n_vocab,
            d_model=d_model,
            encoder_layers=len(layers["encoder"]),
            decoder_layers=len(layers["decoder"]),
            encoder_heads=int(variables["encoder/num_heads"]),
            decoder_heads=int(variables["decoder/num_heads"]),
            encoder_ffn=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
            decoder_ffn=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
            n_audio_ctx=variables["encoder/position_encodings/encodings"].shape[0],
            n_text_ctx=variables["decoder/position_encodings/encodings"].shape[0],
        )
    except KeyError as e:
        raise SourceError(f"model.bin lacks the Whisper variable {e.args[0]}") from None


def hf_weights(variables: dict[str, np.ndarray], dims: Ct2Dimensions) -> dict[str, np.ndarray]:
    """Maps CTranslate2 variables to the checkpoint's weight paths and layouts (`weight_shapes`).

    Raises if any weight variable is left unused, so a format change cannot silently drop weights.
    """
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        used.add(key)
        return variables[key].astype(np.float32)

    out: dict[str, np.ndarray] = {}

    def dense(dst: str, w: np.ndarray, b: np.ndarray | None):
        out[f"{dst}/weight"] = w  # [out, in], as CT2 stores it
        if b is not None:
            out[f"{dst}/bias"] = b

    def norm(dst: str, src: str):
        out[f"{dst}/gamma"] = take(f"{src}/gamma")
        out[f"{dst}/beta"] = take(f"{src}/beta")

    def fused(src: str, names: Sequence[str], dst: str, bias_free: str | None = None):
        weights = np.split(take(f"{src}/weight"), len(names))
        biases = np.split(take(f"{src}/bias"), len(names))
        for name, w, b in zip(names, weights, biases):
            # HF's k_proj has no bias; CT2 stores zeros there to fuse q, k, v.
            dense(f"{dst}/{name}", w, None if name == bias_free else b)

    def linear(dst: str, src: str):
        dense(dst, take(f"{src}/weight"), take(f"{src}/bias"))

    def self_attention(dst: str, src: str):
        norm(f"{dst}/self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        fused(f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"), f"{dst}/self_attn", "k_proj")
        linear(f"{dst}/self_attn/out_proj", f"{src}/self_attention/linear_1")

    def ffn(dst: str, src: str):
        norm(f"{dst}/final_layer_norm", f"{src}/ffn/layer_norm")
        linear(f"{dst}/fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}/fc2", f"{src}/ffn/linear_1")

    for conv in ("conv1", "conv2"):
        # CT2 [out, in, width] -> Keras Conv1D [width, in, out]
        out[f"model/encoder/{conv}/kernel"] = take(f"encoder/{conv}/weight").transpose(2, 1, 0)
        out[f"model/encoder/{conv}/bias"] = take(f"encoder/{conv}/bias")
    out["model/encoder/embed_positions/weight"] = take("encoder/position_encodings/encodings")
    for i in range(dims.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"model/encoder/layers.{i}"
        self_attention(dst, src)
        ffn(dst, src)
    norm("model/encoder/layer_norm", "encoder/layer_norm")

    out["model/decoder/embed_tokens/embeddings"] = take("decoder/embeddings/weight")
    out["model/decoder/embed_positions/weight"] = take("decoder/position_encodings/encodings")
    for i in range(dims.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"model/decoder/layers.{i}"
        self_attention(dst, src)
        norm(f"{dst}/encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        linear(f"{dst}/encoder_attn/q_proj", f"{src}/attention/linear_0")
        fused(f"{src}/attention/linear_1", ("k_proj", "v_proj"), f"{dst}/encoder_attn", "k_proj")
        linear(f"{dst}/encoder_attn/out_proj", f"{src}/attention/linear_2")
        ffn(dst, src)
    norm("model/decoder/layer_norm", "decoder/layer_norm")

    # Scalars describe the architecture (checked in `dimensions`); the projection aliases the embeddings.
    ignored = {k for k, v in variables.items() if v.ndim == 0} | {"decoder/projection/weight"}
    unused = set(variables) - used - ignored
    if unused:
        raise SourceError(f"model.bin has variables this reader does not map: {sorted(unused)[:5]}")
    _check_scalars(variables)
    return out


def _check_scalars(variables: dict[str, np.ndarray]):
    """Refuses architecture switches that Hugging Face Whisper does not implement."""
    expected = {"decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0}
    for key, value in expected.items():
        if key in variables and int(variables[key]) != value:
            raise SourceError(f"model.bin sets {key}={int(variables[key])}; Whisper expects {value}")


def read_vocabulary(path: Path) -> list[str]:
    """One token per line. Split on '\\n' only: tokens may hold other line-break characters, and the
    multilingual vocabulary has a genuine empty token (id 50256)."""
    text = path.read_text(encoding="utf-8")
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return tokens


def read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SourceError(f"cannot read {path}: {e}") from None


def complete_tokenizer_json(tokenizer_json: dict, vocabulary: list[str]) -> dict:
    """Adds to a CTranslate2 `tokenizer.json` the timestamp tokens it lacks, taken from `vocabulary.txt`.

    Hugging Face's Whisper tokenizers carry them as added tokens; without them `<|0.00|>` ... `<|30.00|>` would
    decode to nothing and the runtime could not place segments.
    """
    known = set(tokenizer_json["model"]["vocab"].values()) | {t["id"] for t in tokenizer_json["added_tokens"]}
    result = dict(tokenizer_json)
    added = list(tokenizer_json["added_tokens"])
    for token_id, content in enumerate(vocabulary):
        if token_id in known:
            continue
        if not (content.startswith("<|") and content.endswith("|>")):
            if content == "":
                continue  # multilingual id 50256 is a genuine empty token, unused by the model
            raise SourceError(f"vocabulary.txt has token {content!r} (id {token_id}) that tokenizer.json lacks")
        added.append({"id": token_id, "content": content, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": False})
    result["added_tokens"] = added
    return result


def load_ct2_checkpoint(folder: Path, model_bin_parts: Sequence[Path] | None = None, source: str | None = None):
    """A checkpoint (weights, config, tokenizer, feature extractor, generation config) from a CTranslate2 folder.
    `model_bin_parts` replaces `folder/model.bin` for a model shipped in pieces."""
    from tokenizers import Tokenizer
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperTokenizerFast

    from ..tokens import SpecialTokens
    from .checkpoint import WhisperCheckpoint, check_weights, whisper_generation_config

    folder = Path(folder)
    for required in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if not (folder / required).is_file():
            raise SourceError(f"{folder} is not a CTranslate2 Whisper folder: {required} is missing")
    parts = list(model_bin_parts or [folder / "model.bin"])
    variables = read_model_bin(parts)
    dims = dimensions(variables)
    weights = hf_weights(variables, dims)
    del variables

    vocabulary = read_vocabulary(folder / "vocabulary.txt")
    if len(vocabulary) != dims.n_vocab:
        raise SourceError(f"vocabulary.txt has {len(vocabulary)} tokens but the model has {dims.n_vocab}")
    tokenizer_json = complete_tokenizer_json(read_config(folder / "tokenizer.json"), vocabulary)
    backend = Tokenizer.from_str(json.dumps(tokenizer_json))
    tokenizer = WhisperTokenizerFast(tokenizer_object=backend)
    special = SpecialTokens.from_lookup(backend.token_to_id, backend.id_to_token)
    if backend.id_to_token(special.timestamp_begin) != "<|0.00|>":
        raise SourceError(f"{folder}: timestamp tokens do not start after <|notimestamps|>")

    config = WhisperConfig(
        vocab_size=dims.n_vocab,
        num_mel_bins=dims.n_mels,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_heads,
        decoder_attention_heads=dims.decoder_heads,
        encoder_ffn_dim=dims.encoder_ffn,
        decoder_ffn_dim=dims.decoder_ffn,
        max_source_positions=dims.n_audio_ctx,
        max_target_positions=dims.n_text_ctx,
        decoder_start_token_id=special.sot,
        bos_token_id=special.eot,
        eos_token_id=special.eot,
        pad_token_id=special.eot,
    )
    check_weights(weights, config)

    ct2_config = read_config(folder / "config.json")
    multilingual = dims.n_vocab >= 51865
    generation_config = whisper_generation_config(
        special,
        multilingual,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        max_length=dims.n_text_ctx,
    )
    config.forced_decoder_ids = None
    config.suppress_tokens = None
    config.begin_suppress_tokens = None
    return WhisperCheckpoint(
        config=config,
        tokenizer=tokenizer,
        feature_extractor=WhisperFeatureExtractor(feature_size=dims.n_mels),
        generation_config=generation_config,
        source=source or str(folder),
        arrays=weights,
    )
