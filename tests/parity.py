"""Greedy decoding of the first 30 s with a bundle's decoder_step, judged token by token by the reference."""

from __future__ import annotations

import hashlib

from whisper_tflite.audio import N_SAMPLES
from whisper_tflite.reference import reference_disagreement
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
    result = decode_window(stepper, tokenizer, logit_filter, prompt, max_length=stepper.n_ctx - len(prompt))
    ended = len(prompt) + len(result.tokens) < stepper.n_ctx
    return prompt + result.tokens + ([tokenizer.special.eot] if ended else [])


_VERDICTS = {}  # (model, features, tokens) -> reference_disagreement, shared by the tests of a run


def assert_parity(runs, checkpoint):
    """`runs`: (name, tokens, reference features, prompt length). Every run must be token-identical to the
    reference's greedy decoding (docs/accuracy.md says "N/N"), judged teacher-forced; a difference is reported with
    its margin, which tells a near tie from a defect. The same tokens on the same features are judged once."""
    differing = []
    for name, tokens, features, prompt_length in runs:
        key = (checkpoint.source, hashlib.sha1(features).digest(), tuple(tokens))
        if key not in _VERDICTS:
            _VERDICTS[key] = reference_disagreement(checkpoint, features, tokens, prompt_length)
        if _VERDICTS[key] is not None:
            index, margin = _VERDICTS[key]
            differing.append(f"{name}: token {index} is not the reference's choice (margin {margin:.2e})")
    print(f"{len(runs) - len(differing)}/{len(runs)} runs token-identical to the reference")
    assert not differing, differing
