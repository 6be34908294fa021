"""What an app ships: the default roles of tiny.en and base converted with every --quantize policy, each bundle's
files and total, beside the published sizes of the same weights in faster-whisper's and whisper.cpp's formats.

Run: .venv/bin/python benchmarks/bundle_sizes.py [--models tiny.en,base] [--quantize none,fp16,dynamic-int8]
(bundles cached in .cache/bench/MODEL/bundle-POLICY; needs the `dev` extra). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"
# Published file sizes of the same checkpoints, as their projects list them (not measured here)
PUBLISHED = {
    "tiny.en": "faster-whisper (CTranslate2 float16 folder) 78 MB; whisper.cpp ggml-tiny.en q8_0 about 43 MB, "
               "q5_1 about 32 MB",
    "base": "faster-whisper (CTranslate2 float16 folder) 148 MB",
}


def bundle(model: str, policy: str) -> Path:
    from whisper_tflite.bundle import FORMAT_VERSION
    from whisper_tflite.conversion import convert

    folder = CACHE / model / f"bundle-{policy}"
    manifest = folder / "manifest.json"
    if not manifest.is_file() or json.loads(manifest.read_text()).get("format_version") != FORMAT_VERSION:
        convert(model, folder, quantize=None if policy == "default" else policy, force=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--quantize", default="none,fp16,default")
    args = parser.parse_args()
    print("| model | --quantize | files (MB) | bundle MB | MiB |", "|---|---|---|---:|---:|", sep="\n")
    for model in args.models.split(","):
        for policy in args.quantize.split(","):
            folder = bundle(model, policy)
            sizes = {path.name: path.stat().st_size for path in sorted(folder.iterdir()) if path.is_file()}
            files = ", ".join(f"{name} {size / 1e6:.1f}" for name, size in sizes.items() if name != "manifest.json")
            total = sum(sizes.values())
            print(f"| {model} | {policy} | {files} | {total / 1e6:.1f} | {total / 2**20:.1f} |")
    for model in args.models.split(","):
        print(f"\n{model}, published: {PUBLISHED.get(model, '-')}")


if __name__ == "__main__":
    main()
