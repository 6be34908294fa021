"""The runtime: no TensorFlow, accuracy against the reference, languages, long audio, the CLI."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from whisper_tflite.evaluation import error_rate
from whisper_tflite.runtime import Transcriber

CLI = Path(sys.executable).with_name("whisper-tflite")


@pytest.fixture(scope="module")
def tiny(tiny_bundle):
    return Transcriber(tiny_bundle)


def test_runtime_never_imports_tensorflow(default_bundle, clip_named):
    """Nor the conversion side, nor onnxruntime, onnx, torch or faster-whisper: the VAD filter is on; live
    transcription and the stream command's input and output neither."""
    jfk = clip_named("en_jfk_openai-whisper.flac").path
    script = textwrap.dedent(f"""
        import sys
        CONVERSION_SIDE = ("whisper_tflite.graphs", "whisper_tflite.sources", "whisper_tflite.conversion",
                           "whisper_tflite.reference")
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "transformers", "tf_keras", "keras", "onnxruntime", "onnx",
                                          "torch", "faster_whisper") or \
                        name.startswith(CONVERSION_SIDE):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from whisper_tflite import Transcriber
        from whisper_tflite.audio import load_audio
        from whisper_tflite.live_io import LiveWriter
        transcriber = Transcriber({str(default_bundle)!r})
        result = transcriber.transcribe({str(jfk)!r}, vad_filter=True)
        print(result.text)
        live = transcriber.live()
        live.insert_audio(load_audio({str(jfk)!r}))
        LiveWriter("txt").write(live.finish())
        assert not any(m.split(".")[0] in ("tensorflow", "transformers") for m in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ask not what your country can do for you" in done.stdout


def test_compiled_models_compute_as_the_interpreter(default_bundle, tmp_path, monkeypatch):
    """Every role of the default bundle on LiteRT's CompiledModel gives the interpreter's outputs, both when it
    packs the weights into XNNPACK's weight cache and when a later load maps that cache. The cache keys packed
    weights by buffer and kernel, not by content: some graphs make a file's signatures get each other's packed
    weights (runtime/compiled.py). Writing a cache removes those unused for 30 days and dead packings' leftovers."""
    from whisper_tflite.bundle import Bundle
    from whisper_tflite.runtime.models import LiteRtModel, open_compiled

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "whisper-tflite" / "xnnpack"
    folder.mkdir(parents=True)
    unused = folder / "encoder-0123456789abcdef-0123456789ab.xnnpack"
    leftover = folder / "encoder-0123456789abcdef-0123456789ab.xnnpack.1-00.partial"
    recent = folder / "decoder-fedcba9876543210-0123456789ab.xnnpack"
    for path, days in ((unused, 31), (leftover, 2), (recent, 29)):
        path.write_bytes(b"packed")
        os.utime(path, (time.time() - days * 86400,) * 2)
    bundle = Bundle.load(default_bundle)
    rng = np.random.default_rng(0)
    for role in bundle.models:
        interpreter = LiteRtModel(bundle, role, 2)
        inputs = {name: (np.full(shape, 3 if role == "decoder_step" else 0, np.int32) if name == "offset" else
                         rng.integers(0, 50000, shape).astype(np.int32) if name == "tokens" else
                         rng.standard_normal(shape).astype(np.float32) * (0.1 if name == "pcm" else 1))
                  for name, shape in interpreter.input_shapes.items()}
        interpreter.run(**inputs)
        for load in ("packs", "maps"):
            compiled = open_compiled(bundle, role, 2, {})
            compiled.run(**inputs)
            for name in interpreter.output_shapes:
                np.testing.assert_allclose(compiled.output(name), interpreter.output(name), rtol=1e-3, atol=1e-3,
                                           err_msg=f"{role} {name}, compiled model that {load} the weight cache")
    assert not unused.exists() and not leftover.exists() and recent.exists()
    recent.unlink()
    assert len(list(folder.iterdir())) == len(bundle.files)


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="reads Linux's /proc/self/smaps")
def test_model_files_are_not_resident_twice(default_bundle, clip_named):
    """XNNPACK packs the weights into memory of its own; the memory-mapped files' pages are then dropped, and only
    the few a later call reads come back. A clip under 30 s has no prompt: the prefill model is never loaded, and
    with no text to encode neither is the tokenizers library's tokenizer."""
    jfk = clip_named("en_jfk_openai-whisper.flac").path
    script = textwrap.dedent(f"""
        import json, os
        from whisper_tflite import Transcriber
        transcriber = Transcriber({str(default_bundle)!r}, threads=2)
        text = transcriber.transcribe({str(jfk)!r}).text
        resident, mapping = {{}}, None
        for line in open("/proc/self/smaps"):
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                mapping = fields[5] if len(fields) > 5 and fields[5].endswith(".tflite") else None
            elif fields[0] == "Rss:" and mapping:
                resident[mapping] = resident.get(mapping, 0) + int(fields[1]) * 1024
        print(json.dumps({{"text": text, "prefill_loaded": transcriber.stepper.prefiller is not None,
                          "encoder_built": transcriber.tokenizer._encoder is not None,
                          "resident": {{p: [n, os.path.getsize(p)] for p, n in resident.items()}}}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    print(report["resident"])
    assert "ask not what your country can do for you" in report["text"]
    assert not report["prefill_loaded"] and not report["encoder_built"]
    assert {Path(p).name for p in report["resident"]} == {"features.tflite", "encoder.tflite", "text_decoder.tflite"}
    resident, size = (sum(pair[i] for pair in report["resident"].values()) for i in (0, 1))
    # All of each file was read once, when XNNPACK packed it. Measured on Linux 6.18 (ext4), the bundle converted
    # just before: 0.41 MB of 39.8 (text decoder 0.38); 10 MB when the files' cached pages were kept, in the
    # folios of up to 4 MB their writing left, each mapped whole by a look-up. 64 KB a look-up (the kernel's
    # fault-around elsewhere) would be about 2 MB for this clip.
    assert resident < 0.1 * size


@pytest.mark.parametrize("vocabulary", ["tiny.en", "base"])
def test_token_table_decodes_as_the_tokenizers_library(vocabulary, tiny_bundle):
    """The runtime decodes from a table of token bytes; the `tokenizers` library is the oracle: every ordinary
    token alone, and random sequences (which split UTF-8 characters between tokens), give the same text."""
    from tokenizers import Tokenizer

    from whisper_tflite.sources import bundled_folder
    from whisper_tflite.tokens import WhisperTokenizer

    path = tiny_bundle / "tokenizer.json.gz" if vocabulary == "tiny.en" else bundled_folder("base") / "tokenizer.json"
    text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ours, library = WhisperTokenizer.from_file(path, vocabulary == "base"), Tokenizer.from_str(text.decode())
    eot = ours.special.eot
    rng = np.random.default_rng(0)
    sequences = [[t] for t in range(eot)] + [rng.integers(0, eot, rng.integers(2, 9)).tolist() for _ in range(5000)]
    mismatches = [s for s in sequences if ours.decode(s) != library.decode(s, skip_special_tokens=False)]
    assert not mismatches, mismatches[:5]
    assert ours.special == WhisperTokenizer.from_tokenizer(library, vocabulary == "base").special


# The float32 bundle on the clips of one window: its long-form decoding is held to faster-whisper float32 by
# test_long_form.py.
@pytest.mark.parametrize("bundle, compute_type, excess, longest_s",
                         [("tiny_bundle", "float32", 0.005, 30), ("default_bundle", "int8", 0.01, None)])
def test_english_clips_match_faster_whisper(bundle, compute_type, excess, longest_s, request, english_clips,
                                            audio_cache, tiny_en_ct2, transcripts):
    """The English clips with a transcript (every one, the two long ones included, for the default bundle), each
    transcribed on its own."""
    from whisper_tflite.evaluation import faster_whisper_transcribe

    folder = request.getfixturevalue(bundle)
    spoken = [c for c in english_clips if c.reference and (longest_s is None or c.duration <= longest_s)]
    ours = transcripts(folder, spoken, beam_size=1, best_of=1)
    theirs = [" ".join(s.text for s in faster_whisper_transcribe(tiny_en_ct2, audio_cache(c), compute_type))
              for c in spoken]
    references = [c.reference for c in spoken]
    ours_wer, theirs_wer = error_rate(references, ours, "en"), error_rate(references, theirs, "en")
    identical = sum(" ".join(a.split()) == " ".join(b.split()) for a, b in zip(ours, theirs))
    print(f"\n{len(spoken)} English clips, {bundle} bundle vs faster-whisper {compute_type}: WER {ours_wer:.2%} vs "
          f"{theirs_wer:.2%}; {identical} transcripts identical")
    assert ours_wer <= theirs_wer + excess


def test_quantized_bundles_keep_wer(tiny_bundle, fp16_bundle, default_bundle, english_clips, transcripts):
    """fp16 and the default policy (dynamic-int8) within a point of the float32 bundle's greedy WER on the English
    clips of one window."""
    dev = [c for c in english_clips if c.reference and c.duration <= 30]

    def wer(bundle):
        return error_rate([c.reference for c in dev], transcripts(bundle, dev, beam_size=1, best_of=1), "en")

    fp32 = wer(tiny_bundle)
    print(f"\ntiny.en fp32 bundle WER {fp32:.2%}")
    for name, bundle in (("fp16", fp16_bundle), ("default policy (dynamic-int8)", default_bundle)):
        print(f"tiny.en {name} bundle WER {wer(bundle):.2%}")
        assert wer(bundle) <= fp32 + 0.01, name


def test_initial_prompt_as_faster_whisper(tiny_bundle, clips, audio_cache, tiny_en_ct2):
    """An initial prompt goes before the first window as previous text (encoded by the `tokenizers` library,
    built at this first use): segments as faster-whisper's with the same prompt on the same weights."""
    from whisper_tflite.evaluation import faster_whisper_transcribe

    audio = audio_cache(next(c for c in clips if c.name == "en_jfk_whisper-cpp.wav"))
    prompt = "President Kennedy's inaugural address, January 1961."
    transcriber = Transcriber(tiny_bundle, threads=2)
    ours = transcriber.transcribe(audio, beam_size=1, best_of=1, initial_prompt=prompt)
    theirs = faster_whisper_transcribe(tiny_en_ct2, audio, "float32", initial_prompt=prompt)
    assert transcriber.tokenizer._encoder is not None
    assert [(s.text.strip(), s.start, s.end) for s in ours.segments] == \
        [(s.text.strip(), round(s.start, 3), round(s.end, 3)) for s in theirs]


def test_temperature_fallback_keeps_the_most_confident_attempt(tiny_bundle, clips, audio_cache, tiny_en_ct2):
    """With a compression-ratio threshold that no text meets, every temperature fails. faster-whisper's rule,
    seen in faster-whisper itself and in ours: the most confident attempt is kept (at least as confident as the
    greedy one, which is among the attempts) and the last temperature is reported."""
    from whisper_tflite.evaluation import faster_whisper_transcribe

    audio = audio_cache(next(c for c in clips if c.name == "en_jfk_whisper-cpp.wav"))
    options = {"compression_ratio_threshold": 0.5, "log_prob_threshold": None}
    transcriber = Transcriber(tiny_bundle, threads=2)
    for transcribe in (lambda audio, **kw: transcriber.transcribe(audio, beam_size=1, best_of=1, **kw),
                       lambda audio, **kw: faster_whisper_transcribe(tiny_en_ct2, audio, "float32", **kw)):
        fallen = transcribe(audio, **options)
        greedy = transcribe(audio, temperature=0.0, **options)  # one temperature: nothing to fall back to
        fallen = getattr(fallen, "segments", fallen)
        greedy = getattr(greedy, "segments", greedy)
        assert {s.temperature for s in fallen} == {1.0} and {s.temperature for s in greedy} == {0.0}
        assert min(s.avg_logprob for s in fallen) >= min(s.avg_logprob for s in greedy) - 1e-6


@pytest.mark.slow
def test_base_bundle_detects_languages(base_bundle, clips, audio_cache):
    """Every clip in another language than English (8 languages) is detected as its own."""
    transcriber = Transcriber(base_bundle)
    foreign = [c for c in clips if c.language != "en"]
    detected = {c.name: transcriber.detect_language(audio_cache(c))[0] for c in foreign}
    print(detected)
    wrong = {name: lang for name, lang in detected.items() if lang != name.split("_")[0]}
    assert not wrong


def test_audio_inputs_agree(tiny, clips):
    """A stereo 24-bit 44.1 kHz FLAC, its 16 kHz WAV twin, and int16 / float arrays give the same words."""
    flac = next(c for c in clips if c.name == "en_jfk_openai-whisper.flac")
    wav = next(c for c in clips if c.name == "en_jfk_whisper-cpp.wav")
    import soundfile

    samples, rate = soundfile.read(wav.path, dtype="int16")
    texts = [tiny.transcribe(flac.path).text, tiny.transcribe(wav.path).text,
             tiny.transcribe(samples, sample_rate=rate).text,
             tiny.transcribe(np.stack([samples, samples], 1).astype(np.float32) / 32768, sample_rate=rate).text]
    normalized = {" ".join(t.lower().replace(",", "").split()) for t in texts}
    assert len(normalized) == 1, texts


def test_cli_json_lines(default_bundle, clip_named):
    files = [str(clip_named(name).path) for name in ("en_jfk_openai-whisper.flac", "en_jfk_whisper-cpp.wav")]
    done = subprocess.run([str(CLI), "transcribe", *files, "--model", str(default_bundle), "--format", "json",
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == files
    for line in lines:
        assert set(line) == {"file", "language", "language_probability", "text", "segments"}
        assert line["language"] == "en" and line["text"]
        assert [s["id"] for s in line["segments"]] == list(range(len(line["segments"])))
        assert all(set(s) == {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                              "compression_ratio", "no_speech_prob"} for s in line["segments"])


@pytest.mark.parametrize("fmt", ["txt", "srt", "vtt", "tsv", "json"])
def test_cli_writes_formats_to_output_dir(fmt, default_bundle, english_clips, tmp_path):
    """Each format written by the CLI reads back with a real parser and holds the speech, in order."""
    import io

    import srt
    import webvtt

    clip = next(c for c in english_clips if c.name == "en_harvard-16k.wav")  # 18 s, several segments
    done = subprocess.run([str(CLI), "transcribe", str(clip.path), "--model", str(default_bundle), "--format", fmt,
                           "--output-dir", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    text = (tmp_path / f"{clip.path.stem}.{fmt}").read_text()
    if fmt == "srt":
        cues = [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in srt.parse(text)]
    elif fmt == "vtt":
        cues = [(c.start_in_seconds, c.end_in_seconds, c.text) for c in webvtt.from_buffer(io.StringIO(text))]
    elif fmt == "tsv":
        cues = [(int(a) / 1000, int(b) / 1000, t) for a, b, t in (r.split("\t") for r in text.splitlines()[1:])]
    elif fmt == "json":
        cues = [(s["start"], s["end"], s["text"]) for s in json.loads(text)["segments"]]
    else:
        cues = [(0, 0, line) for line in text.splitlines()]
    assert len(cues) >= 3
    assert all(a <= b for a, b, _ in cues) and [a for a, _, _ in cues] == sorted(a for a, _, _ in cues)
    assert error_rate([clip.reference], [" ".join(t for _, _, t in cues)], "en") <= 0.1


@pytest.mark.parametrize("fmt, subtype", [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"), ("WAV", "PCM_U8")])
def test_compressed_and_8bit_files(fmt, subtype, tiny, clips, audio_cache, tmp_path):
    """Ogg Vorbis, MP3 (libsndfile reads both) and unsigned 8-bit WAV at 22.05 kHz, written from a clip.
    All three are lossy, so the bound is on WER against the human transcript, not exact words."""
    import soundfile
    import soxr

    clip = next(c for c in clips if c.name == "en_jfk_whisper-cpp.wav")
    path = tmp_path / f"jfk.{fmt.lower()}"
    soundfile.write(path, soxr.resample(audio_cache(clip), 16000, 22050), 22050, format=fmt, subtype=subtype)
    text = tiny.transcribe(path).text
    print(f"{fmt}/{subtype}: {text}")
    assert error_rate([clip.reference], [text], "en") <= 0.15


@pytest.mark.slow
def test_base_translates_to_english_through_the_cli(base_bundle, clips):
    """German and Spanish speech, translated: English words come out, the source language's do not. Greedy at
    temperature 0 alone: at 0 both translations fail a fallback threshold, and the samples at higher temperatures
    that would follow only cost time."""
    expected = {"de_picovoice-leopard.wav": ("portal", "der"), "es_picovoice-leopard.wav": ("sand", "arenas")}
    files = [next(c for c in clips if c.name == name).path for name in expected]
    done = subprocess.run([str(CLI), "transcribe", *map(str, files), "--model", str(base_bundle), "--task",
                           "translate", "--format", "json", "--quiet", "--beam-size", "1", "--temperature", "0"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for line, (english, foreign) in zip(done.stdout.splitlines(), expected.values()):
        result = json.loads(line)
        print(result["file"], result["language"], result["text"])
        words = set(result["text"].lower().replace(".", " ").replace(",", " ").split())
        assert result["language"] == Path(result["file"]).name[:2]
        assert english in words and foreign not in words


@pytest.mark.slow
def test_base_forced_language(base_bundle, clips, audio_cache):
    """A forced language is used as given: French speech forced to French, and the same speech forced to
    German comes out differently (Whisper translates or transliterates into the forced language). Greedy at
    temperature 0 alone: the forced language is in the prompt at any temperature, and forced to German the text
    fails the fallback thresholds at every one, so the best-of-5 samples at five more would only cost time."""
    transcriber = Transcriber(base_bundle)
    clip = next(c for c in clips if c.name == "fr_picovoice-leopard.wav")
    french = transcriber.transcribe(audio_cache(clip), language="fr", beam_size=1, temperature=0)
    german = transcriber.transcribe(audio_cache(clip), language="German", beam_size=1, temperature=0)  # a name
    print(french.text, "|", german.text)
    assert french.language == "fr" and french.language_probability == 1.0 and german.language == "de"
    assert error_rate([clip.reference], [french.text], "fr") <= 0.3
    assert german.text != french.text
