"""Process settings reel makes when a command starts.

glibc's malloc hands large blocks (from 128 KiB, a threshold it raises as it goes) straight to the kernel
and back again on free, so a tensor of a few MiB made for every layer call (an autoencoder decoding a clip,
a long video chunk by chunk) comes in fresh pages each time: ~8,000 page faults per 17-frame decode of the
demo autoencoder, a fifth to a third of its time on this codebase's CPU machines. `tune_allocator` keeps
blocks up to MMAP_THRESHOLD on the heap and keeps up to TRIM_THRESHOLD of freed heap for reuse, so the
same memory serves the next call (peak RSS unchanged). PyTorch's CPU performance guide points at the same
cost (it suggests jemalloc or tcmalloc); this needs no extra library.
REEL_MALLOC_TUNING=0, or glibc's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_, leave malloc as set.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 256 * 1024 * 1024


def tune_allocator() -> bool:
    """Set the heap thresholds above (Linux with glibc); True when they were set."""
    if os.environ.get("REEL_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False  # the user's own settings
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
