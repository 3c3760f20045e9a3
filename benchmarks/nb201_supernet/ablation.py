"""What each part of the NB201 search adds: found cell and ranking quality over reported seeds.

    python benchmarks/nb201_supernet/ablation.py --runs combination=runs/ \\
        --signals signals_random1000.jsonl --baseline 'baseline_seed*.csv' [--baseline ...] --out ablation.csv

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
  pipeline's wall time, the best by validation accuracy at the last epoch.

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

from rnas.judging.rank_stats import welch_p
from rnas.judging.rank_stats import kendall_tau

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


def baseline_rows(pattern: str) -> dict[str, dict[int, tuple[float, float]]]:
    row, cells = {}, []
    for path in sorted(glob.glob(pattern)):
        frame = pd.read_csv(path)
        last = max(int(c.rsplit("_", 1)[1]) for c in frame.columns if c.startswith("valid_acc_"))
        valid = frame[f"valid_acc_{last}"]
        row[seed_of(path)] = (float(frame["truth"][valid.idxmax()]), kendall_tau(valid.tolist(), frame["truth"].tolist()))
        cells.append(len(frame))
    return ({f"random cells, {last} epochs each, best by validation (~{round(statistics.mean(cells))} cells)": row}
            if row else {})


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
    parser.add_argument("--baseline", action="append", default=[],
                        help="glob of standalone.py --random CSVs, one per seed (repeat: one row per glob)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: dict[str, dict[int, tuple[float, float]]] = {}
    for i, spec in enumerate(args.runs):
        label, _, folder = spec.partition("=")
        rows.update(run_rows(label, Path(folder), parts=i == 0))
    if args.signals:
        rows.update(signal_rows(args.signals, args.ensembles))
    for pattern in args.baseline:
        rows.update(baseline_rows(pattern))
    first = next(iter(rows.values()), {})
    reference = [first[s][0] for s in sorted(first)] if first else None
    table = [summarise(label, by_seed, None if i == 0 else reference) for i, (label, by_seed) in enumerate(rows.items())]
    for row in table:
        print(json.dumps(row))
    if args.out:
        pd.DataFrame(table).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
