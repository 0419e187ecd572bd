import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("LSB_ROOT", str(ROOT))
# no compile cache in the tests (`lsb --compile-cache`): nothing written to the user's ~/.cache, and
# no test's result depends on programs another test or an earlier session compiled; the test of
# the cache names its own folder
os.environ["LSB_COMPILE_CACHE"] = "off"
# XLA:CPU's code generator at -O0 (`xla_backend_optimization_level`, the level XLA gives LLVM) in the
# tests' processes and in the subprocesses they start (`xla_flags` where one sets its own). The suite
# compiles hundreds of small programs and runs most of them briefly, so it is compile-bound, and
# LLVM's optimizations are a large part of each compile. Skipping them changes the machine code,
# not the program: results differ by float rounding, as on another CPU, which every test's tolerance
# must allow anyway. No test times anything. `LSB_TEST_XLA_OPT=default make test` keeps XLA's level.
TEST_XLA_FLAGS = "" if os.environ.get("LSB_TEST_XLA_OPT") == "default" else "--xla_backend_optimization_level=0"
# the user's own, e.g. --xla_cpu_max_isa=SSE4_2 (README: tests on another CPU)
USER_XLA_FLAGS = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f != TEST_XLA_FLAGS)


def xla_flags(*flags: str) -> str:
    """XLA_FLAGS for a subprocess that adds flags of its own (a device count): the user's and the
    tests' level kept."""
    return " ".join(filter(None, [USER_XLA_FLAGS, TEST_XLA_FLAGS, *flags]))


os.environ["XLA_FLAGS"] = xla_flags()


@pytest.fixture
def root() -> Path:
    return ROOT


def lsb_cmd(*args: str) -> list[str]:
    """The `lsb` console command, run through this interpreter."""
    return [sys.executable, "-m", "lsb_jax.cli", *args]


def pytest_configure(config):
    """On a fresh HOME matplotlib builds its font cache on first import, and says so on stderr when
    that takes over 5 s: each `lsb` subprocess whose stderr a test reads would build it and might say
    so. Built here once, before the pytest-xdist workers start."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        import matplotlib.font_manager  # noqa: F401, PLC0415
