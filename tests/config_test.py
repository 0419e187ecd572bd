import dataclasses
from typing import Literal, Optional

import pytest

from lsb_jax import config as C


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    name: str = "adam"
    groups: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Outer:
    steps: int = 10
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    mode: Literal["a", "b"] = "a"
    maybe: Optional[float] = None
    inner: Inner = Inner()


def test_override_parses_each_type():
    cfg = C.override(Outer(), ["steps=1_000", "flag=true", "sizes=[3, 4, 5]", "mode=b", "maybe=2.5",
                               "inner.lr=1e-3", "inner.name=sgd", 'inner.groups={"layers_0": 0.5}'])
    assert cfg == Outer(1000, True, (3, 4, 5), "b", 2.5, Inner(1e-3, "sgd", {"layers_0": 0.5}))
    assert C.override(Outer(), ["sizes=7,8"]).sizes == (7, 8)
    assert C.override(Outer(maybe=1.0), ["maybe=none"]).maybe is None
    assert C.override(Outer(), ["steps=1e3"]).steps == 1000


@pytest.mark.parametrize("assignment, fragment", [
    ("nope=1", "unknown config key 'nope'"),
    ("inner.nope=1", "unknown config key 'inner.nope'"),
    ("steps.x=1", "unknown config key 'steps.x'"),
    ("steps=1.5", "bad value for 'steps': '1.5'"),
    ("steps=abc", "bad value for 'steps'"),
    ("flag=maybe", "bad value for 'flag'"),
    ("mode=c", "bad value for 'mode'"),
    ("inner.lr=fast", "bad value for 'inner.lr'"),
    ("sizes=[1, x]", "bad value for 'sizes'"),
    ("steps", "expects key=value"),
])
def test_override_errors_name_the_key(assignment, fragment):
    with pytest.raises(C.ConfigError) as e:
        C.override(Outer(), [assignment])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_round_trip_and_hash():
    cfg = C.override(Outer(), ["inner.lr=0.5", "sizes=[9]"])
    back = C.from_dict(Outer, C.to_dict(cfg))
    assert back == cfg
    assert C.config_hash(back) == C.config_hash(cfg)
    assert C.config_hash(cfg) != C.config_hash(Outer())
    assert "inner.lr" in C.keys(cfg)
