"""Run many ``python -m MODULE ARGS`` commands fast: each in its own process, forked from this one
after the slow imports (torch, the parameters) are done once.

Reads one JSON job per line on stdin: ``{"args": ["-m", "stages.check"], "cwd": DIR, "env": {...},
"stdout": FILE, "stderr": FILE}``; answers one line per job, the exit status the command would
have given (1 for an uncaught exception, with its traceback on the command's stderr).
Run with the project's code folder as the working directory: ``rnas`` is imported from there.
"""
import json
import os
import runpy
import sys
import traceback

sys.path.insert(0, os.getcwd())
import rnas.params  # noqa: E402,F401  the slow imports, done once
import rnas.pipeline  # noqa: E402,F401


def run(job: dict) -> None:
    """In the forked child: become the command, then exit with its status."""
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    sys.path[0] = job["cwd"]  # where `python -m` finds `stages`
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    flag, module, *argv = job["args"]
    assert flag == "-m", job["args"]
    sys.argv = [module, *argv]
    status = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main() -> None:
    sys.dont_write_bytecode = True
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run(job)
        _, status = os.waitpid(pid, 0)
        print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)


if __name__ == "__main__":
    main()
