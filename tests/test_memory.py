"""keep_freed_memory: glibc keeps freed image buffers, so new images stop faulting pages."""

import subprocess
import sys

import pytest

CODE = """
import resource, sys
import numpy as np
from gptextures.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def churn():
    # Two 4 MiB images alive, then freed: more free heap than glibc's default trim threshold
    # (2x the largest freed mmapped block), so by default it goes back to the OS.
    a = np.empty((1024, 1024), np.float32)
    b = np.empty((1024, 1024), np.float32)
    a.fill(1.0)                       # touches every page
    b.fill(1.0)
    del a, b
churn()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    churn()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 20)
"""


def _faults(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CODE, mode], capture_output=True, text=True,
                         check=True)
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_freed_image_buffers_are_reused():
    # A 4 MiB image is 1024 pages: by default the new ones fault them all again; with the
    # tuning, freed memory is reused and almost nothing faults.
    assert _faults("default") > 500  # measured ~1000: one image's pages every time
    assert _faults("keep") < 100
