"""Host-memory tuning for a meta-training process (Linux / glibc only).

XLA's CPU runtime allocates each program's temporaries with ``malloc`` from
its worker threads, and glibc gives every thread that contends for the heap
an arena of its own (up to eight per core). Memory freed into one arena is
not reused by another, so over the first few dozen outer iterations the
process keeps a copy of the temporaries per arena, much of it free heap. Two
arenas keep the peak lower at the same speed (``bench/w1.py`` reports peak
RSS; docs/PERFORMANCE.md).

``limit_malloc_arenas`` must run before JAX starts its thread pools (arenas
already made are kept); the CLI calls it first thing. It does nothing where
``mallopt`` is not glibc's, and ``MALLOC_ARENA_MAX`` set by the user wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``; True when the cap was set."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc
        return False
