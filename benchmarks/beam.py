"""Beam search against faster-whisper's: WER and wall time on the English clips, and the batched steps' cost.

Run: .venv/bin/python benchmarks/beam.py BUNDLE [float32|int8]   (2 threads; the CTranslate2 weights are the
bundled tiny.en's, so give a tiny.en bundle: fp32 with float32, the default policy with int8)
     .venv/bin/python benchmarks/beam.py BUNDLE steps   (only the step times, of any bundle)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from whisper_tflite.audio import N_SAMPLES, load_audio
from whisper_tflite.bundle import CHUNKS_MODEL
from whisper_tflite.evaluation import error_rate, faster_whisper_transcribe, read_manifest
from whisper_tflite.runtime import Transcriber
from whisper_tflite.runtime.batched import ChunkRows
from whisper_tflite.sources import bundled_ct2_folder

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
CT2 = Path(__file__).resolve().parents[1] / ".cache" / "ct2"
THREADS = 2
STEP_CLIP = "en_jfk_openai-whisper.flac"  # the window whose decoder steps are timed


def timed(transcribe, clips, audio) -> tuple[list[str], float]:
    start = time.perf_counter()
    texts = [transcribe(audio[c.path]) for c in clips]
    return texts, time.perf_counter() - start


def step_times(bundle: str, audio: np.ndarray, offset: int, calls: int = 200) -> dict[str, float]:
    """Best-of-5 mean ms of a decoder_step call and of a call of each batch model (with a beam permutation), and
    of batched transcription's decoder_chunks (every window the clip's), at `offset` filled slots."""
    transcriber = Transcriber(bundle, threads=THREADS)
    stepper = transcriber.stepper
    window = stepper.log_mel(audio[:N_SAMPLES])
    stepper.begin(window)
    permutation = np.roll(np.arange(stepper.batch_size), 1)

    def best(call, where=stepper) -> float:
        rounds = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(calls):
                call()
                where.offset = offset
            rounds.append((time.perf_counter() - start) / calls * 1e3)
        return min(rounds)

    stepper.reset()
    stepper.prefill([transcriber.tokenizer.special.sot] * offset)
    times = {"decoder_step": best(lambda: stepper.step(400))}
    for role, slots in sorted(stepper.batch_roles.items(), key=lambda item: item[1]):  # fewest slots first
        stepper.fork(slots)
        times[f"{role} ({slots} slots)"] = best(lambda: stepper.step_batch(np.full(stepper.batch_size, 400),
                                                                           permutation))
    if CHUNKS_MODEL in transcriber.bundle.models:
        rows = ChunkRows(stepper)
        for index in range(rows.chunks):
            rows.encode(index, window)
        count = rows.chunks * rows.beams
        shifted = np.arange(count).reshape(rows.chunks, rows.beams)
        shifted = np.roll(shifted, 1, axis=1).reshape(-1)  # each window's beams permuted among themselves
        rows.offset = offset
        times[f"{CHUNKS_MODEL} ({rows.chunks} windows x {rows.beams} beams, {rows.slots} slots)"] = best(
            lambda: rows.step(np.full(count, 400), shifted), rows)
    return times


def print_step_times(bundle: str, audio: np.ndarray) -> None:
    for offset in (10, 100):
        times = step_times(bundle, audio, offset)
        print(f"offset {offset}, ms a call (the batch models: every row, with a beam permutation): "
              + ", ".join(f"{name} {ms:.2f}" for name, ms in times.items()))


def main(bundle: str, compute_type: str = "int8") -> None:
    clips = [c for c in read_manifest(AUDIO) if c.language == "en" and c.reference]
    jfk = next(c for c in clips if c.name == STEP_CLIP)
    if compute_type == "steps":
        print_step_times(bundle, load_audio(jfk.path))
        return
    audio = {c.path: load_audio(c.path) for c in clips}
    ct2 = bundled_ct2_folder("tiny.en", CT2)
    transcriber = Transcriber(bundle, threads=THREADS)
    references = [c.reference for c in clips]
    greedy, greedy_s = timed(lambda a: transcriber.transcribe(a, beam_size=1, best_of=1).text, clips, audio)
    ours, ours_s = timed(lambda a: transcriber.transcribe(a, beam_size=5, best_of=5).text, clips, audio)

    def theirs_of(a):
        return " ".join(s.text for s in faster_whisper_transcribe(ct2, a, compute_type, THREADS, beam_size=5,
                                                                  best_of=5))

    timed(theirs_of, [jfk], audio)  # loads the model
    theirs, theirs_s = timed(theirs_of, clips, audio)
    identical = sum(" ".join(a.split()) == " ".join(b.split()) for a, b in zip(ours, theirs))
    print(f"{len(clips)} English clips, WER: ours beam 5 {error_rate(references, ours, 'en'):.2%}, ours greedy "
          f"{error_rate(references, greedy, 'en'):.2%}, faster-whisper {compute_type} beam 5 "
          f"{error_rate(references, theirs, 'en'):.2%}; {identical} beam transcripts identical")
    print(f"wall: ours greedy {greedy_s:.2f} s, ours beam 5 {ours_s:.2f} s, faster-whisper beam 5 {theirs_s:.2f} s")
    print_step_times(bundle, audio[jfk.path])


if __name__ == "__main__":
    main(*sys.argv[1:])
