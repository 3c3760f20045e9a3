"""What each part of the NB201 search adds: found cell and ranking quality over reported seeds.

    python benchmarks/nb201_supernet/ablation.py --runs combination=runs/ \\
        --signals signals_random1000.jsonl --baseline 'baseline_seed*.csv' [held_out=N] [budget_cpu_seconds=S] \\
        [--baseline ...] --out ablation.csv

Rows (one value per seed; the found cell's true test accuracy, and the ranking's Kendall tau):
- from pipeline runs (``--runs LABEL=DIR``: DIR holds each reported run's
  ``artifacts/evaluate/metrics.json`` as ``seed<K>.json``): LABEL itself (``truth_found_acc``,
  ``truth_ranking_kendall_tau``); "LABEL without short trainings", the ranking's own pick in the final
  pool (``truth_ranked_pool_pick_acc``); "supernet alone, no short trainings", the supernet's pick
  (``truth_pool_pick_acc``, ``truth_supernet_kendall_tau``); the last two for the first LABEL only
  (later labels, such as an earlier setting rerun on the same supernets, add their own row);
- from ``benchmarks/signals_nb201.py --random`` lines (``--signals``): each signal, and the
  ``--ensembles`` of signals, picking the best-scored of the same random cells, with no training;
- from ``standalone.py --random --budget-cpu-seconds`` tables (``--baseline``, one CSV per seed, named
  ``..._seed<K>.csv``): the honest baseline, random cells each given rerank's short training for the
  pipeline's CPU time, the best by validation accuracy at the last epoch (``held_out=N``: on the
  validation and N held-out images together, as rerank scores on 20,000; ``budget_cpu_seconds=S``: only
  the cells that S CPU seconds train, so that a table trained with a larger budget can stand for the
  pipeline's time measured afterwards).

Prints one JSON line per row (mean, sample std, 95% interval half-width, Welch's p against the
first --runs label) and writes --out. Only reported runs are accepted (``truth_role: report``):
nothing here chooses a setting.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import re
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd
from scipy import stats

from benchmarks.nb201_supernet.repeats import final_accuracy_of
from benchmarks.nb201_supernet.standalone import validated_epochs
from rnas.judging.rank_stats import kendall_tau, welch_p

SEED = re.compile(r"seed(\d+)")


def seed_of(path: str) -> int:
    match = SEED.search(Path(path).name)
    if match is None:
        raise SystemExit(f"{path}: the file name must hold seed<K>")
    return int(match.group(1))


def run_rows(label: str, folder: Path, parts: bool) -> dict[str, dict[int, tuple[float, float]]]:
    rows: dict[str, dict[int, tuple[float, float]]] = {label: {}, f"{label} without short trainings": {},
                                                       "supernet alone, no short trainings": {}}
    for path in sorted(folder.glob("seed*.json")):
        metrics = json.loads(path.read_text())
        if metrics.get("truth_role") != "report":
            raise SystemExit(f"{path}: not a reported run (truth_role {metrics.get('truth_role')!r})")
        seed = seed_of(str(path))
        rows[label][seed] = (metrics["truth_found_acc"], metrics["truth_ranking_kendall_tau"])
        rows[f"{label} without short trainings"][seed] = (metrics["truth_ranked_pool_pick_acc"],
                                                         metrics["truth_ranking_kendall_tau"])
        rows["supernet alone, no short trainings"][seed] = (metrics["truth_pool_pick_acc"],
                                                           metrics["truth_supernet_kendall_tau"])
    return rows if parts else {label: rows[label]}


def signal_rows(path: Path, ensembles: list[str]) -> dict[str, dict[int, tuple[float, float]]]:
    """Each single signal and each of ``ensembles`` (e.g. ``params+synflow+naswot``)."""
    rows: dict[str, dict[int, tuple[float, float]]] = {}
    for line in path.read_text().splitlines():
        result = json.loads(line)
        if result["role"] != "report":
            raise SystemExit(f"{path}: seed {result['seed']} is a tuning seed")
        for name, quality in result["signals"].items():
            if "+" in name and name not in ensembles:
                continue
            rows.setdefault(f"{name}, best of {result['n']} random cells", {})[result["seed"]] = (
                quality["pick_acc"], quality["kendall_tau"])
    return rows


def baseline_rows(pattern: str, held_out: int | None = None,
                  budget: float | None = None) -> dict[str, dict[int, tuple[float, float]]]:
    """The honest baseline from one CSV per seed: each seed's pick by the final validation accuracy (with
    ``held_out``, on the validation and the first ``held_out`` held-out images together, as ``repeats.py``
    scores them), among the cells that a ``budget`` of CPU seconds trains (all, without one)."""
    row, cells, images = {}, [], set()
    for path in sorted(glob.glob(pattern)):
        frame = within_budget(pd.read_csv(path), budget).set_index("arch")
        valid, truth = final_accuracy_of(frame, held_out, path), frame["truth"]
        row[seed_of(path)] = (float(truth[valid.idxmax()]), kendall_tau(valid.tolist(), truth.tolist()))
        cells.append(len(frame))
        if "valid_images" in frame:  # older tables do not say
            images.update(int(n) + (held_out or 0) for n in frame["valid_images"])
    if not row:
        return {}
    epochs = validated_epochs(frame)[-1]
    on = f" on {' or '.join(f'{n:,}' for n in sorted(images))} images" if images else ""
    spent = f", {budget:,.0f} CPU-s" if budget is not None else ""
    return {f"random cells, {epochs} epochs each, best by validation{on}{spent} (~{round(statistics.mean(cells))} cells)": row}


def within_budget(frame: pd.DataFrame, budget: float | None) -> pd.DataFrame:
    """The rows ``standalone.py --budget-cpu-seconds budget`` would have trained: each started while the
    CPU seconds of the rows before it were under ``budget``. Lets one run with a larger budget stand for
    a smaller one fixed afterwards (the pipeline's measured time), cutting by cost, never by outcome."""
    if budget is None:
        return frame
    spent_before = frame["cpu_seconds"].cumsum() - frame["cpu_seconds"]
    return frame[spent_before < budget]


def baseline_spec(spec: list[str]) -> tuple[str, int | None, float | None]:
    """``GLOB [held_out=N] [budget_cpu_seconds=S]`` (one --baseline option)."""
    options = dict(item.split("=", 1) for item in spec[1:] if "=" in item)
    unknown = (set(options) - {"held_out", "budget_cpu_seconds"}) | {i for i in spec[1:] if "=" not in i}
    if unknown:
        raise SystemExit(f"--baseline {' '.join(spec)}: unknown {sorted(unknown)} (held_out=N budget_cpu_seconds=S)")
    held_out = int(options["held_out"]) if "held_out" in options else None
    budget = float(options["budget_cpu_seconds"]) if "budget_cpu_seconds" in options else None
    return spec[0], held_out, budget


def summarise(label: str, by_seed: dict[int, tuple[float, float]], reference: list[float] | None) -> dict:
    seeds = sorted(by_seed)
    accs, taus = [by_seed[s][0] for s in seeds], [by_seed[s][1] for s in seeds]
    std = statistics.stdev(accs) if len(accs) > 1 else math.nan
    ci = float(stats.t.ppf(0.975, len(accs) - 1) * std / len(accs) ** 0.5) if len(accs) > 1 else math.nan
    return {"row": label, "seeds": seeds, "found_acc": [round(a, 3) for a in accs],
            "mean": round(statistics.mean(accs), 3), "std": round(std, 3), "ci95": round(ci, 3),
            "kendall_tau_mean": round(statistics.mean(taus), 4),
            "p_vs_first": None if reference is None else round(welch_p(reference, accs), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", action="append", default=[], help="LABEL=DIR of seed<K>.json metrics")
    parser.add_argument("--signals", type=Path, help="signals_nb201.py --random JSON lines")
    parser.add_argument("--ensembles", nargs="*", default=["params+synflow+naswot"],
                        help="ensembles of signals to report beside the single signals")
    parser.add_argument("--baseline", action="append", default=[], nargs="+", metavar="GLOB [KEY=VALUE]",
                        help="glob of standalone.py --random CSVs, one per seed (repeat: one row per glob), then "
                             "optionally held_out=N (pick on the validation and N held-out images) and "
                             "budget_cpu_seconds=S (only the cells S CPU seconds train)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: dict[str, dict[int, tuple[float, float]]] = {}
    for i, spec in enumerate(args.runs):
        label, _, folder = spec.partition("=")
        rows.update(run_rows(label, Path(folder), parts=i == 0))
    if args.signals:
        rows.update(signal_rows(args.signals, args.ensembles))
    for spec in args.baseline:
        rows.update(baseline_rows(*baseline_spec(spec)))
    first = next(iter(rows.values()), {})
    reference = [first[s][0] for s in sorted(first)] if first else None
    table = [summarise(label, by_seed, None if i == 0 else reference) for i, (label, by_seed) in enumerate(rows.items())]
    for row in table:
        print(json.dumps(row))
    if args.out:
        pd.DataFrame(table).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
