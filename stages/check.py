"""check: every parameter validated, whatever the run reruns (DVC runs this stage every time).

Each stage validates the whole params.yaml before its own work too; this stage is what catches
a bad value of a parameter that no stage depends on (``threads``, ``tracking``), or one of a
stage that will not rerun, when nothing else runs.
"""
import sys

from rnas.errors import run_command
from rnas.tasks import load_params


def check() -> None:
    params = load_params("params.yaml")
    print(f"[check] params.yaml: every parameter is valid (task {params.task}, space {params.space})")


if __name__ == "__main__":
    sys.exit(run_command(check))
