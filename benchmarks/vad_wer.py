"""The VAD filter's WER against faster-whisper's over several layouts of tests/test_vad.py's gapped recording, and
each model's distance from float32 where no beam search decides, out of CI for time.

tests/test_vad.py holds the default bundle with the filter against faster-whisper int8 with its filter on one
layout (seed 0). Two int8 models of the same weights round differently, and on its 489 words a few beam search
near-ties decide their WER difference; here it is over layouts 0..5 (the same clips, other gap lengths). The
second table feeds each English clip's first 30 s and each 30 s of layout 0's speech as the filter joins it
(faster-whisper's log-mel, one array to every model), with CTranslate2 float32's greedy tokens (no timestamps),
to each model, and compares its next-token distribution at every position with CTranslate2 float32's: mean KL
divergence and how often the most likely token agrees.

Run: .venv/bin/python benchmarks/vad_wer.py BUNDLE...   (tiny.en bundles, e.g. the default one)
"""

from __future__ import annotations

import sys
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.vad import collect_chunks, get_speech_timestamps

from whisper_tflite.audio import N_SAMPLES, load_audio, pad_or_trim
from whisper_tflite.evaluation import error_rate, faster_whisper_transcribe, gapped_recording, read_manifest
from whisper_tflite.runtime import Transcriber
from whisper_tflite.runtime.decoding import feed_prompt
from whisper_tflite.sources import bundled_ct2_folder

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
CT2_SCRATCH = Path(__file__).resolve().parents[1] / ".cache" / "ct2"
LAYOUTS = range(6)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def wer_table(bundles: list[str], clips, load, ct2: Path) -> None:
    transcribers = [Transcriber(bundle, threads=2) for bundle in bundles]
    print("| layout (seed) | faster-whisper int8 | " + " | ".join(Path(b).name for b in bundles) + " |")
    print("|---|---:|" + "---:|" * len(bundles))
    totals = np.zeros(1 + len(bundles))
    for seed in LAYOUTS:
        recording = gapped_recording("English clips with gaps", clips, load, seed=seed)
        theirs = faster_whisper_transcribe(ct2, recording.audio, "int8", beam_size=5, best_of=5, vad_filter=True)
        texts = [" ".join(s.text for s in theirs)]
        texts += [t.transcribe(recording.audio, beam_size=5, vad_filter=True).text for t in transcribers]
        wers = np.array([error_rate([recording.reference], [text], "en") for text in texts])
        totals += wers
        print(f"| {seed} | " + " | ".join(f"{w:.2%}" for w in wers) + " |", flush=True)
    print("| mean | " + " | ".join(f"{w:.2%}" for w in totals / len(LAYOUTS)) + " |")


def distance_table(bundles: list[str], windows: list[np.ndarray], ct2: Path) -> None:
    oracle = ctranslate2.models.Whisper(str(ct2), device="cpu", compute_type="float32", intra_threads=2)
    int8 = ctranslate2.models.Whisper(str(ct2), device="cpu", compute_type="int8", intra_threads=2)
    transcribers = {Path(b).name: Transcriber(b, threads=2) for b in bundles}
    special = next(iter(transcribers.values())).tokenizer.special
    prompt = [special.sot, special.no_timestamps]
    extract = FeatureExtractor()
    raw = dict(suppress_blank=False, suppress_tokens=[], return_logits_vocab=True, beam_size=1, max_length=448)
    distances: dict[str, list] = {"faster-whisper int8": [], **{name: [] for name in transcribers}}
    for window in windows:
        log_mel = extract(pad_or_trim(window), padding=0)[np.newaxis, :, :3000]
        log_mel = np.ascontiguousarray(log_mel, dtype=np.float32)
        reference = oracle.generate(ctranslate2.StorageView.from_array(log_mel), [prompt], **raw)[0]
        tokens = reference.sequences_ids[0]
        expected = log_softmax(np.array(reference.logits[0], np.float64))  # a row per token, end-of-text's too
        forced = int8.generate(ctranslate2.StorageView.from_array(log_mel), [prompt + tokens], **raw)[0]
        rows = {"faster-whisper int8": np.array(forced.logits[0], np.float64)}
        for name, transcriber in transcribers.items():
            stepper = transcriber.stepper
            stepper.begin(log_mel)
            logits, _ = feed_prompt(stepper, transcriber.tokenizer, prompt)
            rows[name] = np.array([logits] + [stepper.step(t) for t in tokens], np.float64)
        for name, logits in rows.items():
            got = log_softmax(logits[: len(expected)])
            kl = (np.exp(expected) * (expected - got)).sum(axis=-1)
            distances[name].append((kl, got.argmax(-1) == expected.argmax(-1)))
    count = sum(len(kl) for kl, _ in distances["faster-whisper int8"])
    print(f"\n{len(windows)} windows, {count} positions, against CTranslate2 float32")
    print("| model | mean KL | p95 KL | most likely token agrees |")
    print("|---|---:|---:|---:|")
    for name, pairs in distances.items():
        kl = np.concatenate([k for k, _ in pairs])
        agree = np.concatenate([a for _, a in pairs])
        print(f"| {name} | {kl.mean():.4f} | {np.percentile(kl, 95):.4f} | {agree.mean():.2%} |")


def main(*bundles: str) -> None:
    clips = [c for c in read_manifest(AUDIO) if c.language == "en" and c.reference]
    cache: dict = {}

    def load(clip):
        if clip.path not in cache:
            cache[clip.path] = load_audio(clip.path)
        return cache[clip.path]

    ct2 = bundled_ct2_folder("tiny.en", CT2_SCRATCH)
    wer_table(list(bundles), clips, load, ct2)
    recording = gapped_recording("English clips with gaps", clips, load, seed=LAYOUTS[0])
    speech = np.concatenate(collect_chunks(recording.audio, get_speech_timestamps(recording.audio))[0])
    windows = [load(c)[:N_SAMPLES] for c in clips]
    windows += [speech[i : i + N_SAMPLES] for i in range(0, len(speech), N_SAMPLES)]
    distance_table(list(bundles), windows, ct2)


if __name__ == "__main__":
    main(*sys.argv[1:])
