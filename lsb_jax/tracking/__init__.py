"""Per-example loss tracking: trajectories of every training example's loss over training."""

from lsb_jax.tracking.clustering import SELECTIONS, hard_mask, kmeans, normalize, selection_counts, upsample_counts
from lsb_jax.tracking.trajectories import LossTracker, TrajectoryStore, evenly_spaced_steps, pool_scorer

__all__ = ["SELECTIONS", "LossTracker", "TrajectoryStore", "evenly_spaced_steps", "hard_mask", "kmeans", "normalize",
           "pool_scorer", "selection_counts", "upsample_counts"]
