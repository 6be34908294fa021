"""Keeps the C++ log lines of TensorFlow and LiteRT off a user's terminal.

They are written to file descriptor 2 directly, not through Python: LiteRT prints "Created TensorFlow Lite
XNNPACK delegate for CPU." at every model load, a conversion prints dozens of lines around its progress bar.
Only redirecting the descriptor hides them. The `whisper_tflite` logger at DEBUG (`--verbose`) lets them through.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator, TextIO

LOG = logging.getLogger("whisper_tflite")


@contextlib.contextmanager
def native_stderr_hidden() -> Iterator[TextIO]:
    """Sends file descriptor 2 to /dev/null inside the block; yields a stream on the real stderr for what the
    user must see (a progress bar)."""
    if LOG.isEnabledFor(logging.DEBUG):
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", encoding="utf-8", errors="replace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield terminal
    finally:
        terminal.close()
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
