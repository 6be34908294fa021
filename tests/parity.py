"""Greedy decoding of the first 30 s with a bundle's decoder_step, and the near-tie check for differences."""

from __future__ import annotations

import numpy as np

from whisper_tflite.audio import N_SAMPLES
from whisper_tflite.reference import reference_logits
from whisper_tflite.runtime.decoding import LogitFilter, decode_window


def bundle_greedy_tokens(transcriber, audio, language):
    """Prompt + greedy tokens + end-of-text, without timestamps, up to 448 tokens: what HF generate returns."""
    tokenizer = transcriber.tokenizer
    manifest = transcriber.bundle.manifest
    logit_filter = LogitFilter(tokenizer, manifest["suppress_tokens"], manifest["begin_suppress_tokens"],
                               timestamps=False)
    prompt = tokenizer.prompt(language, "transcribe", timestamps=False)
    stepper = transcriber.stepper
    stepper.begin(stepper.log_mel(audio[:N_SAMPLES]))
    result = decode_window(stepper, tokenizer, logit_filter, prompt, sample_len=stepper.n_ctx - len(prompt))
    ended = len(prompt) + len(result.tokens) < stepper.n_ctx
    return prompt + result.tokens + ([tokenizer.special.eot] if ended else [])


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def reference_gap_at(checkpoint, features, tokens: list[int], index: int, prompt_length: int) -> float:
    """Top-two gap of the reference's filtered logits for the token at `index` (teacher-forced)."""
    logits = reference_logits(checkpoint, features, tokens[:index])[-1].astype(np.float64)
    logits[checkpoint.suppress_tokens] = -np.inf
    if index == prompt_length:
        logits[checkpoint.begin_suppress_tokens] = -np.inf
    top_two = np.sort(logits)[-2:]
    return float(top_two[1] - top_two[0])


def assert_parity(pairs, checkpoint):
    """`pairs`: (name, ours, reference tokens, reference features, prompt length). Every pair must be
    token-identical (the README says "N/N"); a difference is reported with the reference's top-two gap at the
    first differing token, which tells a near tie from a defect."""
    differing = []
    for name, ours, reference, features, prompt_length in pairs:
        index = first_difference(ours, reference)
        if index is None:
            continue
        gap = reference_gap_at(checkpoint, features, reference, index, prompt_length)
        differing.append(f"{name}: differs at token {index} (reference top-two gap {gap:.2e})")
    print(f"{len(pairs) - len(differing)}/{len(pairs)} clips token-identical")
    assert not differing, differing
