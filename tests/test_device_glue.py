"""The CUDA ops' host side, run on the CPU (csrc/testing/device_glue_on_cpu.h).

Most CUDA code of wtc_ext is not kernels but the ATen algorithm around them (sorts, grouping,
batched products, the stack-of-one critic), and a GPU is lent to this project only now and
then. So the device algorithms run here too, on emulated kernels: each kernel's per-thread code
(shared with the .cu through host/device headers) run thread after thread.

- The shuffle kernels' keys are checked against Philox4x32-10 written out in Python, and the
  bitonic kernel against a sort of those keys.
- Then the op test files run again in a fresh process whose CPU kernels are the device
  algorithms (the registration cannot be undone, so it needs a process of its own).
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import wtc_ext

_wtc_ext = pytest.importorskip("_wtc_ext")

MASK32 = 0xFFFFFFFF


def philox4x32_10(counter, stream, seed, offset):
    """Philox4x32-10 (Salmon et al., SC'11) of counter words (counter, stream, offset lo, hi)
    and key (seed lo, hi): the generator of common/philox.h, written from the paper."""
    x = [counter & MASK32, stream & MASK32, offset & MASK32, (offset >> 32) & MASK32]
    k0, k1 = seed & MASK32, (seed >> 32) & MASK32
    for _ in range(10):
        p0 = 0xD2511F53 * x[0]
        p1 = 0xCD9E8D57 * x[2]
        x = [((p1 >> 32) ^ x[1] ^ k0) & MASK32, p1 & MASK32,
             ((p0 >> 32) ^ x[3] ^ k1) & MASK32, p0 & MASK32]
        k0 = (k0 + 0x9E3779B9) & MASK32
        k1 = (k1 + 0xBB67AE85) & MASK32
    return x


def reference_keys(L, B, d, seed, offset):
    """Row i of column c = l * d + j gets the 63-bit key of block i // 2 of Philox stream c."""
    keys = torch.empty(L, B, d, dtype=torch.int64)
    for l in range(L):
        for j in range(d):
            for pair in range((B + 1) // 2):
                w = philox4x32_10(pair, l * d + j, seed, offset)
                keys[l, 2 * pair, j] = ((w[0] << 32) | w[1]) >> 1
                if 2 * pair + 1 < B:
                    keys[l, 2 * pair + 1, j] = ((w[2] << 32) | w[3]) >> 1
    return keys


def test_philox_reference_matches_the_published_answer():
    """The Random123 known-answer vector for Philox4x32-10: key (0, 0) and counter 0 give
    6627e8d5 e169c58d bc57ac4c 9b00dbd8 (kat_vectors, philox4x32 10 rounds)."""
    assert philox4x32_10(0, 0, 0, 0) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@pytest.mark.parametrize("L,B,d,seed,offset", [(1, 2, 1, 0, 0), (2, 7, 3, 2**63 + 5, 4),
                                               (3, 64, 5, 12345, 2**33 + 8)])
def test_shuffle_keys_are_philox_keys(L, B, d, seed, offset):
    z = torch.zeros(L, B, d)
    keys = _wtc_ext._shuffle_keys_on_cpu(z, seed, offset)
    assert torch.equal(keys, reference_keys(L, B, d, seed, offset))
    assert (keys >= 0).all()


@pytest.mark.parametrize("L,B,d", [
    (1, 2, 1),      # the smallest shuffle
    (2, 2, 300),    # 600 columns of P = 2: two blocks of 512 columns, the second part-filled
    (3, 3, 5),      # padding rows (P = 4)
    (2, 100, 7),    # P = 128, 8 columns a block
    (1, 1024, 3),   # one column a block from here on
    (2, 1500, 2),
    (1, 2048, 2),   # the shared path's largest B
])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_shared_kernel_sorts_rows_by_their_keys(L, B, d, dtype):
    """The bitonic kernel gives each column the order of its rows' keys, which is what the keys
    path (and its stable sort) gives, so both paths draw the same permutation."""
    z = torch.randn(L, B, d).to(dtype)
    seed, offset = 2024 + B, 8
    out, index = _wtc_ext._shared_shuffle_on_cpu(z, seed, offset)
    keys = _wtc_ext._shuffle_keys_on_cpu(z, seed, offset)
    expected = keys.sort(dim=-2, stable=True).indices
    assert torch.equal(index, expected)
    assert torch.equal(out, z.gather(-2, expected))


# Tests of the CPU kernel itself, which the device algorithm does not have: each is named with
# why it does not apply.
CPU_KERNEL_ONLY = {
    # the CPU kernel's products through torch.addmm_ (WTC_CRITIC_GEMM); the device path has no
    # such switch
    "tests/test_gradient_penalty.py::test_cpu_products_through_aten_match_autograd",
    # the CPU kernels' limit of 2^31 - 1 samples (their radix sort's int32 indices); the device
    # algorithm has none and would sort the 2^31 expanded samples
    "tests/test_fuzz_ops.py::test_size_checks_come_first",
}

OP_TEST_FILES = ["tests/test_permute_dims.py", "tests/test_gradient_penalty.py",
                 "tests/test_stacked_critic.py", "tests/test_wasserstein.py", "tests/test_wdg.py",
                 "tests/test_fuzz_ops.py"]


def test_op_tests_pass_on_the_device_algorithms(tmp_path):
    """Every CPU case of the op tests (values against the references, gradcheck, opcheck, bad
    input, stacked runs against single ones, fuzzing) passes with the device algorithms as the
    CPU kernels. First the process checks that the switch took: the device algorithms call ATen
    products and sorts that the CPU kernels never call."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = textwrap.dedent(f"""
        import sys, torch, pytest, wtc_ext, _wtc_ext
        from wtc_ext.nn import MLPCritic
        _wtc_ext._use_device_glue_on_cpu()
        critic = MLPCritic(4, (8,)).double()
        p, q = torch.randn(5, 4, dtype=torch.double), torch.randn(5, 4, dtype=torch.double)
        z = torch.randn(50, 3, dtype=torch.double)
        labels = torch.randint(0, 3, (50, 2))
        with torch.profiler.profile() as prof:
            wtc_ext.critic_loss(critic, p, q, gp_weight=4.0)
            wtc_ext.conditional_wasserstein(z, labels)
        names = {{e.key for e in prof.key_averages()}}
        assert {{"aten::baddbmm", "aten::sort"}} <= names, sorted(names)
        print("device algorithms active", flush=True)
        sys.exit(pytest.main({OP_TEST_FILES!r} + ["-q", "-m", "not cuda", "-p", "no:cacheprovider"]
                             + [a for t in {sorted(CPU_KERNEL_ONLY)!r} for a in ("--deselect", t)]))
    """)
    where = os.path.dirname(os.path.dirname(os.path.abspath(wtc_ext.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([where, os.path.join(root, "tests"),
                                                       os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=900, cwd=root)
    tail = (run.stdout + run.stderr)[-6000:]
    assert "device algorithms active" in run.stdout, tail
    assert run.returncode == 0, tail
    summary = re.search(r"(\d+) passed", run.stdout)
    # 254 cases at the time of writing; far fewer would mean the files were not all collected
    assert summary and int(summary.group(1)) >= 200 and " failed" not in run.stdout, tail
