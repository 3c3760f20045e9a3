"""The kinds of error a user can fix, and how a command reports them.

Each names the parameter key or the file at fault and what to do about it; a command prints it
as one line and exits with status 2. Anything else is a bug and keeps its traceback.
``RNAS_DEBUG=1`` prints the traceback of every error.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class UserError(Exception):
    """A problem in what the user gave: the message names the key or file, and what to do."""


class ConfigError(UserError, ValueError):
    """A bad parameter; the message names the key."""


class DataError(UserError, ValueError):
    """A dataset that cannot be used as it is; the message names the file or the parameter pointing to it."""


class TrackingError(UserError):
    """The tracking store (an MLflow server) does not answer; the message names its URI and what to do."""


class ArtifactError(UserError, ValueError):
    """A file a stage or command reads (model, checkpoint, pool, table) that is missing, unreadable or
    inconsistent; the message names the file and how to make it again."""


def run_command(body: Callable[[], int | None]) -> int:
    """Run a command's body and return its exit status: a ``UserError`` (or a missing file) is one
    line on stderr and status 2, Ctrl-C one line and status 130."""
    try:
        return body() or 0
    except (UserError, FileNotFoundError) as e:
        _debug_traceback()
        print(f"error: {e}", file=sys.stderr, flush=True)
        return USAGE_ERROR
    except KeyboardInterrupt:
        _debug_traceback()
        print("interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED


def _debug_traceback() -> None:
    if os.environ.get("RNAS_DEBUG") == "1":
        traceback.print_exc()
