"""Keeps the C++ log lines of TensorFlow and LiteRT off a user's terminal.

They are written to file descriptor 2 directly, not through Python: LiteRT prints "Created TensorFlow Lite
XNNPACK delegate for CPU." at every model load, a conversion prints dozens of lines around its progress bar.
Only redirecting the descriptor hides them. The `whisper_tflite` logger at DEBUG (`--verbose`) lets them through.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
from typing import Iterator, TextIO

LOG = logging.getLogger("whisper_tflite")

# fd 2 belongs to the whole process: nested or concurrent blocks share one redirection, the outermost undoes it.
_lock = threading.Lock()
_depth = 0
_saved: int | None = None


@contextlib.contextmanager
def native_stderr_hidden() -> Iterator[TextIO]:
    """Sends file descriptor 2 to /dev/null inside the block; yields a stream on the real stderr for what the
    user must see (a progress bar). Where stderr cannot be redirected (closed, or no sys.stderr), does nothing."""
    global _depth, _saved
    if LOG.isEnabledFor(logging.DEBUG) or sys.stderr is None:
        yield sys.stderr
        return
    with _lock:
        try:
            if _depth == 0:
                sys.stderr.flush()
                _saved = os.dup(2)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
            terminal = os.fdopen(os.dup(_saved), "w", encoding="utf-8", errors="replace")
            _depth += 1
        except OSError:  # no fd 2 to redirect: leave it as it was
            if _depth == 0 and _saved is not None:
                os.dup2(_saved, 2)
                os.close(_saved)
                _saved = None
            terminal = None
    if terminal is None:
        yield sys.stderr
        return
    try:
        yield terminal
    finally:
        terminal.close()
        with _lock:
            _depth -= 1
            if _depth == 0:
                sys.stderr.flush()
                _flush_c_streams()  # LiteRT's log lines wait in C stdio buffers
                os.dup2(_saved, 2)
                os.close(_saved)
                _saved = None


def _flush_c_streams() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask
        pass
