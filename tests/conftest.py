import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("LSB_ROOT", str(ROOT))


@pytest.fixture
def root() -> Path:
    return ROOT


def lsb_cmd(*args: str) -> list[str]:
    """The `lsb` console command, run through this interpreter."""
    return [sys.executable, "-m", "lsb_jax.cli", *args]
