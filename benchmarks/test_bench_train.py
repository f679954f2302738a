"""One full training step (batch 64, adversary step + main step) of each model, against the same
model on pure PyTorch ops: the per-column randperm loop for permute_dims and the autograd
double-backward gradient penalty for every critic."""

import tempfile
import types
from unittest import mock

import numpy as np
import pytest

import wtc.models
import wtc_ext
from conftest import DEVICES
from wtc.train import TrainConfig, Trainer
from wtc_ext.reference import critic_loss_reference, permute_dims_loop


def _reference_critic_loss(critic, p, q, *, gp_weight, generator=None):
    loss, w1 = critic_loss_reference(critic, p, q, gp_weight=gp_weight, generator=generator)
    return wtc_ext.CriticLoss(loss, w1.detach(), loss.detach())


PURE_PYTORCH_OPS = types.SimpleNamespace(
    permute_dims=lambda z, **kw: permute_dims_loop(z),
    critic_loss=_reference_critic_loss,
    CriticLoss=wtc_ext.CriticLoss,
)


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    import os

    os.environ.setdefault("WTC_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize("impl", ["wtc_ext", "pure_pytorch"])
@pytest.mark.parametrize("model", list(wtc.models.MODELS))
@pytest.mark.parametrize("device", DEVICES)
def test_training_step(bench, data_cache, device, model, impl):
    config = TrainConfig(model=model, data="dsprites-procedural",
                         data_options={"grid_step": (1, 1, 1, 4, 2, 2)}, steps=1, progress=False,
                         device=device)
    trainer = Trainer(config, tempfile.mkdtemp())
    ds = trainer.dataset
    x = ds.batch(np.random.default_rng(0).integers(0, len(ds), 64)).to(device)
    step = lambda: trainer.step(x)
    if impl == "pure_pytorch":
        with mock.patch.object(wtc.models.base, "wtc_ext", PURE_PYTORCH_OPS):
            bench("training step", device, model, impl, step)
    else:
        bench("training step", device, model, impl, step)
