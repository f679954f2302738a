"""Many runs in one process: R runs trained as one stacked model give every run exactly what it
gets trained alone (float64 on CPU), keep their own folders, fail alone and resume exactly."""

import json

import numpy as np
import pytest
import torch

from wtc import models
from wtc.models import MODELS, SWEPT
from wtc.train import (
    BatchSampler,
    TrainConfig,
    Trainer,
    TrainingError,
    load_checkpoint,
    load_run,
    train_runs,
)

SMALL = {"grid_step": (1, 1, 2, 8, 8, 8)}  # 240 procedural dSprites images
SEEDS_STRENGTHS = [(1, 2.0), (11, 4.0), (42, 8.0)]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WTC_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def config(**kw):
    base = dict(data="dsprites-procedural", data_options=dict(SMALL), steps=20, batch_size=8,
                log_every=1, checkpoint_every=10, progress=False, device="cpu", seed=3,
                eval_samples=32, tensorboard=False, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def stack_configs(model, **kw):
    strength = SWEPT[model]
    return [config(model=model, seed=s, **{strength: v}, **kw) for s, v in SEEDS_STRENGTHS]


def read_log(path):
    out = {}
    for line in (path / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("steps_per_s")
        out[record["step"]] = record
    return out


def relative_error(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-30)) for k in b)


@pytest.mark.parametrize("name", list(MODELS))
def test_each_run_of_a_stack_is_the_run_trained_alone(tmp_path, float64, name):
    configs = stack_configs(name)
    outs = [tmp_path / f"stack{i}" for i in range(3)]
    stacked = Trainer(configs, outs)
    outcomes = stacked.run()
    assert [o["status"] for o in outcomes] == ["trained"] * 3
    for i, c in enumerate(configs):
        alone = Trainer(c, tmp_path / f"alone{i}")
        result = alone.run()
        assert relative_error(stacked.run_model(i).state_dict(), alone.model.state_dict()) < 1e-6
        log_s, log_a = read_log(outs[i]), read_log(tmp_path / f"alone{i}")
        assert sorted(log_s) == list(range(1, 21))
        for step, record in log_a.items():
            for key, value in record.items():
                assert log_s[step][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (step, key)
        assert outcomes[i]["result"]["reconstruction_error"] == pytest.approx(
            result["reconstruction_error"], rel=1e-6)
        # the run's folder is an ordinary run's: its checkpoint loads alone
        state = load_checkpoint(outs[i] / "checkpoint.pt")
        assert state["config"]["seed"] == c.seed and state["step"] == 20
        model, loaded, _ = load_run(outs[i])
        assert loaded == c
        assert relative_error(model.state_dict(), alone.model.state_dict()) < 1e-6


def test_stack_checks_its_runs(tmp_path):
    with pytest.raises(ValueError, match="differ in latent_dim"):
        Trainer([config(model="beta-vae"), config(model="beta-vae", latent_dim=4)],
                [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="share one folder"):
        Trainer([config(model="beta-vae"), config(model="beta-vae", seed=4)],
                [tmp_path / "a", tmp_path / "a"])
    with pytest.raises(ValueError, match="as many run folders as configs"):
        Trainer([config(model="beta-vae")], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="beta takes one number or 2"):
        models.build("beta-vae", runs=2, beta=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="runs must be an integer"):
        models.build("beta-vae", runs=0)


def test_strengths_are_per_run_tensors():
    model = models.build("wtc-wae", runs=3, gamma=[10.0, 20.0, 40.0])
    assert torch.equal(model.strength("gamma"), torch.tensor([10.0, 20.0, 40.0]))
    assert torch.equal(model.strength("beta"), torch.ones(3))
    assert "strength_gamma" not in model.state_dict()  # config.json holds it
    single = model.unstack(1)
    assert single.runs is None and single.strengths == {"beta": 1.0, "gamma": 20.0}


def test_a_non_finite_run_stops_alone(tmp_path, monkeypatch):
    configs = stack_configs("wtc-vae", steps=20, log_every=5, checkpoint_every=5)
    outs = [tmp_path / f"r{i}" for i in range(3)]
    trainer = Trainer(configs, outs)
    real_step, calls = Trainer.step, [0]

    def poisoned(self, x):
        calls[0] += 1
        if calls[0] == 8:  # step index 7: run 1's decoder goes NaN
            with torch.no_grad():
                self.model.decoder.net[-1].bias[1].fill_(float("nan"))
        return real_step(self, x)

    monkeypatch.setattr(Trainer, "step", poisoned)
    outcomes = trainer.run()
    assert [o["status"] for o in outcomes] == ["trained", "failed", "trained"]
    # (the NaN decoder makes the main loss NaN, and from the next step the codes and critic)
    assert "loss is nan between steps 5 and 9" in outcomes[1]["reason"]
    assert outcomes[1]["step"] == 9
    # its last good checkpoint is kept; its log stops there; no result
    assert load_checkpoint(outs[1] / "checkpoint.pt")["step"] == 5
    assert max(read_log(outs[1])) == 5
    assert not (outs[1] / "result.json").exists()
    for i in (0, 2):
        assert load_checkpoint(outs[i] / "checkpoint.pt")["step"] == 20
        assert all(np.isfinite(v) for r in read_log(outs[i]).values() for v in r.values())


def test_a_killed_stack_resumes_exactly(tmp_path, monkeypatch):
    configs = stack_configs("wtc-vae", steps=12, checkpoint_every=4)
    whole = Trainer(configs, [tmp_path / f"whole{i}" for i in range(3)])
    whole.run()
    outs = [tmp_path / f"killed{i}" for i in range(3)]
    real_step, calls = Trainer.step, [0]

    def dying(self, x):
        calls[0] += 1
        if calls[0] == 7:
            raise KeyboardInterrupt
        return real_step(self, x)

    monkeypatch.setattr(Trainer, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        Trainer(configs, outs).run()
    monkeypatch.setattr(Trainer, "step", real_step)
    assert all(load_checkpoint(o / "checkpoint.pt")["step"] == 4 for o in outs)
    resumed = Trainer(configs, outs, resume=True)
    assert resumed._start == 4
    resumed.run()
    for i in range(3):
        assert relative_error(resumed.run_model(i).state_dict(),
                              whole.run_model(i).state_dict()) == 0.0
        assert read_log(outs[i]) == read_log(tmp_path / f"whole{i}")


def test_a_stacked_run_continues_alone(tmp_path, float64):
    """A checkpoint written by a stack is an ordinary run's: resumed alone it goes on as the
    run would have gone on in the stack."""
    configs = stack_configs("wtc-wae", steps=6, checkpoint_every=3)
    whole = Trainer(configs, [tmp_path / f"w{i}" for i in range(3)])
    whole.run()
    short = [TrainConfig(**{**c.to_json(), "steps": 3}) for c in configs]
    outs = [tmp_path / f"s{i}" for i in range(3)]
    Trainer(short, outs).run()
    alone = Trainer(configs[2], outs[2], resume=True)
    alone.run()
    assert relative_error(alone.model.state_dict(), whole.run_model(2).state_dict()) < 1e-6


def test_train_runs_groups_by_resume_step_and_refuses_occupied_folders(tmp_path):
    configs = stack_configs("beta-vae", steps=4, checkpoint_every=2)
    outs = [tmp_path / f"r{i}" for i in range(3)]
    train_runs(configs[:1], outs[:1])  # run 0 is finished already
    (outs[2]).mkdir()
    (outs[2] / "checkpoint.pt").write_bytes(b"not a checkpoint")
    outcomes = train_runs(configs, outs, stack=2)
    assert outcomes[0]["status"] == "failed" and "already holds a run" in outcomes[0]["reason"]
    assert outcomes[1]["status"] == "trained"
    assert outcomes[2]["status"] == "failed" and "already holds a run" in outcomes[2]["reason"]
    more = [TrainConfig(**{**c.to_json(), "steps": 6}) for c in configs[:2]]
    outcomes = train_runs(more, outs[:2], resume=True)  # both at step 4: one stack
    assert [o["status"] for o in outcomes] == ["trained", "trained"]
    assert all(load_checkpoint(o / "checkpoint.pt")["step"] == 6 for o in outs[:2])


def test_a_stack_that_raises_fails_alone(tmp_path, monkeypatch, capsys):
    """A RuntimeError in one stack (out of GPU memory, a refused capture) fails that stack's
    runs with the reason, prints its traceback, and the next stack still trains."""
    configs = stack_configs("beta-vae", steps=2, checkpoint_every=2)[:2]
    outs = [tmp_path / f"r{i}" for i in range(2)]
    real_run = Trainer.run
    calls = {"n": 0}

    def first_stack_runs_out_of_memory(self):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(self)

    monkeypatch.setattr(Trainer, "run", first_stack_runs_out_of_memory)
    outcomes = train_runs(configs, outs, stack=1)
    assert outcomes[0]["status"] == "failed"
    assert outcomes[0]["reason"].startswith("OutOfMemoryError: CUDA out of memory")
    assert outcomes[1]["status"] == "trained"
    assert "Traceback" in capsys.readouterr().err


def test_resume_keeps_the_optimisers_own_settings(tmp_path, monkeypatch):
    """A checkpoint carries a single eager run's optimiser settings; a resumed run keeps the
    settings its trainer built (a CUDA-graph run's Adam must stay capturable and fused, or its
    capture refuses the step). On a CPU, foreach stands in for those flags."""
    import wtc.train

    out = tmp_path / "run"
    train_runs(stack_configs("wtc-vae", steps=2, checkpoint_every=2)[:1], [out])

    class ForeachOffAdam(torch.optim.Adam):
        def __init__(self, params, **kw):
            super().__init__(params, **kw, foreach=False)

    monkeypatch.setattr(wtc.train.torch.optim, "Adam", ForeachOffAdam)
    more = [TrainConfig(**{**c.to_json(), "steps": 4})
            for c in stack_configs("wtc-vae", steps=2, checkpoint_every=2)[:1]]
    trainer = Trainer(more, [out], resume=True)
    for name, opt in trainer.optimizers.items():
        assert opt.param_groups[0]["foreach"] is False, name
        assert opt.state, name  # and the state was loaded
    trainer.run()
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4


# -- the WTC authors' options (issue 18) -------------------------------------------------------

def test_tcvae_objectives_differ_by_what_the_algebra_says(float64):
    torch.manual_seed(0)
    x = torch.rand(16, 1, 64, 64)
    chen = models.build("beta-tcvae", beta=4.0, dataset_size=1000, estimator="mws")
    authors = models.build("beta-tcvae", beta=4.0, dataset_size=1000, estimator="mws",
                           tcvae_objective="authors")
    authors.load_state_dict(chen.state_dict())
    mean, logvar = chen.encoder(x)
    z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
    a, c = authors.main_terms(x, mean, logvar, z), chen.main_terms(x, mean, logvar, z)
    for key in ("reconstruction", "mi", "tc", "dim_kl"):
        torch.testing.assert_close(a[key], c[key])
    # authors: rec + KL + beta TC; chen: rec + MI + beta TC + dim-KL
    torch.testing.assert_close(a["loss"] - c["loss"], a["kl"] - c["mi"] - c["dim_kl"])
    # with the KL estimated from the same samples (= MI + TC + dim-KL), one TC term apart
    sampled_kl = (models.gaussian_log_density(z, mean, logvar).sum(-1)
                  - models.gaussian_log_density(z, 0 * z, 0 * z).sum(-1)).mean()
    torch.testing.assert_close(sampled_kl, c["mi"] + c["tc"] + c["dim_kl"])
    torch.testing.assert_close((c["loss"] - c["mi"] - c["dim_kl"] + sampled_kl) - c["loss"],
                               c["tc"])


def test_authors_estimator_drops_the_constant(float64):
    torch.manual_seed(0)
    x = torch.rand(16, 1, 64, 64)
    mws = models.build("beta-tcvae", dataset_size=1000, estimator="mws")
    own = models.build("beta-tcvae", dataset_size=1000, estimator="mws-authors")
    own.load_state_dict(mws.state_dict())
    mean, logvar = mws.encoder(x)
    z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
    a, b = own.main_terms(x, mean, logvar, z), mws.main_terms(x, mean, logvar, z)
    d, n = z.shape[1], 1000 * 16
    # log q(z) shifts by -log(N B), log prod_j q(z_j) by -d log(N B)
    torch.testing.assert_close(b["tc"], a["tc"] + (d - 1) * np.log(n))
    (ga,) = torch.autograd.grad(a["loss"], mean, retain_graph=True)
    (gb,) = torch.autograd.grad(b["loss"], mean)
    torch.testing.assert_close(ga, gb)  # the same gradient


def test_update_orders_step_what_they_should(tmp_path, monkeypatch):
    order = []
    real = torch.optim.Adam.step

    def recording(self, *a, **k):
        order.append(self.param_groups[0]["params"][0].shape)
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    for update_order in ("paper", "authors"):
        order.clear()
        trainer = Trainer(config(model="wtc-vae", steps=1, update_order=update_order),
                          tmp_path / update_order)
        critic_first = trainer.model.adversaries["critic"][0].weight.shape
        trainer.step(trainer._next_batch())
        assert order == ([critic_first, order[1]] if update_order == "paper"
                         else [order[0], critic_first])
        assert order[0] != order[1]
    # without an adversary the order changes nothing
    one = Trainer(config(model="beta-vae", steps=5), tmp_path / "p")
    two = Trainer(config(model="beta-vae", steps=5, update_order="authors"), tmp_path / "a")
    one.run(), two.run()
    assert relative_error(one.model.state_dict(), two.model.state_dict()) == 0.0


def test_authors_order_steps_main_with_the_current_critic(tmp_path, float64):
    """authors: the main loss of a step is computed with the critic before its update."""
    trainer = Trainer(config(model="wtc-vae", update_order="authors"), tmp_path / "a")
    x = trainer._next_batch()
    critic_before = {k: v.clone() for k, v in trainer.model.adversaries.state_dict().items()}
    g_state = trainer.generators[0].get_state()
    terms = trainer.step(x)
    # recompute the main loss with the critic as it was, from the same random numbers
    probe = Trainer(config(model="wtc-vae", update_order="authors"), tmp_path / "b")
    probe.model.adversaries.load_state_dict(critic_before)
    probe.generators[0].set_state(g_state)
    mean, logvar, z = probe.model.encode(x)
    again = probe.model.main_terms(x, mean, logvar, z)
    torch.testing.assert_close(terms["loss"], again["loss"].detach())


def test_each_adversary_step_sees_fresh_codes(tmp_path, monkeypatch):
    seen = []
    real = models.WTCVAE.adversary_losses

    def recording(self, z, x=None):
        seen.append(z.clone())
        return real(self, z, x)

    monkeypatch.setattr(models.WTCVAE, "adversary_losses", recording)
    trainer = Trainer(config(model="wtc-vae", adversary_steps=3), tmp_path / "r")
    trainer.step(trainer._next_batch())
    assert len(seen) == 3
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def test_split_never_shows_a_held_out_image(tmp_path):
    size = 240
    for order in ("iid", "epochs"):
        for seed in (1, 2):
            sampler = BatchSampler(size, 8, seed, split=0.9, order=order)
            held = set(sampler.held_out(size).tolist())
            assert len(held) == 24
            drawn = np.concatenate([sampler.next() for _ in range(200)])
            assert not held & set(drawn.tolist())
            if order == "epochs":  # every epoch visits each training image once (27 batches)
                epoch = drawn[:27 * 8]
                assert len(set(epoch.tolist())) == 216
        # the same split for every seed (seed 42)
    a, b = BatchSampler(size, 8, 1, split=0.9), BatchSampler(size, 8, 2, split=0.9)
    assert np.array_equal(a.train, b.train)
    # without a split, batches are the iid draws of the run's seed, as before
    rng = np.random.default_rng(5)
    plain = BatchSampler(size, 8, 5)
    assert np.array_equal(plain.next(), rng.integers(0, size, 8))


def test_epoch_order_resumes_mid_epoch(tmp_path):
    whole = BatchSampler(100, 8, 3, split=0.9, order="epochs")
    draws = [whole.next() for _ in range(30)]
    part = BatchSampler(100, 8, 3, split=0.9, order="epochs")
    for _ in range(13):
        part.next()
    state = json.loads(json.dumps(part.state()))  # what a checkpoint holds
    resumed = BatchSampler(100, 8, 3, split=0.9, order="epochs")
    resumed.load(state)
    for i in range(13, 30):
        assert np.array_equal(resumed.next(), draws[i])


def test_split_and_order_train_end_to_end(tmp_path):
    c = config(model="beta-vae", steps=4, train_split=0.9, data_order="epochs")
    result = Trainer(c, tmp_path / "r").run()
    assert np.isfinite(result["reconstruction_error"])
    with pytest.raises(ValueError, match="train_split must be in"):
        config(train_split=0.0).validate()
    with pytest.raises(ValueError, match="data_order must be one of iid, epochs"):
        config(data_order="sorted").validate()


# -- CUDA graphs (run where a GPU is present) ---------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(MODELS))
def test_graphed_stack_matches_eager(tmp_path, name, monkeypatch):
    # the same convolution algorithms in both (cuDNN's default wgrad may sum in any order)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    steps = 8
    configs = stack_configs(name, steps=steps, device="cuda")
    eager = Trainer(configs, [tmp_path / f"e{i}" for i in range(3)])
    eager.run()
    graphed = Trainer(configs, [tmp_path / f"g{i}" for i in range(3)], cuda_graph=True)
    graphed.run()
    assert graphed._graph is not None  # steps 4..8 replayed the graph
    lr = configs[0].lr
    for i in range(3):
        # every step's terms: a replay that kept a stale batch or stale random numbers would
        # compute other losses
        log_g, log_e = read_log(tmp_path / f"g{i}"), read_log(tmp_path / f"e{i}")
        assert sorted(log_g) == sorted(log_e) == list(range(1, steps + 1))
        for step in log_e:
            for term, value in log_e[step].items():
                if isinstance(value, float):
                    assert log_g[step][term] == pytest.approx(value, rel=1e-3, abs=1e-4), (
                        step, term)
        # The graph steps with fused Adam, eager with the default: the same up to rounding,
        # which Adam can turn into a step the other way for a weight whose gradient is a
        # rounding error from zero (at most 2 lr a step); the typical weight differs by rounding.
        g_state, e_state = graphed.run_model(i).state_dict(), eager.run_model(i).state_dict()
        for key, want in e_state.items():
            diff = (g_state[key].float() - want.float()).abs()
            assert diff.max() <= 2 * lr * steps, (key, diff.max())
            assert diff.median() <= 1e-5, (key, diff.median())


def test_cuda_graph_needs_cuda(tmp_path):
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        Trainer(config(model="beta-vae"), tmp_path / "r", cuda_graph=True)
    # before any step: a graph replays one adversary step on the codes of its captured batch
    with pytest.raises(ValueError, match="cuda_graph takes adversary_steps 1.*got 2"):
        Trainer(config(model="wtc-vae", adversary_steps=2), tmp_path / "s", cuda_graph=True)


def test_trainer_refuses_a_failed_resume_of_a_mixed_stack(tmp_path):
    configs = stack_configs("beta-vae", steps=4, checkpoint_every=2)
    outs = [tmp_path / f"r{i}" for i in range(2)]
    Trainer(configs[:1], outs[:1]).run()
    with pytest.raises(TrainingError, match="must resume from the same step"):
        Trainer(configs[:2], outs, resume=True)
