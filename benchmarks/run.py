"""Side-by-side benchmark: whisper-tflite bundles, faster-whisper, whisper.cpp and the HF TF reference.

Every system runs the same weights (the bundled CTranslate2 checkpoints; whisper.cpp gets a ggml export of
them) in its own worker process, greedy (and with beam 5 where a row says so), no VAD, language given, the same
thread count. Runs are interleaved
(clip by clip, A B C A B C ...) so that machine noise hits all alike. Writes docs/benchmarks.md and
docs/benchmarks.png.

The gapped recording (the English clips, 8-25 s of silence, noise, hum or a chord between them) runs the default
bundle and faster-whisper int8 with beam 5, each with its VAD filter and batched (faster-whisper's
BatchedInferencePipeline, batch 8); `--gapped` runs that section alone and prints its table.

Run: .venv/bin/python benchmarks/run.py [--models tiny.en,base] [--rounds 5] [--threads 2] [--gapped]
(needs the `dev` extra: pip install -e ".[dev]")
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO.parent / "shared" / "audio"
CACHE = REPO / ".cache" / "bench"
DOCS = REPO / "docs"
QUANTIZATIONS = ("none", "fp16", "dynamic-int8")
# Sections of docs/benchmarks.md written by other scripts (corpus.py, roofline.py, sizes.py), after run.py's report
KEPT_SECTIONS = ("## Corpus throughput", "## Roofline", "## Sizes")


# ---------------------------------------------------------------- workers (one process per system)

def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _tflite_worker(path: str, threads: int, beam_size: int):
    from whisper_tflite.runtime import Transcriber

    transcriber = Transcriber(path, threads=threads)
    stepper = transcriber.stepper
    stages = {"features": 0.0, "encoder": 0.0, "prefill": 0.0, "decoder": 0.0, "tokens": 0}

    def timed(key, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            stages[key] += time.perf_counter() - start
            stages["tokens"] += key == "decoder"
            return result
        return wrapper

    stepper.whole_log_mel = timed("features", stepper.whole_log_mel)
    stepper.encoder.run = timed("encoder", stepper.encoder.run)
    stepper.prefill = timed("prefill", stepper.prefill)
    stepper.step = timed("decoder", stepper.step)

    def run(audio, language, options):
        for key in stages:
            stages[key] = 0
        text = transcriber.transcribe(audio, language=language if transcriber.multilingual else None,
                                      beam_size=beam_size, best_of=beam_size, **options).text
        return text, dict(stages)

    return run


def _faster_whisper_worker(path: str, threads: int, beam_size: int, compute_type: str):
    from faster_whisper import WhisperModel

    model = WhisperModel(path, device="cpu", compute_type=compute_type, cpu_threads=threads, num_workers=1)

    def run(audio, language, options):
        if "batch_size" in options:  # BatchedInferencePipeline, its VAD filter on (its default)
            from faster_whisper import BatchedInferencePipeline

            segments, _ = BatchedInferencePipeline(model).transcribe(audio, language=language, beam_size=beam_size,
                                                                     best_of=beam_size, **options)
        else:
            segments, _ = model.transcribe(audio, language=language, beam_size=beam_size, best_of=beam_size,
                                           vad_filter=options.get("vad_filter", False))
        return "".join(s.text for s in segments), {}

    return run


def _whisper_cpp_worker(path: str, threads: int, beam_size: int):
    from pywhispercpp.model import Model

    search = ({"params_sampling_strategy": 1, "beam_search": {"beam_size": beam_size, "patience": -1.0}}
              if beam_size > 1 else {"greedy": {"best_of": 1}})
    model = Model(path, n_threads=threads, print_progress=False, print_realtime=False,
                  redirect_whispercpp_logs_to=os.devnull, **search)

    def run(audio, language, options):
        return " ".join(s.text for s in model.transcribe(audio, language=language)), {}

    return run


def _reference_worker(source: str, threads: int):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from whisper_tflite.reference import reference_transcribe
    from whisper_tflite.sources import load_whisper

    checkpoint = load_whisper(source)

    def run(audio, language, options):
        language = language if checkpoint.multilingual else None
        return reference_transcribe(checkpoint, audio, language=language).text, {}

    return run


def worker_main(kind: str, path: str, threads: int, beam_size: int) -> None:
    """Loads one system, then answers JSON requests on stdin: {"clip", "language", "options"} -> text and
    timings; `options`: {"vad_filter": true} or {"batch_size": N} (whisper-tflite and faster-whisper)."""
    from whisper_tflite.audio import load_audio

    start = time.perf_counter()
    if kind == "tflite":
        run = _tflite_worker(path, threads, beam_size)
    elif kind.startswith("faster-whisper-"):
        run = _faster_whisper_worker(path, threads, beam_size, kind.removeprefix("faster-whisper-"))
    elif kind == "whisper.cpp":
        run = _whisper_cpp_worker(path, threads, beam_size)
    else:
        run = _reference_worker(path, threads)
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries' prints must not corrupt the protocol
    print(json.dumps({"load_s": time.perf_counter() - start}), file=out, flush=True)
    audio_cache = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        audio = audio_cache.setdefault(request["clip"], load_audio(request["clip"]))
        start, cpu = time.perf_counter(), time.process_time()
        text, stages = run(audio, request["language"], request.get("options", {}))
        print(json.dumps({"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "text": text,
                          "stages": stages}), file=out, flush=True)
    print(json.dumps({"peak_rss_mb": _peak_rss_mb()}), file=out, flush=True)


class Worker:
    def __init__(self, name: str, kind: str, path: Path | str, threads: int, size_mb: float, beam_size: int):
        self.name, self.kind, self.size_mb, self.beam_size = name, kind, size_mb, beam_size
        self.log = CACHE / f"worker-{kind}-{Path(str(path)).name}-beam{beam_size}.log"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, str(path), "--threads", str(threads),
             "--beam-size", str(beam_size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "w"),
            text=True)  # stderr kept: a worker that dies says why there
        self.load_s = self._read()["load_s"]

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the worker died (see {self.log})")
        return json.loads(line)

    def ask(self, clip, language, **options) -> dict:
        self.process.stdin.write(json.dumps({"clip": str(clip), "language": language, "options": options}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> float:
        self.process.stdin.write(json.dumps({"quit": True}) + "\n")
        self.process.stdin.flush()
        peak = self._read()["peak_rss_mb"]
        self.process.wait(timeout=60)
        return peak


# ---------------------------------------------------------------- preparation

def _folder_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def cached_bundle(model: str, quantize: str) -> Path:
    """.cache/bench/MODEL/tflite-QUANTIZE, converted if it is missing or of another bundle format."""
    from whisper_tflite.bundle import FORMAT_VERSION
    from whisper_tflite.conversion import convert

    bundle = CACHE / model / f"tflite-{quantize}"
    manifest = bundle / "manifest.json"
    if not manifest.is_file() or json.loads(manifest.read_text()).get("format_version") != FORMAT_VERSION:
        convert(model, bundle, quantize=quantize, force=True)
    return bundle


def ct2_folder(model: str) -> Path:
    """The CTranslate2 folder faster-whisper loads for a bundled model (its parts joined once, in the cache)."""
    from whisper_tflite.sources import bundled_ct2_folder

    return bundled_ct2_folder(model, CACHE / "ct2")


def prepare(model: str) -> list[tuple[str, str, Path, int]]:
    """Converts the bundles, exports ggml, lays out the CTranslate2 folder; cached in .cache/bench. Each system
    greedy; the default bundle, faster-whisper int8 and whisper.cpp also with beam 5 (each system's default)."""
    from whisper_tflite.conversion import DEFAULT_POLICY
    from whisper_tflite.sources import load_whisper
    from whisper_tflite.sources.ggml import save_ggml

    folder = CACHE / model
    folder.mkdir(parents=True, exist_ok=True)
    systems = []
    for quantize in QUANTIZATIONS:
        bundle = cached_bundle(model, quantize)
        default = all(DEFAULT_POLICY[r] == ("none" if r == "features" else quantize)
                      for r in ("features", "encoder", "decoder_step"))
        systems.append((f"whisper-tflite {quantize}" + (" (default)" if default else ""), "tflite", bundle, 1))
        if default:
            beam_bundle = bundle
    ct2 = ct2_folder(model)
    ggml = folder / "ggml-model.bin"
    if not ggml.is_file():
        save_ggml(load_whisper(model), ggml)
    systems += [("faster-whisper int8", "faster-whisper-int8", ct2, 1),
                ("faster-whisper float32", "faster-whisper-float32", ct2, 1),
                ("whisper.cpp (pywhispercpp)", "whisper.cpp", ggml, 1),
                ("HF TF generate (reference)", "reference", model, 1),
                (f"whisper-tflite {DEFAULT_POLICY['encoder']} (default) beam 5", "tflite", beam_bundle, 5),
                ("faster-whisper int8 beam 5", "faster-whisper-int8", ct2, 5),
                ("whisper.cpp (pywhispercpp) beam 5", "whisper.cpp", ggml, 5)]
    return systems


def choose_clips(model: str):
    from whisper_tflite.evaluation import read_manifest

    clips = [c for c in read_manifest(AUDIO) if c.reference and c.duration <= 30]
    if model.endswith(".en"):
        return [c for c in clips if c.language == "en"]
    english = [c for c in clips if c.language == "en" and "librispeech" in c.name][:3]
    return english + [c for c in clips if c.language != "en"]


# ---------------------------------------------------------------- measurement and report

def long_recording():
    """Every English clip with a transcript, joined with 1 s gaps (the tests' recording (a)), as a WAV file in
    the cache, so that each worker decodes it like any other file."""
    import soundfile

    from whisper_tflite.audio import SAMPLE_RATE, load_audio
    from whisper_tflite.evaluation import join_clips, read_manifest

    clips = [c for c in read_manifest(AUDIO) if c.language == "en" and c.reference]
    recording = join_clips("English clips, 1 s gaps", clips, lambda clip: load_audio(clip.path))
    path = CACHE / "long-english.wav"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        soundfile.write(path.with_suffix(".partial.wav"), recording.audio, SAMPLE_RATE, subtype="FLOAT")
        path.with_suffix(".partial.wav").rename(path)
    return path, recording


def gapped_recording_file():
    """Every English clip with a transcript, 8-25 s of digital silence, low noise, mains hum or a chord between
    them (the tests' gapped recording, about 9 minutes), as a WAV file in the cache."""
    import soundfile

    from whisper_tflite.audio import SAMPLE_RATE, load_audio
    from whisper_tflite.evaluation import gapped_recording, read_manifest

    clips = [c for c in read_manifest(AUDIO) if c.language == "en" and c.reference]
    recording = gapped_recording("English clips with gaps", clips, lambda clip: load_audio(clip.path))
    path = CACHE / "gapped-english.wav"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        soundfile.write(path.with_suffix(".partial.wav"), recording.audio, SAMPLE_RATE, subtype="FLOAT")
        path.with_suffix(".partial.wav").rename(path)
    return path, recording


# The gapped recording's rows: each system's VAD filter, and its batched transcription (faster-whisper's
# BatchedInferencePipeline), with their defaults (beam 5, batch 8)
GAPPED_MODES = {"VAD filter": {"vad_filter": True}, "batched, batch 8": {"batch_size": 8}}


def measure_gapped(workers: list[Worker], rounds: int) -> dict:
    """Wall time and WER of the default bundle and faster-whisper int8 (beam 5 workers) on the gapped recording,
    with the VAD filter and batched; runs interleaved by round, mode and system."""
    from whisper_tflite.evaluation import error_rate

    path, recording = gapped_recording_file()
    runs = {(w.name, mode): [] for w in workers for mode in GAPPED_MODES}
    for r in range(rounds):
        for mode, options in GAPPED_MODES.items():
            for worker in workers:
                runs[worker.name, mode].append(worker.ask(path, "en", **options))
        print(f"gapped recording: round {r + 1}/{rounds} done", file=sys.stderr)
    return {"audio_s": recording.duration, "results": [
        {"system": name, "mode": mode, "wall_median_s": statistics.median(x["wall_s"] for x in rows),
         "wall_min_s": min(x["wall_s"] for x in rows), "wall_max_s": max(x["wall_s"] for x in rows),
         "cpu_median_s": statistics.median(x["cpu_s"] for x in rows),
         "wer": error_rate([recording.reference], [rows[0]["text"]], "en")} for (name, mode), rows in runs.items()]}


def gapped_report(model: str, gapped: dict) -> list[str]:
    lines = [f"### {model}: the gapped recording ({gapped['audio_s']:.0f} s: the English clips, 8-25 s of silence, "
             "noise, hum or a chord between them), beam 5, with the VAD filter and batched (faster-whisper's "
             "BatchedInferencePipeline); CPU s: the worker process's, its threads together", "",
             "| system | mode | wall s | RTF | CPU s | WER |", "|---|---|---:|---:|---:|---:|"]
    for r in gapped["results"]:
        lines.append(f"| {r['system']} | {r['mode']} | {r['wall_median_s']:.2f} [{r['wall_min_s']:.2f} - "
                     f"{r['wall_max_s']:.2f}] | {r['wall_median_s'] / gapped['audio_s']:.3f} | "
                     f"{r['cpu_median_s']:.2f} | {r['wer']:.2%} |")
    ours = {r["mode"]: r for r in gapped["results"] if r["system"].startswith("whisper-tflite")}
    theirs = {r["mode"]: r for r in gapped["results"] if not r["system"].startswith("whisper-tflite")}
    lines += ["", "Default bundle vs faster-whisper int8: " + ", ".join(
        f"{mode} x{ours[mode]['wall_median_s'] / theirs[mode]['wall_median_s']:.2f} wall, "
        f"x{ours[mode]['cpu_median_s'] / theirs[mode]['cpu_median_s']:.2f} CPU" for mode in GAPPED_MODES) + ".", ""]
    return lines


COLD_START = {
    "tflite": "from whisper_tflite import Transcriber\n"
              "print(Transcriber(sys.argv[1], threads={threads}).transcribe(sys.argv[2], beam_size=5).text)",
    "faster-whisper-int8": "from faster_whisper import WhisperModel\n"
                           "model = WhisperModel(sys.argv[1], device='cpu', compute_type='int8', cpu_threads={threads})\n"
                           "print(''.join(s.text for s in model.transcribe(sys.argv[2], beam_size=5)[0]))",
}
COLD_START_CLIP = AUDIO / "en_jfk_whisper-cpp.wav"


def cold_start(kind: str, path: Path, threads: int, rounds: int, cache: Path | None = None) -> list[float]:
    """Seconds from a new process's start to its exit, having imported the system, loaded the model and
    transcribed the 11 s JFK clip with beam 5 (model files in the page cache). `cache`: the XDG cache folder of
    whisper-tflite's XNNPACK weight caches (None: a new empty one each round, as at the first start)."""
    import tempfile

    times = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as empty:
            env = dict(os.environ, XDG_CACHE_HOME=str(cache or empty))
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import sys\n" + COLD_START[kind].format(threads=threads),
                            str(path), str(COLD_START_CLIP)], check=True, env=env, capture_output=True)
            times.append(time.perf_counter() - start)
    return times


def cold_starts(systems: list[tuple[str, str, Path, int]], rounds: int, threads: int) -> list[dict]:
    """The default bundle's first start (no weight cache yet) and next starts, and faster-whisper int8's."""
    import tempfile

    bundle = next(path for name, kind, path, beam in systems if kind == "tflite" and beam == 5)
    ct2 = next(path for name, kind, path, beam in systems if kind == "faster-whisper-int8")
    with tempfile.TemporaryDirectory() as warm:
        cold_start("tflite", bundle, threads, 1, Path(warm))  # writes the weight caches
        rows = [("whisper-tflite default, first start (packs the weights)", cold_start("tflite", bundle, threads,
                                                                                      rounds)),
                ("whisper-tflite default, next starts (maps the packed weights)",
                 cold_start("tflite", bundle, threads, rounds, Path(warm))),
                ("faster-whisper int8", cold_start("faster-whisper-int8", ct2, threads, rounds))]
    return [{"system": name, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}
            for name, times in rows]


def measure(model: str, rounds: int, threads: int) -> dict:
    from whisper_tflite.evaluation import error_rate

    clips = choose_clips(model)
    systems = prepare(model)
    workers = []
    for name, kind, path, beam_size in systems:
        size = _folder_mb(path) if isinstance(path, Path) else float("nan")
        workers.append(Worker(name, kind, path, threads, size, beam_size))
    runs = {w.name: [[None] * len(clips) for _ in range(rounds)] for w in workers}
    long_path, recording = long_recording()
    # HF generate decodes the first 30 s only; the long recording runs greedy, each system with its own long form
    long_workers = [w for w in workers if w.kind != "reference" and w.beam_size == 1]
    long_runs = {w.name: [] for w in long_workers}
    for r in range(rounds):
        for i, clip in enumerate(clips):
            for worker in workers:  # interleaved: every system sees the same moment of the machine
                runs[worker.name][r][i] = worker.ask(clip.path, clip.language)
        for worker in long_workers:
            long_runs[worker.name].append(worker.ask(long_path, "en"))
        print(f"{model}: round {r + 1}/{rounds} done", file=sys.stderr)
    gapped = measure_gapped([w for w in workers if w.beam_size == 5 and w.kind in ("tflite", "faster-whisper-int8")],
                            rounds)
    long_form = [{"system": name, "wall_median_s": statistics.median(x["wall_s"] for x in rows),
                  "wall_min_s": min(x["wall_s"] for x in rows), "wall_max_s": max(x["wall_s"] for x in rows),
                  "wer": error_rate([recording.reference], [rows[0]["text"]], "en")}
                 for name, rows in long_runs.items()]
    audio_s = sum(c.duration for c in clips)
    results = []
    for worker in workers:
        per_round = [sum(x["wall_s"] for x in rows) for rows in runs[worker.name]]
        texts = [x["text"] for x in runs[worker.name][0]]
        scores = {}
        for language in sorted({c.language for c in clips}):
            chosen = [(c.reference, t) for c, t in zip(clips, texts) if c.language == language]
            scores[language] = error_rate([a for a, _ in chosen], [b for _, b in chosen], language)
        english = [(c.reference, t) for c, t in zip(clips, texts) if c.language == "en"]
        stage_rows = [x["stages"] for rows in runs[worker.name] for x in rows if x["stages"]]
        stages = None
        if stage_rows:
            tokens = sum(s["tokens"] for s in stage_rows)
            stages = {"features_ms": 1000 * sum(s["features"] for s in stage_rows) / len(stage_rows),
                      "encoder_ms": 1000 * sum(s["encoder"] for s in stage_rows) / len(stage_rows),
                      "prefill_ms": 1000 * sum(s["prefill"] for s in stage_rows) / len(stage_rows),
                      "ms_per_token": 1000 * sum(s["decoder"] for s in stage_rows) / max(tokens, 1)}
        results.append({
            "system": worker.name, "load_s": worker.load_s, "size_mb": worker.size_mb,
            "error_mean": statistics.mean(scores.values()),
            "wall_median_s": statistics.median(per_round), "wall_min_s": min(per_round),
            "wall_max_s": max(per_round), "rtf": statistics.median(per_round) / audio_s,
            "wer_en": error_rate(*map(list, zip(*english)), "en") if english else None,
            "scores": scores, "stages": stages, "peak_rss_mb": worker.close(),
        })
    return {"model": model, "clips": len(clips), "audio_s": audio_s, "rounds": rounds, "results": results,
            "long_form": {"audio_s": recording.duration, "results": long_form}, "gapped": gapped,
            "cold_start": cold_starts(systems, rounds, threads)}


def footprint(model: str, threads: int, rounds: int) -> str:
    """The default bundle against faster-whisper int8: size on disk, peak RSS of a worker that transcribes the
    clips and the long recording greedily, and cold start; a markdown table (`--footprint`)."""
    bundle = cached_bundle(model, "dynamic-int8")  # the default policy
    ct2 = ct2_folder(model)
    clips = choose_clips(model)
    long_path, _ = long_recording()
    rows = []
    for name, kind, path in (("whisper-tflite default", "tflite", bundle), ("faster-whisper int8", "faster-whisper-int8", ct2)):
        worker = Worker(name, kind, path, threads, _folder_mb(path), 1)
        for clip in clips:
            worker.ask(clip.path, clip.language)
        worker.ask(long_path, "en")
        rows.append((name, _folder_mb(path), worker.close()))
    starts = cold_starts([("default", "tflite", bundle, 5), ("fw", "faster-whisper-int8", ct2, 5)], rounds, threads)
    lines = [f"{model}, {threads} threads: `python benchmarks/run.py --footprint --models {model}`", "",
             "| system | size MB | peak RSS MB (greedy: the clips, then the long recording) |", "|---|---:|---:|"]
    lines += [f"| {name} | {size:.1f} | {peak:.0f} |" for name, size, peak in rows]
    lines += ["", "| cold start (JFK, beam 5) | s |", "|---|---:|"]
    lines += [f"| {r['system']} | {r['median_s']:.2f} [{r['min_s']:.2f} - {r['max_s']:.2f}] |" for r in starts]
    return "\n".join(lines)


def _report_parts() -> tuple[str, dict[str, str]]:
    """docs/benchmarks.md as run.py's report and the other scripts' sections, by heading."""
    path = DOCS / "benchmarks.md"
    text = path.read_text() if path.is_file() else ""
    starts = sorted((text.index(heading), heading) for heading in KEPT_SECTIONS if heading in text)
    ends = [start for start, _ in starts[1:]] + [len(text)]
    kept = {heading: text[start:end].strip() for (start, heading), end in zip(starts, ends)}
    return text[: starts[0][0] if starts else len(text)].strip(), kept


def write_report(main: str | None = None, section: str | None = None) -> None:
    """Replaces run.py's report (`main`) or another script's section (`section`, from its heading on) in
    docs/benchmarks.md, keeping the rest."""
    old_main, kept = _report_parts()
    if section is not None:
        kept[next(heading for heading in KEPT_SECTIONS if section.startswith(heading))] = section.strip()
    parts = [main.strip() if main is not None else old_main] + [kept[h] for h in KEPT_SECTIONS if h in kept]
    (DOCS / "benchmarks.md").write_text("\n\n".join(part for part in parts if part) + "\n")


def machine() -> dict:
    import importlib.metadata as md

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    simd = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                        "amx_int8", "amx_bf16") if f in flags]
    versions = {name: md.version(name) for name in ("whisper-tflite", "ai-edge-litert", "tensorflow",
                                                     "faster-whisper", "ctranslate2", "pywhispercpp")}
    return {"cpu": cpu, "cores": os.cpu_count(), "simd": simd, "python": platform.python_version(),
            "versions": versions}


def report(measurements: list[dict], threads: int, info: dict) -> str:
    lines = ["# Benchmarks", "",
             "The tiny.en and base sections are generated by `python benchmarks/run.py` (`make bench`) on the "
             "machine below; each later section by the script it names, on the machine it names. Every script "
             "rewrites only its own sections: do not edit by hand.", "",
             f"Machine: {info['cpu']}, {info['cores']} cores ({', '.join(info['simd'])}), Python {info['python']}, "
             f"{threads} threads for every system.  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".", "",
             "Same weights everywhere (the bundled CTranslate2 checkpoints; whisper.cpp runs a ggml export of "
             "them), greedy unless a row says beam 5 (beam_size = best_of = 5, each system's default), no VAD, "
             "language given; runs interleaved clip by clip across systems. Wall time is "
             "the whole pipeline from 16 kHz samples to text, summed over the clips: median of the rounds "
             "[min - max]. Peak RSS is the worker process's high-water mark. WER after Whisper's normalizers "
             "(CER for ja/zh/ko); 'mean error' averages the languages of the run.", "",
             "![chart](benchmarks.png)", ""]
    for m in measurements:
        lines += [f"## {m['model']} - {m['clips']} clips, {m['audio_s']:.0f} s of audio, {m['rounds']} rounds", "",
                  "| system | wall s | RTF | load s | peak RSS MB | size MB | mean error | WER en | other languages |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in m["results"]:
            others = ", ".join(f"{k} {v:.0%}" for k, v in r["scores"].items() if k != "en")
            wer = f"{r['wer_en']:.2%}" if r["wer_en"] is not None else ""
            size = f"{r['size_mb']:.0f}" if r["size_mb"] == r["size_mb"] else "-"
            lines.append(f"| {r['system']} | {r['wall_median_s']:.2f} [{r['wall_min_s']:.2f} - "
                         f"{r['wall_max_s']:.2f}] | {r['rtf']:.3f} | {r['load_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                         f"{size} | {r['error_mean']:.2%} | {wer} | {others} |")
        lines += ["", "Stages of whisper-tflite (mean per clip; decoder per step, prompt tokens after the prefill "
                  "included):", "",
                  "| system | features ms | encoder ms | prefill ms | decoder ms/step |", "|---|---:|---:|---:|---:|"]
        for r in m["results"]:
            if r["stages"]:
                s = r["stages"]
                lines.append(f"| {r['system']} | {s['features_ms']:.1f} | {s['encoder_ms']:.1f} | "
                             f"{s.get('prefill_ms', 0):.1f} | {s['ms_per_token']:.2f} |")
        fw = next(r for r in m["results"] if r["system"] == "faster-whisper int8")
        default = next(r for r in m["results"] if r["system"].endswith("(default)"))
        lines += ["", f"Default bundle vs faster-whisper int8: wall time x{default['wall_median_s'] / fw['wall_median_s']:.2f}, "
                  f"peak RSS x{default['peak_rss_mb'] / fw['peak_rss_mb']:.2f}, "
                  f"mean error {default['error_mean']:.2%} vs {fw['error_mean']:.2%}.", ""]
        beam = next((r for r in m["results"] if r["system"].endswith("(default) beam 5")), None)
        fw_beam = next((r for r in m["results"] if r["system"] == "faster-whisper int8 beam 5"), None)
        if beam and fw_beam:
            lines += [f"Beam 5, default bundle: wall time x{beam['wall_median_s'] / default['wall_median_s']:.2f} "
                      f"of its greedy, x{beam['wall_median_s'] / fw_beam['wall_median_s']:.2f} of faster-whisper "
                      f"int8 beam 5; mean error {beam['error_mean']:.2%} vs {fw_beam['error_mean']:.2%}.", ""]
        long_form = m.get("long_form")
        if long_form:
            lines += [f"### Long form: the English clips joined with 1 s gaps ({long_form['audio_s']:.0f} s), "
                      "each system with its own long-form algorithm and default options, greedy", "",
                      "| system | wall s | RTF | WER |", "|---|---:|---:|---:|"]
            for r in long_form["results"]:
                lines.append(f"| {r['system']} | {r['wall_median_s']:.2f} [{r['wall_min_s']:.2f} - "
                             f"{r['wall_max_s']:.2f}] | {r['wall_median_s'] / long_form['audio_s']:.3f} | "
                             f"{r['wer']:.2%} |")
            fw = next(r for r in long_form["results"] if r["system"] == "faster-whisper int8")
            default = next(r for r in long_form["results"] if r["system"].endswith("(default)"))
            lines += ["", f"Default bundle vs faster-whisper int8 on the long recording: wall time "
                      f"x{default['wall_median_s'] / fw['wall_median_s']:.2f}.", ""]
        if m.get("gapped"):
            lines += gapped_report(m["model"], m["gapped"])
        starts = m.get("cold_start")
        if starts:
            lines += ["### Cold start: a new process imports, loads the model and transcribes the 11 s JFK clip "
                      "(beam 5), model files in the page cache", "",
                      "| system | s |", "|---|---:|"]
            lines += [f"| {r['system']} | {r['median_s']:.2f} [{r['min_s']:.2f} - {r['max_s']:.2f}] |" for r in starts]
            fw = starts[-1]["median_s"]
            lines += ["", "Against faster-whisper int8: " + ", ".join(
                f"{r['system'].split(', ')[-1]} x{r['median_s'] / fw:.2f}" for r in starts[:-1]) + ".", ""]
    return "\n".join(lines)


def chart(measurements: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(measurements), 2, figsize=(12, 3.2 * len(measurements)), squeeze=False,
                                constrained_layout=True)
    for row, m in zip(axes, measurements):
        names = [r["system"] for r in m["results"]]
        row[0].barh(names, [r["rtf"] for r in m["results"]], color="tab:blue")
        row[0].set_title(f"{m['model']}: real-time factor (lower is faster)")
        row[0].invert_yaxis()
        row[1].barh(names, [100 * r["error_mean"] for r in m["results"]], color="tab:orange")
        languages = "English WER" if m["model"].endswith(".en") else "WER/CER, mean over languages"
        row[1].set_title(f"{m['model']}: {languages} % (lower is better)")
        row[1].invert_yaxis()
        row[1].set_yticklabels([])
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="redraw the report from docs/benchmarks.json")
    parser.add_argument("--footprint", action="store_true",
                        help="only size, peak RSS and cold start of the default bundle and faster-whisper int8")
    parser.add_argument("--gapped", action="store_true",
                        help="only the gapped recording: the default bundle and faster-whisper int8, beam 5, with "
                             "the VAD filter and batched; prints its table")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--beam-size", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(*args.worker, args.threads, args.beam_size)
        return
    started = time.perf_counter()
    if args.gapped:
        info = machine()
        print(f"{info['cpu']} ({', '.join(info['simd'])}), {info['cores']} cores, {args.threads} threads: "
              f"`python benchmarks/run.py --gapped --models {args.models} --rounds {args.rounds}`")
        for model in args.models.split(","):
            workers = [Worker("whisper-tflite default", "tflite", cached_bundle(model, "dynamic-int8"), args.threads,
                              float("nan"), 5),
                       Worker("faster-whisper int8", "faster-whisper-int8", ct2_folder(model), args.threads,
                              float("nan"), 5)]
            print("\n".join(gapped_report(model, measure_gapped(workers, args.rounds))))
            for worker in workers:
                worker.close()
        return
    if args.footprint:
        info = machine()
        print(f"{info['cpu']} ({', '.join(info['simd'])}), {info['cores']} cores")
        for model in args.models.split(","):
            print(footprint(model, args.threads, args.rounds) + "\n")
        return
    raw = DOCS / "benchmarks.json"
    if args.report_only:
        saved = json.loads(raw.read_text())
    else:
        measurements = [measure(model, args.rounds, args.threads) for model in args.models.split(",")]
        saved = {"threads": args.threads, "machine": machine(), "measurements": measurements}
        raw.write_text(json.dumps(saved, indent=1) + "\n")
    write_report(report(saved["measurements"], saved["threads"], saved["machine"]))
    chart(saved["measurements"], DOCS / "benchmarks.png")
    print(f"wrote docs/benchmarks.json, .md and .png in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
