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
