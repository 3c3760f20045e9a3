"""Runs whose process ended without closing them: found by the pid, its start time and the host
that each stage run records, and marked KILLED with the reason."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from rnas.tracking.runs import END_REASON_TAG, HOST_TAG, PARENT_RUN_TAG, PID_START_TAG, PID_TAG, STAGE_TAG, set_tags
from rnas.tracking.store import now_ms, retry_locked

if TYPE_CHECKING:
    from mlflow import MlflowClient


def close_runs_of_dead_processes(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED every RUNNING stage run whose process on this host has ended, and their parents
    when no stage of theirs is still running; returns the ids of the stage runs so closed."""
    running = retry_locked(client.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'",
                            max_results=1000)
    dead = [run for run in running if PID_TAG in run.data.tags and not owner_alive(run.data.tags)]
    now = now_ms()
    for run in dead:
        tags = run.data.tags
        set_tags(client, run.info.run_id, {
            END_REASON_TAG: f"process {tags[PID_TAG]} on {tags.get(HOST_TAG)} ended without closing its run"})
        retry_locked(client.set_terminated, run.info.run_id, "KILLED", now)
    still_running = {run.data.tags.get(PARENT_RUN_TAG) for run in running if run not in dead}
    for parent_id in {run.data.tags.get(PARENT_RUN_TAG) for run in dead} - still_running - {None}:
        stage = next(run.data.tags.get(STAGE_TAG) for run in dead if run.data.tags.get(PARENT_RUN_TAG) == parent_id)
        set_tags(client, parent_id, {END_REASON_TAG: f"{stage}: its process ended without closing its run"})
        retry_locked(client.set_terminated, parent_id, "KILLED", now)
    return [run.info.run_id for run in dead]


def process_tags() -> dict[str, str]:
    pid = os.getpid()
    return {PID_TAG: str(pid), PID_START_TAG: process_start(pid) or "", HOST_TAG: socket.gethostname()}


def owner_alive(tags: Mapping[str, str]) -> bool:
    """Whether the process that opened a run may still run: True unless it is known to have ended
    (its pid is gone on this host, or now belongs to a process started at another time)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
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
