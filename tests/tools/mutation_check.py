"""Do the tests catch the known bugs? Each mutation, made alone in a scratch copy, must fail a test.

    python tests/tools/mutation_check.py [--only NAME ...] [--keep]

For each mutation below (the bugs docs/algorithm.md names, and other mistakes typical of this family
of methods) the tracked files are copied to a temporary folder, the one change is made there
(the text to replace must occur exactly once), and the named test files are run with pytest
(``-x``, one torch thread). A mutation is caught when pytest fails. Prints one JSON line per
mutation, then a summary line; exits 1 if any mutation survives.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MRAS, NAO, BASE = "rnas/strategies/rnas.py", "rnas/strategies/nao.py", "rnas/strategies/base.py"
CONTROLLER = "rnas/search/controller.py"
LM = "rnas/training/language_model.py"
MATH_TESTS = ["tests/test_mras.py", "tests/test_controller.py"]
STRATEGY_TESTS = ["tests/test_search_options.py", "tests/test_mras.py"]

#: name -> (edits [(file, old, new)], test files)
MUTATIONS: dict[str, tuple[list[tuple[str, str, str]], list[str]]] = {
    "covariance centred on the old mean": (
        [(MRAS, "new_var = w @ (x[elite] - new_mean) ** 2", "new_var = w @ (x[elite] - mean) ** 2")], MATH_TESTS),
    "next samples drawn around the old mean": (
        [(MRAS, "    mean, var = init_mean.clone(), init_var.clone()\n",
          "    mean, var = init_mean.clone(), init_var.clone()\n    old_mean = mean\n"),
         (MRAS, "            new_mean = w @ x[elite]\n", "            old_mean, new_mean = mean, w @ x[elite]\n"),
         (MRAS, "x = _draw(n_samples, mean, var,", "x = _draw(n_samples, old_mean, var,")],
        MATH_TESTS),
    "elite indicator removed": (
        [(MRAS, "elite = h >= gamma", "elite = torch.ones_like(h, dtype=torch.bool)")], MATH_TESTS),
    "indicator returns H instead of 1": (
        [(MRAS, "w = torch.softmax(tau * log_w, dim=0)", "w = torch.softmax(tau * log_w + h[elite].log(), dim=0)")],
        MATH_TESTS),
    "density ratio removed": ([(MRAS, "                if drawn:\n", "                if False:\n")], MATH_TESTS),
    "density ratio inverted": (
        [(MRAS, "return log_f0 - torch.logaddexp(log_f + math.log(1 - mixture), log_f0 + math.log(mixture))",
          "return torch.logaddexp(log_f + math.log(1 - mixture), log_f0 + math.log(mixture)) - log_f0")], MATH_TESTS),
    "ESS tempering removed": ([(MRAS, "tau = temper(log_w, cfg.ess_min)", "tau = 1.0")], MATH_TESTS),
    "gamma/N adaptation dead": (
        [(MRAS, "if cfg.adaptive and k > 1 and candidate < gamma + cfg.eps / 2:", "if False:")], MATH_TESTS),
    "gamma the rho quantile (elites the worst)": (
        [(MRAS, "torch.quantile(h, 1 - cfg.rho)", "torch.quantile(h, cfg.rho)")], MATH_TESTS),
    "smoothing weights swapped": (
        [(MRAS, "mean = cfg.smoothing * new_mean + (1 - cfg.smoothing) * mean",
          "mean = (1 - cfg.smoothing) * new_mean + cfg.smoothing * mean")], MATH_TESTS),
    "NAO step reversed (downhill)": (
        [(NAO, "yield latent.detach() + i * self.config.step * grad",
          "yield latent.detach() - i * self.config.step * grad")], MATH_TESTS),
    "symmetry augmentation removed": (
        [(CONTROLLER, "variants = [space.symmetric_variant(a, rng) for a in archs] if cfg.symmetry_augment else list(archs)",
          "variants = list(archs)")], MATH_TESTS),
    "decoder input not swapped with the target": (
        [(CONTROLLER, "inputs = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], dim=1)",
          "canon = self.tokens([self.space.canonical(self.space.from_tokens(t)) for t in target.tolist()])\n"
          "        inputs = torch.cat([torch.zeros_like(target[:, :1]), canon[:, :-1]], dim=1)")], MATH_TESTS),
    "decoded cells deduplicated on raw form, not canonical": (
        [(BASE, "                arch = self.space.canonical(arch)\n", "")], MATH_TESTS),
    "canonical form is the identity (CNN space)": (
        [("rnas/spaces/nao_cnn.py", "first, second = sorted([node[:2], node[2:]])", "first, second = node[:2], node[2:]")],
        MATH_TESTS + ["tests/test_space_nao_cnn.py", "tests/test_pool_and_config.py"]),
    "direction inverted for a loss objective": (
        [("rnas/tasks/base.py", "return measured if self.higher_is_better else -measured", "return measured")],
        MATH_TESTS),
    "image loss score kept as it is (searched uphill)": (
        [("rnas/tasks/image.py", '"loss": Objective(measured="validation loss", higher_is_better=False,',
          '"loss": Objective(measured="validation loss", higher_is_better=True,')], MATH_TESTS),
    "supernet scored by accuracy whatever score_by says": (
        [("rnas/training/supernet.py", 'by_loss = self.cfg.score_by == "loss"', 'by_loss = False')], ["tests/test_training.py"]),
    "predictor targets inverted (best gets 0)": (
        [(CONTROLLER, "return [(s - lo) / (hi - lo) if hi > lo else 0.5 for s in scores]",
          "return [(hi - s) / (hi - lo) if hi > lo else 0.5 for s in scores]")], MATH_TESTS),
    "candidates ranked worst first": (
        [(BASE, "predicted.argsort(descending=True)[:n]", "predicted.argsort()[:n]")], STRATEGY_TESTS),
    "local search around the worst observed": (
        [("rnas/strategies/local.py", "sorted(history, key=lambda o: -o.score)", "sorted(history, key=lambda o: o.score)")],
        STRATEGY_TESTS),
    "re-rank winner the worst validation score": (
        [("rnas/search/rerank.py", 'return max(rows, key=lambda row: (row["validation_score"], -row["search_rank"]))',
          'return min(rows, key=lambda row: (row["validation_score"], -row["search_rank"]))')],
        ["tests/test_rerank.py"]),
    "re-rank candidates ignore the minimum distance": (
        [("rnas/search/rerank.py", ">= min_distance for j in chosen)", ">= 0 for j in chosen)")], ["tests/test_rerank.py"]),
    "language model delivers the last epoch, not the best": (
        [(LM, '        self.model.load_state_dict(self.best["model"])\n', "")], ["tests/test_rnn.py"]),
    "language checkpoint forgets the best weights": (
        [(LM, '        self.best = state["best"]\n', "")], ["tests/test_rnn.py"]),
    "a blind supernet goes unreported": (
        [("rnas/search/pool.py", "        if spread >= BLIND_SPREAD:\n", "        if True:\n")], ["tests/test_blind_search.py"]),
    "tau of a blind pool reported as a number": (
        [("rnas/search/embedding.py", "    return {} if reason is None else", "    return {} if True else")],
        ["tests/test_embedding.py", "tests/test_blind_search.py"]),
    "re-rank retrains cells an interrupted run measured": (
        [("rnas/search/rerank.py", "        if i % ranks != rank or key in done:", "        if i % ranks != rank:")],
        ["tests/test_rerank.py"]),
    "re-rank repeats all train from the run's seed": (
        [("stages/rerank.py", "seed=repeat_seed(p.seed, repeat)", "seed=p.seed")],
        ["tests/test_pipeline.py::test_rerank_on_two_processes_trains_each_cell_once_and_picks_the_same_winner"]),
    "re-rank ranks by the first training, not the mean of the repeats": (
        [("rnas/search/rerank.py", "**mean_record([measured[k] for k in own])", "**mean_record([measured[own[0]]])")],
        ["tests/test_rerank.py"]),
    "re-rank repeats do not reuse one training a run measured": (
        [("rnas/search/rerank.py", 'return arch if repeat == 0 else f"{arch}#{repeat}"', 'return f"{arch}#{repeat}"')],
        ["tests/test_rerank.py"]),
    "more CUDA ranks than GPUs let through": (
        [("rnas/device.py", "processes > (count := torch.cuda.device_count())",
          "processes > (count := torch.cuda.device_count()) + 1")],
        ["tests/test_training.py"]),
    "the GPU check skipped when ranks are launched": (
        [("rnas/pipeline.py", "        require_gpu_per_rank(params.device, processes, key)\n", "")],
        ["tests/test_pipeline.py::test_more_ranks_than_gpus_stop_before_any_starts"]),
    "a signal's sign inverted (naswot: lower is better)": (
        [("rnas/search/signals.py", "    return torch.linalg.slogdet(activations.kernel).logabsdet.item()",
          "    return -torch.linalg.slogdet(activations.kernel).logabsdet.item()")], ["tests/test_signals.py"]),
    "the combined ranking ignores a member": (
        [("rnas/search/ranking.py", "ranked = {name: w for name, w in weights.items() if w > 0}",
          "ranked = dict(list({name: w for name, w in weights.items() if w > 0}.items())[:1])")],
        ["tests/test_ranking.py"]),
    "the combined ranking ranks values, not percentiles": (
        [("rnas/search/ranking.py", "percentiles = {name: rank_percentiles(members[name]) for name in ranked}",
          "percentiles = {name: list(members[name]) for name in ranked}")], ["tests/test_ranking.py"]),
    "a tuning run judged on the report column": (
        [("rnas/judging/truth.py", 'return cls("tune", cfg.select_col) if is_tuning_seed(seed)',
          'return cls("tune", cfg.report_col) if is_tuning_seed(seed)')], ["tests/test_ranking.py"]),
    "tuning reference cells drawn from the reported ones": (
        [("rnas/judging/truth.py", "random.Random(TUNING_REFERENCE_SEED), exclude=set(reported))",
          "random.Random(REFERENCE_SEED))")], ["tests/test_ranking.py"]),
    "the signals scored on the validation split": (
        [("rnas/tasks/image.py", '        train = load_split(data, "train")\n', '        train = load_split(data, "valid")\n')],
        ["tests/test_ranking.py"]),
    "a cell's signals depend on the cells scored before it": (
        [("rnas/search/ranking.py", "            torch.manual_seed(cell_seed(seed, arch))\n", "")], ["tests/test_ranking.py"]),
    "precision@top breaks ties by the cells' order": (
        [("rnas/judging/rank_stats.py", "    return sum(p * q for p, q in zip(top_membership(scores, k), top_membership(truth, k))) / k",
          "    top = lambda v: set(sorted(range(len(v)), key=lambda i: -v[i])[:k])  # noqa: E731\n"
          "    return len(top(list(scores)) & top(list(truth))) / k")], ["tests/test_truth.py"]),
    "the search keeps the strategy's trace of an earlier round": (
        [("rnas/strategies/rnas.py", "        self.last_search = None  # a call", "        pass  # a call")],
        ["tests/test_search.py", "tests/test_mras.py"]),
    "rerank reuses measurements made with another seed": (
        [("stages/rerank.py", "train=dataclasses.asdict(train),\n                           seed=p.seed)",
          "train=dataclasses.asdict(train))")], ["tests/test_rerank.py"]),
    "a round rescores nothing after the supernet trained": (
        [("rnas/search/rounds.py", "            pool.scores = rescore(supernet, pool, f\"round {round_}\", trained)",
          "            pool.scores = rescore(supernet, pool, f\"round {round_}\", False)")], ["tests/test_search.py"]),
    "a stage's dvc.yaml deps miss a module it imports": (
        [("dvc.yaml", "           rnas/search/rounds.py, rnas/search/signals.py,", "           rnas/search/signals.py,")], ["tests/test_dvc_deps.py"]),
    "runs of other hosts never die by their heartbeat": (
        [("rnas/tracking/liveness.py", "        return not beat.isdigit() or now_ms() - int(beat) <= timeout_seconds * 1000",
          "        return True")], ["tests/test_tracking.py"]),
    "the heartbeat thread never beats": (
        [("rnas/tracking/liveness.py", "        while not self._stop.wait(self._seconds):", "        while False:")],
        ["tests/test_tracking.py"]),
    "rerank ranks each train every candidate": (
        [("rnas/search/rerank.py", "        if i % ranks != rank or key in done:", "        if key in done:")],
        ["tests/test_rerank.py"]),
    "a tracking server that does not answer is not checked before work": (
        [("rnas/tracking/stage_run.py", "    if is_server(uri):\n        require_server(uri)\n", "")],
        ["tests/test_faults.py"]),
    "an exposed tracking server starts without credentials": (
        [("scripts/tracking-server.sh", "    exposed || return 0\n", "    return 0\n")], ["tests/test_server.py"]),
    "a NB201 network takes the NAO network's settings": (
        [("rnas/tasks/image.py", '    params = {"nao_cnn": ImageParams, "nb201": NB201Params}',
          '    params = {"nao_cnn": ImageParams, "nb201": ImageParams}')], ["tests/test_pipeline.py"]),
    "a params default differs from conf/": (
        [("rnas/params.py", "    pool_size: int = 100\n", "    pool_size: int = 1000\n")], ["tests/test_pipeline.py"]),
}


def copy_project(dest: Path) -> None:
    """The tracked and untracked files, committed in a new git repository: tests that clone the
    project (``git ls-files``) run in the copy as they do here."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=mutation", "-c", "user.email=mutation@localhost",
                                                    "commit", "-qm", "scratch"]):
        subprocess.run(["git", *command], cwd=dest, check=True, capture_output=True)


def mutate(project: Path, edits: list[tuple[str, str, str]]) -> None:
    for file, old, new in edits:
        path = project / file
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"mutation text found {text.count(old)} times in {file}: {old!r}")
        path.write_text(text.replace(old, new))


def check(name: str, keep: bool) -> dict:
    edits, tests = MUTATIONS[name]
    scratch = Path(tempfile.mkdtemp(prefix="mut-"))
    try:
        copy_project(scratch)
        mutate(scratch, edits)
        start = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                             cwd=scratch, env=env, capture_output=True, text=True)
        failed = [line.split(" ")[1] for line in run.stdout.splitlines() if line.startswith("FAILED")]
        return {"mutation": name, "caught": run.returncode != 0, "failed": failed[:3],
                "seconds": round(time.perf_counter() - start, 1), **({"scratch": str(scratch)} if keep else {})}
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="mutation names (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    args = parser.parse_args()
    names = args.only or list(MUTATIONS)
    results = []
    for name in names:
        results.append(check(name, args.keep))
        print(json.dumps(results[-1]), flush=True)
    survivors = [r["mutation"] for r in results if not r["caught"]]
    print(json.dumps({"mutations": len(results), "caught": len(results) - len(survivors), "survived": survivors}))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
