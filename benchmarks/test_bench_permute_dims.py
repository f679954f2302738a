"""permute_dims against (a) the per-column randperm loop of public FactorVAE code and (b) the best
vectorised pure-PyTorch form (random keys, argsort, gather)."""

import pytest
import torch

import wtc_ext
from conftest import DEVICES
from wtc_ext.reference import permute_dims_loop, permute_dims_reference

SHAPES = {
    "64x10": (64, 10),
    "1000x64x10 stacked": (1000, 64, 10),
    "12800x10": (12800, 10),
    "64x100": (64, 100),
}
IMPLS = {
    "wtc_ext": wtc_ext.permute_dims,
    "argsort_gather": permute_dims_reference,
    "randperm_loop": permute_dims_loop,
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("size", list(SHAPES))
@pytest.mark.parametrize("device", DEVICES)
def test_permute_dims(bench, device, size, impl):
    z = torch.randn(SHAPES[size], device=device)
    fn = IMPLS[impl]
    bench("permute_dims", device, size, impl, lambda: fn(z))
