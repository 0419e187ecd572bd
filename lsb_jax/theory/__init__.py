"""Theory: multi-head linear self-attention under GD and SAM (arXiv 2602.00576).

`mlsa` (model, closed-form population loss, data), `dynamics` (compiled GD/SAM trajectories),
`odes` (reduced ODEs, closed-form learning times, the ODE-vs-simulation check), `learning_times`
(crossing times and their entropy, the simplicity-bias measure), `sweeps` (vmapped grids),
`data_lever` (reweighted priors and the pool pipeline), `figures` (the experiments' figures;
imported on use, it loads matplotlib).
"""

from lsb_jax.theory import dynamics, learning_times, mlsa, odes

__all__ = ["dynamics", "learning_times", "mlsa", "odes"]
