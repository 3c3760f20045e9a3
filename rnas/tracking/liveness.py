"""Runs whose process ended without closing them, marked KILLED with the reason. Each stage run
records its host, pid and the pid's start time, and beats (``Heartbeat``: a tag of the time, every
``tracking.heartbeat_seconds``). On this host a run's process is looked up by its pid; a run of
another host, where no pid can be checked, is dead once its heartbeat is older than
``tracking.heartbeat_timeout_seconds``. A run with no heartbeat tag on another host is left alone."""
from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from rnas.tracking.runs import (END_REASON_TAG, HEARTBEAT_TAG, HOST_TAG, PARENT_RUN_TAG, PID_START_TAG, PID_TAG,
                                STAGE_TAG, set_tags)
from rnas.tracking.store import now_ms, retry_locked

if TYPE_CHECKING:
    from mlflow import MlflowClient


def close_runs_of_dead_processes(client: MlflowClient, experiment_id: str, timeout_seconds: float) -> list[str]:
    """Mark KILLED every RUNNING stage run whose process has ended (``owner_alive``), and their parents
    when no stage of theirs is still running; returns the ids of the stage runs so closed."""
    running = retry_locked(client.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'",
                            max_results=1000)
    dead = [run for run in running if PID_TAG in run.data.tags and not owner_alive(run.data.tags, timeout_seconds)]
    now = now_ms()
    for run in dead:
        tags = run.data.tags
        how = ("ended without closing its run" if tags.get(HOST_TAG) == socket.gethostname()
               else f"sent no heartbeat for {(now - int(tags[HEARTBEAT_TAG])) / 1000:.0f} s")
        set_tags(client, run.info.run_id, {END_REASON_TAG: f"process {tags[PID_TAG]} on {tags.get(HOST_TAG)} {how}"})
        retry_locked(client.set_terminated, run.info.run_id, "KILLED", now)
    still_running = {run.data.tags.get(PARENT_RUN_TAG) for run in running if run not in dead}
    for parent_id in {run.data.tags.get(PARENT_RUN_TAG) for run in dead} - still_running - {None}:
        stage = next(run.data.tags.get(STAGE_TAG) for run in dead if run.data.tags.get(PARENT_RUN_TAG) == parent_id)
        set_tags(client, parent_id, {END_REASON_TAG: f"{stage}: its process ended without closing its run"})
        retry_locked(client.set_terminated, parent_id, "KILLED", now)
    return [run.info.run_id for run in dead]


def process_tags() -> dict[str, str]:
    pid = os.getpid()
    return {PID_TAG: str(pid), PID_START_TAG: process_start(pid) or "", HOST_TAG: socket.gethostname(),
            HEARTBEAT_TAG: str(now_ms())}


def owner_alive(tags: Mapping[str, str], timeout_seconds: float) -> bool:
    """Whether the process that opened a run may still run: True unless it is known to have ended. On
    this host: its pid is gone, or now belongs to a process started at another time. On another
    host: its heartbeat is older than ``timeout_seconds``."""
    if tags.get(HOST_TAG) != socket.gethostname():
        beat = tags.get(HEARTBEAT_TAG, "")
        return not beat.isdigit() or now_ms() - int(beat) <= timeout_seconds * 1000
    if not tags.get(PID_TAG, "").isdigit():
        return True
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    started = tags.get(PID_START_TAG)
    return not started or process_start(pid) in (None, started)


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), if readable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Heartbeat:
    """While open, sets a run's heartbeat tag to the time every ``seconds``, from a daemon thread. A
    store that fails a beat is reported once and tried again at the next: the stage goes on."""

    def __init__(self, client: MlflowClient, run_id: str, seconds: float):
        self._client, self._run_id, self._seconds = client, run_id, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="rnas-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        warned = False
        while not self._stop.wait(self._seconds):
            try:
                set_tags(self._client, self._run_id, {HEARTBEAT_TAG: str(now_ms())})
            except Exception as error:  # the store is unreachable for now: the run goes on
                if not warned:
                    print(f"[tracking] warning: heartbeat not recorded ({type(error).__name__}: {error}); "
                          "retrying", file=sys.stderr, flush=True)
                    warned = True
