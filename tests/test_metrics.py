"""The standard metrics: hand-built cases with known answers, invariances, and agreement with
straightforward re-derivations of disentanglement_lib's definitions."""

import itertools

import numpy as np
import pytest
import sklearn.metrics
import torch
from wtc.data.base import GroundTruthDataset
from wtc.metrics import (
    beta_vae_score,
    dci,
    factor_vae_score,
    mig,
    modularity_explicitness,
    sap,
)
from wtc.metrics._utils import discretize, mutual_information
from wtc.metrics.dci import (
    completeness_from_importance,
    disentanglement_from_importance,
)
from wtc.metrics.modularity import modularity_score

SIZES = (3, 4, 5)


def full_grid(repeats=4, sizes=SIZES):
    grid = np.array(list(itertools.product(*[range(s) for s in sizes])))
    return np.tile(grid, (repeats, 1))


def random_rotation(d, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_mutual_information_equals_sklearn():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 7, size=(500, 3))
    b = np.stack([a[:, 0] // 2, rng.integers(0, 4, 500)], 1)
    m = mutual_information(a, b)
    for i in range(3):
        for j in range(2):
            assert m[i, j] == pytest.approx(sklearn.metrics.mutual_info_score(a[:, i], b[:, j]),
                                            abs=1e-12)


def test_discretisation_is_dlibs():
    z = np.stack([np.linspace(0, 1, 101), np.full(101, 3.0)], 1)
    bins = discretize(z, 20)
    assert bins[:, 0].min() == 1 and bins[-1, 0] == 20  # the max lands in the last bin
    assert (bins[:, 1] == 11).all()  # a constant dim lands in bin 11
    expected = np.digitize(z[:, 0], np.histogram(z[:, 0], 20)[1][:-1])
    assert np.array_equal(bins[:, 0], expected)


def test_mig_perfect_rotated_and_noise():
    y = full_grid()
    assert mig(y.astype(float), y).score == pytest.approx(1.0)
    rotated = y.astype(float) @ random_rotation(3)
    assert mig(rotated, y).score < 0.6
    noise = np.random.default_rng(1).normal(size=(len(y), 3))
    assert mig(noise, y).score < 0.1


def test_mig_definition_by_hand():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, size=(400, 2))
    z = np.stack([y[:, 0] + rng.normal(0, 0.3, 400), rng.normal(size=400),
                  y[:, 1] * 0.5 + rng.normal(0, 0.5, 400)], 1)
    bins = np.stack([np.digitize(z[:, j], np.histogram(z[:, j], 20)[1][:-1]) for j in range(3)], 1)
    gaps = []
    for k in range(2):
        m = sorted((sklearn.metrics.mutual_info_score(y[:, k], bins[:, j]) for j in range(3)),
                   reverse=True)
        gaps.append((m[0] - m[1]) / sklearn.metrics.mutual_info_score(y[:, k], y[:, k]))
    assert mig(z, y).score == pytest.approx(np.mean(gaps), abs=1e-12)


def test_mig_invariances_and_undefined_factor():
    rng = np.random.default_rng(3)
    y = full_grid()
    z = y + rng.normal(0, 0.2, y.shape)
    base = mig(z, y).score
    assert mig(z[:, [2, 0, 1]], y).score == pytest.approx(base)
    assert mig(z * np.array([3.0, 0.1, 7.0]) + 5, y).score == pytest.approx(base)
    y1 = np.concatenate([y, np.zeros((len(y), 1), int)], 1)
    result = mig(np.concatenate([z, rng.normal(size=(len(z), 1))], 1), y1)
    assert np.isnan(result.per_factor[3])
    assert result.score == pytest.approx(np.nanmean(result.per_factor))


def test_modularity_hand_case_and_perfect_codes():
    mi = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    # code 0: delta 0 -> 1; code 1: (0.5 - 0.25) / (0.25 * 2) = 0.5 -> 0.5; code 2: collapsed -> 0
    assert np.allclose(modularity_score(mi), [1.0, 0.5, 0.0])
    y = full_grid()
    result = modularity_explicitness(y.astype(float), y, y.astype(float), y)
    assert result.modularity == pytest.approx(1.0)
    assert result.explicitness_test > 0.9
    noise = np.random.default_rng(4).normal(size=(len(y), 3))
    assert modularity_explicitness(noise, y, noise, y).explicitness_test < 0.75


def test_modularity_tolerates_a_constant_code_dim():
    y = full_grid()
    z = np.concatenate([y.astype(float), np.zeros((len(y), 1))], 1)
    result = modularity_explicitness(z, y, z, y)
    assert result.per_code_modularity[3] == 0.0 and np.isfinite(result.explicitness_test)


def test_dci_from_importance_by_hand_and_on_codes():
    assert disentanglement_from_importance(np.eye(3)) == pytest.approx(1.0)
    assert completeness_from_importance(np.eye(3)) == pytest.approx(1.0)
    assert disentanglement_from_importance(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-9)
    assert disentanglement_from_importance(np.zeros((3, 3))) == 0.0
    y = full_grid(repeats=2)
    result = dci(y.astype(float), y, y.astype(float), y)
    assert result.disentanglement > 0.99 and result.completeness > 0.99
    assert result.informativeness_test == pytest.approx(1.0)
    assert dci(y.astype(float)[:, [1, 2, 0]], y, y.astype(float)[:, [1, 2, 0]], y
               ).disentanglement == pytest.approx(result.disentanglement, abs=1e-6)


def test_sap_perfect_and_noise():
    y = full_grid()
    perfect = sap(y.astype(float), y, y.astype(float), y)
    # A linear SVC on one dim separates few classes (the reference's estimator): each factor's
    # best dim is still its own code, by a margin.
    assert np.array_equal(perfect.score_matrix.argmax(axis=0), [0, 1, 2])
    assert perfect.score > 0.3
    noise = np.random.default_rng(5).normal(size=(len(y), 3))
    assert sap(noise, y, noise, y).score < 0.15
    continuous = sap(y.astype(float), y, continuous_factors=True)
    assert continuous.score == pytest.approx(1.0)


class FactorObservations(GroundTruthDataset):
    """A data set whose 'observations' are its factor classes (as floats)."""

    name = "factors"
    factor_names = ("a", "b", "c", "d")
    factor_sizes = (3, 5, 8, 10)

    def sample_observations_from_factors(self, factors, rng=None):
        return torch.as_tensor(self.check_factors(factors), dtype=torch.float64)


@pytest.mark.parametrize("balanced", [False, True])
def test_factor_vae_score_known_answers(balanced):
    ds = FactorObservations()
    kw = dict(num_train=400, num_eval=200, num_variance_estimate=1000, balanced_votes=balanced)
    perfect = factor_vae_score(ds, lambda x: x, **kw)
    assert perfect.eval_accuracy == 1.0 and perfect.train_accuracy == 1.0
    assert perfect.num_active_dims == 4
    permuted = factor_vae_score(ds, lambda x: x[:, [3, 1, 0, 2]], **kw)
    assert permuted.eval_accuracy == 1.0
    rng = np.random.default_rng(6)
    noise = factor_vae_score(ds, lambda x: torch.from_numpy(rng.normal(size=tuple(x.shape))), **kw)
    assert noise.eval_accuracy < 0.45  # chance is 1/4
    collapsed = factor_vae_score(ds, lambda x: torch.zeros_like(x), **kw)
    assert collapsed == (0.0, 0.0, 0)


def test_beta_vae_score_known_answers():
    ds = FactorObservations()
    kw = dict(num_train=200, num_eval=100, batch_size=16)
    assert beta_vae_score(ds, lambda x: x, **kw).eval_accuracy == 1.0
    rng = np.random.default_rng(7)
    noise = beta_vae_score(ds, lambda x: torch.from_numpy(rng.normal(size=tuple(x.shape))), **kw)
    assert noise.eval_accuracy < 0.5


def test_bad_inputs():
    y = full_grid()
    z = y.astype(float)
    z[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mig(z, y)
    with pytest.raises(ValueError, match="N = "):
        mig(y[:-1].astype(float), y)
    with pytest.raises(ValueError, match="integer"):
        mig(y.astype(float), y.astype(float))


def test_evaluate_and_wtc_eval(tmp_path, monkeypatch, capsys):
    import json

    from wtc.cli import main as wtc_main
    from wtc.metrics import evaluate
    from wtc.train import TrainConfig, load_run, train

    monkeypatch.setenv("WTC_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    train(TrainConfig(model="beta-vae", data="dsprites-procedural",
                      data_options={"grid_step": (1, 1, 2, 8, 4, 4)}, steps=5, batch_size=8,
                      progress=False, device="cpu", eval_samples=32), run)
    model, _, dataset = load_run(run, device="cpu")
    result = evaluate(model, dataset, metrics=["mig", "wdg", "factor_vae", "reconstruction"],
                      protocol="paper", repeats=2, scale=0.02)
    assert result["seeds"] == [0, 73] and set(result["metrics"]) == {
        "mig", "wdg", "factor_vae", "reconstruction"}
    assert all(len(v["values"]) == 2 for v in result["metrics"].values())
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate(model, dataset, metrics=["fid"])
    assert wtc_main(["eval", str(run), "--metrics", "mig", "sap", "--protocol", "dlib",
                     "--scale", "0.02", "--device", "cpu"]) == 0
    saved = json.loads((run / "eval.json").read_text())
    assert saved["protocol"] == "dlib" and "scikit-learn" in saved["versions"]
    assert saved["seeds"] == [0]
    assert "mig" in capsys.readouterr().out
    # each protocol's default first seed: the authors' evaluate.py starts at 1
    assert wtc_main(["eval", str(run), "--metrics", "mig", "--protocol", "authors",
                     "--repeats", "2", "--device", "cpu", "--quiet"]) == 0
    assert json.loads((run / "eval.json").read_text())["seeds"] == [1, 74]
    assert wtc_main(["eval", str(run), "--metrics", "mig", "--protocol", "authors",
                     "--repeats", "2", "--seed", "5", "--device", "cpu", "--quiet"]) == 0
    assert json.loads((run / "eval.json").read_text())["seeds"] == [5, 78]


def test_modularity_matches_a_rederivation():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 5, size=(600, 3))
    z = np.stack([y[:, 0] + rng.normal(0, 0.5, 600), y[:, 1] + y[:, 2] * 0.5,
                  rng.normal(size=600), np.zeros(600)], 1)
    bins = discretize(z)
    expected = []
    for i in range(z.shape[1]):
        m2 = np.array([sklearn.metrics.mutual_info_score(y[:, k], bins[:, i]) for k in range(3)]) ** 2
        theta = m2.max()
        expected.append(0.0 if theta == 0 else 1 - (m2.sum() - theta) / (theta * 2))
    result = modularity_explicitness(z, y, z, y)
    assert result.modularity == pytest.approx(np.mean(expected), abs=1e-12)


def test_dci_scores_match_a_rederivation():
    rng = np.random.default_rng(9)
    R = rng.random((5, 3)) ** 3
    p_codes = R / R.sum(1, keepdims=True)
    h_codes = -(p_codes * np.log(p_codes + 1e-300)).sum(1) / np.log(3)
    d_expected = np.sum((1 - h_codes) * R.sum(1) / R.sum())
    p_factors = R / R.sum(0, keepdims=True)
    h_factors = -(p_factors * np.log(p_factors + 1e-300)).sum(0) / np.log(5)
    c_expected = np.sum((1 - h_factors) * R.sum(0) / R.sum())
    assert disentanglement_from_importance(R) == pytest.approx(d_expected, abs=1e-8)
    assert completeness_from_importance(R) == pytest.approx(c_expected, abs=1e-8)


def test_sap_matches_a_rederivation():
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(10)
    y = rng.integers(0, 2, size=(300, 2))
    z = np.stack([y[:, 0] + rng.normal(0, 0.4, 300), y[:, 1] * 2 + rng.normal(0, 0.4, 300),
                  rng.normal(size=300)], 1)
    S = np.array([[np.mean(LinearSVC(C=0.01, class_weight="balanced").fit(z[:200, i:i + 1],
                                                                           y[:200, k])
                           .predict(z[200:, i:i + 1]) == y[200:, k]) for k in range(2)]
                  for i in range(3)])
    top = np.sort(S, axis=0)[::-1]
    result = sap(z[:200], y[:200], z[200:], y[200:])
    assert np.allclose(result.score_matrix, S)
    assert result.score == pytest.approx(np.mean(top[0] - top[1]))


# -- disentanglement_lib's draws ----------------------------------------------------------------
# Transcriptions of disentanglement_lib's loops (evaluation/metrics/factor_vae.py, beta_vae.py,
# utils.generate_batch_factor_code): one RandomState, one vote or batch at a time.

def _dlib_sample_factors(ds, n, rs):
    return np.stack([rs.randint(size, size=n) for size in ds.factor_sizes], axis=1)


def _dlib_factor_vae(ds, represent, rs, batch_size, num_train, num_eval, num_variance):
    obs = ds.sample_observations_from_factors(_dlib_sample_factors(ds, num_variance, rs))
    variances = np.var(np.asarray(represent(obs)), axis=0, ddof=1)
    active = np.sqrt(variances) >= 0.05

    def votes(n):
        out = np.zeros((ds.num_factors, len(variances)), dtype=np.int64)
        for _ in range(n):
            k = rs.randint(ds.num_factors)
            f = _dlib_sample_factors(ds, batch_size, rs)
            f[:, k] = f[0, k]
            local = np.var(np.asarray(represent(ds.sample_observations_from_factors(f))),
                           axis=0, ddof=1)
            out[k, np.argmin(local[active] / variances[active])] += 1
        return out

    train = votes(num_train)
    classifier = np.argmax(train, axis=0)
    cols = np.arange(train.shape[1])
    train_acc = train[classifier, cols].sum() / train.sum()
    ev = votes(num_eval)
    return train_acc, ev[classifier, cols].sum() / ev.sum()


def _dlib_beta_vae_points(ds, represent, rs, batch_size, n):
    points, labels = [], []
    for _ in range(n):
        k = rs.randint(ds.num_factors)
        f1 = _dlib_sample_factors(ds, batch_size, rs)
        f2 = _dlib_sample_factors(ds, batch_size, rs)
        f2[:, k] = f1[:, k]
        z1 = np.asarray(represent(ds.sample_observations_from_factors(f1)))
        z2 = np.asarray(represent(ds.sample_observations_from_factors(f2)))
        points.append(np.mean(np.abs(z1 - z2), axis=0))
        labels.append(k)
    return np.array(points), np.array(labels)


def _entangled(x):
    # A fixed, deterministic, partly entangled code (float32, like a network's).
    x = torch.as_tensor(x, dtype=torch.float64)
    mix = torch.tensor([[1.0, 0.3, 0.0, 0.1], [0.2, 1.0, 0.4, 0.0], [0.0, 0.5, 1.0, 0.6],
                        [0.7, 0.0, 0.2, 1.0], [0.3, 0.3, 0.3, 0.3]], dtype=torch.float64).T
    return torch.sin(x @ mix).float()


def test_factor_vae_score_with_dlib_sampling_is_dlibs():
    ds = FactorObservations()
    ours = factor_vae_score(ds, _entangled, batch_size=16, num_train=300, num_eval=150,
                            num_variance_estimate=500, seed=3, sampling="dlib")
    train, ev = _dlib_factor_vae(ds, _entangled, np.random.RandomState(3), 16, 300, 150, 500)
    assert 0.3 < ev < 1.0  # a case where the votes disagree
    assert ours.train_accuracy == pytest.approx(train, abs=1e-15)
    assert ours.eval_accuracy == pytest.approx(ev, abs=1e-15)
    with pytest.raises(ValueError, match="balanced_votes"):
        factor_vae_score(ds, _entangled, balanced_votes=True, sampling="dlib")
    with pytest.raises(ValueError, match="sampling"):
        factor_vae_score(ds, _entangled, sampling="tf")


def test_beta_vae_score_with_dlib_sampling_is_dlibs():
    from sklearn.linear_model import LogisticRegression

    ds = FactorObservations()
    ours = beta_vae_score(ds, _entangled, batch_size=8, num_train=120, num_eval=60, seed=4,
                          sampling="dlib")
    rs = np.random.RandomState(4)
    xtr, ytr = _dlib_beta_vae_points(ds, _entangled, rs, 8, 120)
    model = LogisticRegression(random_state=4, max_iter=1000).fit(xtr, ytr)
    xte, yte = _dlib_beta_vae_points(ds, _entangled, rs, 8, 60)
    assert ours.train_accuracy == model.score(xtr, ytr)
    assert ours.eval_accuracy == model.score(xte, yte)


def test_dlib_code_samples_are_generate_batch_factor_code():
    from wtc.metrics.sampling import dlib_factor_batches

    ds = FactorObservations()
    rs = np.random.RandomState(0)
    train = dlib_factor_batches(ds, 100, rs)
    test = dlib_factor_batches(ds, 37, rs)
    ref = np.random.RandomState(0)
    expected = [np.concatenate([_dlib_sample_factors(ds, min(16, n - i), ref)
                                for i in range(0, n, 16)]) for n in (100, 37)]
    assert np.array_equal(train, expected[0]) and np.array_equal(test, expected[1])


def test_mig_bins_float32_codes_in_float32():
    # A value that sits on a float32 histogram edge but not on the float64 one: binning in the
    # codes' precision (as disentanglement_lib does) decides its bin.
    rng = np.random.default_rng(8)
    # every float32 edge of [0, 1] is a value, in both columns: several land on float32 edges
    # that lie off the float64 ones
    edges = np.histogram(np.array([0, 1], dtype=np.float32), 20)[1]
    col = np.concatenate([edges, rng.random(200).astype(np.float32)])
    z = np.stack([col, rng.permutation(col)], 1)
    y = rng.integers(0, 4, size=(len(z), 2))

    def bins_of(codes):
        return np.stack([np.digitize(codes[:, j], np.histogram(codes[:, j], 20)[1][:-1])
                         for j in range(2)], 1)

    bins = bins_of(z)
    assert not np.array_equal(bins, bins_of(z.astype(np.float64)))  # the case is a real one
    assert np.array_equal(discretize(z), bins)
    from wtc.metrics._utils import as_codes

    assert as_codes(z).dtype == np.float32 and as_codes(z.astype(int)).dtype == np.float64
    expected = np.array([[sklearn.metrics.mutual_info_score(y[:, k], bins[:, j])
                          for k in range(2)] for j in range(2)])
    np.testing.assert_allclose(mig(z, y).mutual_information, expected, rtol=1e-12)


@pytest.mark.parametrize("where", ["variance", "votes"])
def test_factor_vae_score_rejects_non_finite_codes(where):
    ds = FactorObservations()
    calls = []

    def represent(x):
        calls.append(len(x))
        z = x.clone()
        # the first call embeds the variance sample; later calls the votes
        if (where == "variance") == (len(calls) == 1):
            z[5, 1] = float("nan") if where == "variance" else float("inf")
        return z

    with pytest.raises(ValueError, match="NaN or infinite codes"):
        factor_vae_score(ds, represent, num_train=50, num_eval=20, num_variance_estimate=300)


@pytest.mark.parametrize("protocol", ["paper", "dlib"])
def test_one_repeat_is_the_metrics_on_the_protocols_draws(protocol):
    from wtc.metrics import modularity, wdg
    from wtc.metrics.evaluate import one_repeat, protocol_settings
    from wtc.metrics.sampling import dlib_factor_batches

    ds = FactorObservations()
    _, n = protocol_settings(protocol, scale=0.05)
    got = one_repeat(ds, _entangled, ["mig", "modularity", "wdg", "sap"], n, protocol, seed=5)
    if protocol == "paper":
        rng = np.random.default_rng(5)
        ytr, yte = ds.sample_factors(n["num_train"], rng), ds.sample_factors(n["num_test"], rng)
    else:
        rs = np.random.RandomState(5)
        ytr = dlib_factor_batches(ds, n["num_train"], rs)
        yte = dlib_factor_batches(ds, n["num_test"], rs)
    ztr, zte = _entangled(ytr).numpy(), _entangled(yte).numpy()
    assert got["mig"] == mig(ztr, ytr).score
    assert got["modularity"] == pytest.approx(modularity(ztr, ytr), abs=1e-15)
    assert got["wdg"] == wdg(ztr, ytr, seed=5).score
    assert got["sap"] == sap(ztr, ytr, zte, yte).score
