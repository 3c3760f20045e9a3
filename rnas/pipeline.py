"""What every pipeline stage does around its own work.

A stage script is ``@stage_main("name") def main(ctx): ...``: parameters are loaded and
validated before any work, seeds are set, the device is resolved, the stage is tracked, and
a user error (``rnas.errors``: a bad parameter, dataset or input file) ends the stage with one
line naming it and exit status 2. ``ctx.task`` does the work that differs between tasks
(``rnas.tasks``).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from rnas.artifacts import load_checkpoint, read_json, source_fingerprint, write_json
from rnas.device import leased_device, peak_memory, require_gpu_per_rank, reuse_freed_memory
from rnas.errors import ArtifactError, run_command
from rnas.params import PipelineParams
from rnas.search.pool import ArchPool
from rnas.spaces import SearchSpace, get_space
from rnas.strategies import SearchStrategy, make_strategy
from rnas.strategies.base import EmbeddingStrategy
from rnas.tasks import Task, get_task, load_params
from rnas.tasks.base import RunEnv, Supernet
from rnas.tracking import BLIND_SEARCH_TAG, SECONDS_PREFIX, StageRun, TrackingConfig, stage_run
from rnas.training.distributed import RENDEZVOUS_ENV, DistributedContext
from rnas.training.progress import CountProgress

#: the project's root: dvc.yaml and the code that fingerprints name
REPOSITORY = Path(__file__).resolve().parents[1]
PREPARED = Path("data/prepared")
ARTIFACTS = Path("artifacts")
#: each stage's output folder, in pipeline order (tracking links a reused folder to the run that wrote it)
STAGE_OUTPUTS = {"prepare": PREPARED, **{stage: ARTIFACTS / stage
                                         for stage in ("warmup", "embed", "sample", "rerank", "retrain", "evaluate")}}


@dataclass
class StageContext:
    name: str
    params: PipelineParams
    device: torch.device
    space: SearchSpace
    task: Task
    run: StageRun
    dist: DistributedContext

    @property
    def out(self) -> Path:
        return ARTIFACTS / self.name

    def provenance(self) -> dict[str, Any]:
        """Recorded in every artifact: the full params and seed that made it."""
        return {"stage": self.name, "seed": self.params.seed, "params": dataclasses.asdict(self.params)}

    def write_provenance(self, folder: Path) -> None:
        write_json(folder / "provenance.json", self.provenance())

    @property
    def env(self) -> RunEnv:
        """What the task's training needs of this stage: no DVC, no params."""
        return RunEnv(self.space, self.device, self.params.seed, self.provenance(), self.dist)

    def cheap_signals(self, data: Path, seed: int) -> Callable[[list[str]], dict[str, list[float]]]:
        """The task's zero-cost signals (``search.ranking.signals``) of cells given as space strings,
        on the prepared data in ``data``, with progress on stderr."""
        def signals(archs: list[str]) -> dict[str, list[float]]:
            progress = CountProgress(self.name, "signals of", len(archs), "cells")
            return self.task.cheap_signals(self.params, self.space.name, data, archs, self.device, seed,
                                           progress=lambda done, total: progress.update(done))
        return signals

    def search_strategy(self, pool: ArchPool, seed: int) -> SearchStrategy:
        """``search.strategy`` with its options and ``seed``; a strategy that searches an embedding
        takes the controller that embed fitted on ``pool`` (warmup's pool)."""
        s = self.params.search
        strategy = make_strategy(s.strategy, self.space, s.strategy_options(self.params.embed), seed=seed,
                                 key=f"search.strategies.{s.strategy}")
        if isinstance(strategy, EmbeddingStrategy):
            controller = load_checkpoint(ARTIFACTS / "embed/controller.pt", keys=("state_dict",))["state_dict"]
            strategy.adopt(controller, pool.observations())
        return strategy

    def supernet(self, data: Path) -> Supernet:
        """The task's fresh supernet of ``warmup``'s settings, for the prepared data in ``data``."""
        p = self.params
        return self.task.supernet(self.env, data, network=p.warmup.supernet, train=p.warmup.train,
                                  total_epochs=supernet_epochs(p), objective=self.task.objective(p))


def supernet_epochs(params: PipelineParams) -> int:
    """The supernet's whole schedule: warmup and every search round (one trainer state spans them)."""
    return params.warmup.train.epochs + params.search.rounds * params.search.epochs_per_round


def prepared_dir(params: PipelineParams, final: bool) -> Path:
    """Where prepare wrote a dataset: ``final`` is the retrain/evaluate one (the search one by default)."""
    return PREPARED / ("final" if final and params.data.final is not None else "search")


def code_deps(stage: str) -> tuple[str, ...]:
    """The code that ``stage``'s dvc.yaml deps name (``rnas/...``, ``stages/...``): what a resume
    fingerprint must cover, since DVC reruns the stage when any of it changes."""
    path = REPOSITORY / "dvc.yaml"
    if not path.is_file():
        raise ArtifactError(f"{path} not found: the stages run in the project that holds their code and dvc.yaml")
    deps = yaml.safe_load(path.read_text())["stages"][stage]["deps"]
    return tuple(d for d in deps if d.startswith(("rnas/", "stages/")))


def run_fingerprint(data: Path, code: tuple[str, ...], **parts: Any) -> str:
    """Identifies a resumable run: ``parts`` (params, seed, architecture...), the prepared dataset in
    ``data`` and the sources ``code`` (relative to the repository): a checkpoint whose fingerprint
    differs belongs to another run."""
    return hashlib.sha256(json.dumps(
        {**parts, "data": read_json(data / "meta.json").get("fingerprint"),
         "code": source_fingerprint(REPOSITORY, code)},
        sort_keys=True, default=str).encode()).hexdigest()


def report_blind_search(ctx: StageContext, pool: ArchPool) -> dict[str, int]:
    """Say so when the supernet scores ``pool`` blind: one warning line naming the cause and the levers,
    and a tag on the stage's run and the parent. Returns the metric that flags it."""
    reason = pool.blind_reason()
    if reason is not None:
        print(f"[{ctx.name}] warning: blind search: {reason}, so the search cannot tell good cells from bad; "
              f"train the supernet longer (warmup.train.epochs, search.epochs_per_round) or on more data "
              f"(data.search)", file=sys.stderr, flush=True)
        ctx.run.tag_summary({BLIND_SEARCH_TAG: reason})
    return {"supernet_blind": int(reason is not None)}


def numeric(record: dict[str, Any]) -> dict[str, float]:
    """The entries of ``record`` that are numbers (what MLflow takes as metrics)."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float))}


def require_inputs(*paths: Path) -> None:
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise ArtifactError(f"missing input {missing[0]} (run the stage that makes it: `dvc repro`)")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def trainer_processes(p) -> tuple[str, int]:
    """The processes of a distributed stage, and the key that sets them: ``trainer.nproc``."""
    return "trainer.nproc", p.trainer.nproc


def stage_main(name: str, distributed: bool = False, nproc: Callable[[Any], tuple[str, int]] = trainer_processes
               ) -> Callable[[Callable[[StageContext], None]], Callable[[], None]]:
    """Decorate a stage's body. ``distributed`` stages run in as many processes as ``nproc(params)``
    gives (with the key that set it; by default ``trainer.nproc``) when that is > 1: the stage relaunches
    itself (``_run_ranks``), and only rank 0 tracks and writes artifacts."""
    def decorate(body: Callable[[StageContext], None]) -> Callable[[], None]:
        @functools.wraps(body)
        def main() -> None:
            raise SystemExit(run_command(lambda: _run_stage(name, body, distributed, nproc)))
        return main
    return decorate


def _run_stage(name: str, body: Callable[[StageContext], None], distributed: bool,
               nproc: Callable[[Any], tuple[str, int]]) -> int:
    params = load_params("params.yaml")
    key, processes = nproc(params)
    if distributed and processes > 1 and "LOCAL_RANK" not in os.environ:
        require_gpu_per_rank(params.device, processes, key)
        return _run_ranks(name, processes)
    if params.threads:
        torch.set_num_threads(params.threads)
    space = get_space(params.space)
    seed_everything(params.seed)
    with leased_device(params.device) as device:
        if device.type == "cpu":
            reuse_freed_memory()
        dist = DistributedContext.from_env(device) if distributed else DistributedContext(device=device)
        tracking = params.tracking if dist.is_main else TrackingConfig(enabled=False)
        try:
            with stage_run(name, tracking, Path.cwd(), dataclasses.asdict(params),
                           output=STAGE_OUTPUTS.get(name), upstream=_upstream_outputs(name)) as run:
                started = time.perf_counter()
                body(StageContext(name, params, dist.device, space, get_task(params.task), run, dist))
                _report_cost(name, run, time.perf_counter() - started, device)
        finally:
            dist.close()
    return 0


def _upstream_outputs(name: str) -> dict[str, Path]:
    """The output folders of the stages before ``name`` (DVC may have reused them from its cache)."""
    stages = list(STAGE_OUTPUTS)
    return {stage: STAGE_OUTPUTS[stage] for stage in stages[:stages.index(name)]} if name in STAGE_OUTPUTS else {}


def _report_cost(name: str, run: StageRun, seconds: float, device: torch.device) -> None:
    """What the stage cost, printed and tracked: users size profiles for their machine from it."""
    cost = {"stage_seconds": round(seconds, 1), **peak_memory(device)}
    run.log_metrics(cost)
    run.log_summary({f"{SECONDS_PREFIX}{name}": cost["stage_seconds"]})
    print(f"[{name}] done in {seconds:.0f} s, peak memory {cost['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)


def _run_ranks(name: str, nproc: int) -> int:
    """Run the stage in ``nproc`` processes on this machine, as torchrun would (RANK, WORLD_SIZE,
    LOCAL_RANK), meeting through a store file in a private temporary folder: nothing listens on the
    network. (torchrun's rendezvous store listens on every interface, whatever address it is given.)
    The first rank to fail stops the others; its exit status is the stage's."""
    command = [sys.executable, "-m", f"stages.{name}"]
    print(f"[{name}] running on {nproc} processes: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="rnas-ranks-") as folder:
        env = {**os.environ, "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
               RENDEZVOUS_ENV: f"file://{folder}/store"}
        for variable in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):  # ranks talk over loopback only
            env.setdefault(variable, "lo")
        ranks = [subprocess.Popen(command, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(nproc)]
        try:
            return _first_failure(ranks)
        finally:
            for rank in ranks:
                if rank.poll() is None:
                    rank.terminate()
                    rank.wait()


def _first_failure(ranks: list[subprocess.Popen]) -> int:
    """Wait for every rank; the exit status of the first to fail (0 when none does)."""
    while True:
        codes = [rank.poll() for rank in ranks]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            return failed[0]
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.2)
