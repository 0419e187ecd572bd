"""The two kinds of error the `lsb` command reports as one line instead of a traceback.

    UsageError   bad input: an unknown experiment or config key, an ill-typed value, a data file
                 or model path that cannot be read, a run directory in the way. Raised before
                 any compute is spent; `lsb` prints `lsb: error: ...` and exits 2.
    RunFailure   a run that started and cannot go on: divergence, a corrupt checkpoint with no
                 intact one to fall back to, run files inconsistent with the checkpoint. `lsb`
                 prints one line, marks the run "failed" in status.json and exits 1.

Every project error derives from one of them (and from the builtin it refines, e.g. ValueError),
so library users can keep catching the builtin. Anything else reaching the CLI is a bug and
keeps its traceback.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input, detected before compute (exit code 2)."""


class RunFailure(Exception):
    """A run that cannot continue (exit code 1)."""


class ResumeMismatch(RunFailure, RuntimeError):
    """A run file that resuming depends on (metrics, trajectories) no longer matches the checkpoint."""
