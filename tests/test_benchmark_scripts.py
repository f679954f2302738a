"""The benchmark scripts' arithmetic: benchmarks/run.py's ratios and benchmarks/study_time.py's
projection of a preset's wall time from runs-per-hour records."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def bench(size, impl, median, device="cpu", op="runs per hour"):
    return {"extra_info": {"op": op, "device": device, "size": size, "impl": impl},
            "stats": {"median": median}}


def test_ratios_compare_each_of_ours_with_each_baseline():
    run = load("run")
    rows = run.ratios({"benchmarks": [bench("m R=5", "wtc_ext", 2.0, "cuda"),
                                      bench("m R=5", "graphed", 0.5, "cuda"),
                                      bench("m R=5", "sequential", 10.0, "cuda"),
                                      bench("(64, 10)", "wtc_ext", 1.0, op="permute_dims")]})
    got = {(r["op"], r["impl"], r["baseline"]): r["speedup"] for r in rows}
    # the graph is one of ours, compared with the sequential runs, not a baseline of the eager stack
    assert got == {("runs per hour", "wtc_ext", "sequential"): 5.0,
                   ("runs per hour", "graphed", "sequential"): 20.0,
                   ("permute_dims", "wtc_ext", None): None}


def test_run_writes_what_finished_when_a_benchmark_fails(tmp_path, monkeypatch):
    """A failed or cut benchmark (gpu_check.sh stops a stage at its time limit with SIGINT)
    leaves the ones that finished: run.py writes them, marks the record incomplete and returns
    pytest's exit code. Without any result it writes nothing."""
    import pytest as real_pytest

    run = load("run")

    def interrupted(args):  # pytest-benchmark writes its JSON at the end of any session
        raw = next(a.split("=", 1)[1] for a in args if a.startswith("--benchmark-json="))
        Path(raw).write_text(json.dumps({"benchmarks": [bench("(64, 10)", "wtc_ext", 1.0,
                                                                op="permute_dims")]}))
        return 2  # interrupted

    monkeypatch.setattr(real_pytest, "main", interrupted)
    assert run.main(["--out", str(tmp_path), "-k", "permute"]) == 2
    (written,) = tmp_path.glob("*.json")
    rec = json.loads(written.read_text())
    assert "exit code 2" in rec["incomplete"] and rec["ratios"][0]["op"] == "permute_dims"

    monkeypatch.setattr(real_pytest, "main", lambda args: 1)
    assert run.main(["--out", str(tmp_path / "none")]) == 1
    assert not (tmp_path / "none").exists()


def record(path, device="cpu", graphed=False):
    """A record in which every model steps R stacked runs in 0.1 + 0.02 (R - 1) s (0.1, 0.18,
    0.48 s at R = 1, 5, 20), R runs alone in 0.1 R s, and a graph in half the eager time."""
    import wtc.models

    benches = []
    for model in wtc.models.MODELS:
        for runs in (1, 5, 20):
            stacked = 0.1 + 0.02 * (runs - 1)
            benches += [bench(f"{model} R={runs}", "wtc_ext", stacked, device),
                        bench(f"{model} R={runs}", "sequential", 0.1 * runs, device)]
            if graphed:
                benches.append(bench(f"{model} R={runs}", "graphed", stacked / 2, device))
    run = load("run")
    path.write_text(json.dumps({"machine": {"cpu": "test"},
                                "ratios": run.ratios({"benchmarks": benches})}))
    return path


def test_study_time_projects_the_sweeps_stacks(tmp_path, capsys):
    study_time = load("study_time")
    # mini: 6 models x 2 strengths x 2 seeds = 24 runs of 800 steps, cells of 4 runs
    assert study_time.main([str(record(tmp_path / "cpu.json")), "--preset", "mini",
                            "--json", str(tmp_path / "p.json")]) == 0
    cpu = json.loads((tmp_path / "p.json").read_text())
    assert (cpu["runs"], cpu["stack"], cpu["stacks"]) == (24, 1, 24)  # a CPU stacks nothing
    assert cpu["hours"]["alone"] == pytest.approx(24 * 800 * 0.1 / 3600)
    assert cpu["hours"]["stacked"] == pytest.approx(24 * 800 * 0.1 / 3600)
    assert "graphed" not in cpu["hours"]

    assert study_time.main([str(record(tmp_path / "cuda.json", "cuda", graphed=True)),
                            "--preset", "mini", "--stack", "3", "--eval-seconds", "60",
                            "--json", str(tmp_path / "q.json")]) == 0
    cuda = json.loads((tmp_path / "q.json").read_text())
    # each cell of 4 runs is a stack of 3 and one of 1; 3 runs step in 0.14 s (between R = 1, 5)
    assert (cuda["device"], cuda["stacks"]) == ("cuda", 12)
    evaluation = 24 * 60
    assert cuda["hours"]["alone"] == pytest.approx((24 * 800 * 0.1 + evaluation) / 3600)
    assert cuda["hours"]["stacked"] == pytest.approx((6 * 800 * (0.14 + 0.1) + evaluation) / 3600)
    assert cuda["hours"]["graphed"] == pytest.approx((6 * 800 * (0.07 + 0.05) + evaluation)
                                                     / 3600)
    assert "mini: 24 runs x 800 steps on one cuda, 12 stacks of at most 3" in capsys.readouterr().out


def test_study_time_extrapolates_past_the_largest_measured_stack():
    study_time = load("study_time")
    measured = {1: 0.1, 5: 0.18, 20: 0.48}
    assert study_time.stack_step_seconds(measured, 30) == pytest.approx(0.68)
    assert study_time.stack_step_seconds(measured, 12) == pytest.approx(0.32)
    assert study_time.stack_step_seconds({4: 0.2}, 2) == pytest.approx(0.1)


def test_study_time_refuses_records_without_the_benchmark(tmp_path, capsys):
    study_time = load("study_time")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"ratios": [{"op": "permute_dims", "device": "cpu",
                                             "size": "(64, 10)", "baseline": None,
                                             "wtc_ext_median_s": 1.0,
                                             "baseline_median_s": None, "speedup": None}]}))
    with pytest.raises(SystemExit):
        study_time.main([str(other)])
    assert "the records hold no runs-per-hour benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study_time.main([str(record(tmp_path / "cpu.json")), "--device", "cuda"])
    assert "the records have no cuda measurements (they have: cpu)" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_study_runs_end_to_end_on_a_cpu(tmp_path):
    """The script a first GPU session runs, in its CPU smoke-test form: warm-up, plan, stacked
    training, evaluation and report (about a minute)."""
    import os
    import subprocess

    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "WTC_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_study.py"), str(out), "--device", "cpu", "--quick",
         "--warmup-steps", "6", "--min-steps", "12", "--budget", "60", "--seeds", "1", "2",
         "--models", "wtc-vae", "--eval-jobs", "2", "--work", str(work)],
        capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stderr, done.stderr
    study = json.loads((out / "study.json").read_text())
    assert study["steps"] == 12 and study["plan"]["steps"] == 12 and not study["train_failures"]
    assert study["sweep"] == {"finished": 4, "done_before": 0, "failed": {}}
    assert (out / "report" / "table1.md").exists()
    results = sorted(out.glob("runs/**/result.json"))
    assert len(results) == 4  # wtc-vae: 2 strengths x 2 seeds, each its own run folder
    for path in results:
        assert json.loads(path.read_text())["steps"] == 12


def test_paired_training_step_runs_both_sides(tmp_path, monkeypatch):
    """benchmarks/paired_training_step.py (gpu_check.sh's paired stage) times a training step
    with the ops of wtc_ext against the same step with their pure-PyTorch stand-ins patched in
    where the models call them: each side's steps call their own critic loss, as often."""
    monkeypatch.setenv("WTC_CACHE", str(tmp_path / "cache"))
    paired = load("paired_training_step")  # (puts benchmarks/ on sys.path)
    import test_bench_train
    import wtc_ext

    calls = {"wtc_ext": 0, "pure": 0}

    def counting(name, fn):
        def wrapper(*args, **kw):
            calls[name] += 1
            return fn(*args, **kw)
        return wrapper

    monkeypatch.setattr(wtc_ext, "critic_loss", counting("wtc_ext", wtc_ext.critic_loss))
    pure = test_bench_train.PURE_PYTORCH_OPS
    monkeypatch.setattr(pure, "critic_loss", counting("pure", pure.critic_loss))
    row = paired.measure("wtc-vae", "cpu", pairs=2, warmup=1)
    assert calls["wtc_ext"] > 0 and calls["pure"] == calls["wtc_ext"], calls
    assert row["wtc_median_ms"] > 0 and row["pure_median_ms"] > 0 and len(row["pure_ms"]) == 2


def test_fused_adam_drift_reports_each_term(tmp_path, monkeypatch, capsys):
    """benchmarks/fused_adam_drift.py: each logged term's largest difference between fused and
    default Adam, against test_graphed_stack_matches_eager's allowance."""
    monkeypatch.setenv("WTC_CACHE", str(tmp_path / "cache"))
    drift = load("fused_adam_drift")
    worst = drift.drift("wtc-vae", "cpu", steps=2)
    assert {"loss", "reconstruction", "critic_loss", "wtc"} <= set(worst)
    assert all(d >= 0 and 0 <= ratio < 1 for d, ratio in worst.values()), worst
    assert drift.main(["--device", "cpu", "--steps", "2", "--models", "beta-vae"]) == 0
    assert "tightest:" in capsys.readouterr().out
