"""whisper-tflite convert | transcribe | stream | transcribe-corpus | inspect | serve.

Errors end in one line on stderr and an exit code: 2 for a usage or input problem, 1 for an internal one.
`transcribe`, `stream` and `transcribe-corpus` never import TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import tempfile
import threading
from importlib.metadata import version
from pathlib import Path

from .bundle import DEFAULT_MODELS, INT8_SCORES, ROLES, S4Y_MODELS
from .conversion_plan import QUANTIZATIONS as QUANTIZE_CHOICES, plan_conversion
from .errors import AudioError, BundleError, SourceError, UsageError, WhisperTfliteError
from .native_log import LOG, native_stderr_hidden
from .runtime import TranscriptionOptions
from .runtime.batched import batched_vad_options
from .runtime.vad import VadOptions

EXIT_INTERNAL = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whisper-tflite", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert Whisper checkpoints into TFLite/LiteRT bundles, and transcribe with them "
                    "(without TensorFlow).",
        epilog="examples:\n"
               "  whisper-tflite convert tiny.en --out bundles/tiny.en\n"
               "  whisper-tflite transcribe talk.m4a --model bundles/tiny.en --format srt --output-dir subs\n"
               "  cat talk.flac | whisper-tflite transcribe - --format json\n"
               "  whisper-tflite transcribe-corpus podcasts/ --model bundles/tiny.en --output podcasts.jsonl\n\n"
               "'whisper-tflite COMMAND --help' explains each option.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('whisper-tflite')}")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a Whisper checkpoint into a TFLite bundle")
    convert.add_argument("model", nargs="?", default="tiny.en",
                         help="bundled name (tiny.en, base), CTranslate2 folder, HF folder or hub id [tiny.en]")
    convert.add_argument("--out", type=Path, help="bundle folder to write [bundles/MODEL]")
    convert.add_argument("--quantize", type=_quantize_option, metavar="|".join(QUANTIZE_CHOICES),
                         help="one quantization for every model (int4: int4 text decoder, dynamic-int8 encoder; "
                              "needs ai-edge-quantizer), or per role: encoder=fp16,decoder_step=none "
                              "[default: the per-component policy of docs/quantization.md]")
    convert.add_argument("--calibration-audio", nargs="+", type=Path, metavar="FILE",
                         help=f"speech files that set the scales of --quantize encoder={INT8_SCORES} "
                              "(int8 attention scores, docs/performance.md)")
    convert.add_argument("--models",
                         help=f"comma-separated roles to build, or 'all': {', '.join(ROLES)} "
                              f"[{','.join(DEFAULT_MODELS)}]; with --layout s4y, its files: "
                              f"{', '.join(S4Y_MODELS)} [all]")
    convert.add_argument("--layout", choices=("bundle", "s4y"), default="bundle",
                         help="bundle: for whisper-tflite's runtime; s4y: whisper-s4y's file names, tensor names "
                              "and semantics, for apps built on that project [bundle]")
    convert.add_argument("--language",
                         help="with --layout s4y: the language its files transcribe, fixed at conversion "
                              "(e.g. de; English-only models: en)")
    convert.add_argument("--min-runtime", metavar="VERSION",
                         help="oldest TFLite/LiteRT that must run every file, e.g. 2.16 (int8 weights then get "
                              "one scale per layer) [none: the default bundle needs 2.17]")
    convert.add_argument("--gpu-analyzer", metavar="PYTHON",
                         help="a Python with TensorFlow 2.16.1 (make gpu-analyzer): its analyzer's GPU delegate "
                              "verdict on each model goes into the manifest [none]")
    convert.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    convert.add_argument("--quiet", action="store_true", help="no progress bar")
    convert.add_argument("--verbose", action="store_true", help="also TensorFlow's own log lines")

    inspect = commands.add_parser("inspect", help="what a bundle (or --layout s4y folder) holds, its files verified")
    inspect.add_argument("bundle", type=Path, help="the folder `convert` wrote")
    inspect.add_argument("--gpu-analyzer", metavar="PYTHON",
                         help="analyze the files now with this Python's TensorFlow 2.16.1 (make gpu-analyzer) "
                              "[the manifest's verdicts, if convert was given one]")
    inspect.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)

    transcribe = commands.add_parser("transcribe", help="transcribe audio files with a bundle")
    transcribe.add_argument("files", nargs="+", type=Path, metavar="FILE",
                            help="audio or video file (anything libsndfile or FFmpeg reads), or - for stdin")
    transcribe.add_argument("--model", type=Path, default=Path("bundles/tiny.en"),
                            help="bundle folder written by convert [bundles/tiny.en]")
    transcribe.add_argument("--language", default="auto", help="language code or name (de, German), or auto to detect [auto]")
    transcribe.add_argument("--task", choices=("transcribe", "translate"), default="transcribe",
                            help="translate: English text from speech in any language (multilingual models)")
    transcribe.add_argument("--format", choices=("txt", "srt", "vtt", "json", "tsv"), default="txt",
                            help="txt: a segment a line; srt, vtt: subtitles; json: one object a file; tsv: "
                                 "start, end (ms), text [txt]")
    transcribe.add_argument("--output-dir", type=Path, help="write FILE.<format> there instead of stdout")
    transcribe.add_argument("--threads", type=int, help="interpreter threads; 0 for the default [min(4, cores)]")
    transcribe.add_argument("--quiet", action="store_true", help="no progress bars")
    transcribe.add_argument("--verbose", action="store_true", help="also LiteRT's own log lines")
    transcribe.add_argument("--word-timestamps", action="store_true",
                            help="time each word (json gains `words` per segment); needs the alignment model")
    subtitles = transcribe.add_argument_group("subtitles from word timestamps (srt, vtt; openai-whisper's options)")
    subtitles.add_argument("--highlight-words", action="store_true",
                           help="one cue per word, the word underlined in its line")
    subtitles.add_argument("--max-line-width", type=int, metavar="N",
                           help="characters in a line before it breaks (with --max-line-count)")
    subtitles.add_argument("--max-line-count", type=int, metavar="N", help="lines in a cue")
    subtitles.add_argument("--max-words-per-line", type=int, metavar="N", help="words in a line")
    _add_decoding_options(transcribe)

    stream = commands.add_parser(
        "stream", help="live transcription of raw PCM from stdin, or of a microphone",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Transcribe audio as it comes: words are printed once two consecutive decodings of the\n"
                    "growing buffer agree on them (docs/usage.md#live-transcription); on a terminal the\n"
                    "tentative rest follows them, dimmed. Ctrl-C or the end of the input prints the rest.",
        epilog="examples:\n"
               "  arecord -f S16_LE -r 16000 -c 1 - | whisper-tflite stream -\n"
               "  ffmpeg -i talk.mp3 -f s16le -ar 16000 -ac 1 - | whisper-tflite stream - --format json\n"
               "  whisper-tflite stream --mic")
    stream.add_argument("input", nargs="?", choices=["-"], metavar="-",
                        help="- : 16 kHz mono s16le PCM from stdin (a WAV header, as arecord writes, is read too) "
                             "[-, unless --mic]")
    stream.add_argument("--mic", action="store_true",
                        help="record from the default input device instead (needs the mic extra: sounddevice)")
    stream.add_argument("--sample-rate", type=int, default=16000, metavar="HZ",
                        help="the input's sample rate: 16000 only (resample with arecord -r 16000 or ffmpeg -ar "
                             "16000) [16000]")
    stream.add_argument("--model", type=Path, default=Path("bundles/tiny.en"),
                        help="bundle folder written by convert [bundles/tiny.en]")
    stream.add_argument("--language", default="auto",
                        help="language code or name, or auto to detect it on the first words [auto]")
    stream.add_argument("--task", choices=("transcribe", "translate"), default="transcribe",
                        help="translate: English text from speech in any language (multilingual models)")
    stream.add_argument("--format", choices=("txt", "tsv", "json"), default="txt",
                        help="txt: the text, a sentence a line; tsv: start, end (ms), text of each commit; json: "
                             "an object a commit, with its words [txt]")
    stream.add_argument("--chunk-size", type=float, default=1.0, metavar="SECONDS",
                        help="decode again whenever this much more audio has come [1]")
    stream.add_argument("--buffer-trimming", type=float, default=15.0, metavar="SECONDS",
                        help="past this, the buffer is cut at the end of a committed segment [15]")
    stream.add_argument("--max-buffer", type=float, default=25.0, metavar="SECONDS",
                        help="the most audio a decoding sees, at most 30 [25]")
    stream.add_argument("--threads", type=int, help="interpreter threads; 0 for the default [min(4, cores)]")
    stream.add_argument("--verbose", action="store_true", help="also LiteRT's own log lines")
    # Greedy and without fallback by default: a decoding every second must cost well under a second
    _add_decoding_options(stream, live=True)

    corpus = commands.add_parser(
        "transcribe-corpus", help="transcribe many files into one JSON Lines file, in parallel; resumable",
        description="Transcribe every audio file of the inputs into OUTPUT, one JSON object a line (transcribe's "
                    "json object plus duration, wall_s and error), appended as each file finishes. A rerun skips "
                    "the files OUTPUT already holds. Unreadable files get their error and the run goes on.")
    corpus.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="audio file, folder (searched recursively by audio extension) or list file "
                             "(.txt/.lst/.list: a path a line)")
    corpus.add_argument("--model", type=Path, default=Path("bundles/tiny.en"),
                        help="bundle folder written by convert [bundles/tiny.en]")
    corpus.add_argument("--output", type=Path, required=True, help="JSON Lines file to append to")
    corpus.add_argument("--workers", type=int, help="worker processes on this machine [one a core]")
    corpus.add_argument("--threads", type=int,
                        help="interpreter threads of each worker [cores / workers; 1 on Ray]")
    corpus.add_argument("--ray", metavar="ADDRESS",
                        help="run as Ray tasks: auto (the cluster this machine belongs to), ray://HOST:10001, "
                             "or local (a Ray started on this machine); needs the cluster extra")
    corpus.add_argument("--language", default="auto", help="language code or name, or auto to detect [auto]")
    corpus.add_argument("--task", choices=("transcribe", "translate"), default="transcribe",
                        help="translate: English text from speech in any language (multilingual models)")
    corpus.add_argument("--word-timestamps", action="store_true", help="time each word (needs the alignment model)")
    corpus.add_argument("--quiet", action="store_true", help="no progress bar")
    corpus.add_argument("--verbose", action="store_true", help="also LiteRT's own log lines")
    _add_decoding_options(corpus)

    serve = commands.add_parser(
        "serve", help="serve a bundle over OpenAI's audio API (needs the serve extra)",
        description="An OpenAI-compatible server: POST /v1/audio/transcriptions and /v1/audio/translations, "
                    "GET /v1/models and /health. No authentication: keep it on loopback or behind a proxy.")
    serve.add_argument("--model", type=Path, default=Path("bundles/tiny.en"),
                       help="bundle folder written by convert [bundles/tiny.en]")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on [8000]")
    serve.add_argument("--workers", type=int, default=1,
                       help="transcriptions at once, each on interpreters of its own (memory grows with each) [1]")
    serve.add_argument("--threads", type=int, help="interpreter threads of each worker [min(4, cores / workers)]")
    serve.add_argument("--queue", type=int, default=16,
                       help="requests that may wait for a worker; more are answered 503 [16]")
    serve.add_argument("--max-upload-mb", type=float, default=25,
                       help="largest request body; larger are answered 413 [25, as OpenAI's]")
    serve.add_argument("--verbose", action="store_true", help="also LiteRT's own log lines")
    serve.set_defaults(word_timestamps=False)  # a request's timestamp_granularities[] asks for words
    _add_decoding_options(serve)
    return parser


# The options of windows decoded one after another, which a live buffer (one window, cut and decoded again)
# does not have; `stream` gets their defaults.
NOT_LIVE = {"condition_on_previous_text": True, "prefix": None, "without_timestamps": False,
            "clip_timestamps": TranscriptionOptions.clip_timestamps, "multilingual": False, "batch_size": None}


def _add_decoding_options(command: argparse.ArgumentParser, live: bool = False) -> None:
    """The decoding flags; `live`: those that apply to `stream`, greedy and without fallback by default."""
    decoding = command.add_argument_group("decoding (faster-whisper's options and defaults" +
                                          ("; greedy, one temperature)" if live else ")"))
    temperature = (0.0,) if live else TranscriptionOptions.temperature
    decoding.add_argument("--temperature", type=_temperatures, default=temperature,
                          metavar="T[,T...]", help="temperature, or the fallback sequence "
                          f"[{','.join(f'{t:g}' for t in temperature)}]")
    if live:
        command.set_defaults(**NOT_LIVE, word_timestamps=True)
    else:
        decoding.add_argument("--condition-on-previous-text", action=argparse.BooleanOptionalAction, default=True,
                              help="prompt each window with the text before it [on]")
    decoding.add_argument("--initial-prompt", metavar="TEXT",
                          help="text to prompt the first window with (names, spelling, style)" +
                               ("; the committed text follows it" if live else ""))
    if not live:
        decoding.add_argument("--prefix", metavar="TEXT", help="text the first window's transcript starts with")
    decoding.add_argument("--hotwords", metavar="TEXT", help="words or phrases to prompt every window with" +
                          ("" if live else " (not with --prefix)"))
    beam_size = 1 if live else TranscriptionOptions.beam_size
    decoding.add_argument("--beam-size", type=int, default=beam_size, metavar="N",
                          help=f"beam search width at temperature 0; 1 is greedy [{beam_size}]")
    decoding.add_argument("--best-of", type=int, default=TranscriptionOptions.best_of, metavar="N",
                          help=f"samples drawn at each temperature above 0 [{TranscriptionOptions.best_of}]")
    decoding.add_argument("--patience", type=float, default=TranscriptionOptions.patience, metavar="X",
                          help="beam search ends after round(beam size * X) finished hypotheses "
                               f"[{TranscriptionOptions.patience:g}]")
    decoding.add_argument("--length-penalty", type=float, default=TranscriptionOptions.length_penalty,
                          metavar="X", help="hypotheses rank by log-probability / length ** X "
                                            f"[{TranscriptionOptions.length_penalty:g}]")
    decoding.add_argument("--repetition-penalty", type=float, default=TranscriptionOptions.repetition_penalty,
                          metavar="X", help="penalize the tokens already decoded by X (above 1 discourages them) "
                                            f"[{TranscriptionOptions.repetition_penalty:g}]")
    decoding.add_argument("--no-repeat-ngram-size", type=int, default=TranscriptionOptions.no_repeat_ngram_size,
                          metavar="N", help="no run of N tokens twice in a window; 0: off "
                                            f"[{TranscriptionOptions.no_repeat_ngram_size}]")
    decoding.add_argument("--suppress-tokens", type=_token_ids, default=TranscriptionOptions.suppress_tokens,
                          metavar="IDS", help="comma-separated token ids never decoded (--suppress-tokens=-1,...); -1: "
                                              "the model's set of symbols; empty: none [-1]")
    decoding.add_argument("--suppress-blank", action=argparse.BooleanOptionalAction,
                          default=TranscriptionOptions.suppress_blank,
                          help="no blank (space or end of text) as a window's first token [on]")
    if not live:
        decoding.add_argument("--without-timestamps", action="store_true",
                              help="decode text tokens only: each window is one segment")
    decoding.add_argument("--max-initial-timestamp", type=float, default=TranscriptionOptions.max_initial_timestamp,
                          metavar="SECONDS", help="the latest a window's first timestamp may be "
                                                  f"[{TranscriptionOptions.max_initial_timestamp:g}]")
    decoding.add_argument("--max-new-tokens", type=int, metavar="N",
                          help="tokens a window decodes at most [half the context]")
    if not live:
        decoding.add_argument("--clip-timestamps", default=TranscriptionOptions.clip_timestamps,
                              metavar="START,END,...", help="transcribe only these clips, in seconds; the last "
                                                            "end defaults to the end of the file (replaces "
                                                            "--vad-filter) [0]")
        decoding.add_argument("--multilingual", action="store_true",
                              help="detect the language of every window anew (multilingual models)")
    decoding.add_argument("--prepend-punctuations", default=TranscriptionOptions.prepend_punctuations,
                          metavar="CHARS", help="with --word-timestamps, these join the next word "
                                                f"[{TranscriptionOptions.prepend_punctuations}]")
    decoding.add_argument("--append-punctuations", default=TranscriptionOptions.append_punctuations,
                          metavar="CHARS", help="with --word-timestamps, these join the previous word "
                                                f"[{TranscriptionOptions.append_punctuations}]")
    decoding.add_argument("--hallucination-silence-threshold", type=float, metavar="SECONDS",
                          help="with --word-timestamps, skip silences longer than this around a likely "
                               "hallucination [off]")
    if not live:
        decoding.add_argument("--batch-size", type=int, metavar="N",
                              help="batched transcription, as faster-whisper's BatchedInferencePipeline: the "
                                   "speech the VAD finds, in chunks of up to 30 s decoded N at a time without "
                                   "previous text, a segment a chunk (needs the decoder_chunks model; the "
                                   "previous-text and fallback options then do nothing) [off]")
    for name, default, meaning in (
            ("compression-ratio-threshold", TranscriptionOptions.compression_ratio_threshold,
             "retry hotter when the text compresses better than this (a loop)"),
            ("log-prob-threshold", TranscriptionOptions.log_prob_threshold,
             "retry hotter when the average log-probability is below this"),
            ("no-speech-threshold", TranscriptionOptions.no_speech_threshold,
             "skip a window whose no-speech probability is above this and whose text is unsure"),
            ("language-detection-threshold", TranscriptionOptions.language_detection_threshold,
             "a window whose likeliest language is more probable than this decides it")):
        decoding.add_argument(f"--{name}", type=_optional_float, default=default,
                              metavar="X|none", help=f"{meaning}; none turns the check off [{default:g}]")
    decoding.add_argument("--language-detection-segments", type=int,
                          default=TranscriptionOptions.language_detection_segments, metavar="N",
                          help="windows the language may be detected in, the most frequent winning where none "
                               f"is sure [{TranscriptionOptions.language_detection_segments}]")
    vad = command.add_argument_group("voice activity detection (faster-whisper's vad_filter and VadOptions)")
    vad.add_argument("--vad-filter", action="store_true",
                     help="decode only the speech Silero VAD finds (the bundle's vad model); times stay the "
                          "original audio's")
    defaults, batched = VadOptions(), batched_vad_options(None)
    for name, kind, meaning in (
            ("threshold", float, "a 32 ms frame is speech from this probability up"),
            ("neg_threshold", float, "below this a frame is silence; between the two it continues what came "
                                     "before [threshold - 0.15]"),
            ("min_speech_duration_ms", int, "speech chunks this short or shorter are dropped"),
            ("max_speech_duration_s", float, "longer chunks are split, at a pause where there is one (not with "
                                             "--batch-size: 30)"),
            ("min_silence_duration_ms", int, "silence that ends a chunk lasts at least this"),
            ("speech_pad_ms", int, "each chunk is widened by this on both sides")):
        default = getattr(defaults, name)
        shown = "" if default is None else f" [{default:g}" + (
            f"; {getattr(batched, name):g} with --batch-size and no --vad-* option]"
            if name == "min_silence_duration_ms" else "]")
        # None: not given, so that batched transcription can tell its own defaults from the options given
        vad.add_argument(f"--vad-{name.replace('_', '-')}", dest=f"vad_{name}", type=kind, metavar="X",
                         help=meaning + shown)


def _temperatures(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number or comma-separated numbers") from None


def _token_ids(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated token ids") from None


def _optional_float(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number or none") from None


def _quantize_option(text: str) -> str | dict[str, str]:
    if "=" not in text:
        if text not in QUANTIZE_CHOICES:
            raise argparse.ArgumentTypeError(f"choose one of {', '.join(QUANTIZE_CHOICES)}, or ROLE=VALUE pairs")
        return text
    plan = {}
    for pair in text.split(","):
        role, _, value = pair.partition("=")
        if value not in QUANTIZE_CHOICES and (role.strip(), value) != ("encoder", INT8_SCORES):
            raise argparse.ArgumentTypeError(f"{pair!r}: choose one of {', '.join(QUANTIZE_CHOICES)} for {role}")
        plan[role.strip()] = value
    return plan


def _fail(message: str, code: int) -> int:
    print(f"whisper-tflite: error: {message}", file=sys.stderr)
    return code


def model_roles(text: str | None, layout: str = "bundle") -> tuple[str, ...] | None:
    """The roles of `--models`: 'all', or a comma-separated list (checked by `convert`); None: the default."""
    if text is None:
        return None
    if text.strip() == "all":
        return tuple(S4Y_MODELS) if layout == "s4y" else ROLES
    return tuple(r.strip() for r in text.split(",") if r.strip())


def _convert(args) -> int:
    options = dict(quantize=args.quantize, models=model_roles(args.models, args.layout), force=args.force,
                   min_runtime=args.min_runtime, layout=args.layout, language=args.language,
                   calibration_audio=args.calibration_audio)
    plan_conversion(args.model, args.out, **options)  # bad arguments refused before TensorFlow's import
    with native_stderr_hidden() as terminal:  # TensorFlow is imported and runs in here
        from .conversion import convert

        path = convert(args.model, args.out, progress=False if args.quiet else terminal,
                       gpu_analyzer=args.gpu_analyzer, **options)
    print(path)
    return 0


def _inspect(args) -> int:
    """Roles, files, sizes, quantization, oldest runtime and GPU delegate verdict of each model, and the
    languages, from the manifest, after every file is checked against its sha256."""
    from .bundle import S4Y_FORMAT, Bundle, load_s4y_layout, read_manifest
    from .gpu_readiness import gpu_entries

    manifest = read_manifest(args.bundle)
    if isinstance(manifest, dict) and manifest.get("format") == S4Y_FORMAT:
        manifest = load_s4y_layout(args.bundle)
        kind = (f"whisper-s4y layout of {manifest.get('source')}: transcribes {manifest.get('language')}, "
                f"prompt {manifest.get('prompt')}")
    else:
        manifest = Bundle.load(args.bundle).manifest
        kind = f"whisper-tflite bundle (format {manifest['format_version']}) of {manifest.get('source')}"
    models = manifest["models"]
    sizes = {role: (args.bundle / entry["file"]).stat().st_size for role, entry in models.items()}
    gpu = gpu_entries(args.gpu_analyzer, args.bundle, models) if args.gpu_analyzer is not None else \
        {role: entry.get("gpu") for role, entry in models.items()}
    files = {entry["file"]: sizes[role] for role, entry in models.items()}  # roles may share a file
    print(f"{args.bundle}: {kind}; {len(models)} models in {len(files)} files, {sum(files.values()) / 1e6:.1f} MB, "
          "every file matches its sha256")
    rows = [("role", "file", "MB", "quantization", "runtime", "GPU")] + [
        (role, entry["file"], f"{sizes[role] / 1e6:.1f}", str(entry.get("quantization", "?")),
         str(entry.get("min_runtime_version", "?")),
         "-" if gpu[role] is None else "yes" if gpu[role]["compatible"] else "no")
        for role, entry in models.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(width) if i == 2 else cell.ljust(width)
                        for i, (cell, width) in enumerate(zip(row, widths))).rstrip())
    print("runtime: the oldest TFLite/LiteRT that runs the file (its min_runtime_version)")
    analyzers = sorted({entry["analyzer"] for entry in gpu.values() if entry is not None})
    if analyzers:
        print(f"GPU: the GPU delegate verdict of {', '.join(analyzers)}'s analyzer; the ops it names stay on the "
              "CPU (models with WHILE run on the CPU only)")
        for role, entry in gpu.items():
            if entry is not None and not entry["compatible"]:
                print(f"  {role}: " + "; ".join(f"{count} x {text}" for text, count in entry["warnings"].items()))
    else:
        print("GPU: not analyzed (convert or inspect with --gpu-analyzer)")
    if manifest["format"] == S4Y_FORMAT:
        print(f"language: {manifest.get('language')} (fixed at conversion)")
    else:
        languages = manifest.get("languages") or []
        print(f"languages ({len(languages)}): {' '.join(languages)}")
    return 0


def _write_atomic(path: Path, text: str) -> None:
    """Written beside, then renamed: never a half-written file; readable as any new file (umask), not 0600."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _output_paths(files: list[Path], output_dir: Path | None, output_format: str) -> list[Path] | None:
    """Where each file's result goes (None: stdout), checked before any work: a usable folder, no two inputs
    with the same name, subtitles of several files not mixed on stdout."""
    if output_dir is None:
        if len(files) > 1 and output_format in ("srt", "vtt", "tsv"):
            raise UsageError(f"{len(files)} files in {output_format} would be one stream of restarting cues: "
                             "give --output-dir (one file each)")
        return None
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output-dir {output_dir} is a file, not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--output-dir {output_dir}: cannot create it ({e.strerror})") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise UsageError(f"--output-dir {output_dir}: not writable")
    paths, seen = [], {}
    for file in files:
        path = output_dir / f"{'stdin' if str(file) == '-' else file.stem}.{output_format}"
        if path in seen:
            raise UsageError(f"{seen[path]} and {file} would both be written to {path}: transcribe them into "
                             "different --output-dir folders")
        seen[path] = file
        paths.append(path)
    return paths


def _options(args) -> TranscriptionOptions:
    vad = {name: getattr(args, f"vad_{name}") for name in VadOptions.__dataclass_fields__
           if getattr(args, f"vad_{name}") is not None}
    if vad and not args.vad_filter and args.batch_size is None:
        raise UsageError("the --vad-* options tune the VAD filter: give --vad-filter too")
    if "max_speech_duration_s" in vad and args.batch_size is not None:
        raise UsageError("--batch-size chunks the speech at 30 s: leave out --vad-max-speech-duration-s")
    return TranscriptionOptions(
        temperature=args.temperature, compression_ratio_threshold=args.compression_ratio_threshold,
        log_prob_threshold=args.log_prob_threshold, no_speech_threshold=args.no_speech_threshold,
        condition_on_previous_text=args.condition_on_previous_text, initial_prompt=args.initial_prompt,
        prefix=args.prefix, hotwords=args.hotwords, word_timestamps=args.word_timestamps, beam_size=args.beam_size,
        best_of=args.best_of, patience=args.patience, length_penalty=args.length_penalty,
        repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
        suppress_tokens=args.suppress_tokens, suppress_blank=args.suppress_blank,
        without_timestamps=args.without_timestamps, max_initial_timestamp=args.max_initial_timestamp,
        max_new_tokens=args.max_new_tokens, clip_timestamps=args.clip_timestamps, multilingual=args.multilingual,
        prepend_punctuations=args.prepend_punctuations, append_punctuations=args.append_punctuations,
        hallucination_silence_threshold=args.hallucination_silence_threshold, vad_filter=args.vad_filter,
        vad_parameters=vad or None, batch_size=args.batch_size,
        language_detection_threshold=args.language_detection_threshold,
        language_detection_segments=args.language_detection_segments)


def _transcribe(args) -> int:
    from tqdm import tqdm

    from .audio import N_FRAMES
    from .runtime import Transcriber
    from .runtime.formats import SubtitleLayout, render

    # Every check before any work: options, output folder, then the bundle and what it can do.
    if args.threads is not None and args.threads < 0:
        return _fail("--threads must be 0 (the default) or more", EXIT_USAGE)
    layout = SubtitleLayout(args.highlight_words, args.max_line_width, args.max_line_count, args.max_words_per_line)
    if layout != SubtitleLayout() and not args.word_timestamps:
        return _fail("--highlight-words and --max-line-* / --max-words-per-line need --word-timestamps", EXIT_USAGE)
    if any(n is not None and n < 1 for n in (args.max_line_width, args.max_line_count, args.max_words_per_line)):
        return _fail("--max-line-width, --max-line-count and --max-words-per-line must be at least 1", EXIT_USAGE)
    options = _options(args)
    outputs = _output_paths(args.files, args.output_dir, args.format)
    transcriber = Transcriber(args.model, threads=args.threads)
    language = transcriber.check_request(args.language, args.task, args.word_timestamps, args.vad_filter,
                                         args.batch_size)
    failed: list[str] = []
    show = not args.quiet and len(args.files) > 1
    for index, file in enumerate(tqdm(args.files, desc="files", unit="file", disable=not show, file=sys.stderr)):
        bars = []

        def progress(advance, total, name=file.name):
            """A bar per file, only for audio longer than one 30 s window."""
            if not bars and not args.quiet and total > N_FRAMES:
                bars.append(tqdm(total=total, desc=name, unit="frame", leave=False, file=sys.stderr))
            for bar in bars:
                bar.update(advance)

        try:
            if outputs is None and args.format == "txt":  # a line a segment, printed as its window is decoded
                for segment in transcriber.stream(file, language, args.task, options=options,
                                                  progress=progress).segments:
                    sys.stdout.write(segment.text.strip() + "\n")
                    sys.stdout.flush()
                continue
            result = transcriber.transcribe(file, language=language, task=args.task, progress=progress,
                                            **dataclasses.asdict(options))
        except AudioError as e:
            print(f"whisper-tflite: error: {e}", file=sys.stderr)
            failed.append(str(file))
            continue
        finally:
            for bar in bars:
                bar.close()
        text = render(result, args.format, file=str(file), layout=layout)
        if outputs is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            _write_atomic(outputs[index], text)
    if failed:
        ok = len(args.files) - len(failed)
        print(f"whisper-tflite: {ok} of {len(args.files)} files transcribed; failed: {', '.join(failed)}",
              file=sys.stderr)
        return EXIT_USAGE
    return 0


def _stream(args) -> int:
    """Live transcription of stdin or a microphone: reads, decodes at each chunk, prints each commit."""
    from .audio import SAMPLE_RATE
    from .live_io import Incoming, LiveWriter, open_microphone, read_stdin
    from .runtime import Transcriber

    if args.sample_rate != SAMPLE_RATE:
        return _fail(f"--sample-rate {args.sample_rate}: the input must be {SAMPLE_RATE} Hz (resample it with "
                     f"arecord -r {SAMPLE_RATE} or ffmpeg -ar {SAMPLE_RATE})", EXIT_USAGE)
    if args.mic and args.input is not None:
        return _fail("give - (stdin) or --mic, not both", EXIT_USAGE)
    if not args.mic and sys.stdin.isatty():
        return _fail("stream reads raw 16 kHz PCM from a pipe on stdin, or from --mic; for a file, use transcribe "
                     "or pipe it through ffmpeg -f s16le -ar 16000 -ac 1 -", EXIT_USAGE)
    if args.threads is not None and args.threads < 0:
        return _fail("--threads must be 0 (the default) or more", EXIT_USAGE)
    options = _options(args)
    transcriber = Transcriber(args.model, threads=args.threads)
    live = transcriber.live(args.language, args.task, chunk_size=args.chunk_size,
                            buffer_trimming=args.buffer_trimming, max_buffer=args.max_buffer, options=options)
    incoming = Incoming()
    microphone = open_microphone(incoming) if args.mic else read_stdin(incoming)
    writer = LiveWriter(args.format)
    chunk, most = round(args.chunk_size * SAMPLE_RATE), round(args.max_buffer * SAMPLE_RATE)
    stop, previous = threading.Event(), signal.getsignal(signal.SIGINT)

    def ctrl_c(signum, frame):
        """Ctrl-C ends the input: what came before it is decoded and printed; a second one interrupts that."""
        stop.set()
        signal.signal(signal.SIGINT, previous)

    if previous is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, ctrl_c)
    try:
        while not incoming.exhausted and not stop.is_set():
            # Audio that came faster than real time (a file piped in) fills the buffer up to max_buffer at most
            live.insert_audio(incoming.take(max(1, chunk - round(live.pending * SAMPLE_RATE)),
                                            max(chunk, most - len(live.buffer)), stop))
            if not incoming.exhausted and not stop.is_set():
                writer.write(live.process())
        live.insert_audio(incoming.take())
    finally:
        signal.signal(signal.SIGINT, previous)
        if args.mic:
            microphone.close()
    writer.write(live.finish())
    writer.close()
    if incoming.error is not None:
        raise incoming.error
    return 0


def _transcribe_corpus(args) -> int:
    from .corpus import clock, transcribe_corpus

    for name in ("workers", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            return _fail(f"--{name} must be at least 1", EXIT_USAGE)
    if args.ray is not None and args.workers is not None:
        return _fail("--workers is for this machine; on Ray, the cluster's CPUs decide", EXIT_USAGE)
    if args.output.is_dir():
        return _fail(f"--output {args.output} is a folder; give a file (JSON Lines)", EXIT_USAGE)
    summary = transcribe_corpus(args.inputs, args.model, args.output, workers=args.workers, threads=args.threads,
                                ray_address=args.ray, progress=not args.quiet, language=args.language,
                                task=args.task, **dataclasses.asdict(_options(args)))
    print(f"whisper-tflite: {summary.files} files: {summary.skipped} already in {args.output}, "
          f"{summary.transcribed} transcribed ({clock(summary.audio_seconds)} of audio in "
          f"{clock(summary.wall_seconds)}), {summary.failed} failed (their errors are in {args.output})",
          file=sys.stderr)
    return 0


def _serve(args) -> int:
    for name, least in (("workers", 1), ("threads", 0), ("queue", 0)):
        if getattr(args, name) is not None and getattr(args, name) < least:
            return _fail(f"--{name} must be at least {least}", EXIT_USAGE)
    if not args.max_upload_mb > 0:
        return _fail("--max-upload-mb must be more than 0", EXIT_USAGE)
    try:
        from .server import serve
    except ModuleNotFoundError as e:
        if e.name not in ("starlette", "uvicorn", "python_multipart"):
            raise
        return _fail(f"serve needs {e.name}: pip install 'whisper-tflite[serve]'", EXIT_USAGE)
    serve(args.model, args.host, args.port, workers=args.workers, threads=args.threads, queue=args.queue,
          max_upload_mb=args.max_upload_mb, options=_options(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verbose:
        LOG.setLevel(logging.DEBUG)
    try:
        return {"convert": _convert, "transcribe": _transcribe, "stream": _stream,
                "transcribe-corpus": _transcribe_corpus, "inspect": _inspect, "serve": _serve}[args.command](args)
    except (SourceError, AudioError, BundleError, UsageError) as e:
        return _fail(str(e), EXIT_USAGE)
    except WhisperTfliteError as e:  # a conversion that failed inside the converter
        return _fail(str(e), EXIT_INTERNAL)
    except OSError as e:  # the file system: a full disk, a folder we may not write
        return _fail(f"{e.filename or ''}: {e.strerror or e}", EXIT_INTERNAL)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
