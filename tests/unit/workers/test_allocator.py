"""keep_freed_memory: freed frame buffers are reused from the heap, not faulted in anew."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from relshard.workers.allocator import keep_freed_memory

# A fresh process does what the decode child does to an image 100 times (JPEG decode,
# area resize to 512, colour swap, JPEG encode) and prints its minor page faults.
_PROBE = textwrap.dedent("""
    import sys
    import cv2
    import numpy as np
    from relshard.workers.allocator import keep_freed_memory

    def minor_faults():
        with open("/proc/self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[7])

    if sys.argv[1] == "tuned":
        assert keep_freed_memory()
    cv2.setNumThreads(1)
    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    jpeg = cv2.imencode(".jpg", cv2.GaussianBlur(pixels, (9, 9), 3))[1]
    def one():
        frame = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        small = cv2.resize(frame, (512, 384), interpolation=cv2.INTER_AREA)
        return cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))[1]
    one()
    before = minor_faults()
    for _ in range(100):
        one()
    print(minor_faults() - before)
""")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and glibc's mallopt")
def test_a_tuned_process_reuses_freed_frames_instead_of_faulting_them_in() -> None:
    if not keep_freed_memory():
        pytest.skip("the C library is not glibc")
    plain, tuned = _faults("plain"), _faults("tuned")
    # glibc's defaults map and unmap the frame-sized buffers (or trim the heap under
    # them): hundreds of fresh pages an image; tuned, the heap keeps them
    assert plain > 100 * 50
    assert tuned < plain / 20
