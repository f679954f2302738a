"""The six models: loss terms, the update order, the critic's estimate."""


import numpy as np
import pytest
import torch

import wtc_ext
from wtc import models
from wtc.data import load

NAMES = list(models.MODELS)


@pytest.fixture(scope="module")
def batch():
    ds = load("dsprites-procedural", grid_step=(1, 1, 2, 8, 4, 4), cache=False)
    return ds.batch(np.random.default_rng(0).integers(0, len(ds), 32))


@pytest.mark.parametrize("name", NAMES)
def test_loss_terms_are_finite_with_the_right_signs_and_shapes(name, batch):
    torch.manual_seed(0)
    model = models.build(name)
    mean, logvar, z = model.encode(batch)
    assert mean.shape == logvar.shape == z.shape == (32, 10)
    terms = model.main_terms(batch, mean, logvar, z)
    for key, value in terms.items():
        assert value.shape == () and torch.isfinite(value), key
    assert terms["reconstruction"] > 0
    if "kl" in terms:
        assert terms["kl"] >= 0
    if name == "beta-tcvae":  # MI and dimension-wise KL estimates are KL-like: not negative
        assert terms["mi"] > -1e-3 and terms["dim_kl"] > -1.0
    for key, (loss, logged) in model.adversary_losses(z.detach(), batch).items():
        assert loss.shape == () and torch.isfinite(loss)
    strengths = model.strengths
    rec = terms["reconstruction"]
    if name == "beta-vae":
        assert torch.allclose(terms["loss"], rec + strengths["beta"] * terms["kl"])
    if name == "wtc-vae":
        assert torch.allclose(terms["loss"], rec + terms["kl"] + strengths["gamma"] * terms["wtc"])


def test_architecture_matches_table_3():
    model = models.build("beta-vae", in_channels=3)
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    out = model.decoder(torch.zeros(2, 10))
    assert out.shape == (2, 3, 64, 64)
    disc = models.build("factor-vae").adversaries["discriminator"]
    linears = [m for m in disc.modules() if isinstance(m, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [1000] * 6 + [2]


def test_strengths_and_names_are_checked():
    with pytest.raises(ValueError, match="valid names: beta-vae, factor-vae"):
        models.build("vae")
    with pytest.raises(ValueError, match="beta-vae takes beta, not gamma"):
        models.build("beta-vae", gamma=10)
    with pytest.raises(ValueError, match="must be a finite number"):
        models.build("wtc-vae", gamma=-1)
    assert models.build("wtc-wae", beta=2, gamma=20).strengths == {"beta": 2.0, "gamma": 20.0}


def test_mss_weights_follow_the_paper():
    model = models.build("beta-tcvae", dataset_size=1000, estimator="mss")
    w = model.log_importance_weights(6, "cpu", torch.float64).exp()
    assert torch.allclose(w.sum(1), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(w.diagonal(), torch.full((6,), 1 / 1000, dtype=torch.float64))
    M = 5
    assert (w == (1000 - M) / (1000 * M)).sum() == 6  # one stratified weight per row
    mws = models.build("beta-tcvae", dataset_size=1000, estimator="mws")
    assert torch.allclose(mws.log_importance_weights(6, "cpu", torch.float64).exp().sum(1),
                          torch.full((6,), 1 / 1000, dtype=torch.float64))


@pytest.mark.parametrize("name", ["factor-vae", "wtc-vae", "wae", "wtc-wae"])
def test_encoder_gets_no_gradient_from_adversary_losses(name, batch):
    model = models.build(name)
    mean, logvar, z = model.encode(batch)
    for loss, _ in model.adversary_losses(z.detach(), batch).values():
        loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None for p in model.adversaries.parameters())


def test_wtc_critic_estimate_grows_when_codes_are_dependent():
    torch.manual_seed(0)
    model = models.build("wtc-vae")
    critic = model.adversaries["critic"]
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)

    def train_critic(make_codes, steps=300):
        for p in critic.parameters():
            torch.nn.init.normal_(p, std=0.05)
        for _ in range(steps):
            z = make_codes()
            out = wtc_ext.critic_loss(critic, z, wtc_ext.permute_dims(z), gp_weight=4.0)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        z = make_codes()
        return (critic(z).mean() - critic(wtc_ext.permute_dims(z)).mean()).item()

    independent = train_critic(lambda: torch.randn(256, 10))

    def dependent():
        s = torch.randn(256, 1)
        return torch.cat([s.expand(256, 5), torch.randn(256, 5)], 1) + 0.05 * torch.randn(256, 10)

    assert train_critic(dependent) > independent + 0.3


# -- the registry -----------------------------------------------------------------------------

def test_registry_derives_the_lists_of_table_4():
    from wtc.experiments import spec

    assert dict(models.MODELS) == {
        "beta-vae": {"beta": 4.0}, "factor-vae": {"gamma": 10.0}, "beta-tcvae": {"beta": 4.0},
        "wtc-vae": {"gamma": 10.0}, "wae": {"beta": 1.0}, "wtc-wae": {"beta": 1.0, "gamma": 10.0}}
    assert dict(spec.SWEPT) == {"beta-vae": "beta", "factor-vae": "gamma", "beta-tcvae": "beta",
                                "wtc-vae": "gamma", "wae": "beta", "wtc-wae": "gamma"}
    beta, gamma = [1.0, 4.0, 8.0, 16.0], [10.0, 20.0, 40.0, 80.0]
    assert dict(spec.PAPER_STRENGTHS) == {"beta-vae": beta, "factor-vae": gamma,
                                          "beta-tcvae": beta, "wtc-vae": gamma, "wae": beta,
                                          "wtc-wae": gamma}
    assert models._CLASSES["wtc-vae"] is models.WTCVAE
    assert models.BetaTCVAE.config_options == ("estimator", "tcvae_objective")


class _Sized:  # a stand-in data set: what build_model reads of one
    channels = 3

    def __len__(self):
        return 500


def test_a_model_registered_from_outside_is_everywhere(capsys):
    from wtc.cli import main as wtc_main
    from wtc.experiments import spec
    from wtc.train import TrainConfig, build_model

    @models.register
    class TinyVAE(models.BetaVAE):  # declared once, here: nothing else in wtc names it
        name = "tiny-vae"
        defaults = {"beta": 2.0}  # noqa: RUF012
        swept = "beta"
        paper_grid = (1.0, 2.0)

        @classmethod
        def options_from_dataset(cls, dataset):
            return {"size": len(dataset)}

        def __init__(self, in_channels=1, latent_dim=10, size=0, **strengths):
            super().__init__(in_channels, latent_dim, **strengths)
            self.size = size

    try:
        assert models.MODELS["tiny-vae"] == {"beta": 2.0}
        assert spec.SWEPT["tiny-vae"] == "beta"
        assert spec.PAPER_STRENGTHS["tiny-vae"] == [1.0, 2.0]
        assert models.build("tiny-vae", beta=3).strengths == {"beta": 3.0}
        model = build_model(TrainConfig(model="tiny-vae", latent_dim=4), _Sized())
        assert isinstance(model, TinyVAE) and model.size == 500 and model.in_channels == 3
        assert spec.SweepSpec().strength_values("tiny-vae") == [1.0, 2.0]
        with pytest.raises(SystemExit):
            wtc_main(["train", "--help"])
        assert "tiny-vae" in capsys.readouterr().out
        with pytest.raises(ValueError, match="registered already"):
            models.register(type("Other", (models.BetaVAE,), {"name": "tiny-vae"}))
    finally:
        models.unregister("tiny-vae")
    assert "tiny-vae" not in models.MODELS


def test_registering_checks_the_declarations():
    with pytest.raises(ValueError, match="must declare its name"):
        models.register(type("Nameless", (models.BetaVAE,), {"name": ""}))
    with pytest.raises(ValueError, match="swept must be one of its strengths"):
        models.register(type("Bad", (models.BetaVAE,), {"name": "bad", "swept": "gamma"}))
    with pytest.raises(TypeError, match="DisentanglingModel subclass"):
        models.register(int)
    assert "bad" not in models.MODELS
