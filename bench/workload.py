"""W1, the reference workload: an MLP 64-256-256-10 on scikit-learn's digits.

Local batch 32, Adam 1e-3, one torch thread, and a 50 ms sleep per training batch that stands for
accelerator time: the ideal is 640 samples/s per peer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BATCH_SIZE = 32
TARGET_BATCH_SIZE = 256
SLEEP_SECONDS = 0.05
IDEAL_PER_PEER = BATCH_SIZE / SLEEP_SECONDS


def load_digits_dataset() -> TensorDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    features = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    return TensorDataset(features, labels)


def make_loader(seed: int) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        load_digits_dataset(), batch_size=BATCH_SIZE, shuffle=True, drop_last=True, generator=generator
    )


class DigitsMLP(pl.LightningModule):
    def __init__(self, sleep: float = SLEEP_SECONDS) -> None:
        super().__init__()
        self.sleep = sleep
        self.net = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        time.sleep(self.sleep)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class BatchClock(pl.Callback):
    """Records when every training batch ends; stops once ``stop_file`` exists (or after ``limit`` s)."""

    def __init__(self, stop_file: Path, limit: float, started: Path | None = None) -> None:
        self.stop_file = stop_file
        self.started = started
        self.limit = limit
        self.ends: list[float] = []
        self.sizes: list[int] = []
        self._start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.time()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.ends.append(time.time())
        self.sizes.append(len(batch[0]))
        if self.started is not None and not self.started.exists():
            self.started.write_text("first batch")
        if self.stop_file.exists() or self.ends[-1] - self._start >= self.limit:
            trainer.should_stop = True


def samples_in_window(ends: list[float], sizes: list[int], start: float, stop: float) -> int:
    return sum(size for end, size in zip(ends, sizes, strict=True) if start < end <= stop)
