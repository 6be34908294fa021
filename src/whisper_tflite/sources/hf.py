"""Hugging Face Whisper checkpoints: a local folder (`save_pretrained` layout) or a hub id."""

from __future__ import annotations

from pathlib import Path

from ..errors import SourceError
from .checkpoint import WhisperCheckpoint


def load_hf_checkpoint(source: str) -> WhisperCheckpoint:
    """Loads with `from_pretrained`; falls back to the PyTorch/safetensors weights where no TF weights exist."""
    from transformers import GenerationConfig, TFWhisperForConditionalGeneration, WhisperFeatureExtractor
    from transformers import WhisperTokenizerFast

    folder = Path(source)
    try:
        if folder.is_dir():
            has_tf = (folder / "tf_model.h5").is_file()
            has_pt = any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin"))
            if not (has_tf or has_pt):
                raise SourceError(f"{source} holds no weights (tf_model.h5, model.safetensors or pytorch_model.bin)")
            model = TFWhisperForConditionalGeneration.from_pretrained(source, from_pt=not has_tf)
        else:
            try:
                model = TFWhisperForConditionalGeneration.from_pretrained(source)
            except OSError:
                model = TFWhisperForConditionalGeneration.from_pretrained(source, from_pt=True)
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


def save_hf_checkpoint(checkpoint: WhisperCheckpoint, folder: str | Path) -> Path:
    """Writes a checkpoint in the Hugging Face layout, loadable by `load_whisper(folder)` and `from_pretrained`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.model.save_pretrained(folder)
    checkpoint.generation_config.save_pretrained(folder)
    checkpoint.tokenizer.save_pretrained(folder)
    checkpoint.feature_extractor.save_pretrained(folder)
    return folder
