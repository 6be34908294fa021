"""What a conversion will write, checked before anything is converted: the folder, the roles, each role's
quantization, the oldest runtime asked for. Pure Python, without TensorFlow, so that `whisper-tflite convert`
refuses bad arguments in one line before the seconds TensorFlow takes to import (conversion side)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .bundle import DEFAULT_MODELS, INT8_SCORES, ROLES, S4Y_MODELS
from .errors import UsageError

QUANTIZATIONS = ("none", "fp16", "dynamic-int8", "int4")
LAYOUTS = ("bundle", "s4y")

# What `convert` does without --quantize, chosen by the measured WER, size and speed in docs/quantization.md.
# Models with the mel inside stay float32: dynamic-range int8 would quantize the DFT basis and break the exact mel.
DEFAULT_POLICY = {
    "features": "none",
    "encoder": "dynamic-int8",
    "decoder_step": "dynamic-int8",
    "prefill": "dynamic-int8",
    "decoder_batch": "dynamic-int8",
    "decoder_batch_short": "dynamic-int8",
    "decoder_chunks": "dynamic-int8",
    "alignment": "dynamic-int8",
    "decoder": "dynamic-int8",
    "encoder_decoder": "dynamic-int8",
    "generator": "dynamic-int8",
    "pcm_encoder": "none",
    "whisper": "none",
    "vad": "none",  # 1.5 MB; dynamic-int8 (0.6 MB) moves its speech probabilities by up to 0.65
}


# What `--quantize int4` does (docs/quantization.md): int4 text decoder (`quantize_int4`), dynamic-int8 encoder.
# An int4 encoder (`encoder=int4`) saves 2.2 MB more on tiny.en, at 5.31 % beam 5 WER instead of 3.06 %.
# The graphs with the mel inside stay float32, as in the default policy.
INT4_POLICY = {"features": "none", "encoder": "dynamic-int8", "pcm_encoder": "none", "whisper": "none",
               "vad": "none"}


def quantization_plan(quantize: str | dict[str, str] | None, roles: tuple[str, ...]) -> dict[str, str]:
    """Per-role quantization: None -> the default policy; "int4" -> `INT4_POLICY`, int4 for the rest; another
    string -> that for every model but the features graph and the vad model; a dict -> per role, the default
    policy for roles it does not name."""
    if isinstance(quantize, dict) and set(quantize) - set(roles):
        raise UsageError(f"quantization given for {', '.join(sorted(set(quantize) - set(roles)))}, "
                         f"which is not among the models converted ({', '.join(roles)})")
    ours = {role: S4Y_MODELS.get(role, role) for role in roles}  # a whisper-s4y file takes its graph's policy
    if quantize is None or isinstance(quantize, dict):
        chosen = {role: DEFAULT_POLICY.get(ours[role], "none") for role in roles} | dict(quantize or {})
    elif quantize == "int4":
        chosen = {role: INT4_POLICY.get(ours[role], "int4") for role in roles}
    else:
        chosen = {role: "none" if ours[role] in ("features", "vad") else quantize for role in roles}
    for role, value in chosen.items():
        if value == INT8_SCORES and ours[role] == "encoder":
            continue
        if value not in QUANTIZATIONS:
            raise UsageError(f"unknown quantization {value!r} for {role}: choose one of {', '.join(QUANTIZATIONS)}"
                             + (f" ({INT8_SCORES}: the encoder only)" if value == INT8_SCORES else ""))
    return {role: chosen[role] for role in roles}


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise UsageError(f"{version!r} is not a version such as 2.16 or 2.16.1") from None


class ConversionPlan(NamedTuple):
    out_dir: Path
    roles: tuple[str, ...]  # or, in the whisper-s4y layout, its file stems
    quantization: dict[str, str]  # per role
    ceiling: tuple[int, ...] | None  # --min-runtime: the oldest runtime every file must run on


def plan_conversion(source: str, out_dir: str | Path | None = None, quantize: str | dict[str, str] | None = None,
                    models: tuple[str, ...] | None = None, force: bool = False, min_runtime: str | None = None,
                    layout: str = "bundle", language: str | None = None,
                    calibration_audio: list[str | Path] | None = None, source_loaded: bool = False
                    ) -> ConversionPlan:
    """`convert`'s arguments (see there) checked: raises `UsageError` or `SourceError`, in one line, for what it
    would refuse before loading weights. `source_loaded`: the weights are already loaded from `source`, which
    then only names the default folder."""
    from .sources import describe_source

    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    s4y = layout == "s4y"
    if language is not None and not s4y:
        raise UsageError("--language fixes the language of --layout s4y files; a bundle takes it when transcribing")
    out_dir = Path(out_dir) if out_dir is not None else Path("bundles") / (Path(source).name or "model")
    if out_dir.exists() and not force:
        raise UsageError(f"{out_dir} already exists; choose another --out or pass --force to replace it")
    known = tuple(S4Y_MODELS) if s4y else ROLES
    roles = tuple(dict.fromkeys(models if models is not None else known if s4y else DEFAULT_MODELS))
    unknown = [role for role in roles if role not in known]
    if unknown:
        raise UsageError(f"unknown model {'file' if s4y else 'role'} {unknown[0]!r}: choose from {', '.join(known)}")
    if not roles:
        raise UsageError("no models to convert: give at least one role to --models")
    plan = quantization_plan(quantize, roles)
    if INT8_SCORES in plan.values() and not calibration_audio:
        raise UsageError(f"encoder={INT8_SCORES} needs --calibration-audio: a few speech files that set its scales")
    if calibration_audio and INT8_SCORES not in plan.values():
        raise UsageError(f"--calibration-audio is for --quantize encoder={INT8_SCORES}")
    ceiling = version_tuple(min_runtime) if min_runtime is not None else None
    if not source_loaded:
        describe_source(source)
    return ConversionPlan(out_dir, roles, plan, ceiling)
