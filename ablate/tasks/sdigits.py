"""Sequential digits: sklearn's 8×8 handwritten digits (1797 images) read pixel by pixel.

Each image becomes a length-64 sequence of one feature (intensity / 16, in [0, 1]), in
row-major order or under a fixed random permutation (``permute: true``, the "psMNIST"
protocol at 8×8). The label, one of 10 classes, is predicted from the whole sequence
(pooled loss; the model reads out the last position, as a causal model must). The images
are split at random (seeded by ``split_seed``, not the run's seed, so every run sees the
same split) into train / val / test fractions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models import IOSpec

from .base import Split, Task, TaskSpec, validate_fields


@dataclass
class SDigitsConfig:
    permute: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    readout: str = "last"

    def __post_init__(self) -> None:
        validate_fields(self, {"val_fraction": (0.01, 0.5), "test_fraction": (0.01, 0.5)})
        if self.readout not in ("last", "mean"):
            raise ValueError(f"task.readout={self.readout!r} is not valid; expected one of ['last', 'mean']")


class SDigits(Task):
    name = "sdigits"
    Config = SDigitsConfig

    @property
    def spec(self) -> TaskSpec:
        io = IOSpec(d_input=1, d_output=10, readout=self.cfg.readout)
        return TaskSpec(name=self.name, io=io, length=64, causal=self.cfg.readout == "last", loss_on="pooled")

    def _all(self) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).reshape(-1, 64, 1) / 16.0
        y = torch.tensor(digits.target, dtype=torch.int64)
        if self.cfg.permute:
            perm = torch.randperm(64, generator=torch.Generator().manual_seed(self.cfg.split_seed + 1))
            x = x[:, perm]
        return x, y

    def generate(self, split: str, generator: torch.Generator) -> Split:
        x, y = self._all()
        n = len(y)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.split_seed))
        n_test, n_val = int(n * self.cfg.test_fraction), int(n * self.cfg.val_fraction)
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        idx = parts[split]
        return Split(x[idx], y[idx])
