"""glibc's allocator told to keep freed memory for the next render on a CPU worker, instead of handing it back."""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

# mallopt(3) parameters, as glibc's malloc.h numbers them.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
GIB = 1024**3
# A CPU render allocates and frees the same large buffers (the VAE decode's) every time. By default glibc
# maps each one afresh and unmaps it after use: about 400,000 page faults, and most of a second of kernel
# time, per tiny render (docs/PERFORMANCE.md). Kept in the heap instead, they are reused.
KEEP_FREED_MEMORY = {
    "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, GIB),  # buffers under 1 GiB come from the heap
    "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 2**31 - 1),  # the heap is not trimmed back
    "MALLOC_TOP_PAD_": (M_TOP_PAD, GIB),  # and grows in large steps
}


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
    """Apply KEEP_FREED_MEMORY in this process; False where glibc is not the allocator or the operator
    set any MALLOC_* variable of these (theirs win: glibc read them at start)."""
    env = os.environ if environ is None else environ
    if any(name in env for name in KEEP_FREED_MEMORY):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    # Each value on its own: one refused (mallopt answers 0) still leaves the others applied.
    results = [mallopt(ctypes.c_int(option), ctypes.c_int(value)) for option, value in KEEP_FREED_MEMORY.values()]
    applied = all(result == 1 for result in results)
    if applied:
        log.info("CPU rendering keeps freed memory for the next render (glibc mallopt)")
    return applied
