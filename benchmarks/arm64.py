"""A bundle on aarch64 against the same bundle on this x86-64 machine: the English clips' transcripts and WER, side by side.

The aarch64 side is ai-edge-litert's aarch64 wheel, with XNNPACK's ARM kernels (NEON, dot-product: the int8
arithmetic of phones and boards), run by a Debian arm64 Python under qemu-user emulation: the results
are ARM's, the speed is not (about 1.5 minutes per 30 s window, int8, beam 5). The root, made once (as root,
about 4 minutes):

    apt-get install qemu-user-static debootstrap
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc   # if not mounted; then register qemu-aarch64
    echo ':qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/bin/qemu-aarch64-static:F' \\
        > /proc/sys/fs/binfmt_misc/register
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \\
        bookworm ROOT http://deb.debian.org/debian
    cp /etc/resolv.conf ROOT/etc/; grep -E \\
        '^(ai-edge-litert|av|cffi|flatbuffers|numpy|protobuf|pycparser|soundfile|soxr|tokenizers|tqdm)==' \\
        constraints.txt > ROOT/tmp/c.txt
    chroot ROOT sh -c 'python3 -m venv /opt/v && /opt/v/bin/pip install -c /tmp/c.txt ai-edge-litert numpy \\
        tokenizers soundfile soxr av tqdm'
    # this checkout, ../shared and the bundle at the same paths inside, and /proc (the runtime reads
    # /proc/self/maps)
    mount --bind CHECKOUT ROOT/CHECKOUT; mount --bind SHARED ROOT/SHARED; mount -t proc proc ROOT/proc

Run: .venv/bin/python benchmarks/arm64.py ROOT BUNDLE [--beam-size 5]   (2 threads on both sides)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

from numpy._core._multiarray_umath import __cpu_features__

from whisper_tflite.audio import load_audio
from whisper_tflite.evaluation import error_rate, read_manifest
from whisper_tflite.runtime import Transcriber

SRC = Path(__file__).resolve().parents[1] / "src"
AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
THREADS = 2


def english_clips() -> list:
    return [c for c in read_manifest(AUDIO) if c.language == "en" and c.reference]


def transcripts(bundle: str, beam_size: int) -> dict:
    """This machine's architecture, numpy's view of its SIMD features, and each English clip's text."""
    transcriber = Transcriber(bundle, threads=THREADS)
    texts = {c.name: transcriber.transcribe(load_audio(c.path), language="en", beam_size=beam_size,
                                            best_of=beam_size).text
             for c in english_clips()}
    return {"machine": platform.machine(), "features": sorted(name for name, on in __cpu_features__.items() if on),
            "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", help="the arm64 root (see the docstring); '-' to transcribe on this machine and print JSON")
    parser.add_argument("bundle")
    parser.add_argument("--beam-size", type=int, default=5)
    args = parser.parse_args()
    if args.root == "-":
        print(json.dumps(transcripts(args.bundle, args.beam_size)))
        return

    here = transcripts(args.bundle, args.beam_size)
    inside = ["/opt/v/bin/python", str(Path(__file__).resolve()), "-", str(Path(args.bundle).resolve()),
              "--beam-size", str(args.beam_size)]
    done = subprocess.run(["chroot", args.root, *inside], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC)})  # the checkout's runtime, not installed there
    if done.returncode != 0:
        raise SystemExit(f"the aarch64 side failed:\n{done.stderr[-2000:]}")
    there = json.loads(done.stdout.strip().splitlines()[-1])
    references = {c.name: c.reference for c in english_clips()}
    names = sorted(references)
    print(f"{Path(args.bundle).name}, beam {args.beam_size}, {len(names)} English clips")
    for side in (here, there):
        wer = error_rate([references[n] for n in names], [side["texts"][n] for n in names], "en")
        print(f"{side['machine']:8} WER {wer:.2%}  (numpy sees: {' '.join(side['features'])})")
    differing = [n for n in names if " ".join(here["texts"][n].split()) != " ".join(there["texts"][n].split())]
    print(f"identical transcripts: {len(names) - len(differing)} of {len(names)}")
    for name in differing:
        print(f"  {name}\n    {here['machine']}: {here['texts'][name]}\n    {there['machine']}: {there['texts'][name]}")


if __name__ == "__main__":
    main()
