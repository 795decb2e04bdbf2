"""The process settings the command line, the app and the book's kernels make: glibc's allocator and torch's threads."""

import json
import platform
import subprocess
import sys

import pytest

_PROBE = """
import json, resource, numpy as np
def faults(n_bytes=96 << 20):  # above glibc's largest mapping threshold (32 MB): mapped and unmapped anew by default
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.empty(n_bytes, np.uint8)
    block.fill(1)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
default = [faults(), faults()]
from sampot_lib.experiment.setup import keep_freed_memory
made = keep_freed_memory()
kept = [faults(), faults()]
print(json.dumps({"made": made, "default": default, "kept": kept}))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_after_keep_freed_memory_a_freed_block_is_reused_without_faulting_its_pages_in_again():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["made"]
    # By default the second block faults its pages in again (one a 2 MB huge page where the kernel gives those);
    # kept, the freed block is reused as it is.
    assert seen["default"][1] >= 96 // 2 * 0.9, seen
    assert seen["kept"][1] * 10 < seen["default"][1], seen
