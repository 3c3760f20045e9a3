"""How far each test bound on a training result is from failing, over seeds and thread counts.

    python tests/tools/bound_margins.py [--seeds 0 1 2 3 4] [--threads 1 2] [-k EXPRESSION] [--table]

Runs the tests marked ``trained`` (``pytest -m trained``) once per seed and thread count; each
``bound(...)`` check in them records its value (tests/conftest.py). Prints one JSON line: every
check's smallest margin (how far the value stayed from the limit, in the value's units) and
smallest relative margin (that over the limit's size), where it was smallest, and the runs that
failed. ``--table`` also writes a Markdown table of the same to stderr. Floating-point results
differ between processors and thread counts in their last bits, and training amplifies that: a
bound whose margin is thin here fails for somebody.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_trained_tests(seed: int, threads: int, margins: Path, select: str | None) -> int:
    env = {**os.environ, "RNAS_TEST_SEED": str(seed), "RNAS_TEST_THREADS": str(threads),
           "RNAS_TEST_MARGINS": str(margins), "OMP_NUM_THREADS": str(threads)}
    return subprocess.run([sys.executable, "-m", "pytest", "-m", "trained", "-q", "-p", "no:cacheprovider",
                           *(["-k", select] if select else [])], cwd=ROOT, env=env, capture_output=True,
                          text=True).returncode


def summarise(records: list[dict]) -> list[dict]:
    by_check = defaultdict(list)
    for record in records:
        by_check[(record["test"], record["check"])].append(record)
    rows = []
    for (test, check), found in by_check.items():
        limit = float(check.rsplit(" ", 1)[1])
        worst = min(found, key=lambda r: r["margin"])
        rows.append({"test": test, "check": check, "runs": len(found), "min_margin": worst["margin"],
                     "min_relative_margin": worst["margin"] / abs(limit) if limit else None,
                     "values": [min(r["value"] for r in found), max(r["value"] for r in found)],
                     "worst_at": {"seed": worst["seed"], "threads": worst["threads"]},
                     "failed": sum(r["margin"] <= 0 for r in found)})
    return sorted(rows, key=lambda row: (row["test"], row["check"]))


def markdown(rows: list[dict]) -> str:
    lines = ["| test | bound | runs | values (min, max) | smallest margin | relative |", "|---|---|---|---|---|---|"]
    for row in rows:
        relative = f"{row['min_relative_margin']:.0%}" if row["min_relative_margin"] is not None else "-"
        lines.append(f"| {row['test'].split('::', 1)[1]} | {row['check']} | {row['runs']} | "
                     f"{row['values'][0]:.3g}, {row['values'][1]:.3g} | {row['min_margin']:.3g} | {relative} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("-k", dest="select", help="only the trained tests pytest's -k expression selects")
    parser.add_argument("--table", action="store_true", help="a Markdown table on stderr too")
    args = parser.parse_args()
    start, failed_runs = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as folder:
        margins = Path(folder) / "margins.jsonl"
        for threads in args.threads:
            for seed in args.seeds:
                if run_trained_tests(seed, threads, margins, args.select) != 0:
                    failed_runs.append({"seed": seed, "threads": threads})
                print(f"[margins] seed {seed}, {threads} threads done", file=sys.stderr, flush=True)
        records = [json.loads(line) for line in margins.read_text().splitlines()] if margins.exists() else []
    rows = summarise(records)
    if args.table:
        print(markdown(rows), file=sys.stderr)
    print(json.dumps({"seeds": args.seeds, "threads": args.threads, "failed_runs": failed_runs, "checks": rows,
                      "seconds": round(time.perf_counter() - start)}))


if __name__ == "__main__":
    main()
