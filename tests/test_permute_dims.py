"""wtc_ext.permute_dims against its contract (DESIGN.md) and the pure-PyTorch reference."""

import math

import pytest
import scipy.stats
import torch

import wtc_ext
from conftest import AOT_WITH_GENERATOR_FAILS
from wtc_ext.reference import permute_dims_loop, permute_dims_reference

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def generator(device, seed=0):
    return torch.Generator(device=device).manual_seed(seed)


def assert_valid_permutation(z, out, index):
    """Each column of each batch of out is z's column reordered by a permutation in index."""
    assert out.shape == z.shape and out.dtype == z.dtype and out.device == z.device
    assert index.dtype == torch.int64 and index.shape == z.shape
    B = z.shape[-2]
    sorted_index = index.sort(dim=-2).values
    expected = torch.arange(B, device=z.device).view(B, 1).expand(z.shape[-2:])
    assert torch.equal(sorted_index, expected.expand_as(sorted_index))
    assert torch.equal(out, z.gather(-2, index))


@pytest.mark.parametrize("shape", [(64, 10), (3, 64, 10), (2, 3, 17, 5), (1000, 3), (4096, 2)])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_output_columns_are_permutations(device, shape, dtype):
    z = torch.randn(shape, device=device).to(dtype)
    out, index = wtc_ext.permute_dims(z, generator=generator(device), return_index=True)
    assert_valid_permutation(z, out, index)
    # The values of each column are the same multiset as z's column.
    assert torch.equal(out.sort(dim=-2).values, z.sort(dim=-2).values)


def test_large_batch_sort_path(device):
    # B above the shared-memory limit of the CUDA kernel exercises the key-sort path there.
    z = torch.randn(300_000, 2, device=device, dtype=torch.float64)
    out, index = wtc_ext.permute_dims(z, generator=generator(device), return_index=True)
    assert_valid_permutation(z, out, index)
    assert (index[:, 0] != torch.arange(z.shape[0], device=device)).float().mean() > 0.99


@pytest.mark.parametrize("B", [2, 3, 64, 2047, 2048, 2049])
def test_boundary_batch_sizes(device, B):
    z = torch.randn(3, B, 4, device=device)
    out, index = wtc_ext.permute_dims(z, generator=generator(device), return_index=True)
    assert_valid_permutation(z, out, index)


def test_columns_and_batches_are_independent(device):
    # With a permutation shared by two columns (or two batches) the rows would match everywhere;
    # independent permutations match at a fraction 1/B of the positions.
    N, B, d = 1000, 64, 3
    z = torch.arange(B, dtype=torch.float32, device=device).view(1, B, 1).expand(N, B, d)
    _, index = wtc_ext.permute_dims(z, generator=generator(device, 7), return_index=True)
    n = N * B
    expected, sd = n / B, math.sqrt(n * (1 / B) * (1 - 1 / B))
    same_across_columns = (index[..., 0] == index[..., 1]).sum().item()
    assert abs(same_across_columns - expected) < 5 * sd
    same_across_batches = (index[:-1] == index[1:]).sum().item() / (d * (N - 1)) * N
    assert abs(same_across_batches - expected) < 5 * sd
    # A shared permutation fails the same statistic.
    shared = torch.randperm(B, device=device).view(1, B, 1).expand(N, B, d)
    assert (shared[..., 0] == shared[..., 1]).sum().item() == n


def test_every_permutation_equally_likely(device):
    # B = 4: count the 24 permutations over 60,000 columns; chi-square with 23 dof.
    N, B, d = 20_000, 4, 3
    z = torch.zeros(N, B, d, device=device)
    _, index = wtc_ext.permute_dims(z, generator=generator(device, 3), return_index=True)
    codes = (index.transpose(-1, -2).reshape(-1, B).cpu() * torch.tensor([64, 16, 4, 1])).sum(-1)
    counts = torch.bincount(codes, minlength=256)
    counts = counts[counts > 0]
    assert counts.numel() == 24
    assert scipy.stats.chisquare(counts.numpy()).pvalue > 1e-4
    # And every position is equally likely to receive every row (4 x 4 table).
    table = torch.stack([torch.bincount(index[:, i, :].flatten().cpu(), minlength=B)
                         for i in range(B)])
    assert scipy.stats.chisquare(table.flatten().numpy()).pvalue > 1e-4


def test_output_without_index_is_the_same_permutation(device):
    z = torch.randn(7, 64, 10, device=device)
    with_index, index = wtc_ext.permute_dims(z, generator=generator(device, 3), return_index=True)
    without = wtc_ext.permute_dims(z, generator=generator(device, 3))
    assert torch.equal(with_index, without)
    out, empty = torch.ops.wtc_ext.permute_dims.default(z, return_index=False)
    assert empty.numel() == 0 and out.shape == z.shape


def test_same_generator_state_gives_same_output(device):
    z = torch.randn(5, 64, 10, device=device)
    a = wtc_ext.permute_dims(z, generator=generator(device, 42))
    b = wtc_ext.permute_dims(z, generator=generator(device, 42))
    c = wtc_ext.permute_dims(z, generator=generator(device, 43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # The generator advances: two draws from one generator differ.
    g = generator(device, 42)
    assert not torch.equal(wtc_ext.permute_dims(z, generator=g), wtc_ext.permute_dims(z, generator=g))


def test_global_seed_gives_same_output(device):
    z = torch.randn(64, 10, device=device)
    torch.manual_seed(5)
    a = wtc_ext.permute_dims(z)
    torch.manual_seed(5)
    b = wtc_ext.permute_dims(z)
    assert torch.equal(a, b)


def test_result_does_not_depend_on_thread_count():
    z = torch.randn(200, 64, 10)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = wtc_ext.permute_dims(z, generator=generator("cpu", 1))
        torch.set_num_threads(max(2, threads))
        b = wtc_ext.permute_dims(z, generator=generator("cpu", 1))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, b)


def test_non_contiguous_input(device):
    base = torch.randn(10, 64, device=device, dtype=torch.float64)
    z = base.t()  # (64, 10), non-contiguous
    assert not z.is_contiguous()
    out, index = wtc_ext.permute_dims(z, generator=generator(device), return_index=True)
    assert_valid_permutation(z, out, index)
    expected = wtc_ext.permute_dims(z.contiguous(), generator=generator(device))
    assert torch.equal(out, expected)
    sliced = torch.randn(4, 70, 12, device=device)[:, ::2, 1:11]
    out, index = wtc_ext.permute_dims(sliced, generator=generator(device), return_index=True)
    assert_valid_permutation(sliced, out, index)


@pytest.mark.parametrize("shape", [(0, 10), (64, 0), (0, 0), (0, 64, 10), (3, 0, 4)])
def test_empty_input_gives_empty_result(device, shape):
    z = torch.randn(shape, device=device)
    out, index = wtc_ext.permute_dims(z, return_index=True)
    assert out.shape == shape and index.shape == shape and index.dtype == torch.int64


def test_single_row_is_identity(device):
    z = torch.randn(7, 1, 5, device=device)
    out, index = wtc_ext.permute_dims(z, return_index=True)
    assert torch.equal(out, z)
    assert torch.equal(index, torch.zeros_like(index))


def test_gradient_is_scattered_through_the_same_permutation(device):
    z = torch.randn(3, 64, 10, device=device, requires_grad=True)
    out, index = wtc_ext.permute_dims(z, generator=generator(device), return_index=True)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    expected = torch.zeros_like(z).scatter(-2, index, weights)
    assert torch.equal(z.grad, expected)


def test_gradcheck_float64(device):
    z = torch.randn(2, 6, 3, device=device, dtype=torch.float64, requires_grad=True)

    def fn(x):  # a fixed generator state makes the op a deterministic function of x
        return wtc_ext.permute_dims(x, generator=generator(device, 11))

    assert torch.autograd.gradcheck(fn, (z,))
    assert torch.autograd.gradgradcheck(fn, (z,))


def test_opcheck(device):
    for z in (torch.randn(64, 10, device=device), torch.randn(3, 8, 5, device=device,
                                                              dtype=torch.float64,
                                                              requires_grad=True)):
        torch.library.opcheck(torch.ops.wtc_ext.permute_dims.default, (z,))
        torch.library.opcheck(torch.ops.wtc_ext.permute_dims.default, (z,),
                              {"return_index": False})


# opcheck's test_aot_dispatch_dynamic (and _static) cannot pass with an explicit generator, by
# design: each runs the op eagerly, then compiled, with the same arguments, resetting only the *global* seed
# between the runs (wrapper_set_seed). The generator argument is one object whose state the
# eager run advances, so the compiled run rightly draws other permutations. Everything else of
# opcheck passes with it, and the compiled op is checked against eager from equal generator
# states below instead.
OPCHECK_WITH_GENERATOR = ("test_schema", "test_autograd_registration", "test_faketensor")


def test_opcheck_with_generator(device):
    z = torch.randn(3, 8, 5, device=device, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.wtc_ext.permute_dims.default, (z,),
                          {"generator": generator(device, 3)}, test_utils=OPCHECK_WITH_GENERATOR)
    for test in ("test_aot_dispatch_dynamic", "test_aot_dispatch_static"):
        with pytest.raises(Exception, match=AOT_WITH_GENERATOR_FAILS):
            torch.library.opcheck(torch.ops.wtc_ext.permute_dims.default, (z,),
                                  {"generator": generator(device, 3)}, test_utils=test)
    compiled = torch.compile(lambda x, g: wtc_ext.permute_dims(x, generator=g),
                             backend="aot_eager", dynamic=True)
    for shape in [(3, 8, 5), (2, 6, 4)]:
        x = torch.randn(shape, device=device)
        torch.testing.assert_close(compiled(x, generator(device, 4)),
                                   wtc_ext.permute_dims(x, generator=generator(device, 4)),
                                   rtol=0, atol=0)


def test_torch_compile_fullgraph(device):
    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(z):
        return wtc_ext.permute_dims(z) * 2

    z = torch.randn(64, 10, device=device)
    out = f(z)
    assert torch.equal((out / 2).sort(0).values, z.sort(0).values)


@pytest.mark.parametrize("bad", [torch.randn(5), torch.tensor(3.0)])
def test_error_fewer_than_two_dims(device, bad):
    with pytest.raises(ValueError, match=r"permute_dims: expected z of shape \(\.\.\., B, d\)"):
        wtc_ext.permute_dims(bad.to(device))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_error_integer_or_bool_dtype(device, dtype):
    z = torch.zeros(4, 3, dtype=dtype, device=device)
    with pytest.raises(ValueError, match="expected z to have a floating-point dtype"):
        wtc_ext.permute_dims(z)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for a second device")
def test_error_generator_on_other_device():
    with pytest.raises(ValueError, match="generator is on device"):
        wtc_ext.permute_dims(torch.randn(4, 3), generator=torch.Generator(device="cuda"))
    with pytest.raises(ValueError, match="generator is on device"):
        wtc_ext.permute_dims(torch.randn(4, 3, device="cuda"), generator=torch.Generator())


def test_meta_tensor_shape_propagation():
    # Meta tensors go through the fake kernel: shapes only, no data.
    z = torch.empty(4, 3, device="meta")
    out = wtc_ext.permute_dims(z)
    assert out.shape == (4, 3) and out.device.type == "meta"


def test_references_are_valid_permutations():
    z = torch.randn(3, 64, 10)
    out, index = permute_dims_reference(z, generator=generator("cpu"), return_index=True)
    assert_valid_permutation(z, out, index)
    loop = permute_dims_loop(z)
    assert torch.equal(loop.sort(dim=-2).values, z.sort(dim=-2).values)
