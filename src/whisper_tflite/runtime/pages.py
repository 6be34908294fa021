"""A model file's pages in this process's resident memory: where they are, and how to give them back."""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

MADV_RANDOM, MADV_DONTNEED = 1, 4  # the same values on every Linux architecture


@functools.cache
def _libc_madvise():
    """libc's madvise, looked up once (begin calls it for each decoder's file at every window); None where there
    is none."""
    try:
        madvise = ctypes.CDLL(None).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise


def _madvise(start: int, end: int, advice: int) -> None:
    """madvise on pages [start, end). Linux and Android only; elsewhere nothing."""
    madvise = _libc_madvise()
    if madvise is not None:
        madvise(start, end - start, advice)


def file_mappings(path: Path) -> list[tuple[int, int]]:
    """The address ranges where this process maps the file (none where /proc is not there)."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return []
    target, ranges = os.path.realpath(path), []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].rstrip("\n") == target:
            ranges.append(tuple(int(address, 16) for address in fields[0].split("-")))
    return ranges


def release_file_pages(pages: list[tuple[int, int]]) -> None:
    """Takes a model file's pages out of this process's resident memory.

    LiteRT memory-maps the file, and XNNPACK, when the model is prepared, packs the weights of the ops it runs
    into memory of its own (or its weight cache's): from then on every such weight would be resident twice.
    Afterwards only the ops XNNPACK leaves to TFLite (the token embedding's gather) read the file, and the
    kernel maps those pages back from its page cache when they do (`settle_file_pages`: a few at a time).
    """
    for start, end in pages:
        _madvise(start, end, MADV_DONTNEED)  # a read-only shared mapping: nothing can be lost


def settle_file_pages(path: Path) -> list[tuple[int, int]]:
    """Once a model is prepared: where this process maps its file (for `release_file_pages` later), those pages
    released and the file read sparsely from then on."""
    pages = file_mappings(path)
    release_file_pages(pages)
    _read_sparsely(path, pages)
    return pages


def _read_sparsely(path: Path, pages: list[tuple[int, int]]) -> None:
    """Once a model is prepared, its file is read a few pages at a time (token rows, tensor metadata): those
    reads map a few pages instead of their neighbours too (no read-ahead), and the file's cached pages that no
    process maps are dropped. The page cache of a file just written holds it in folios of up to a few MB, each
    mapped whole by a read of any of its pages: a freshly converted tiny.en bundle's look-ups mapped 10 MB of
    its text decoder within a window, 0.3 MB once dropped and read back a page at a time."""
    for start, end in pages:
        _madvise(start, end, MADV_RANDOM)
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):  # no posix_fadvise (macOS)
        pass
    finally:
        os.close(descriptor)
