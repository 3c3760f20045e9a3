"""Shared fixtures.

Tests that assert on the result of training (an accuracy above x, a loss ratio below y, a tau) take
their seed from the ``seed`` fixture and check with ``bound``: ``tests/tools/bound_margins.py`` reruns
them (``-m trained``) over seeds and thread counts and reports each bound's smallest margin, so a
bound that holds only by luck on one CPU shows up before a user meets it.
"""
import json
import operator
import os

import pytest
import torch

SEED_ENV, THREADS_ENV, MARGINS_ENV = "RNAS_TEST_SEED", "RNAS_TEST_THREADS", "RNAS_TEST_MARGINS"
#: Small tensors on a 2-core machine: one intra-op thread is faster and keeps timings steady.
THREADS = int(os.environ.get(THREADS_ENV, "1"))

COMPARE = {"<": operator.lt, ">": operator.gt}

#: The modules that take longest, longest first (measured: docs/testing.md). `--dist loadscope` hands
#: whole modules to the two workers in collection order (`--no-loadscope-reorder`, in pyproject.toml),
#: so these start first and none of them is left to run alone at the end.
LONGEST_FIRST = ("test_server.py", "test_experiments.py", "test_truth.py", "test_pipeline.py",
                 "test_pipeline_rnn.py", "test_faults.py")


def pytest_configure(config):
    config.addinivalue_line("markers", "trained: asserts on the result of training (tests/tools/bound_margins.py)")
    config.addinivalue_line("markers", "slow: runs the pipeline or stage processes; `-m \"not slow\"` is the quick loop")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: each module keeps its own order


@pytest.fixture(autouse=True)
def test_threads():
    """Every test starts on ``THREADS`` torch threads, whatever the one before it set."""
    torch.set_num_threads(THREADS)


@pytest.fixture
def seed() -> int:
    """The seed of a ``trained`` test: 0, or ``RNAS_TEST_SEED`` when measuring margins."""
    return int(os.environ.get(SEED_ENV, "0"))


@pytest.fixture
def bound(request, seed):
    """``bound(name, value, "<" or ">", limit)`` asserts ``value < limit`` (or >), and records the margin
    to the JSON-lines file ``RNAS_TEST_MARGINS`` names, if any."""
    def check(name: str, value: float, op: str, limit: float) -> None:
        margin = (limit - value) if op == "<" else (value - limit)
        if os.environ.get(MARGINS_ENV):
            with open(os.environ[MARGINS_ENV], "a") as file:
                file.write(json.dumps({"test": request.node.nodeid, "check": f"{name} {op} {limit:g}",
                                       "value": value, "margin": margin, "seed": seed,
                                       "threads": torch.get_num_threads()}) + "\n")
        assert COMPARE[op](value, limit), f"{name} = {value!r}, not {op} {limit!r} (seed {seed})"
    return check
