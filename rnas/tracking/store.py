"""Where the tracking store is, and safe access to it: one lock across processes for a SQLite store,
and calls retried while SQLite reports itself locked."""
from __future__ import annotations

import fcntl
import os
import random
import sqlite3
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from rnas.config import require
from rnas.errors import TrackingError

T = TypeVar("T")

LOCK_RETRIES = 12
LOCK_BACKOFF_S = 0.05
LOCK_BACKOFF_CAP_S = 5.0
#: MLflow's HTTP retries for a stage, unless the environment sets them: a server that is down fails
#: the stage after about 15 s of tries (1 + 2 + 4 + 8 s), not after MLflow's default of minutes
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
SERVER_CHECK_TIMEOUT_S = 5.0


@dataclass
class TrackingConfig:
    enabled: bool = True
    #: default: sqlite:///<project root>/mlflow.db; MLFLOW_TRACKING_URI overrides both
    uri: str | None = None
    experiment: str = "rnas"
    #: how often a stage's run says it is alive; a run on another host silent for
    #: heartbeat_timeout_seconds is marked KILLED by the next stage to start (on this host: by its pid)
    heartbeat_seconds: float = 30.0
    heartbeat_timeout_seconds: float = 300.0

    def check(self) -> None:
        require(self.uri is None or bool(self.uri.strip()), "uri", "must be null or a non-empty URI")
        require(bool(self.experiment.strip()), "experiment", "must not be empty")
        require(self.heartbeat_seconds > 0, "heartbeat_seconds", "must be positive")
        require(self.heartbeat_timeout_seconds >= 3 * self.heartbeat_seconds, "heartbeat_timeout_seconds",
                "must be at least 3 heartbeats (heartbeat_seconds), so that a slow store never kills a live run")


def original_project_root(project_root: Path) -> Path:
    """The repository a stage belongs to, also from inside DVC's temporary experiment copies."""
    root = Path(os.environ.get("DVC_ROOT") or project_root).resolve()
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri(cfg: TrackingConfig, project_root: Path) -> str:
    root = original_project_root(project_root)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri
    if not uri:
        return f"sqlite:///{root / 'mlflow.db'}"
    database = sqlite_path(uri)
    if database is not None and not database.is_absolute():
        return f"sqlite:///{root / database}"
    return uri


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def server_silence(uri: str) -> str | None:
    """None when a server answers at ``uri`` (if only to refuse the request), else why it does not."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_CHECK_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))
    return None


def require_server(uri: str) -> None:
    """Before any work: a tracking server that does not answer is one line naming its URI."""
    for variable, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    why = server_silence(uri)
    if why is not None:
        raise TrackingError(f"tracking store {uri} (tracking.uri or MLFLOW_TRACKING_URI): no MLflow server answers "
                            f"({why}); start it (scripts/tracking-server.sh start), or set tracking.enabled: false")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (relative or absolute), else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix):] in ("", ":memory:"):
        return None
    return Path(uri[len(prefix):].split("?", 1)[0])


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Exclusive lock across processes for a SQLite store; creates a new database in WAL mode."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if not database.exists():
                connection = sqlite3.connect(database)
                try:
                    connection.execute("PRAGMA journal_mode=WAL")
                finally:
                    connection.close()
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def retry_locked(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, retried with jittered exponential backoff while SQLite is locked."""
    attempt = 0
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            attempt += 1
            if "database is locked" not in str(error) or attempt == LOCK_RETRIES:
                raise
            delay = min(LOCK_BACKOFF_CAP_S, LOCK_BACKOFF_S * 2 ** attempt)
            time.sleep(delay * random.uniform(0.5, 1.0))


def now_ms() -> int:
    return int(time.time() * 1000)
