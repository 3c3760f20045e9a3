"""A team's set-up against a real tracking server: ``scripts/tracking-server.sh`` starts PostgreSQL and
``mlflow server`` on 127.0.0.1 in a temporary folder; two clones of one project share it through a
bare git remote and a local-folder DVC remote. Checked: the server's guards (credentials, the data
directory's version), experiments moved between the clones, concurrent queue workers, a stage killed
on "another host", and a server that goes away mid-stage. Skipped, with the reason, where PostgreSQL
is not installed. Everything the module starts is stopped by pid (the script's ``stop``).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from rnas.tracking import END_REASON_TAG, PIPELINE_KEY_TAG, STAGE_TAG
from rnas.tracking.runs import HEARTBEAT_TAG, HOST_TAG
from tests.helpers import ROOT, clone_project, run

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "tracking-server.sh"
SMOKE = ("-S", "profile=smoke", "-S", "device=cpu", "-S", "threads=1")


def postgres_missing() -> str | None:
    if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
        return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        return "running as root, and there is no `postgres` account for PostgreSQL to run as"
    return None


if postgres_missing():
    pytest.skip(postgres_missing(), allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    folder: Path
    env: dict[str, str]

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.env['RNAS_SERVER_PORT']}"

    def script(self, command: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(SCRIPT), command], env={**os.environ, **self.env, **env}, capture_output=True,
                                text=True, timeout=180)
        assert not check or result.returncode == 0, result.stderr
        return result

    def pids(self) -> list[int]:
        """MLflow's and PostgreSQL's main processes, from the files they record."""
        files = [self.folder / "mlflow.pid", self.folder / "pgdata" / "postmaster.pid"]
        return [int(f.read_text().split()[0]) for f in files if f.exists()]

    def client(self):
        from mlflow import MlflowClient
        return MlflowClient(tracking_uri=self.uri)


def new_server(**env: str) -> Server:
    # under /tmp, not pytest's private folder: PostgreSQL's own account must reach its data directory
    folder = Path(tempfile.mkdtemp(prefix="rnas-server-", dir="/tmp"))
    return Server(folder, {"RNAS_SERVER_DIR": str(folder), "RNAS_SERVER_PORT": str(free_port()),
                           "RNAS_PG_PORT": str(free_port()), **env})


def stop(server: Server) -> None:
    pids = server.pids()
    server.script("stop", check=False)
    for pid in pids:  # stopped, by pid
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.1)
        assert not alive(pid), f"process {pid} outlived the script's stop"
    shutil.rmtree(server.folder, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def server():
    started = new_server()
    try:
        started.script("start")
        yield started
    finally:
        stop(started)


# --- the server's guards -----------------------------------------------------------------------
def test_an_exposed_server_needs_credentials_and_refuses_requests_without_them(tmp_path):
    import urllib.error
    import urllib.request

    exposed = new_server(RNAS_SERVER_HOST="0.0.0.0")
    try:
        refused = exposed.script("start", check=False)
        assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0
        assert "RNAS_SERVER_ADMIN_PASSWORD_FILE" in refused.stderr and not (exposed.folder / "pgdata").exists()
        password = tmp_path / "admin-password"
        password.write_text("a-long-enough-password\n")
        password.chmod(0o644)
        loose = exposed.script("start", check=False, RNAS_SERVER_ADMIN_PASSWORD_FILE=str(password))
        assert loose.returncode == 2 and "chmod 600" in loose.stderr
        password.chmod(0o600)
        exposed.script("start", RNAS_SERVER_ADMIN_PASSWORD_FILE=str(password))
        for mode in ("db-password", "pgpass", "basic_auth.ini", "flask-secret"):
            assert (exposed.folder / mode).stat().st_mode & 0o777 == 0o600, mode
        request = urllib.request.Request(f"{exposed.uri}/api/2.0/mlflow/experiments/search", method="POST",
                                         data=json.dumps({"max_results": 1}).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refusal:
            urllib.request.urlopen(request, timeout=30)
        assert refusal.value.code == 401
        from mlflow import MlflowClient
        os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD="a-long-enough-password")
        try:
            assert MlflowClient(tracking_uri=exposed.uri).search_experiments()  # the right password gets in
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        secrets = [(exposed.folder / name).read_text().strip() for name in ("db-password", "flask-secret")]
        assert not any(secret in processes for secret in secrets + ["a-long-enough-password"])
    finally:
        stop(exposed)


def test_a_data_directory_of_another_postgresql_version_is_refused():
    other = new_server()
    try:
        (other.folder / "pgdata").mkdir(parents=True)
        (other.folder / "pgdata" / "PG_VERSION").write_text("9\n")
        result = other.script("start", check=False)
        assert result.returncode == 2 and result.stderr.count("\n") == 1
        assert "holds a PostgreSQL 9 database" in result.stderr and "pg_upgrade" in result.stderr
    finally:
        stop(other)


def test_start_is_idempotent_and_postgres_listens_on_loopback_only(server):
    again = server.script("start")
    assert "already runs" in again.stdout
    port = int(server.env["RNAS_PG_PORT"])
    assert listening_addresses(port) == {"127.0.0.1"}
    assert not list(server.folder.glob("pgdata/.s.PGSQL*")) and not glob.glob(f"/var/run/postgresql/.s.PGSQL.{port}")


def listening_addresses(port: int) -> set[str]:
    """The addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(socket.inet_ntop(socket.AF_INET if len(address) == 8 else socket.AF_INET6,
                                           bytes.fromhex(address)[::-1] if len(address) == 8 else
                                           b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8))))
    return found


# --- two clones, one server, a git remote and a DVC remote -------------------------------------
@pytest.fixture(scope="module")
def clones(server, tmp_path_factory):
    """Clone A runs the baseline and an experiment and pushes them; clone B is cloned from the remote."""
    root = tmp_path_factory.mktemp("team")
    env = {"MLFLOW_TRACKING_URI": server.uri}
    run(["git", "init", "-q", "--bare", str(root / "origin.git")], root)
    a = clone_project(root / "a", "profile=smoke", "device=cpu", "threads=1")
    run(["dvc", "remote", "add", "-d", "storage", str(root / "dvc-storage")], a)
    run(["git", "remote", "add", "origin", str(root / "origin.git")], a)
    run(["dvc", "repro"], a, **env)
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-qm", "Baseline run"], a)
    run(["dvc", "push"], a)
    run(["git", "push", "-q", "origin", "HEAD:main"], a)
    # an experiment that reruns evaluate alone: what moves between the clones is what is tested
    run(["dvc", "exp", "run", *SMOKE, "-S", "evaluate.latency_repeats=4", "-n", "a-latency"], a, **env)
    run(["dvc", "exp", "push", "origin", "a-latency"], a)
    run(["git", "clone", "-q", "-b", "main", str(root / "origin.git"), str(root / "b")], root)
    return a, root / "b", env


def test_an_experiment_moves_between_clones_and_both_log_to_one_server(server, clones):
    a, b, env = clones
    run(["dvc", "pull"], b)
    repro = run(["dvc", "repro"], b, **env)
    # B reproduces A's baseline from the remote's cache: no stage but `check` runs
    assert "Running stage 'check'" in repro.stdout and repro.stdout.count("Running stage") == 1, repro.stdout
    run(["dvc", "exp", "pull", "origin", "a-latency"], b)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], b).stdout)
    experiments = {exp["name"]: exp for rev in shown for exp in (rev.get("experiments") or [])
                   for exp in [{"name": exp.get("name"), **(exp.get("revs") or [{}])[0]}]}
    assert "a-latency" in experiments
    metrics = experiments["a-latency"]["data"]["metrics"]["artifacts/evaluate/metrics.json"]["data"]
    assert 0 <= metrics["test_accuracy"] <= 1
    run(["dvc", "exp", "run", *SMOKE, "-S", "evaluate.latency_repeats=3", "-n", "b-latency"], b, **env)

    client = server.client()
    experiment = client.get_experiment_by_name("rnas").experiment_id
    runs = client.search_runs([experiment], max_results=1000)
    parents = [r for r in runs if PIPELINE_KEY_TAG in r.data.tags]
    names = sorted(r.info.run_name for r in parents)
    baseline = [n for n in names if n not in ("a-latency", "b-latency")]
    assert len(baseline) == 1 and names == sorted(baseline + ["a-latency", "b-latency"]), names
    assert all(r.info.status == "FINISHED" for r in parents)
    # the compare view's columns: every parent carries its test accuracy
    assert all("test_accuracy" in r.data.metrics for r in parents)


def test_two_queue_workers_in_each_of_two_clones_lose_and_duplicate_no_run(server, clones):
    a, b, env = clones
    # experiments that rerun evaluate alone: the writes of four processes at once are what is tested
    queued = {a: (11, 12), b: (13, 14)}
    for clone, repeats in queued.items():
        for k in repeats:
            run(["dvc", "exp", "run", "--queue", *SMOKE, "-S", f"evaluate.latency_repeats={k}", "-n", f"q-{k}"], clone)
    for clone in queued:
        run(["dvc", "queue", "start", "-j", "2"], clone, **env)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = [run(["dvc", "queue", "status"], clone).stdout for clone in queued]
        if not any(word in text for text in status for word in ("Queued", "Running")):
            break
        time.sleep(5)  # each status is two dvc processes, about a CPU-second each, taken from the runs
    for clone in queued:
        run(["dvc", "queue", "stop", "--kill"], clone, check=False)
    assert all("Failed" not in text for text in status), status

    client = server.client()
    experiment = client.get_experiment_by_name("rnas").experiment_id
    runs = client.search_runs([experiment], max_results=5000)
    names = [f"q-{k}" for repeats in queued.values() for k in repeats]
    parents = [r for r in runs if r.info.run_name in names and PIPELINE_KEY_TAG in r.data.tags]
    assert sorted(r.info.run_name for r in parents) == sorted(names)  # one parent each: none lost, none twice
    for parent in parents:
        assert parent.info.status == "FINISHED", parent.info.run_name
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert [r.data.tags[STAGE_TAG] for r in children] == ["evaluate"], parent.info.run_name  # once
        assert children[0].info.status == "FINISHED" and "test_accuracy" in parent.data.metrics


# --- runs that end truthfully, against the server ------------------------------------------------
def stage_process(project: Path, stage: str, env: dict[str, str]) -> subprocess.Popen:
    """The stage running in ``project``; its stderr goes to ``project/stage.err``."""
    with open(project / "stage.err", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=project, env={**os.environ, **env},
                                stdout=subprocess.DEVNULL, stderr=stderr)


def scratch_project(clones, folder: Path, settings: dict[str, dict]) -> Path:
    """Clone A's committed project with its data and artifacts, and blocks of params.yaml updated."""
    a, _, _ = clones
    project = clone_project(folder)
    for name in ("data", "artifacts"):
        shutil.copytree(a / name, project / name)
    params = yaml.safe_load((project / "params.yaml").read_text())
    for block, values in settings.items():
        target = params
        for key in block.split("."):
            target = target[key]
        target.update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    return project


def wait_for_run(client, stage: str, after_ms: int, timeout: float = 120):
    """The first RUNNING run of ``stage`` started after ``after_ms``, once the stage has opened it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        experiment = client.get_experiment_by_name("rnas")  # the stage may still be creating it
        found = [r for r in client.search_runs([experiment.experiment_id],
                                               filter_string=f"tags.`{STAGE_TAG}` = '{stage}'")
                 if r.info.start_time >= after_ms and r.info.status == "RUNNING"] if experiment else []
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no running {stage} run appeared")


def test_a_stage_killed_on_another_host_is_marked_killed_by_the_next_stage_to_start(server, clones, tmp_path):
    project = scratch_project(clones, tmp_path / "p", {"tracking": {"heartbeat_seconds": 0.5,
                                                                     "heartbeat_timeout_seconds": 2.0},
                                                        "warmup.train": {"epochs": 200}})  # caught mid-run
    env = {"MLFLOW_TRACKING_URI": server.uri}
    client, started = server.client(), int(time.time() * 1000)
    warmup = stage_process(project, "warmup", env)
    try:
        victim = wait_for_run(client, "warmup", started)
        os.kill(warmup.pid, signal.SIGKILL)
    finally:
        warmup.wait()
    client.set_tag(victim.info.run_id, HOST_TAG, "another-host.example")  # as if it had run elsewhere
    assert client.get_run(victim.info.run_id).info.status == "RUNNING"
    time.sleep(3)  # its heartbeat is now older than the timeout
    run([sys.executable, "-m", "stages.prepare"], project, **env)
    killed = client.get_run(victim.info.run_id)
    assert killed.info.status == "KILLED"
    assert killed.data.tags[END_REASON_TAG].startswith(f"process {warmup.pid} on another-host.example sent no heartbeat")
    assert int(killed.data.tags[HEARTBEAT_TAG]) >= started


def test_a_server_that_goes_away_mid_stage_fails_it_in_one_line_naming_the_server(clones, tmp_path):
    lonely = new_server()
    try:
        lonely.script("start")
        project = scratch_project(clones, tmp_path / "p", {"retrain.train": {"epochs": 100}})
        # two quick HTTP retries, not the stage's default of about 15 s (tests/test_tracking.py checks that)
        env = {"MLFLOW_TRACKING_URI": lonely.uri, "RNAS_DEBUG": "0", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
        retrain = stage_process(project, "retrain", env)
        wait_for_run(lonely.client(), "retrain", 0)
        checkpoint = project / "artifacts/retrain_state/checkpoint.pt"
        deadline = time.time() + 120
        while not checkpoint.exists() and time.time() < deadline:  # an epoch done
            time.sleep(0.2)
        lonely.script("stop")
        retrain.wait(timeout=300)
        stderr = (project / "stage.err").read_text()
        assert retrain.returncode == 2, stderr[-2000:]
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: tracking store {lonely.uri} stopped answering during stage retrain"), last
        assert "Traceback" not in stderr
        assert checkpoint.exists()  # what it trained is kept: a rerun resumes
    finally:
        stop(lonely)
