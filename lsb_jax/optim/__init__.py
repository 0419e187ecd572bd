"""Optimizers: optax base optimizers plus the interventions of the experiments.

`make_optimizer(OptimConfig(...), total_steps)` returns an `Optimizer` whose `tx` is called as
`tx.update(grads, state, params, grad_fn=grad_fn)`; the pieces live in `transforms`
(gradient biasing, PCGrad, SAM, Muon) and `partition` (param paths, layer-wise lr, freezing).
"""

from lsb_jax.optim.factory import OptimConfig, Optimizer, lr_schedule, make_optimizer
from lsb_jax.optim.partition import freeze, label_params, param_path, scale_by_group
from lsb_jax.optim.transforms import (
    gradient_bias,
    muon,
    muon_labels,
    normalize,
    pcgrad,
    pcgrad_project,
    reduce_leading_axis,
    sam,
)

__all__ = [
    "OptimConfig", "Optimizer", "freeze", "gradient_bias", "label_params", "lr_schedule", "make_optimizer", "muon",
    "muon_labels", "normalize", "param_path", "pcgrad", "pcgrad_project", "reduce_leading_axis", "sam",
    "scale_by_group",
]
