import math
import random
from dataclasses import dataclass, field
from typing import Literal

import pytest

from rnas.config import ConfigError, from_dict, require
from rnas.tasks.image import ImageParams
from rnas.search.pool import ArchPool
from rnas.spaces import get_space


@pytest.fixture(scope="module")
def space():
    return get_space("nao_cnn")


def test_pool_dedups_on_canonical_form_and_round_trips_csv(space, tmp_path):
    rng = random.Random(0)
    archs = space.sample_unique(20, rng)
    pool = ArchPool(space, archs, [float(i) for i in range(20)], {"round": [0] * 20})
    swapped = space.symmetric_variant(archs[3], random.Random(5))
    assert swapped in pool
    with pytest.raises(ValueError, match="duplicate"):
        ArchPool(space, [archs[0], space.symmetric_variant(archs[0], rng), archs[0]])
    grown = pool.extend([swapped, space.random(rng)], [99.0, 98.0], round=[1, 1])
    assert len(grown) == 21 and grown.columns["round"][-1] == 1 and grown.scores[-1] == 98.0
    pool.to_csv(tmp_path / "pool.csv")
    again = ArchPool.from_csv(space, tmp_path / "pool.csv")
    assert again.archs == pool.archs and again.scores == pool.scores and again.columns == pool.columns


def test_pool_order_puts_unscored_last(space):
    archs = space.sample_unique(4, random.Random(1))
    pool = ArchPool(space, archs, [0.5, math.nan, 0.9, 0.1])
    assert pool.order() == [2, 0, 3, 1]
    assert pool.top(2).scores == [0.9, 0.5]
    assert [o.score for o in pool.observations()] == [0.5, 0.9, 0.1]


def test_missing_pool_file_names_the_path(space, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        ArchPool.from_csv(space, tmp_path / "nope.csv")


@dataclass
class Inner:
    size: int = 1
    kind: Literal["a", "b"] = "a"

    def check(self):
        require(self.size > 0, "size", "must be positive")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    optional: Inner | None = None
    rate: float = 0.5
    names: list[str] = field(default_factory=list)


@pytest.mark.parametrize("data, message", [
    ({"inner": {"size": 0}}, r"^outer\.inner\.size: must be positive$"),
    ({"inner": {"kind": "c"}}, r"outer\.inner\.kind: 'c' is not one of 'a', 'b'"),
    ({"inner": {"sise": 1}}, r"unknown parameter outer\.inner\.sise"),
    ({"rate": "fast"}, r"outer\.rate: expected float"),
    ({"rate": True}, r"outer\.rate: expected float"),
    ({"names": "x"}, r"outer\.names: expected a list"),
    ({"inner": 3}, r"outer\.inner: expected a mapping"),
])
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data, "outer")


def test_config_values_and_optional_sections():
    cfg = from_dict(Outer, {"rate": 1, "optional": {"size": 3}, "names": ["x"]})
    assert cfg.rate == 1.0 and isinstance(cfg.rate, float)
    assert cfg.optional == Inner(size=3) and cfg.names == ["x"]
    assert from_dict(Outer, {"optional": None}).optional is None


def test_pipeline_params_catch_impossible_combinations():
    with pytest.raises(ConfigError, match=r"search\.strategy: 'nope' is not one of"):
        from_dict(ImageParams, {"search": {"strategy": "nope"}})
    with pytest.raises(ConfigError, match=r"search\.strategies\.rnas\.mras\.rho: must be in"):
        from_dict(ImageParams, {"search": {"strategies": {"rnas": {"mras": {"rho": 2.0}}}}})
    with pytest.raises(ConfigError, match=r"space: 'nope' is not one of"):
        from_dict(ImageParams, {"space": "nope"})
    with pytest.raises(ConfigError, match=r"^threads: must be >= 0"):
        from_dict(ImageParams, {"threads": -1})
    with pytest.raises(ConfigError, match=r"data\.search\.root: required"):
        from_dict(ImageParams, {"data": {"search": {"dataset": "imagefolder"}}})
