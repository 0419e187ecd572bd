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
    assert C.override(Outer(), ["mode= b "]).mode == "b"      # stripped like numbers and bools


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


def test_hash_keeps_the_order_of_dict_fields_that_is_not_sorted():
    """layer_lr-style dicts apply the first pattern that matches, so {"w": .1, "0": .5} and
    {"0": .5, "w": .1} train differently and must not share a run directory; a sorted dict and
    the field order of config sections do not change the hash."""
    a = Outer(inner=Inner(groups={"w": 0.1, "0": 0.5}))
    b = Outer(inner=Inner(groups={"0": 0.5, "w": 0.1}))
    assert C.config_hash(a) != C.config_hash(b)
    assert C.config_hash(b) == C.config_hash(Outer(inner=Inner(groups=dict(sorted({"w": 0.1, "0": 0.5}.items())))))
    import hashlib
    import json
    plain = json.dumps(C.to_dict(b), sort_keys=True, default=str)   # sorted dicts: the hash of before
    assert C.config_hash(b) == hashlib.sha256(plain.encode()).hexdigest()[:8]


def test_json_merge_keeps_json_values():
    @dataclasses.dataclass(frozen=True)
    class Opt:
        name: Optional[str] = "adam"
        nesterov: bool = False
        tag: str = "x"

    @dataclasses.dataclass(frozen=True)
    class Top:
        optim: Opt = Opt()
        inner: Inner = Inner()

    cfg = C.override(Top(), ['optim={"name": null, "nesterov": true}', 'inner={"lr": 2, "groups": {"a": 1}}'])
    assert cfg.optim == Opt(None, True, "x") and cfg.inner == Inner(2.0, "adam", {"a": 1.0})
    for bad in ('optim={"tag": true}', 'optim={"tag": null}', 'optim={"nesterov": "maybe"}'):
        with pytest.raises(C.ConfigError, match="bad value for 'optim"):
            C.override(Top(), [bad])


@dataclasses.dataclass(frozen=True)
class Sized:
    pool: int = 100
    k: int = 50
    patterns: tuple[str, ...] = ()
    arms: tuple[Inner, ...] = (Inner(), Inner(lr=0.5))

    def __post_init__(self):
        if self.k > self.pool:
            raise ValueError(f"k ({self.k}) must be <= pool ({self.pool})")


def test_assignments_are_validated_together_whatever_their_order():
    assert C.override(Sized(), ["pool=64", "k=32"]) == C.override(Sized(), ["k=32", "pool=64"])
    with pytest.raises(C.ConfigError, match=r"k \(80\) must be <= pool \(64\)"):
        C.override(Sized(), ["pool=64", "k=80"])


def test_json_for_a_section_merges_into_it():
    cfg = C.override(Outer(inner=Inner(lr=0.3, name="sgd")), ['inner={"lr": 0.1}'])
    assert cfg.inner == Inner(lr=0.1, name="sgd")
    with pytest.raises(C.ConfigError, match="inner.nope"):
        C.override(Outer(), ['inner={"nope": 1}'])


def test_non_finite_floats_and_regexes_with_commas():
    for bad in ("nan", "inf", "-inf"):
        with pytest.raises(C.ConfigError, match="finite"):
            C.override(Outer(), [f"inner.lr={bad}"])
    assert C.override(Sized(), [r"patterns=layer\.{1,3}"]).patterns == (r"layer\.{1,3}",)
    assert C.override(Sized(), ['patterns=["a", "b,c"]']).patterns == ("a", "b,c")


def test_to_dict_recurses_into_containers_of_configs():
    d = C.to_dict(Sized())
    assert d["arms"][1] == {"lr": 0.5, "name": "adam", "groups": {}}
    assert C.from_dict(Sized, d) == Sized()


def test_require_positive_names_the_field():
    from lsb_jax.sweeps.parity import ParityConfig
    with pytest.raises(ValueError, match=r"ParityConfig\.steps must be >= 1, got 0"):
        ParityConfig(steps=0)
