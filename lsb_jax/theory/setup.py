"""The MLSA setup shared by the theory experiments, as a typed config section (`--set model.lr=0.01`)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from lsb_jax.theory import mlsa


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    eigenvalues: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)   # Sigma's spectrum (decreasing)
    heads: int = 4
    context: Optional[int] = None        # N context pairs in the closed-form loss; None = infinite
    noise: float = 0.0                   # label noise variance sigma^2
    init: str = "random"                 # random | ansatz
    init_scale: float = 0.05
    init_noise: float = 0.0              # ansatz: relative off-manifold noise
    lr: float = 0.02
    steps: int = 10_000
    record_every: int = 10
    fraction: float = 0.5                # learned = m_i reaches this fraction of m*_i

    def __post_init__(self):
        lam = self.eigenvalues
        if len(lam) < 2 or any(x <= 0 for x in lam) or any(a < b for a, b in zip(lam, lam[1:])):
            raise ValueError(f"eigenvalues must be >= 2 positive values in decreasing order, got {lam}")
        if self.heads < 1 or self.lr <= 0 or self.noise < 0 or not 0 < self.fraction < 1:
            raise ValueError("heads >= 1, lr > 0, noise >= 0 and 0 < fraction < 1 are required")
        if self.steps < 1 or self.record_every < 1 or self.steps % self.record_every:
            raise ValueError(f"steps ({self.steps}) must be a positive multiple of record_every ({self.record_every})")
        mlsa.Init(self.init, self.init_scale, self.init_noise)  # validates

    @property
    def dim(self) -> int:
        return len(self.eigenvalues)

    def spectrum(self, omega=None, eigenvalues=None) -> mlsa.Spectrum:
        return mlsa.spectrum(self.eigenvalues if eigenvalues is None else eigenvalues, omega, self.context, self.noise)

    def init_spec(self, kind: str | None = None) -> mlsa.Init:
        """The initialization (of `kind` instead of `init` when given)."""
        return mlsa.Init(self.init if kind is None else kind, self.init_scale, self.init_noise)

    def sweep_args(self, init: str | None = None) -> dict:
        """The `sweeps.sweep` keyword arguments this section fixes (heads, init, lr, steps,
        recording, learned fraction)."""
        return dict(heads=self.heads, init=self.init_spec(init), lr=self.lr, num_steps=self.steps,
                    record_every=self.record_every, fraction=self.fraction)
