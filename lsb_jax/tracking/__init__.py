"""Per-example loss tracking: trajectories of every training example's loss over training."""

from lsb_jax.tracking.clustering import hard_mask, kmeans, normalize, upsample_counts
from lsb_jax.tracking.trajectories import LossTracker, TrajectoryStore, evenly_spaced_steps, pool_scorer

__all__ = ["LossTracker", "TrajectoryStore", "evenly_spaced_steps", "hard_mask", "kmeans", "normalize", "pool_scorer",
           "upsample_counts"]
