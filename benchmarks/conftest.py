"""Shared helpers of the benchmark suites.

Every benchmark records, in pytest-benchmark's extra_info, the op, the device, the size and the
implementation ("wtc_ext" or a pure-PyTorch baseline); benchmarks/run.py turns a run into ratios
baseline / wtc_ext measured in the same process.
"""

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
# The mark of every CUDA case: a CUDA benchmark measures nothing without a GPU.
NEEDS_CUDA = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")

DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]


def timed(fn, device):
    """fn, followed by a device synchronisation so a CUDA call is timed to its end."""
    if device == "cuda":
        def run():
            out = fn()
            torch.cuda.synchronize()
            return out
        return run
    return fn


@pytest.fixture
def bench(benchmark):
    """bench(op, device, size, impl, fn): benchmark fn and label it for benchmarks/run.py."""

    def run(op, device, size, impl, fn, rounds=None):
        """rounds: a fixed number of rounds for slow baselines (seconds per call)."""
        benchmark.group = f"{op} | {device} | {size}"
        benchmark.extra_info.update(op=op, device=device, size=size, impl=impl)
        fn = timed(fn, device)
        if rounds is not None:
            return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
        fn()  # warm up (lazy init, allocator, autotuning)
        return benchmark(fn)

    return run
