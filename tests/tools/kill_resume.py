"""Kill-and-resume under DVC: SIGKILL `dvc repro` during retraining, `dvc repro` again, and compare
the final weights with an uninterrupted run, bit for bit. Prints one JSON line.

    python tests/tools/kill_resume.py --project DIR --trials 10

DIR is a git + DVC project whose pipeline is up to date (e.g. the smoke profile after `dvc repro`);
its current model is the reference. Each trial forces retrain (`dvc repro -f -s retrain`, which
trains anew), kills the whole process group at a random moment after the first epoch's checkpoint,
then reruns `dvc repro` and checks that it resumed and ended with the reference weights.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import torch

MODEL = Path("artifacts/retrain/model.pt")
CHECKPOINT = Path("artifacts/retrain_state/checkpoint.pt")


def weights(project: Path) -> dict[str, torch.Tensor]:
    return torch.load(project / MODEL, weights_only=True)["state_dict"]


def killed_mid_retrain(project: Path, rng: random.Random, max_delay: float) -> bool:
    """Start a forced retrain and SIGKILL it after its first checkpoint; False if it finished first."""
    (project / CHECKPOINT).unlink(missing_ok=True)
    process = subprocess.Popen(["dvc", "repro", "-f", "-s", "retrain"], cwd=project, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (project / CHECKPOINT).exists() and process.poll() is None:
        time.sleep(0.05)
    time.sleep(rng.uniform(0, max_delay))
    if process.poll() is not None:
        return False
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--max-delay", type=float, default=4.0, help="seconds after the first checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    project, rng = args.project.resolve(), random.Random(args.seed)
    reference = weights(project)
    passed, interrupted, resumed_after = 0, 0, []
    for _ in range(args.trials):
        if not killed_mid_retrain(project, rng, args.max_delay):
            continue
        interrupted += 1
        rerun = subprocess.run(["dvc", "repro"], cwd=project, capture_output=True, text=True)
        resumed = [line for line in rerun.stdout.splitlines() + rerun.stderr.splitlines() if "resuming" in line]
        resumed_after += [line.split("after epoch ")[-1] for line in resumed]
        now = weights(project) if rerun.returncode == 0 else {}
        passed += (rerun.returncode == 0 and len(resumed) == 1 and now.keys() == reference.keys()
                   and all(torch.equal(now[k], reference[k]) for k in reference))
    print(json.dumps({"trials": args.trials, "interrupted": interrupted, "passed": passed,
                      "resumed_after": resumed_after}))


if __name__ == "__main__":
    main()
