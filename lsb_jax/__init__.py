"""lsb_jax: the training data distribution as a lever that steers optimizers.

Subpackages: `train` (state, step, loop, checkpoints, ensembles), `optim` (optax
transformations: SAM, Muon, PCGrad, gradient biasing, layer-wise LR, freezing), `data`
(data-lever samplers and schedules), `tracking` (per-example loss trajectories), `tasks`,
`models`; `config`, `experiments`, `runner`, `report`, `cli` run the reproductions.
See docs/architecture.md.
"""

__version__ = "0.1.0"
