"""Theory: multi-head linear self-attention under GD and SAM (arXiv 2602.00576).

`mlsa` (model, closed-form population loss, data), `dynamics` (compiled GD/SAM trajectories),
`odes` (reduced ODEs and closed-form learning times), `learning_times` (crossing times and their
entropy, the simplicity-bias measure).
"""

from lsb_jax.theory import dynamics, learning_times, mlsa, odes

__all__ = ["dynamics", "learning_times", "mlsa", "odes"]
