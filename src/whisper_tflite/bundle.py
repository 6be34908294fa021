"""A bundle: a folder of .tflite files, `tokenizer.json.gz` and `manifest.json` describing them (runtime side).

`manifest.json` is the contract between conversion and runtime: roles, files, I/O specs, quantization, sha256 of
every file, special tokens, languages, suppress lists, dims and audio settings. The runtime trusts nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError

FORMAT = "whisper-tflite-bundle"
# 2: decoder_step returns the new K/V rows instead of whole caches; the prefill role; tokenizer.json's sha256.
# 3: the decoder_batch role (beam search), which older runtimes would call an unknown role. Version 2 bundles
# still load: without decoder_batch they decode greedily.
# 4: the decoder_batch_short role (beam search on windows without previous text, over half the cache). Version 3
# bundles still load: they search with decoder_batch alone.
# 5: the decoder roles are signatures of one file sharing its weights (each entry names its `signature`), the token
# embedding stored once; prefill and alignment take an `offset`. Versions 2-4 still load: one file a role.
# 6: the decoder_chunks role (batched transcription: several pieces of speech decoded at once). Version 5 bundles
# still load: everything but batched transcription runs as before.
# 7: the tokenizer gzipped (`tokenizer.json.gz`, a third of its size); the position tables int8. Version 6 bundles
# still load, with their `tokenizer.json`.
# 8: prefill takes decoder_step's cache inputs and 112 tokens a call (a longer prompt is fed in two calls); its
# arena holds a call's cross-attention scores, not a 224-token prompt's. Versions 5-7 still load: one call.
FORMAT_VERSION = 8
OLDEST_FORMAT_VERSION = 2
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json.gz"
PLAIN_TOKENIZER = "tokenizer.json"  # bundles of format 6 and older, and whisper-s4y layout folders
MULTILINGUAL_VOCAB = 51865  # English-only vocabularies have 51864 tokens
DIMS = ("n_mels", "n_vocab", "d_model", "n_audio_ctx", "n_text_ctx", "encoder_layers", "decoder_layers",
        "decoder_heads")
# What the runtime needs; the other roles are combined models for apps that want one file and one call.
GREEDY_MODELS = ("features", "encoder", "decoder_step", "prefill")  # enough for greedy transcription
BATCH_MODELS = ("decoder_batch", "decoder_batch_short")  # the beams' (and best-of samples') one call per token
CHUNKS_MODEL = "decoder_chunks"  # batched transcription: the beams of several pieces of speech in one call a token
# and beam search, best-of, batched transcription, word timestamps, the VAD filter (Silero VAD, the same for
# every checkpoint)
DEFAULT_MODELS = (*GREEDY_MODELS, *BATCH_MODELS, CHUNKS_MODEL, "alignment", "vad")
# The roles that run the text decoder on the encoder's cross K/V: signatures of one file (`TEXT_DECODER_FILE`),
# so its weights are stored, mapped and packed once.
TEXT_DECODER_ROLES = ("decoder_step", "prefill", *BATCH_MODELS, CHUNKS_MODEL, "alignment")
TEXT_DECODER_FILE = "text_decoder.tflite"
# The encoder's dynamic-int8 with its attention scores (Q.K^T) in static int8, scaled by calibration audio
# (int8_attention.py; its speed and WER: docs/performance.md), a quantization a manifest may name
INT8_SCORES = "dynamic-int8+int8-qk"
SINGLE_SIGNATURE = "serving_default"  # the key of a file that holds one model
ROLES = ("features", "encoder", "decoder_step", "prefill", *BATCH_MODELS, CHUNKS_MODEL, "alignment", "decoder",
         "pcm_encoder", "encoder_decoder", "whisper", "generator", "vad")
# `convert --layout s4y`: whisper-s4y's files for apps built on that project (graphs/s4y.py), not a bundle.
# File stem -> our role whose graph and default quantization it takes.
S4Y_FORMAT = "whisper-s4y-layout"
S4Y_MODELS = {"features-extractor": "features", "encoder": "encoder", "decoder": "decoder",
              "encoder_decoder": "encoder_decoder", "pcm-encoder": "pcm_encoder", "generator": "generator"}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def user_cache_folder() -> Path:
    """whisper-tflite's folder in the user's cache (XDG_CACHE_HOME, else ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper-tflite"


class _VerifiedFiles:
    """The files whose sha256 was checked, each with the status it had then (size, inode, modification and
    change times): a file whose status is unchanged has the same bytes and is not read again. Writing a file
    sets its change time to now, which no tool can set back. Kept in the user's cache folder; without one,
    every file is hashed at every load."""

    def __init__(self):
        self.path = user_cache_folder() / "verified.json"
        try:
            self.known = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.known = {}
        self.added: dict[str, list] = {}

    @staticmethod
    def _status(path: Path) -> list:
        status = path.stat()
        return [status.st_size, status.st_ino, status.st_mtime_ns, status.st_ctime_ns]

    def matches(self, path: Path, sha256: str) -> bool:
        key, record = str(path.resolve()), [sha256, *self._status(path)]
        if record in (self.known.get(key), self.added.get(key)):
            return True
        if sha256_of(path) != sha256:
            return False
        self.added[key] = record
        return True

    def save(self) -> None:
        """Adds the files hashed now, and drops those no longer there; written whole under a private name and
        renamed, so a reader never sees half of it."""
        if not self.added:
            return
        kept = {key: value for key, value in self.known.items() if os.path.exists(key)} | self.added
        private = self.path.with_name(f"{self.path.name}.{os.getpid()}-{os.urandom(4).hex()}.partial")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private.write_text(json.dumps(kept), encoding="utf-8")
            os.replace(private, self.path)
        except OSError:
            private.unlink(missing_ok=True)


@dataclass
class Bundle:
    folder: Path
    manifest: dict

    @property
    def models(self) -> dict[str, dict]:
        return self.manifest["models"]

    def path(self, role: str) -> Path:
        if role not in self.models:
            raise BundleError(f"{self.folder} has no {role!r} model; convert it with --models {role}")
        return self.folder / self.models[role]["file"]

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / self.manifest["tokenizer"]["file"]

    def signature(self, role: str) -> str:
        """The role's signature key in its file (format 5); the file's only one before."""
        return self.models[role].get("signature", SINGLE_SIGNATURE)

    @property
    def files(self) -> dict[str, int]:
        """Each model file once, with its size in bytes (several roles may share one)."""
        return {entry["file"]: (self.folder / entry["file"]).stat().st_size for entry in self.models.values()}

    @classmethod
    def load(cls, folder: str | Path, verify: bool = True) -> "Bundle":
        """Reads and validates a bundle; `verify` also checks every file's sha256 against the manifest (a file
        unchanged since it was last verified is not read again: `_VerifiedFiles`)."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        validate_manifest(manifest, folder)
        check_files(folder, manifest, verify)
        return cls(folder, manifest)


def read_manifest(folder: Path) -> object:
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder; create one with `whisper-tflite convert`")
    if not manifest_path.is_file():
        raise BundleError(f"{folder} is not a bundle (no {MANIFEST}); convert again with `whisper-tflite convert`")
    try:
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path} is not valid JSON ({e}); convert the bundle again") from None


def check_files(folder: Path, manifest: dict, verify: bool = True) -> None:
    """Every listed file present (and, with `verify`, matching its sha256), the tokenizer too, no unlisted model."""
    verified = _VerifiedFiles() if verify else None
    for role, entry in manifest["models"].items():
        path = folder / entry["file"]
        if not path.is_file():
            raise BundleError(f"{folder}: the {role} model {entry['file']} is missing; convert the bundle again")
        if verified is not None and not verified.matches(path, entry["sha256"]):
            raise BundleError(f"{path} does not match its sha256 in {MANIFEST} (corrupt or replaced); "
                              "convert the bundle again")
    listed = {entry["file"] for entry in manifest["models"].values()}
    extra = sorted(p.name for p in folder.glob("*.tflite") if p.name not in listed)
    if extra:
        raise BundleError(f"{folder} holds model files its manifest does not list ({', '.join(extra)}); "
                          "remove them or convert the bundle again")
    name = manifest["tokenizer"].get("file")
    if name not in (TOKENIZER, PLAIN_TOKENIZER):
        raise _damaged(folder, f"{MANIFEST} names the tokenizer {name!r}, not {TOKENIZER} or {PLAIN_TOKENIZER}")
    tokenizer = folder / name
    if not tokenizer.is_file():
        raise BundleError(f"{folder}: {tokenizer.name} is missing; convert the bundle again")
    if verified is not None and not verified.matches(tokenizer, manifest["tokenizer"]["sha256"]):
        raise BundleError(f"{tokenizer} does not match its sha256 in {MANIFEST} (edited or replaced); "
                          "convert the bundle again")
    if verified is not None:
        verified.save()


def load_s4y_layout(folder: str | Path) -> dict:
    """The manifest of a `convert --layout s4y` folder, its files checked as a bundle's are."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not isinstance(manifest, dict) or manifest.get("format") != S4Y_FORMAT or \
            not isinstance(manifest.get("models"), dict) or \
            not isinstance((manifest.get("tokenizer") or {}).get("sha256"), str) or \
            not all(isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("sha256"), str)
                    for e in manifest["models"].values()):
        raise _damaged(folder, f"{MANIFEST} is not a whisper-s4y layout manifest")
    check_files(folder, manifest)
    return manifest


def validate_manifest(manifest: object, where: Path | str = "manifest") -> None:
    """Structural checks, so a damaged or foreign manifest fails here and not deep in the runtime."""
    if isinstance(manifest, dict) and manifest.get("format") == S4Y_FORMAT:
        raise BundleError(f"{where} holds whisper-s4y layout files, which apps load directly; transcribe with a "
                          "bundle (convert without --layout)")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _damaged(where, f"{MANIFEST} is not a whisper-tflite manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise _damaged(where, f"{MANIFEST} has no format_version")
    if version < OLDEST_FORMAT_VERSION:
        raise BundleError(f"{where}: bundle format {version} is older than this whisper-tflite reads "
                          f"({OLDEST_FORMAT_VERSION}); convert the bundle again")
    if version > FORMAT_VERSION:
        raise BundleError(f"{where}: bundle format {version} is newer than this whisper-tflite reads "
                          f"({FORMAT_VERSION}); upgrade whisper-tflite")
    models = manifest.get("models")
    if not isinstance(models, dict) or not models:
        raise _damaged(where, f"{MANIFEST} lists no models")
    for role, entry in models.items():
        if role not in ROLES:
            raise _damaged(where, f"unknown model role {role!r}")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("file", "sha256")):
            raise _damaged(where, f"the {role} entry lacks its file or sha256")
        if Path(entry["file"]).name != entry["file"] or not entry["file"]:
            raise _damaged(where, f"the {role} file {entry['file']!r} must be a plain file name")
        if version >= 5 and not isinstance(entry.get("signature"), str):
            raise _damaged(where, f"the {role} entry lacks its signature")
        for side in ("inputs", "outputs"):
            specs = entry.get(side)
            if not isinstance(specs, list) or not all(
                    isinstance(spec, dict) and isinstance(spec.get("name"), str) and _list_of(spec.get("shape"), int)
                    for spec in specs):
                raise _damaged(where, f"the {role} entry lacks its {side} (names and shapes)")
    tokenizer, expected = manifest.get("tokenizer"), TOKENIZER if version >= 7 else PLAIN_TOKENIZER
    if not isinstance(tokenizer, dict) or tokenizer.get("file") != expected or \
            not isinstance(tokenizer.get("sha256"), str):
        raise _damaged(where, f"{MANIFEST} lacks the {expected} entry with its sha256")
    dims = manifest.get("dims")
    if not isinstance(dims, dict) or not isinstance(dims.get("multilingual"), bool) or \
            not all(_positive_int(dims.get(key)) for key in DIMS):
        raise _damaged(where, f"{MANIFEST} lacks dims ({', '.join(DIMS)} and multilingual)")
    if dims["multilingual"] != (dims["n_vocab"] >= MULTILINGUAL_VOCAB):
        raise _damaged(where, f"{MANIFEST} says multilingual={dims['multilingual']} for a vocabulary of "
                              f"{dims['n_vocab']}")
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        tokens = manifest.get(key)
        if not _list_of(tokens, int) or not all(0 <= t < dims["n_vocab"] for t in tokens):
            raise _damaged(where, f"{MANIFEST} lacks {key} (a list of token ids)")
    if not _list_of(manifest.get("languages"), str):
        raise _damaged(where, f"{MANIFEST} lacks languages (a list of codes)")
    # Optional, so format-2 bundles converted before the alignment role still load; the role needs it.
    heads = manifest.get("alignment_heads")
    if (heads is not None or "alignment" in models) and not (
            isinstance(heads, list) and heads and all(_list_of(pair, int) and len(pair) == 2 for pair in heads)):
        raise _damaged(where, f"{MANIFEST} lacks alignment_heads (a list of [layer, head] pairs)")


def _damaged(where: Path | str, problem: str) -> BundleError:
    return BundleError(f"{where}: {problem}; convert the bundle again")


def _list_of(value: object, kind: type) -> bool:
    return isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
