"""MLflow tracking: one parent per pipeline run, nested stage runs, concurrent SQLite writers."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rnas.config import ConfigError, from_dict
from rnas.tracking import (CHANGED_TAG, DESCRIPTION_TAG, END_REASON_TAG, PARENT_RUN_TAG, PIPELINE_KEY_TAG,
                           REUSED_TAG_PREFIX, STAGE_TAG, SUPERSEDED_TAG, TrackingConfig, params_changes, stage_run,
                           tracking_uri)

REPO_ROOT = Path(__file__).resolve().parents[1]
DVC_ENV = ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")

# One stage process: params, 100 steps of two metrics, a tag and an artifact.
STAGE_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from rnas.tracking import TrackingConfig, stage_run

    root, stage, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    artifact = root / f"{stage}.txt"
    artifact.write_text(stage)
    with stage_run(stage, TrackingConfig(), root, {"train": {"lr": 0.1, "steps": steps}}) as run:
        for step in range(steps):
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / steps}, step=step)
        run.set_tags({"custom": stage})
        run.log_artifact(artifact)
""")


@pytest.fixture(autouse=True)
def no_dvc_env(monkeypatch):
    for name in DVC_ENV:
        monkeypatch.delenv(name, raising=False)


def run_python(code: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k not in DVC_ENV}
    environment.update(env or {}, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def runs_by_name(client, experiment: str = "rnas") -> dict[str, list]:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs: dict[str, list] = {}
    for run in client.search_runs([experiment_id], max_results=1000):
        runs.setdefault(run.info.run_name, []).append(run)
    return runs


def test_tracking_uri_defaults_to_original_project_even_from_dvc_temp_copy(tmp_path, monkeypatch):
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    assert tracking_uri(TrackingConfig(), tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking_uri(TrackingConfig(), copy) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking_uri(TrackingConfig(uri="sqlite:///runs/t.db"), copy) == f"sqlite:///{tmp_path / 'runs/t.db'}"
    assert tracking_uri(TrackingConfig(uri="http://mlflow:5000"), copy) == "http://mlflow:5000"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "origin"))
    assert tracking_uri(TrackingConfig(), copy) == f"sqlite:///{tmp_path / 'origin' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking_uri(TrackingConfig(uri="sqlite:///ignored.db"), copy) == "sqlite:////elsewhere/x.db"
    with pytest.raises(ConfigError, match="tracking.experiment"):
        from_dict(TrackingConfig, {"experiment": " "}, "tracking")


def test_disabled_tracking_imports_nothing_and_writes_nothing(tmp_path):
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        from rnas.tracking import TrackingConfig, stage_run

        with stage_run("warmup", TrackingConfig(enabled=False), Path.cwd(), {"a": {"b": 1}}) as run:
            run.log_metrics({"loss": 1.0}, step=0)
            run.log_artifact(Path("no-such-file"))
            run.set_tags({"k": "v"})
        assert "mlflow" not in sys.modules, "mlflow was imported"
    """)
    process = run_python(code, cwd=tmp_path)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_concurrent_stage_processes_share_one_parent_named_after_dvc_experiment(tmp_path):
    from mlflow import MlflowClient

    env = {"DVC_EXP_NAME": "lucky-lynx", "DVC_EXP_BASELINE_REV": "0" * 40}
    steps = 100
    processes = {stage: run_python(STAGE_SCRIPT, str(tmp_path), stage, str(steps), cwd=tmp_path, env=env)
                 for stage in ("warmup", "search")}
    for stage, process in processes.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, f"{stage}:\n{stderr}"

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = runs_by_name(client)
    assert sorted(runs) == ["lucky-lynx", "search", "warmup"]
    assert all(len(group) == 1 for group in runs.values()), "duplicate runs (a second parent?)"
    parent = runs["lucky-lynx"][0]
    assert PIPELINE_KEY_TAG in parent.data.tags
    for stage in ("warmup", "search"):
        run = runs[stage][0]
        assert run.info.status == "FINISHED"
        assert run.data.tags[PARENT_RUN_TAG] == parent.info.run_id
        assert run.data.tags[STAGE_TAG] == stage and run.data.tags["custom"] == stage
        assert run.data.tags["rnas.dvc_exp_name"] == "lucky-lynx"
        assert run.data.params == {"train.lr": "0.1", "train.steps": str(steps)}
        for key in ("loss", "acc"):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(steps)), f"{stage}.{key} lost steps"
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == [f"{stage}.txt"]
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_stages_of_one_repro_join_one_parent_and_new_params_start_another(tmp_path):
    from mlflow import MlflowClient

    origin = tmp_path / "repo"
    copy = origin / ".dvc" / "tmp" / "exps" / "tmp0001"
    copy.mkdir(parents=True)
    (copy / "params.yaml").write_text("train:\n  lr: 0.1\n")
    (copy / "pool").mkdir()
    (copy / "pool" / "pool.csv").write_text("arch,score\n0 1,0.5\n")
    cfg = TrackingConfig(experiment="repro")

    with stage_run("prepare", cfg, copy, {"seed": 0, "note": "x" * 7000}) as run:
        run.log_metrics({"pool_size": 3.0})
        run.log_artifact(copy / "pool")
    with pytest.raises(RuntimeError):
        with stage_run("train", cfg, copy, {"lr": 0.1}):
            raise RuntimeError("stage failed")
    (copy / "params.yaml").write_text("train:\n  lr: 0.2\n")
    with stage_run("train", cfg, copy, {"lr": 0.2}):
        pass

    assert not (copy / "mlflow.db").exists()
    client = MlflowClient(f"sqlite:///{origin / 'mlflow.db'}")
    runs = runs_by_name(client, "repro")
    parents = [run for group in runs.values() for run in group if PIPELINE_KEY_TAG in run.data.tags]
    assert len(parents) == 2 and all(p.info.run_name == "no-git" for p in parents)
    first_parent = runs["prepare"][0].data.tags[PARENT_RUN_TAG]
    failed, second = sorted(runs["train"], key=lambda run: run.info.start_time)
    assert failed.data.tags[PARENT_RUN_TAG] == first_parent and failed.info.status == "FAILED"
    assert client.get_run(first_parent).info.status == "FAILED"
    assert second.data.tags[PARENT_RUN_TAG] != first_parent and second.info.status == "FINISHED"
    assert runs["prepare"][0].data.metrics == {"pool_size": 3.0}
    assert len(runs["prepare"][0].data.params["note"]) == 6000
    assert [a.path for a in client.list_artifacts(runs["prepare"][0].info.run_id, "pool")] == ["pool/pool.csv"]


def test_store_calls_are_retried_while_sqlite_is_locked_and_only_then(monkeypatch):
    from rnas.tracking import store

    monkeypatch.setattr(store, "LOCK_BACKOFF_S", 0.0)
    calls = []

    def write(error: Exception | None):
        calls.append(error)
        if error is not None and len(calls) <= 3:
            raise error
        return len(calls)

    assert store.retry_locked(write, RuntimeError("(sqlite3.OperationalError) database is locked")) == 4
    calls.clear()
    with pytest.raises(ValueError):
        store.retry_locked(write, ValueError("invalid metric key"))
    assert len(calls) == 1


GIT_IDENTITY = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "rnas-test"), ("EMAIL", "rnas-test@localhost"))}


def git_repo_with_params(root: Path, params: str) -> str:
    """A git repository on branch ``main`` whose one commit holds ``params.yaml``; returns the commit."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(params)
    environ = {**os.environ, **GIT_IDENTITY}
    for command in (["init", "-q", "-b", "main"], ["add", "params.yaml"], ["commit", "-qm", "baseline"]):
        subprocess.run(["git", *command], cwd=root, env=environ, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def test_params_changes_lists_dotted_keys_that_differ():
    baseline = {"seed": 0, "search": {"strategy": "rnas", "rounds": 2}, "gone": 1}
    current = {"seed": 1, "search": {"strategy": "nao", "rounds": 2}, "new": {"x": [1, 2]}}
    assert params_changes(baseline, current) == ["gone=<removed>", "new.x=[1, 2]", "search.strategy=nao", "seed=1"]
    assert params_changes(current, current) == []


@pytest.mark.slow
def test_parent_is_the_pipeline_summary_with_changed_params_results_and_reused_stages(tmp_path, monkeypatch):
    """A `dvc repro` with a changed param: the parent is named after the branch, commit and change, holds
    all params and each stage's key results, and links a stage made by another pipeline run."""
    from mlflow import MlflowClient

    commit = git_repo_with_params(tmp_path, "seed: 0\nsearch:\n  strategy: rnas\n")
    warmup, embed = tmp_path / "artifacts/warmup", tmp_path / "artifacts/embed"
    with stage_run("warmup", TrackingConfig(), tmp_path, {"seed": 0, "search": {"strategy": "rnas"}},
                   output=warmup) as made_warmup:
        (warmup / "sub").mkdir(parents=True)
        (warmup / "sub/pool.csv").write_text("arch,score\n0 1,0.5\n")
        made_warmup.log_summary({"seconds_warmup": 3.0, "pool_best": 0.5})
        made_warmup.log_metrics({"loss": 1.0})  # not a summary metric: stays on the stage run
    embed.mkdir(parents=True)
    (embed / "controller.pt").write_bytes(b"made by no tracked run")
    (tmp_path / "params.yaml").write_text("seed: 1\nsearch:\n  strategy: rnas\n")  # a later run writes other bytes
    with stage_run("warmup", TrackingConfig(), tmp_path, {"seed": 1, "search": {"strategy": "rnas"}}, output=warmup):
        (warmup / "sub/pool.csv").write_text("arch,score\n1 0,0.25\n")
    (warmup / "sub/pool.csv").write_text("arch,score\n0 1,0.5\n")  # DVC checks out the first run's outputs

    (tmp_path / "params.yaml").write_text("seed: 0\nsearch:\n  strategy: nao\n")  # as `-S search.strategy=nao`
    params, upstream = {"seed": 0, "search": {"strategy": "nao"}}, {"warmup": warmup, "embed": embed}
    with stage_run("sample", TrackingConfig(), tmp_path, params, upstream=upstream) as run:
        run.log_summary({"seconds_sample": 2.0, "supernet_best_score": 0.75})
    with stage_run("evaluate", TrackingConfig(), tmp_path, params, upstream=upstream) as run:
        run.log_summary({"seconds_evaluate": 1.5, "test_accuracy": 0.9})

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parents = {r.info.run_name: r for group in runs_by_name(client).values() for r in group
               if PIPELINE_KEY_TAG in r.data.tags}
    baseline = f"main@{commit[:7]}"
    assert sorted(parents) == [baseline, f"{baseline} search.strategy=nao", f"{baseline} seed=1"]
    first, nao = parents[f"main@{commit[:7]}"], parents[f"main@{commit[:7]} search.strategy=nao"]
    assert first.data.tags[CHANGED_TAG] == "baseline"
    assert nao.data.tags[CHANGED_TAG] == "search.strategy=nao"
    assert "`search.strategy=nao`" in nao.data.tags[DESCRIPTION_TAG]
    assert nao.data.params == {"seed": "0", "search.strategy": "nao"}
    assert nao.data.tags[REUSED_TAG_PREFIX + "warmup"] == made_warmup.run_id
    assert REUSED_TAG_PREFIX + "embed" not in nao.data.tags  # no run wrote those bytes
    assert nao.data.metrics == {"seconds_warmup": 3.0, "pool_best": 0.5, "seconds_sample": 2.0,
                                "supernet_best_score": 0.75, "seconds_evaluate": 1.5, "test_accuracy": 0.9,
                                "seconds_total": 6.5}
    assert first.data.metrics == {"seconds_warmup": 3.0, "pool_best": 0.5, "seconds_total": 3.0}
    assert nao.info.status == "FINISHED" and first.info.status == "FINISHED"


@pytest.mark.slow
def test_rerunning_a_stage_under_the_same_parent_leaves_no_stale_child(tmp_path):
    from mlflow import MlflowClient

    git_repo_with_params(tmp_path, "seed: 0\n")
    with pytest.raises(RuntimeError):
        with stage_run("retrain", TrackingConfig(), tmp_path, {"seed": 0}):
            raise RuntimeError("out of patience")
    with stage_run("retrain", TrackingConfig(), tmp_path, {"seed": 0}) as rerun:
        pass

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("rnas").experiment_id
    live = client.search_runs([experiment_id], filter_string=f"tags.`{STAGE_TAG}` = 'retrain'")
    assert [r.info.run_id for r in live] == [rerun.run_id] and live[0].info.status == "FINISHED"
    from mlflow.entities import ViewType
    deleted = client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert len(deleted) == 1 and deleted[0].data.tags[SUPERSEDED_TAG] == rerun.run_id
    assert deleted[0].info.status == "FAILED"
    assert deleted[0].data.tags[END_REASON_TAG] == "retrain: RuntimeError: out of patience"
    parent = client.get_run(rerun.parent_id)
    assert parent.info.status == "FINISHED" and END_REASON_TAG not in parent.data.tags


# A stage process that opens its run, says so, and then waits to be killed or terminated.
WAITING_STAGE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import yaml
    from rnas.tracking import TrackingConfig, stage_run

    root = Path(sys.argv[1])
    with stage_run(sys.argv[2], TrackingConfig(), root, yaml.safe_load((root / "params.yaml").read_text())) as run:
        print(run.run_id, flush=True)
        time.sleep(120)
""")


def start_waiting_stage(root: Path, stage: str) -> tuple[subprocess.Popen, str]:
    process = run_python(WAITING_STAGE, str(root), stage, cwd=root)
    run_id = process.stdout.readline().strip()
    assert run_id, process.stderr.read()
    return process, run_id


@pytest.mark.slow
def test_sigterm_and_ctrl_c_end_the_stage_run_and_its_parent_as_killed(tmp_path):
    import signal

    from mlflow import MlflowClient

    git_repo_with_params(tmp_path, "seed: 0\n")
    process, run_id = start_waiting_stage(tmp_path, "retrain")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[END_REASON_TAG] == "retrain: SIGTERM"
    assert client.get_run(run.data.tags[PARENT_RUN_TAG]).info.status == "KILLED"

    with pytest.raises(KeyboardInterrupt):
        with stage_run("retrain", TrackingConfig(), tmp_path, {"seed": 0}) as interrupted:
            raise KeyboardInterrupt
    run = client.get_run(interrupted.run_id)
    assert run.info.status == "KILLED" and run.data.tags[END_REASON_TAG] == "retrain: interrupted (Ctrl-C)"


@pytest.mark.slow
def test_a_starting_stage_marks_runs_of_dead_processes_killed_and_leaves_live_ones(tmp_path):
    import signal

    from mlflow import MlflowClient

    git_repo_with_params(tmp_path, "seed: 0\n")
    process, killed_id = start_waiting_stage(tmp_path, "warmup")
    process.send_signal(signal.SIGKILL)  # no chance to close its run
    process.wait(timeout=60)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(killed_id).info.status == "RUNNING"
    parent_id = client.get_run(killed_id).data.tags[PARENT_RUN_TAG]

    alive, alive_id = start_waiting_stage(tmp_path, "embed")  # starting, it closes the dead run
    try:
        killed = client.get_run(killed_id)
        assert killed.info.status == "KILLED"
        assert killed.data.tags[END_REASON_TAG].startswith(f"process {process.pid} on ")
        assert client.get_run(alive_id).data.tags[PARENT_RUN_TAG] == parent_id
        (tmp_path / "params.yaml").write_text("seed: 1\n")  # another pipeline run: the check is store-wide
        with stage_run("prepare", TrackingConfig(), tmp_path, {"seed": 1}) as other:
            pass
        assert other.parent_id != parent_id
        assert client.get_run(alive_id).info.status == "RUNNING", "a live process's run was closed"
        assert client.get_run(parent_id).info.status == "RUNNING"
    finally:
        alive.send_signal(signal.SIGTERM)
        alive.wait(timeout=60)
    assert client.get_run(alive_id).info.status == "KILLED"

    process, parent_killed_id = start_waiting_stage(tmp_path, "sample")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    with stage_run("prepare", TrackingConfig(), tmp_path, {"seed": 2}):
        pass
    parent = client.get_run(client.get_run(parent_killed_id).data.tags[PARENT_RUN_TAG])
    assert parent.info.status == "KILLED" and "sample: its process ended" in parent.data.tags[END_REASON_TAG]


def test_a_run_whose_pid_now_belongs_to_a_younger_process_counts_as_dead():
    import socket

    from rnas.tracking.liveness import owner_alive, process_tags
    from rnas.tracking.runs import HOST_TAG, PID_START_TAG

    mine = process_tags()
    assert owner_alive(mine, 300)
    assert not owner_alive({**mine, PID_START_TAG: str(int(mine[PID_START_TAG]) - 1)}, 300)
    assert owner_alive({**mine, HOST_TAG: socket.gethostname() + "-elsewhere", "rnas.pid": "1"}, 300)


def test_runs_of_other_hosts_die_by_their_heartbeat_and_runs_here_by_their_pid(tmp_path):
    import socket

    from mlflow import MlflowClient

    from rnas.tracking.liveness import close_runs_of_dead_processes, process_tags
    from rnas.tracking.runs import HEARTBEAT_TAG, HOST_TAG, PID_TAG
    from rnas.tracking.store import now_ms

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("rnas")
    here, elsewhere = process_tags(), {**process_tags(), HOST_TAG: socket.gethostname() + "-elsewhere"}
    ten_minutes_ago = str(now_ms() - 600_000)
    runs = {name: client.create_run(experiment, tags=tags, run_name=name).info.run_id for name, tags in {
        "elsewhere, silent": {**elsewhere, HEARTBEAT_TAG: ten_minutes_ago},
        "elsewhere, beating": elsewhere,
        "elsewhere, from a version without heartbeats": {k: v for k, v in elsewhere.items() if k != HEARTBEAT_TAG},
        "here, alive but silent": {**here, HEARTBEAT_TAG: ten_minutes_ago},
        "here, its process gone": {**here, PID_TAG: str(2 ** 22 + 1)},
    }.items()}
    closed = close_runs_of_dead_processes(client, experiment, timeout_seconds=300)
    assert sorted(closed) == sorted([runs["elsewhere, silent"], runs["here, its process gone"]])
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"elsewhere, silent": "KILLED", "elsewhere, beating": "RUNNING",
                      "elsewhere, from a version without heartbeats": "RUNNING", "here, alive but silent": "RUNNING",
                      "here, its process gone": "KILLED"}
    reason = client.get_run(runs["elsewhere, silent"]).data.tags["rnas.end_reason"]
    assert reason.startswith(f"process {elsewhere[PID_TAG]} on {elsewhere[HOST_TAG]} sent no heartbeat for 6")


def test_a_stage_run_beats_while_it_runs(tmp_path):
    import time

    from mlflow import MlflowClient

    from rnas.tracking.runs import HEARTBEAT_TAG

    git_repo_with_params(tmp_path, "seed: 0\n")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with stage_run("warmup", TrackingConfig(heartbeat_seconds=0.2, heartbeat_timeout_seconds=1), tmp_path,
                   {"seed": 0}) as run:
        first = int(client.get_run(run.run_id).data.tags[HEARTBEAT_TAG])
        time.sleep(1.0)
        assert int(client.get_run(run.run_id).data.tags[HEARTBEAT_TAG]) >= first + 200


def test_a_tracking_server_that_does_not_answer_stops_the_stage_before_its_work(tmp_path, monkeypatch):
    import socket

    from rnas.errors import TrackingError
    from rnas.tracking import TrackingConfig, stage_run
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_"))}
    monkeypatch.setattr(os, "environ", environ)  # what the stage sets stays in this test
    ran = []
    with pytest.raises(TrackingError) as error:
        with stage_run("warmup", TrackingConfig(uri=uri), tmp_path, {}):
            ran.append(True)
    assert not ran
    assert str(error.value).startswith(f"tracking store {uri} (tracking.uri or MLFLOW_TRACKING_URI): no MLflow server "
                                       "answers (")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "4"  # bounded retries for what follows
