"""CPU speed settings for training.

glibc serves every allocation above 32 MiB (its largest mmap threshold) with a fresh mmap and
returns it to the kernel on free, so each (B*T*49, 512) activation of an A+V-att step (64 MiB at
batch 64) is page-faulted and zeroed anew: ~20-25 ms per buffer, about 20% of a CPU step. Telling
malloc not to use mmap (M_MMAP_MAX = 0) and not to trim the heap keeps freed buffers for reuse.
The process's resident memory then stays at its peak, which training reaches anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**31 - 1  # give heap memory back only above 2 GiB free (mallopt takes an int)

_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep large freed buffers in the heap (glibc only; a no-op elsewhere). True if applied."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(M_MMAP_MAX, 0) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    _tuned = ok
    return ok
