"""The training core shared by theory, synthetic tasks and LLM fine-tuning."""

from lsb_jax.train.checkpoint import Checkpointer, CheckpointCorrupt, CheckpointWriteError
from lsb_jax.train.guard import DivergenceGuard, LossExplodedError, NonFiniteLossError, TrainingDiverged
from lsb_jax.train.ensemble import (MEMBER_AXIS, Members, ensemble_init, ensemble_step, member_grid, member_mesh,
                                    member_vmap, shard_members, split_ensemble)
from lsb_jax.train.loop import (EvalHook, FitResult, Hook, cpu_compiler_options, fit, loop_compiler_options,
                                segment_boundaries)
from lsb_jax.train.state import (STREAM_DATA, STREAM_INIT, STREAM_STEP, TrainState, data_key, init_state, jit_once,
                                 seed_keys, step_key)
from lsb_jax.train.step import LOSS_WEIGHT, make_sampled_step, make_train_step, reduce_losses

__all__ = [
    "Checkpointer", "CheckpointCorrupt", "CheckpointWriteError", "DivergenceGuard", "LossExplodedError",
    "TrainingDiverged", "MEMBER_AXIS", "Members", "ensemble_init", "ensemble_step", "member_grid", "member_mesh",
    "member_vmap", "shard_members", "split_ensemble", "EvalHook", "FitResult", "Hook", "NonFiniteLossError",
    "cpu_compiler_options",
    "fit", "loop_compiler_options", "segment_boundaries", "STREAM_DATA", "STREAM_INIT", "STREAM_STEP",
    "TrainState", "data_key", "init_state", "jit_once", "seed_keys", "step_key", "LOSS_WEIGHT", "make_sampled_step",
    "make_train_step", "reduce_losses",
]
