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
