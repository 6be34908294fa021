"""Hugging Face Whisper checkpoints: a local folder (`save_pretrained` layout) or a hub id."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from ..errors import SourceError
from .checkpoint import WhisperCheckpoint, check_weights, pytorch_name, weight_shapes


# What fine-tunes ship: safetensors in PyTorch's layout, whole or in shards listed by an index. They are read here,
# without torch and without transformers' TF model classes (which transformers 5 removed), into the weights'
# TF paths and layouts (`checkpoint.weight_shapes`). Only pytorch_model.bin, a pickle, needs torch.
WEIGHT_FILES = ("tf_model.h5", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def load_hf_checkpoint(source: str) -> WhisperCheckpoint:
    """Loads TF weights, else safetensors (PyTorch or TF layout, sharded or not, any float type), else
    pytorch_model.bin (which needs torch). Every weight of the model must come from the files."""
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperTokenizerFast

    folder = Path(source)
    model = None
    try:
        if folder.is_dir():
            present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
            if not present:
                raise SourceError(f"{source} holds no weights ({', '.join(WEIGHT_FILES)})")
            shards = _safetensors_files(folder)
            if "tf_model.h5" not in present and shards and _layout(shards[0]) == "pt":
                config = WhisperConfig.from_pretrained(folder)
                arrays = _from_pytorch_safetensors(source, shards, config)
            elif present == ["pytorch_model.bin"] and importlib.util.find_spec("torch") is None:
                raise SourceError(f"{source}: pytorch_model.bin is a PyTorch pickle, which needs torch; install it, "
                                  "or save the model as safetensors (save_pretrained(..., safe_serialization=True))")
            else:
                model = _from_pretrained(source, from_pt=present == ["pytorch_model.bin"])
        else:
            try:
                model = _from_pretrained(source, from_pt=False)
            except OSError:
                model = _from_pretrained(source, from_pt=True)
        config = model.config if model is not None else config
        tokenizer = WhisperTokenizerFast.from_pretrained(source)
        feature_extractor = WhisperFeatureExtractor.from_pretrained(source)
        try:
            generation_config = GenerationConfig.from_pretrained(source)
        except OSError:  # older checkpoints keep their generation settings in config.json
            generation_config = GenerationConfig.from_model_config(config)
    except SourceError:
        raise
    except (OSError, ValueError, EnvironmentError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(f"cannot load the Hugging Face model {source!r}: {first_line}") from None
    if model is not None:
        return WhisperCheckpoint.of_model(model, tokenizer, feature_extractor, generation_config, source)
    return WhisperCheckpoint(config, tokenizer, feature_extractor, generation_config, source, arrays=arrays)


def _from_pretrained(source: str, from_pt: bool):
    """transformers' TF model from tf_model.h5, pytorch_model.bin (with torch) or the hub; missing weights, which
    it would leave at their random initial values, are refused."""
    from transformers import TFWhisperForConditionalGeneration

    model, info = TFWhisperForConditionalGeneration.from_pretrained(source, from_pt=from_pt,
                                                                    output_loading_info=True)
    _refuse_missing(source, sorted(info.get("missing_keys") or []))
    return model


def _refuse_missing(source: str, missing: list[str]) -> None:
    if missing:
        raise SourceError(f"{source}: the weights lack {missing[0]}" +
                          (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else []


def _layout(path: Path) -> str | None:
    """The framework whose names a safetensors file uses ("pt", "tf", ...), from its metadata."""
    from safetensors import safe_open

    with safe_open(path, framework="np") as archive:
        return (archive.metadata() or {}).get("format")


def _from_pytorch_safetensors(source: str, files: list[Path], config) -> dict[str, np.ndarray]:
    """The weights of PyTorch-layout safetensors at the checkpoint's paths and layouts (`weight_shapes`: Linear
    [out, in] as stored, Conv1d [out, in, width] -> [width, in, out]): float16 as stored, any other type as float32
    (bfloat16 through TensorFlow, since numpy has no bfloat16). Read one tensor at a time: one copy in all."""
    import tensorflow as tf
    from safetensors import safe_open

    wanted = {pytorch_name(path): path for path in weight_shapes(config)}
    arrays: dict[str, np.ndarray] = {}
    for file in files:
        with safe_open(file, framework="tf") as archive:
            for key in archive.keys():
                # A bare WhisperModel's keys lack "model."; proj_out.weight is the token embedding again (tied),
                # which the TF model does not hold twice
                path = wanted.get(key) or wanted.get(f"model.{key}")
                if path is None:
                    continue
                tensor = archive.get_tensor(key)
                value = (tensor if tensor.dtype == tf.float16 else tf.cast(tensor, tf.float32)).numpy()
                if path.endswith("/kernel"):
                    value = np.ascontiguousarray(value.transpose(2, 1, 0))
                arrays[path] = value
    _refuse_missing(source, [name for name, path in wanted.items() if path not in arrays])
    check_weights(arrays, config)
    return arrays


def save_hf_checkpoint(checkpoint: WhisperCheckpoint, folder: str | Path) -> Path:
    """Writes a checkpoint in the Hugging Face layout, loadable by `load_whisper(folder)` and `from_pretrained`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.model.save_pretrained(folder)
    checkpoint.generation_config.save_pretrained(folder)
    checkpoint.tokenizer.save_pretrained(folder)
    checkpoint.feature_extractor.save_pretrained(folder)
    return folder
