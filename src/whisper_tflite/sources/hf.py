"""Hugging Face Whisper checkpoints: a local folder (`save_pretrained` layout) or a hub id."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..errors import SourceError
from .checkpoint import WhisperCheckpoint


# What fine-tunes ship: safetensors in PyTorch's layout, whole or in shards listed by an index. They are read here
# and mapped by transformers' own PyTorch -> TF rules (names, transposes) without torch; transformers' loader for
# them iterates a safetensors archive, which safetensors 0.7 cannot. Only pytorch_model.bin, a pickle, needs torch.
WEIGHT_FILES = ("tf_model.h5", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def load_hf_checkpoint(source: str) -> WhisperCheckpoint:
    """Loads TF weights, else safetensors (PyTorch or TF layout, sharded or not, any float type), else
    pytorch_model.bin (which needs torch). Every weight of the model must come from the files."""
    from transformers import GenerationConfig, TFWhisperForConditionalGeneration, WhisperFeatureExtractor
    from transformers import WhisperTokenizerFast

    folder = Path(source)
    try:
        if folder.is_dir():
            present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
            if not present:
                raise SourceError(f"{source} holds no weights ({', '.join(WEIGHT_FILES)})")
            shards = _safetensors_files(folder)
            if "tf_model.h5" not in present and shards and _layout(shards[0]) == "pt":
                model, info = _from_pytorch_safetensors(folder, shards)
            elif present == ["pytorch_model.bin"] and importlib.util.find_spec("torch") is None:
                raise SourceError(f"{source}: pytorch_model.bin is a PyTorch pickle, which needs torch; install it, "
                                  "or save the model as safetensors (save_pretrained(..., safe_serialization=True))")
            else:
                model, info = TFWhisperForConditionalGeneration.from_pretrained(
                    source, from_pt=present == ["pytorch_model.bin"], output_loading_info=True)
        else:
            try:
                model, info = TFWhisperForConditionalGeneration.from_pretrained(source, output_loading_info=True)
            except OSError:
                model, info = TFWhisperForConditionalGeneration.from_pretrained(source, from_pt=True,
                                                                                output_loading_info=True)
        missing = sorted(info.get("missing_keys") or [])
        if missing:  # they would keep their random initial values
            raise SourceError(f"{source}: the weights lack {missing[0]}" +
                              (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        tokenizer = WhisperTokenizerFast.from_pretrained(source)
        feature_extractor = WhisperFeatureExtractor.from_pretrained(source)
        try:
            model.generation_config = GenerationConfig.from_pretrained(source)
        except OSError:
            pass  # older checkpoints keep their generation settings in config.json
    except SourceError:
        raise
    except (OSError, ValueError, EnvironmentError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(f"cannot load the Hugging Face model {source!r}: {first_line}") from None
    return WhisperCheckpoint(model, tokenizer, feature_extractor, model.generation_config, source)


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


def _from_pytorch_safetensors(folder: Path, files: list[Path]):
    """(model, loading info) from PyTorch-layout safetensors, as float32 whatever the stored type (bfloat16
    included, through TensorFlow, since numpy has no bfloat16)."""
    import tensorflow as tf
    from safetensors import safe_open
    from transformers import TFWhisperForConditionalGeneration, WhisperConfig
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    state = {}
    for path in files:
        with safe_open(path, framework="tf") as archive:
            state |= {key: tf.cast(archive.get_tensor(key), tf.float32).numpy() for key in archive.keys()}
    model = TFWhisperForConditionalGeneration(WhisperConfig.from_pretrained(folder))
    return load_pytorch_state_dict_in_tf2_model(model, state, allow_missing_keys=True, output_loading_info=True)


def save_hf_checkpoint(checkpoint: WhisperCheckpoint, folder: str | Path) -> Path:
    """Writes a checkpoint in the Hugging Face layout, loadable by `load_whisper(folder)` and `from_pretrained`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.model.save_pretrained(folder)
    checkpoint.generation_config.save_pretrained(folder)
    checkpoint.tokenizer.save_pretrained(folder)
    checkpoint.feature_extractor.save_pretrained(folder)
    return folder
