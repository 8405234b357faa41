"""Keep freed frame buffers in the process heap instead of handing them back to the kernel.

glibc serves a large allocation (a decoded 640x480 frame is ~0.9 MB) with its own
``mmap`` once it is over the mmap threshold, and ``munmap``s it when freed, so every
input's frames are fresh pages that the kernel zeroes and faults in one by one. A fresh
decode child took ~380 minor page faults an image (640 px JPEG to 512 px: decode
buffer, resize, colour swaps, encode), ~1 ms of its ~5 ms; a long-lived process whose
thresholds glibc had already raised took ~90. With the thresholds set here the child
takes ~5 an image and ~20% less CPU (``bench/README.md``, "Throughput").

The heap may then hold up to ``TRIM_THRESHOLD`` of freed memory between inputs, and
buffers over ``MMAP_THRESHOLD`` (a 4K frame is 25 MB) still get their own mapping, so
one huge video does not pin its frames in the heap for the child's life.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt(3) parameter numbers (glibc <malloc.h>)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 * 1024 * 1024  # glibc caps it at 32 MiB on 64-bit
TRIM_THRESHOLD = 64 * 1024 * 1024


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once; True if set.

    A no-op (False) where the C library is not glibc (musl, macOS): those allocators
    have no such thresholds, or other defaults."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; setting the mmap threshold also stops glibc from
    # moving it (and the trim threshold) on its own
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
