"""Executors: the one job (lock, train/resume, evaluate, job.json), submitit's pickled-job path
run by its local executor (requeue on a preemption signal, resubmit after SIGKILL), a local Ray
cluster (a task whose worker dies is retried), resubmission that never submits a run twice,
and [executor] tables checked before anything is submitted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from wtc.experiments.executors import (
    LocalExecutor,
    RayExecutor,
    SlurmExecutor,
    make_executor,
    parse_executor,
    run_status,
    runs_to_submit,
    slurm_minutes,
    status_table,
)
from wtc.experiments.jobs import (
    FORMAT,
    RunLock,
    can_stack,
    expected_evaluation,
    group_runs,
    lock_held,
    read_config,
    read_job,
    run_group,
    run_job,
    update_job,
)
from wtc.experiments.spec import SpecError
from wtc.runfiles import CHECKPOINT, EVAL, LOG, RESULT, write_json_atomic
from wtc.train import TrainConfig

EVALUATION = {"protocol": "paper", "metrics": ["factor_vae", "mig"], "repeats": 1,
              "sizes": {"num_train": 600, "num_test": 200, "votes_train": 20, "votes_eval": 10,
                        "variance_samples": 600}}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def child_env(monkeypatch):
    # Jobs are new processes (submitit's controller, Ray's workers): they must import these
    # sources and use one thread each on this small machine.
    paths = [str(REPO), str(REPO / "python")]
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths + ([old] if old else [])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")


def make_run(root: Path, name: str, seed: int = 0, steps: int = 30, **extra) -> Path:
    """A run folder with its config.json, as the sweep writes it."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = TrainConfig(model="beta-vae", data="dsprites-procedural", data_options={"grid_step": 4},
                         steps=steps, batch_size=16, checkpoint_every=10, log_every=10,
                         eval_samples=64, progress=False, tensorboard=False, seed=seed,
                         device="cpu", **extra)
    write_json_atomic(config.to_json(), run_dir / "config.json")
    return run_dir


def logged_steps(run_dir: Path) -> list:
    return [json.loads(line)["step"] for line in (run_dir / LOG).read_text().splitlines()]


def final_parameters(run_dir: Path) -> dict:
    return torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)["model"]


def assert_same_parameters(a: Path, b: Path) -> None:
    pa, pb = final_parameters(a), final_parameters(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        assert torch.equal(pa[key], pb[key]), key


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def running_pid(run_dir: Path):
    record = read_job(run_dir) or {}
    return record.get("pid") if record.get("state") == "running" else None


# -- the lock ---------------------------------------------------------------------------------

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def test_a_run_locked_by_another_process_is_never_worked_on(tmp_path):
    run_dir = make_run(tmp_path, "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_held(run_dir)
        out = run_job(run_dir, EVALUATION, wait=0.5)
        assert out["outcome"] == "busy" and "already being worked on" in out["reason"]
        assert read_job(run_dir) is None and not (run_dir / LOG).exists()  # nothing touched
        assert runs_to_submit([run_dir], EVALUATION) == []
        assert run_status(run_dir)["state"] == "running"
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock, nothing is left stale
        holder.wait()
    assert not lock_held(run_dir)
    with RunLock(run_dir):  # and this process can take it
        probe = subprocess.run([sys.executable, "-c",
                                "import sys; from wtc.experiments.jobs import RunLock; "
                                "sys.exit(0 if RunLock(sys.argv[1]).try_acquire() else 3)",
                                str(run_dir)])
        assert probe.returncode == 3  # a second process cannot, while this one holds it


# -- submitit: the same pickled jobs as Slurm, run as local processes --------------------------

@pytest.mark.slow
def test_submitit_local_sweep_trains_and_evaluates_every_run_once(tmp_path):
    runs = [make_run(tmp_path / "sweep", f"seed={s}", seed=s) for s in (1, 2, 3)]
    executor = SlurmExecutor(tmp_path / "submitit", cluster="local", time="00:10:00")
    ids = executor.submit([runs[:2], runs[2]], EVALUATION)  # a stack of two and a lone run
    assert len(set(ids)) == 2
    # while they are pending or running, a resubmit finds nothing to submit
    assert runs_to_submit(runs, EVALUATION) == []
    assert [read_job(r)["job_id"] for r in runs] == [ids[0], ids[0], ids[1]]
    outcomes = executor.wait(timeout=300)
    for run_dir in runs:
        out = outcomes[str(run_dir)]
        assert isinstance(out, dict), out
        assert out["outcome"] == "evaluated" and out["trained"] and out["evaluated"]
        assert logged_steps(run_dir) == [10, 20, 30]  # trained exactly once
        record = read_job(run_dir)
        assert record["state"] == "evaluated" and record["attempt"] == 1
        assert record["executor"] == "submitit-local" and record["pid"] != os.getpid()
        assert json.loads((run_dir / RESULT).read_text())["steps"] == 30
    assert [read_job(r)["stack"] for r in runs] == [2, 2, 1]
    assert runs_to_submit(runs, EVALUATION) == []
    status = status_table(tmp_path / "sweep", EVALUATION)
    assert status["counts"] == {"evaluated": 3} and status["seconds_per_run"] > 0
    # the job itself skips finished work
    again = run_job(runs[0], EVALUATION)
    assert again["outcome"] == "evaluated" and not again["trained"] and not again["evaluated"]
    assert logged_steps(runs[0]) == [10, 20, 30]


@pytest.mark.slow
def test_preempted_and_killed_jobs_resume_to_an_uninterrupted_runs_parameters(tmp_path,
                                                                              monkeypatch):
    # SIGTERM as the preemption signal (Slurm's is USR2 by default; sites may use TERM)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "TERM")
    sweep = tmp_path / "sweep"
    reference, preempted, killed = (make_run(sweep, name, seed=5, steps=40)
                                    for name in ("reference", "preempted", "killed"))
    executor = SlurmExecutor(tmp_path / "submitit", cluster="local", time="00:10:00")
    executor.submit([reference, preempted, killed], EVALUATION)
    for run_dir in (preempted, killed):
        wait_for(lambda: (run_dir / CHECKPOINT).exists() and running_pid(run_dir), 300,
                 f"a checkpoint of {run_dir.name}")
    first = {r: running_pid(r) for r in (preempted, killed)}
    os.kill(first[preempted], signal.SIGTERM)  # checkpoint() -> requeue
    os.kill(first[killed], signal.SIGKILL)  # no word: the resubmit must notice
    outcomes = executor.wait(timeout=300)
    assert outcomes[str(reference)]["outcome"] == "evaluated"
    assert outcomes[str(preempted)]["outcome"] == "evaluated"
    record = read_job(preempted)
    assert record["attempt"] == 2 and record["state"] == "evaluated"
    assert record["resumed_from"] >= 10  # from its checkpoint, not from scratch
    assert isinstance(outcomes[str(killed)], Exception)
    assert read_job(killed)["state"] == "running"  # what it said before it died
    assert run_status(killed, EVALUATION)["state"] == "interrupted"
    assert runs_to_submit([reference, preempted, killed], EVALUATION) == [killed]
    again = SlurmExecutor(tmp_path / "submitit", cluster="local", time="00:10:00")
    again.submit([killed], EVALUATION)
    assert again.wait(timeout=300)[str(killed)]["outcome"] == "evaluated"
    assert read_job(killed)["attempt"] == 2 and read_job(killed)["resumed_from"] >= 10
    for run_dir in (preempted, killed):
        assert logged_steps(run_dir)[-1] == 40
        assert_same_parameters(reference, run_dir)
    assert json.loads((preempted / EVAL).read_text())["metrics"] == \
        json.loads((reference / EVAL).read_text())["metrics"]


# -- Ray --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ray_local_cluster_runs_a_sweep_and_retries_a_dead_task(tmp_path):
    ray = pytest.importorskip("ray")
    sweep = tmp_path / "sweep"
    runs = [make_run(sweep, f"seed={s}", seed=s) for s in (1, 2)]
    victim = make_run(sweep, "victim", seed=3, steps=60)
    executor = RayExecutor(num_cpus=2, cpus_per_job=1, max_retries=2)
    try:
        executor.submit([*runs, victim], EVALUATION)
        assert runs_to_submit([*runs, victim], EVALUATION) == []
        # the victim starts once one of the two other runs has ended (2 CPUs, 1 a job): allow
        # for a loaded machine
        wait_for(lambda: (victim / CHECKPOINT).exists() and running_pid(victim), 600,
                 "the victim's first checkpoint")
        os.kill(running_pid(victim), signal.SIGKILL)  # its worker dies: Ray retries the task
        outcomes = executor.wait(timeout=300)
    finally:
        ray.shutdown()
    for run_dir in [*runs, victim]:
        assert outcomes[str(run_dir)]["outcome"] == "evaluated", outcomes[str(run_dir)]
        assert read_job(run_dir)["state"] == "evaluated"
    assert read_job(victim)["attempt"] == 2 and read_job(victim)["resumed_from"] >= 10
    assert logged_steps(runs[0]) == [10, 20, 30]
    assert logged_steps(victim)[-1] == 60
    assert status_table(sweep, EVALUATION)["counts"] == {"evaluated": 3}


# -- the local executor, failures, status -----------------------------------------------------

@pytest.mark.slow
def test_local_executor_and_a_failed_run_in_the_status(tmp_path):
    sweep = tmp_path / "sweep"
    good = make_run(sweep, "good", seed=1)
    bad = make_run(sweep, "bad", seed=1)
    config = json.loads((bad / "config.json").read_text())
    config["model"] = "gan"
    write_json_atomic(config, bad / "config.json")
    executor = LocalExecutor(jobs=2, threads=1)
    executor.submit([good, bad], EVALUATION)
    outcomes = executor.wait(timeout=300)
    assert outcomes[str(good)]["outcome"] == "evaluated"
    assert isinstance(outcomes[str(bad)], RuntimeError)
    failed = read_job(bad)
    assert failed["state"] == "failed" and "unknown model 'gan'" in failed["reason"]
    assert "Traceback" not in failed["reason"] and "ValueError" in failed["traceback"]
    status = status_table(sweep, EVALUATION)
    assert status["counts"] == {"evaluated": 1, "failed": 1}
    assert status["failures"][0]["reason"] == failed["reason"]
    assert "unknown model 'gan'" in status["failures"][0]["log"]  # the tail of sweep.log
    assert "FAILED bad" in status["text"]
    assert runs_to_submit([good, bad], EVALUATION) == [bad]  # failed runs are retried


def test_resubmission_skips_finished_locked_and_live_runs(tmp_path):
    sweep = tmp_path / "sweep"
    names = ("new", "finished", "live", "dead", "slurm", "locked", "failed")
    runs = {n: make_run(sweep, n) for n in names}
    want = expected_evaluation(EVALUATION)
    write_json_atomic({"steps": 30}, runs["finished"] / RESULT)
    write_json_atomic({**want, "metrics": {m: {} for m in want["metrics"]}},
                      runs["finished"] / EVAL)
    host = os.uname().nodename
    update_job(runs["live"], "submitted", executor="local", job_id="1",
               submit_host=host, submit_pid=os.getpid())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    update_job(runs["dead"], "submitted", executor="ray", job_id="2",
               submit_host=host, submit_pid=dead.pid)
    # no squeue on this machine: a Slurm job is assumed alive rather than submitted twice
    update_job(runs["slurm"], "submitted", executor="slurm", job_id="1234_5")
    update_job(runs["failed"], "failed", reason="boom")
    with RunLock(runs["locked"]):
        todo = runs_to_submit([runs[n] for n in names], EVALUATION)
        assert [p.name for p in todo] == ["new", "dead", "failed"]
        states = {Path(r["run"]).name: r["state"]
                  for r in status_table(sweep, EVALUATION)["runs"]}
    assert states == {"new": "pending", "finished": "evaluated", "live": "submitted",
                      "dead": "submitted", "slurm": "submitted", "locked": "running",
                      "failed": "failed"}
    record = read_job(runs["dead"])
    assert record["format"] == FORMAT and record["job_id"] == "2"
    # a later state keeps the job's identity
    update_job(runs["dead"], "running", pid=1)
    assert read_job(runs["dead"])["executor"] == "ray"


# -- [executor] tables ------------------------------------------------------------------------

@pytest.mark.parametrize("table, device, message", [
    ({"name": "slurm", "partiton": "gpu"}, None, "unknown key 'partiton' in [executor]"),
    ({"name": "ray", "partition": "gpu"}, None, "unknown key 'partition' in [executor] for ray"),
    ({"name": "kubernetes"}, None, "executor.name 'kubernetes'"),
    ({"name": "slurm", "time": "4h"}, None, "executor.time '4h' is not a Slurm time"),
    ({"name": "slurm", "time": "00:00:00"}, None, "longer than zero"),
    ({"name": "slurm", "gpus_per_job": 1}, "cpu", "gpus_per_job = 1 but the runs are on "
                                                  "device 'cpu'"),
    ({"name": "ray", "gpus_per_job": 2}, "cpu", "gpus_per_job = 2"),
    ({"name": "slurm", "cpus_per_job": 0}, None, "executor.cpus_per_job must be an integer >= 1"),
    ({"name": "slurm", "mem_gb": -1}, None, "executor.mem_gb must be a number > 0"),
    ({"name": "slurm", "array_parallelism": 2.5}, None, "array_parallelism must be an integer"),
    ({"name": "slurm", "sbatch": "--qos=high"}, None, "executor.sbatch must be a table"),
    ({"name": "slurm", "setup": "module load cuda"}, None, "executor.setup must be a list"),
    ({"name": "ray", "max_retries": -1}, None, "max_retries must be an integer >= 0"),
    ({"name": "ray", "address": ""}, None, "executor.address must be a non-empty string"),
])
def test_bad_executor_tables_are_clear_errors(table, device, message):
    with pytest.raises(SpecError) as err:
        parse_executor(table, device=device)
    assert message in str(err.value)


def test_good_executor_tables_and_slurm_times():
    config = parse_executor({"name": "slurm", "partition": "gpu", "account": "lab",
                             "time": "1-02:00:00", "gpus_per_job": 1, "cpus_per_job": 8,
                             "mem_gb": 32, "array_parallelism": 20,
                             "sbatch": {"qos": "high"}}, device="cuda")
    assert config.name == "slurm" and config.options["partition"] == "gpu"
    assert parse_executor(None).name == "local"
    assert parse_executor({"name": "ray", "address": "auto", "max_retries": 2}).name == "ray"
    assert [slurm_minutes(t) for t in ("90", "90:30", "04:00:00", "1-12", "2-00:30")] == \
        [90, 91, 240, 2160, 2910]


def fake_slurm(bin_dir: Path, squeue_output: str) -> Path:
    """srun, sbatch (records its script, answers with a job id) and squeue stand-ins."""
    bin_dir.mkdir()
    record = bin_dir / "sbatch-args"
    scripts = {"srun": "exit 0",
               "sbatch": f'echo "$@" >> {record}; cat "${{@: -1}}" >> {record}; '
                         'echo "Submitted batch job 4242"',
               "squeue": f"echo '{squeue_output}'"}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return record


def test_slurm_submits_one_array_with_the_tables_options(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    record = fake_slurm(tmp_path / "bin", squeue_output="PENDING")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    runs = [make_run(tmp_path / "sweep", f"seed={s}", seed=s) for s in (1, 2, 3)]
    config = parse_executor({"name": "slurm", "partition": "gpu", "account": "lab",
                             "time": "04:00:00", "gpus_per_job": 1, "cpus_per_job": 8,
                             "mem_gb": 32, "array_parallelism": 2, "sbatch": {"qos": "high"},
                             "setup": ["module load cuda"]}, device="cuda")
    ex = make_executor(config, tmp_path / "sweep")
    assert ex.folder == tmp_path / "sweep" / ".submitit"
    ids = ex.submit(runs, EVALUATION)
    assert ids == ["4242_0", "4242_1", "4242_2"]
    script = record.read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
                 "#SBATCH --time=240", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=32GB", "#SBATCH --qos=high", "module load cuda",
                 "#SBATCH --signal=USR2@"):
        assert line in script, line
    assert [read_job(r)["job_id"] for r in runs] == ids
    assert all(read_job(r)["state"] == "submitted" for r in runs)
    assert runs_to_submit(runs, EVALUATION) == []  # squeue says pending: nothing twice
    fake_slurm(tmp_path / "bin2", squeue_output="")  # squeue no longer knows them
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin2'}{os.pathsep}{os.environ['PATH']}")
    assert runs_to_submit(runs, EVALUATION) == runs


def test_missing_engines_name_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install "wtc\[slurm\]"'):
        SlurmExecutor(tmp_path)
    with pytest.raises(ImportError, match=r'pip install "wtc\[ray\]"'):
        RayExecutor()


# -- stacks -----------------------------------------------------------------------------------

def test_runs_that_differ_in_seed_and_strength_stack_and_others_do_not(tmp_path):
    sweep = tmp_path / "sweep"
    a = make_run(sweep, "a", seed=1, beta=1.0)
    b = make_run(sweep, "b", seed=2, beta=4.0)
    other = make_run(sweep, "other", seed=1, lr=5e-4)
    c = make_run(sweep, "c", seed=3)
    missing = sweep / "missing"  # no config.json: a group of its own, its job says why
    configs = [read_config(d) for d in (a, b, c)]
    assert can_stack(configs) is None
    reason = can_stack([configs[0], read_config(other)])
    assert "differ in lr (0.0001 and 0.0005)" in reason and "seed, beta, gamma" in reason
    assert group_runs([a, other, b, c, missing]) == [[a, b, c], [other], [missing]]
    assert group_runs([a, other, b, c], 2) == [[a, b], [c], [other]]
    assert group_runs([a, b, c], 1) == [[a], [b], [c]]
    with pytest.raises(ValueError, match="at least 1 run"):
        group_runs([a], 0)


def test_a_stack_trains_in_one_call_and_a_failed_run_leaves_the_others_going(tmp_path,
                                                                          monkeypatch):
    import wtc.train

    sweep = tmp_path / "sweep"
    good, nan, bad = (make_run(sweep, name, seed=s, beta=b) for name, s, b in
                      (("good", 1, 1.0), ("nan", 2, 4.0), ("bad", 3, 1.0)))
    config = json.loads((bad / "config.json").read_text())
    config["model"] = "gan"  # a config.json that does not validate: that run fails alone
    write_json_atomic(config, bad / "config.json")
    calls = []
    real = wtc.train.train_runs

    def train_runs(configs, outs, **kwargs):
        calls.append(([Path(o).name for o in outs], kwargs))
        # "nan" fails as a stacked trainer reports it; the others train for real
        return [{"status": "failed", "reason": "the main loss is nan at step 12", "step": 12}
                if Path(out).name == "nan" else real([config], [out], **kwargs)[0]
                for config, out in zip(configs, outs)]

    monkeypatch.setattr(wtc.train, "train_runs", train_runs)
    outs = run_group([good, nan, bad], EVALUATION, job_id="j1", executor="local")
    assert calls == [(["good", "nan"], {"resume": True, "cuda_graph": False})]  # one call
    assert [o["outcome"] for o in outs] == ["evaluated", "failed", "failed"]
    assert outs[0]["trained"] and outs[0]["evaluated"] and (good / EVAL).exists()
    assert outs[1]["reason"] == "the main loss is nan at step 12" and outs[1]["step"] == 12
    record = read_job(nan)
    assert record["state"] == "failed" and record["step"] == 12 and record["job_id"] == "j1"
    assert not (nan / EVAL).exists()
    record = read_job(bad)
    assert record["state"] == "failed" and "unknown model 'gan'" in record["reason"]
    assert "ValueError" in record["traceback"]
    assert read_job(good)["state"] == "evaluated" and read_job(good)["stack"] == 3
    assert not any(lock_held(d) for d in (good, nan, bad))
    with pytest.raises(RuntimeError, match="nan at step 12"):  # one run: its failure raises
        run_job(nan, EVALUATION)
    # the failed run is submitted again; the finished one is not
    assert runs_to_submit([good, nan, bad], EVALUATION) == [nan, bad]


def test_a_busy_run_is_left_out_of_its_stack(tmp_path, monkeypatch):
    import wtc.train

    sweep = tmp_path / "sweep"
    free, held = make_run(sweep, "free", seed=1), make_run(sweep, "held", seed=2)
    trained = []
    monkeypatch.setattr(wtc.train, "train_runs", lambda configs, outs, **kw: trained.extend(
        outs) or [{"status": "failed", "reason": "stop here", "step": None} for _ in outs])
    with RunLock(held):
        outs = run_group([free, held], EVALUATION, wait=0.3)
    assert trained == [free]
    assert outs[1]["outcome"] == "busy" and read_job(held) is None  # untouched
    assert outs[0]["outcome"] == "failed" and read_job(free)["stack"] == 1


@pytest.mark.slow
def test_local_executor_runs_a_stack_in_one_process_and_logs_to_every_run(tmp_path):
    sweep = tmp_path / "sweep"
    runs = [make_run(sweep, f"seed={s}", seed=s) for s in (1, 2)]
    alone = make_run(sweep, "alone", seed=1)
    executor = LocalExecutor(jobs=1, threads=1)
    ids = executor.submit([runs, [alone]], EVALUATION)  # the same threads for both jobs
    outcomes = executor.wait(timeout=300)
    assert len(ids) == 2 and read_job(alone)["stack"] == 1
    for run_dir in runs:
        assert outcomes[str(run_dir)]["outcome"] == "evaluated", outcomes[str(run_dir)]
        record = read_job(run_dir)
        assert record["job_id"] == ids[0] and record["stack"] == 2
        assert logged_steps(run_dir) == [10, 20, 30]
    assert read_job(runs[0])["pid"] == read_job(runs[1])["pid"]  # one process
    # the second run's sweep.log has the job's output too (its own file, not a pointer)
    assert (runs[1] / "sweep.log").exists()
    # the job process starts clean (python -m wtc.experiments: no runpy warning on top of its log)
    assert "RuntimeWarning" not in (runs[0] / "sweep.log").read_text()
    # a stacked run ends where the same run trained alone does: stacking changes speed, not
    # results, up to the order of float32 sums (tests/test_stacked.py checks equality in
    # float64). Adam divides a gradient by its own size, so a weight whose gradient is a rounding
    # error away from zero may step by up to lr the other way: a few weights may differ by up to
    # 2 lr a step, while the typical one moves by rounding alone. A run with another seed differs
    # everywhere by about its initial scale (1e-2) and fails both bounds.
    pa, pb = final_parameters(runs[0]), final_parameters(alone)
    lr, steps = 1e-4, 30
    for key in pa:
        diff = (pa[key] - pb[key]).abs()
        assert diff.max() <= 2 * lr * steps, (key, diff.max())
        assert diff.median() <= 1e-5, (key, diff.median())
