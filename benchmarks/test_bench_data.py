"""Data: rendering the full procedural dSprites grid, and sampling random training batches of 64
(uint8 gather + float conversion) against what a DataLoader does per item (__getitem__ + collate).
"""

import numpy as np
import pytest
import torch

from wtc.data.dsprites import DSpritesProcedural
from wtc.data.shapes3d import Shapes3DProcedural


@pytest.fixture(scope="module")
def dsprites():
    return DSpritesProcedural()


def test_render_dsprites_grid(bench):
    # No cache: the whole 737,280-image grid rendered from scratch, on every core.
    bench("render dsprites-procedural", "cpu", "737280 images", "wtc",
          lambda: DSpritesProcedural(cache=False), rounds=1)


@pytest.mark.parametrize("impl", ["wtc", "per_item_collate"])
@pytest.mark.parametrize("name", ["dsprites-procedural", "shapes3d-procedural"])
def test_sample_batch(bench, dsprites, name, impl):
    ds = dsprites if name == "dsprites-procedural" else Shapes3DProcedural()
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the target is per core
    try:
        if impl == "wtc":
            fn = lambda: ds.batch(rng.integers(0, len(ds), 64))
        else:
            fn = lambda: torch.utils.data.default_collate(
                [ds[int(i)] for i in rng.integers(0, len(ds), 64)])
        bench(f"batch of 64 ({name})", "cpu", "1 core", impl, fn)
    finally:
        torch.set_num_threads(threads)
