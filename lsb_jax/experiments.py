"""The experiment registry.

An experiment is declared in a small file under the project's `theory/`, `synthetic/` or
`llm/` folders (one file per paper figure or table)::

    EXPERIMENT = Experiment(
        name="toy_regression",
        reproduces="foundation check (no paper figure)",
        configs={"quick": Config(), "full": Config(steps=100_000)},
        cost={"quick": "~15 s on 2 CPU cores", "full": "~5 min on one GPU"},
        run=run,                      # run(cfg, ctx) -> results dict
        claims=(Claim(...), ...),     # optional: the paper claims, decided from results["per_seed"]
    )

These folders are not Python packages: files are loaded by path, so the top-level `llm/`
folder never shadows anything importable. A file may also define `EXPERIMENTS = [...]`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from lsb_jax.errors import UsageError

EXPERIMENT_DIRS = ("theory", "synthetic", "llm")


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    reproduces: str                      # the paper figure/table (or "foundation check")
    configs: Mapping[str, Any]           # at least "quick" and "full": config dataclass instances
    run: Callable[[Any, Any], dict]      # run(cfg, ctx) -> results (JSON-ready dict)
    cost: Mapping[str, str] = dataclasses.field(default_factory=dict)
    description: str = ""
    source: str = ""                     # file it was declared in (set by the loader)
    order: int = 100                     # position in `lsb reproduce` and the report
    # check(cfg) raises a UsageError for inputs the config's own validation cannot judge (model
    # paths, data files); the runner calls it before anything is written or computed
    check: Callable[[Any], None] | None = None
    # the paper claims the run decides (`lsb_jax.claims`): a tuple of Claim or claims(cfg) -> [Claim];
    # run() returns their per-seed values under results["per_seed"]
    claims: Any = ()

    def __post_init__(self):
        missing = {"quick", "full"} - set(self.configs)
        if missing:
            raise ValueError(f"experiment '{self.name}' lacks configs {sorted(missing)}")


class UnknownExperiment(UsageError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def project_root() -> Path:
    """Where the experiment folders live: $LSB_ROOT, else the checkout holding this package."""
    env = os.environ.get("LSB_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if any((here / d).is_dir() for d in EXPERIMENT_DIRS):
        return here
    return Path.cwd()


def _load_module(path: Path):
    mod_name = f"lsb_experiments.{path.parent.name}.{path.stem}"
    if mod_name in sys.modules and getattr(sys.modules[mod_name], "__file__", None) == str(path):
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses need the module registered while executing
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[mod_name]
        raise
    return module


def discover(root: str | os.PathLike | None = None, broken: dict | None = None) -> dict[str, Experiment]:
    """Loads every experiment file under root/{theory,synthetic,llm}/*.py, sorted by order, name.

    A file that fails to import (e.g. a missing optional dependency) does not break the others:
    its error goes into `broken` (file -> message) when given, and its experiments are absent.
    """
    root = Path(root) if root is not None else project_root()
    found: dict[str, Experiment] = {}
    for folder in EXPERIMENT_DIRS:
        for path in sorted((root / folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            rel = str(path.relative_to(root))
            try:
                module = _load_module(path.resolve())
            except Exception as e:  # noqa: BLE001 - reported per file
                if broken is not None:
                    broken[rel] = f"{type(e).__name__}: {e}"
                continue
            exps = list(getattr(module, "EXPERIMENTS", []))
            if hasattr(module, "EXPERIMENT"):
                exps.append(module.EXPERIMENT)
            for exp in exps:
                if exp.name in found:
                    if broken is not None:
                        broken[rel] = f"experiment '{exp.name}' is also declared in {found[exp.name].source}"
                    continue
                found[exp.name] = dataclasses.replace(exp, source=rel)
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def get(name: str, root: str | os.PathLike | None = None) -> Experiment:
    broken: dict[str, str] = {}
    exps = discover(root, broken)
    if name not in exps:
        hint = "".join(f"; {f} failed to load ({msg})" for f, msg in broken.items() if Path(f).stem == name)
        raise UnknownExperiment(f"unknown experiment '{name}' "
                                f"(see `lsb list`; known: {', '.join(exps) or 'none'}){hint}")
    return exps[name]
