"""Bad input, broken bundles, interrupted conversions: one clear line and an exit code, never a traceback."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whisper_tflite.audio import load_audio
from whisper_tflite.bundle import Bundle, sha256_of, validate_manifest
from whisper_tflite.errors import AudioError, BundleError

CLI = Path(sys.executable).with_name("whisper-tflite")


def run_cli(*args, timeout=300):
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def default_sigint() -> None:
    """In the child before exec: Ctrl-C as a terminal delivers it, even when this suite runs as a background job
    of a non-interactive shell (which starts with SIGINT ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def error_lines(done):
    return [line for line in done.stderr.splitlines() if line.startswith("whisper-tflite")]


@pytest.fixture(scope="module")
def bad_audio(tmp_path_factory, clips):
    folder = tmp_path_factory.mktemp("bad-audio")
    wav = next(c for c in clips if c.name == "en_jfk_whisper-cpp.wav").path
    flac = next(c for c in clips if c.name == "en_jfk_openai-whisper.flac").path
    (folder / "empty.wav").write_bytes(b"")
    soundfile.write(folder / "zero-length.wav", np.zeros(0, np.int16), 16000)
    (folder / "not-audio.wav").write_bytes(b"this is a text file, not a RIFF header\n" * 100)
    (folder / "truncated.wav").write_bytes(wav.read_bytes()[: wav.stat().st_size // 2])
    (folder / "truncated.flac").write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    nan = np.zeros(16000, np.float32)
    nan[100] = np.nan
    soundfile.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = np.zeros(16000, np.float32)
    inf[5] = np.inf
    soundfile.write(folder / "inf.wav", inf, 16000, subtype="FLOAT")
    soundfile.write(folder / "rate-1hz.wav", np.zeros(10, np.int16), 1)
    soundfile.write(folder / "rate-1mhz.wav", np.zeros(10000, np.int16), 1_000_000)
    (folder / "a-folder.wav").mkdir()
    return folder


BAD_FILES = {
    "missing.wav": "no such file",
    "a-folder.wav": "is a folder",
    "empty.wav": "the file is empty",
    "zero-length.wav": "holds no samples",
    "not-audio.wav": "cannot decode audio",
    "truncated.wav": "truncated WAV",
    "truncated.flac": "cannot decode audio",
    "nan.wav": "NaN or infinite",
    "inf.wav": "NaN or infinite",
    "rate-1hz.wav": "sample rate 1 Hz",
    "rate-1mhz.wav": "sample rate 1000000 Hz",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_audio_is_one_line_and_exit_2(name, bad_audio, default_bundle):
    done = run_cli("transcribe", bad_audio / name, "--model", default_bundle, "--quiet")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = error_lines(done)
    assert len(lines) == 2 and name in lines[0] and BAD_FILES[name] in lines[0], done.stderr
    assert done.stdout == ""


def test_good_files_still_transcribed_beside_bad_ones(bad_audio, default_bundle, clip_named):
    good = clip_named("en_jfk_whisper-cpp.wav").path
    done = run_cli("transcribe", bad_audio / "not-audio.wav", good, bad_audio / "missing.wav",
                   "--model", default_bundle, "--quiet")
    assert done.returncode == 2
    assert "ask not what your country" in done.stdout.lower()
    summary = error_lines(done)[-1]
    assert "1 of 3 files transcribed" in summary and "not-audio.wav" in summary and "missing.wav" in summary


def test_silence_gives_empty_text(tmp_path, default_bundle):
    soundfile.write(tmp_path / "silence.wav", np.zeros(30 * 16000, np.int16), 16000)
    done = run_cli("transcribe", tmp_path / "silence.wav", "--model", default_bundle, "--format", "json", "--quiet")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["text"] == "" and result["segments"] == []


@pytest.mark.parametrize("options, message", [
    (["--language", "xx"], "unknown language 'xx'"),
    (["--task", "translate"], "is an English-only model: it cannot translate"),
    (["--threads", "-1"], "--threads must be 0 (the default) or more"),
])
def test_bad_options_are_usage_errors(options, message, default_bundle, clip_named):
    jfk = clip_named("en_jfk_openai-whisper.flac").path
    done = run_cli("transcribe", jfk, "--model", default_bundle, *options, "--quiet")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_decoding_flags_are_faster_whispers_options():
    from whisper_tflite.cli import _options, _parser
    from whisper_tflite.runtime import TranscriptionOptions

    args = _parser().parse_args([
        "transcribe", "talk.wav", "--prefix", "And so", "--hotwords", "JFK", "--suppress-tokens=-1,1499",
        "--no-suppress-blank", "--without-timestamps", "--max-initial-timestamp", "2", "--max-new-tokens", "5",
        "--clip-timestamps", "2,7", "--multilingual", "--repetition-penalty", "1.2", "--no-repeat-ngram-size", "3",
        "--prepend-punctuations", "", "--append-punctuations", ".", "--hallucination-silence-threshold", "2"])
    assert _options(args) == TranscriptionOptions(
        prefix="And so", hotwords="JFK", suppress_tokens=[-1, 1499], suppress_blank=False, without_timestamps=True,
        max_initial_timestamp=2, max_new_tokens=5, clip_timestamps=[2, 7], multilingual=True, repetition_penalty=1.2,
        no_repeat_ngram_size=3, prepend_punctuations="", append_punctuations=".", hallucination_silence_threshold=2)
    assert _options(_parser().parse_args(["transcribe", "talk.wav", "--suppress-tokens="])).suppress_tokens == ()
    assert _options(_parser().parse_args(["transcribe", "talk.wav"])) == TranscriptionOptions()


def _bundle_copy(source: Path, target: Path) -> Path:
    """A bundle whose .tflite files are links to the cached ones: cheap to break in one place."""
    target.mkdir()
    for item in source.iterdir():
        if item.suffix == ".tflite":
            (target / item.name).symlink_to(item)
        else:
            shutil.copy(item, target / item.name)
    return target


def _edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _missing(folder):
    (folder / "encoder.tflite").unlink()


def _extra(folder):
    (folder / "old-encoder.tflite").write_bytes(b"x")


def _corrupt(folder):
    target = (folder / "text_decoder.tflite").resolve()
    (folder / "text_decoder.tflite").unlink()
    data = bytearray(target.read_bytes()[:4096])
    (folder / "text_decoder.tflite").write_bytes(bytes(data))


def _newer(folder):
    _edit_manifest(folder, lambda m: m.update(format_version=99))


def _older(folder):
    _edit_manifest(folder, lambda m: m.update(format_version=1))


def _foreign(folder):
    """The features model put in the encoder's place, with a matching sha256: caught by its I/O specs."""
    (folder / "encoder.tflite").unlink()
    shutil.copy((folder / "features.tflite").resolve(), folder / "encoder.tflite")
    _edit_manifest(folder, lambda m: m["models"]["encoder"].update(sha256=sha256_of(folder / "encoder.tflite")))


def _no_multilingual(folder):
    _edit_manifest(folder, lambda m: m["dims"].pop("multilingual"))


def _edited_tokenizer(folder):
    """One byte of the gzip header changed (its modification time): the same size, the same text."""
    path = folder / "tokenizer.json.gz"
    data = bytearray(path.read_bytes())
    data[4] ^= 1
    path.write_bytes(data)


@pytest.mark.parametrize("damage, message", [
    (_no_multilingual, "lacks dims"),
    (_edited_tokenizer, "tokenizer.json.gz does not match its sha256"),
    (_missing, "the encoder model encoder.tflite is missing"),
    (_extra, "holds model files its manifest does not list (old-encoder.tflite)"),
    (_corrupt, "does not match its sha256"),
    (_newer, "bundle format 99 is newer than this whisper-tflite reads"),
    (_older, "bundle format 1 is older than this whisper-tflite reads (2); convert the bundle again"),
    (_foreign, "does not have the inputs and outputs its manifest lists"),
])
def test_broken_bundles_are_refused_at_load(damage, message, default_bundle, tmp_path, clip_named):
    folder = _bundle_copy(default_bundle, tmp_path / "bundle")
    damage(folder)
    done = run_cli("transcribe", clip_named("en_jfk_openai-whisper.flac").path, "--model", folder, "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(error_lines(done)) == 1
    assert message in done.stderr and ("convert" in done.stderr or "upgrade" in done.stderr), done.stderr


def test_a_file_changed_after_a_verified_load_is_hashed_again(default_bundle, tmp_path, monkeypatch):
    """A load skips hashing the files it has verified before while their status is unchanged; an edit in
    place that keeps the size still changes it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = _bundle_copy(default_bundle, tmp_path / "bundle")
    Bundle.load(folder)
    assert str((folder / "tokenizer.json.gz").resolve()) in json.loads(
        (tmp_path / "cache" / "whisper-tflite" / "verified.json").read_text())
    size = (folder / "tokenizer.json.gz").stat().st_size
    _edited_tokenizer(folder)
    assert (folder / "tokenizer.json.gz").stat().st_size == size
    with pytest.raises(BundleError, match="tokenizer.json.gz does not match its sha256"):
        Bundle.load(folder)


def test_convert_refuses_existing_folder(tmp_path):
    (tmp_path / "bundle").mkdir()
    done = run_cli("convert", "tiny.en", "--out", tmp_path / "bundle", "--quiet")
    assert done.returncode == 2 and "already exists" in done.stderr and "--force" in done.stderr


def test_convert_bad_source_is_one_line(tmp_path):
    done = run_cli("convert", tmp_path / "nowhere", "--out", tmp_path / "bundle", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(error_lines(done)) == 1 and "not a bundled model" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_convert_leaves_no_bundle(sig, tmp_path):
    out = tmp_path / "bundle"
    process = subprocess.Popen([str(CLI), "convert", "tiny.en", "--out", str(out), "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               preexec_fn=default_sigint)
    deadline = time.time() + 120
    while time.time() < deadline and not any((tmp_path / p.name / "features.tflite").exists()
                                             for p in tmp_path.glob(".bundle.partial-*")):
        time.sleep(0.2)  # wait until the staging folder holds a finished model (the first): mid-conversion
    assert process.poll() is None, "conversion ended before it could be interrupted"
    process.send_signal(sig)
    process.wait(timeout=60)
    assert not out.exists()
    if sig == signal.SIGINT:
        assert process.returncode == 130
        assert not list(tmp_path.glob(".bundle.partial-*")), "the staging folder was not cleaned up"
    else:  # nothing can clean up after SIGKILL: what remains is a hidden, partial staging folder
        for staging in tmp_path.glob(".bundle.partial-*"):
            with pytest.raises(BundleError):
                Bundle.load(staging)


def test_convert_twice_is_byte_identical(default_bundle, tmp_path):
    """The default bundle's quantized text decoder (its six roles' file), converted again by the CLI, is the same
    bytes; so is its quantized encoder, converted again in test_sources.py's conversion without transformers' TF
    classes (the features and vad models, float32 and small, are left out to spare the suite time)."""
    roles = "decoder_step,prefill,decoder_batch,decoder_batch_short,decoder_chunks,alignment"
    done = run_cli("convert", "tiny.en", "--out", tmp_path / "again", "--models", roles, "--quiet", timeout=900)
    assert done.returncode == 0, done.stderr
    for name in ("text_decoder.tflite", "tokenizer.json.gz"):
        assert sha256_of(tmp_path / "again" / name) == sha256_of(default_bundle / name), name


def test_convert_shows_its_progress_bar_and_force_replaces_a_bundle_per_role(tmp_path):
    """Without --quiet, stderr holds the progress bar and nothing else (TensorFlow's own lines kept off it); a
    second conversion with --force replaces the bundle, quantized per role."""
    out = tmp_path / "bundle"
    done = run_cli("convert", "tiny.en", "--out", out, "--models", "features", timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(line.startswith("converting tiny.en") for line in lines), lines
    done = run_cli("convert", "tiny.en", "--out", out, "--models", "features,encoder", "--quantize", "encoder=fp16",
                   "--force", "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert {role: entry["quantization"] for role, entry in manifest["models"].items()} == \
        {"features": "none", "encoder": "fp16"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"], "the old bundle or a staging folder is left"


def test_convert_unknown_role_is_one_line():
    done = run_cli("convert", "tiny.en", "--models", "features,speaker", "--out", "/nonexistent/x", "--quiet")
    assert done.returncode == 2 and len(error_lines(done)) == 1 and "Traceback" not in done.stderr
    assert "unknown model role 'speaker'" in done.stderr and "generator" in done.stderr


def test_convert_refuses_bad_arguments_before_importing_tensorflow(tmp_path):
    """The refusals above take a fraction of a second: they come before TensorFlow, seconds to import, is loaded."""
    script = ("import sys; from whisper_tflite.cli import main; code = main(sys.argv[1:]); "
              "print('tensorflow' in sys.modules); sys.exit(code)")
    for args in (("--models", "features,speaker"), ("--min-runtime", "two"), ("--language", "en")):
        done = subprocess.run([sys.executable, "-c", script, "convert", "tiny.en", "--out", str(tmp_path / "b"), *args],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and len(error_lines(done)) == 1, done.stderr
        assert done.stdout.split() == ["False"], args


def test_models_all_names_every_role():
    from whisper_tflite.bundle import ROLES
    from whisper_tflite.cli import model_roles

    assert set(model_roles("all")) == set(ROLES)
    assert model_roles(" encoder, features ,") == ("encoder", "features")


def test_internal_conversion_error_exits_1(tmp_path):
    """A checkpoint with a NaN weight converts to a model the guard refuses: the converter's fault, exit 1."""
    from whisper_tflite.sources import load_whisper
    from whisper_tflite.sources.hf import save_hf_checkpoint

    checkpoint = load_whisper("tiny.en")
    weight = next(w for w in checkpoint.model.weights if "encoder/layer_norm/gamma" in w.name)
    weight.assign(np.full(weight.shape, np.nan, np.float32))
    folder = save_hf_checkpoint(checkpoint, tmp_path / "nan-hf")
    done = run_cli("convert", folder, "--out", tmp_path / "bundle", "--models", "encoder", "--quantize", "none",
                   "--quiet", timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(error_lines(done)) == 1 and "holds inf or NaN" in done.stderr
    assert not (tmp_path / "bundle").exists()


def test_full_disk_during_conversion_is_one_line(monkeypatch):
    """The converter reads a SavedModel written to a temporary folder: a full disk in CI once surfaced as
    "0 Signatures" deep in LiteRT. Here the save fails as on a full disk, from TF's C++ writer; the conversion
    must stop with one line naming the cause."""
    import tensorflow as tf
    from transformers import WhisperFeatureExtractor

    from whisper_tflite.conversion import to_tflite
    from whisper_tflite.errors import ConversionError
    from whisper_tflite.graphs.features import FeatureExtractor

    def full_disk(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "/tmp/x/variables.data-00000-of-00001; No space left on "
                                               "device\n\tfailed to write the checkpoint")

    monkeypatch.setattr(tf.saved_model, "save", full_disk)
    with pytest.raises(ConversionError, match="features could not write its temporary SavedModel.*No space left") \
            as raised:
        to_tflite(FeatureExtractor(WhisperFeatureExtractor(feature_size=80).mel_filters))
    assert "\n" not in str(raised.value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096), prefix=st.sampled_from([b"", b"RIFF", b"RIFF\x10\x00\x00\x00WAVEfmt ",
                                                               b"fLaC", b"OggS", b"ID3"]))
def test_fuzz_audio_loader_raises_only_audio_errors(data, prefix, tmp_path):
    path = tmp_path / "fuzz.bin"
    path.write_bytes(prefix + data)
    try:
        samples = load_audio(path)
    except AudioError:
        return
    assert samples.dtype == np.float32 and samples.ndim == 1 and np.isfinite(samples).all()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
MANIFEST_PLACES = [("format",), ("format_version",), ("models",), ("models", "encoder"), ("models", "encoder", "file"),
                   ("models", "decoder_step", "inputs"), ("models", "prefill", "outputs"),
                   ("models", "features", "sha256"), ("tokenizer",), ("tokenizer", "sha256"), ("dims",),
                   ("dims", "multilingual"), ("dims", "n_text_ctx"), ("dims", "n_vocab"), ("dims", "decoder_layers"),
                   ("suppress_tokens",), ("begin_suppress_tokens",), ("languages",), ("special_tokens",), ("audio",),
                   ("alignment_heads",), ("models", "alignment", "outputs")]
DELETE = object()


@pytest.fixture(scope="module")
def fuzz_bundle(default_bundle, tmp_path_factory):
    return _bundle_copy(default_bundle, tmp_path_factory.mktemp("fuzz") / "bundle")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.sampled_from(MANIFEST_PLACES), value=json_values | st.just(DELETE))
def test_fuzz_manifest_through_bundle_load_and_transcriber(place, value, fuzz_bundle, clip_named, audio_cache):
    """Any manifest that `Bundle.load` accepts works in `Transcriber`; any it refuses gets one line."""
    from whisper_tflite.errors import WhisperTfliteError
    from whisper_tflite.runtime import Transcriber

    original = (fuzz_bundle / "manifest.json").read_text()
    manifest = json.loads(original)
    parent = manifest
    for key in place[:-1]:
        parent = parent[key]
    if value is DELETE:
        parent.pop(place[-1])
    else:
        parent[place[-1]] = value
    (fuzz_bundle / "manifest.json").write_text(json.dumps(manifest))
    try:
        transcriber = Transcriber(fuzz_bundle, threads=1)
        result = transcriber.transcribe(audio_cache(clip_named("en_jfk_openai-whisper.flac"))[:16000 * 3])
        assert result.language == "en"
    except WhisperTfliteError as e:
        assert str(e) and "\n" not in str(e)
    finally:
        (fuzz_bundle / "manifest.json").write_text(original)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["format", "format_version", "models", "special_tokens", "languages",
                                        "suppress_tokens", "begin_suppress_tokens", "dims", "tokenizer", "other"]),
                       json_values, max_size=10))
def test_fuzz_manifest_reader_raises_only_bundle_errors(manifest):
    manifest.setdefault("format", "whisper-tflite-bundle")
    with pytest.raises(BundleError):
        validate_manifest(manifest)  # random values never make a valid manifest
