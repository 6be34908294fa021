"""Resident memory of a bundle's runtime.

Default: builds an hour of 16 kHz mono speech from the English clips of ../shared/audio (repeated), transcribes it
with a bundle in a child process, and prints the child's peak RSS and wall time.
`--stages`: in this process, what each step adds to the resident memory (anonymous and file-backed): imports,
loading, the JFK clip greedily and with beam 5, then every English clip joined (greedy, previous text on).
Under `heaptrack` it shows whose allocations they are.
Run: .venv/bin/python benchmarks/memory.py [--stages] [BUNDLE]   (default bundles/tiny.en)
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from whisper_tflite.audio import SAMPLE_RATE, load_audio
from whisper_tflite.evaluation import read_manifest

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
HOUR = 3600 * SAMPLE_RATE


def hour_of_speech(path: Path) -> None:
    clips = [load_audio(c.path) for c in read_manifest(AUDIO) if c.language == "en"]
    pause = np.zeros(SAMPLE_RATE // 2, np.float32)
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as f:
        written = 0
        while written < HOUR:
            for clip in clips:
                piece = np.concatenate([clip, pause])[: HOUR - written]
                f.write(piece)
                written += len(piece)
                if written >= HOUR:
                    break


def _resident() -> dict[str, int]:
    """MB resident now, at most so far, anonymous and file-backed (/proc/self/status)."""
    fields = {"VmRSS": "now", "VmHWM": "peak", "RssAnon": "anonymous", "RssFile": "file"}
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            values[fields[key]] = int(value.split()[0]) // 1024
    return values


def stages(bundle: str = "bundles/tiny.en") -> None:
    def report(stage: str) -> None:
        print(f"{stage:<44}" + "  ".join(f"{key} {value:4d}" for key, value in _resident().items()), flush=True)

    report("python and numpy")
    from whisper_tflite.evaluation import join_clips
    from whisper_tflite.runtime import Transcriber

    report("whisper_tflite imported")
    transcriber = Transcriber(bundle, threads=2)
    report("bundle loaded")
    jfk = load_audio(AUDIO / "en_jfk_whisper-cpp.wav")
    transcriber.transcribe(jfk, beam_size=1, best_of=1)
    report("JFK, greedy")
    transcriber.transcribe(jfk, beam_size=5)
    report("JFK, beam 5")
    clips = [c for c in read_manifest(AUDIO) if c.language == "en" and c.reference]
    recording = join_clips("English clips", clips, lambda clip: load_audio(clip.path))
    report(f"{len(recording.audio) / SAMPLE_RATE:.0f} s of English clips in memory")
    transcriber.transcribe(recording.audio, beam_size=1)
    report("those, greedy (fallback on)")


def main(bundle: str = "bundles/tiny.en") -> None:
    cli = Path(sys.executable).with_name("whisper-tflite")
    with tempfile.TemporaryDirectory() as folder:
        audio = Path(folder) / "hour.wav"
        hour_of_speech(audio)
        start = time.perf_counter()
        done = subprocess.run([str(cli), "transcribe", str(audio), "--model", bundle, "--beam-size", "1", "--best-of",
                               "1", "--format", "json", "--quiet", "--threads", "2"], capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    words = len(done.stdout.split('"text": ')[1].split())
    print(f"bundle {bundle}: 1 h of 16 kHz speech, peak RSS {peak_mb:.0f} MB, wall {wall:.0f} s "
          f"(real-time factor {wall / 3600:.3f}), ~{words} words")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--stages"]:
        stages(*sys.argv[2:])
    else:
        main(*sys.argv[1:])
