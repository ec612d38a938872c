"""The spiral classifier and its data: imported by Hiveling's worker only when it trains."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from hiveling.core.recipes import Plan

ARMS = 3
POINTS = 200_000  # per peer; an epoch lasts a while even at large batch sizes


class SpiralNet(pl.LightningModule):
    def __init__(self, hparams: Mapping[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters(dict(hparams))
        width = int(hparams["width"])
        self.lr = float(hparams["lr"])
        self.layers = nn.Sequential(
            nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, ARMS)
        )

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(points)
        return logits

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        points, labels = batch
        loss = F.cross_entropy(self(points), labels)
        self.log("loss", loss, on_step=True, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def make_spirals(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` noisy points on ``ARMS`` spirals and the arm each lies on."""
    labels = torch.randint(0, ARMS, (count,), generator=generator)
    radius = torch.rand(count, generator=generator)
    angle = 3 * math.pi * radius + labels * (2 * math.pi / ARMS)
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return points + 0.02 * torch.randn(count, 2, generator=generator), labels


def build(hparams: Mapping[str, Any], seed: int) -> Plan:
    """Hiveling calls this with the run's hyperparameters and a seed that differs on every peer."""
    # Every peer must start from the same weights: seed the initialization with a constant.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = SpiralNet(hparams)
    # ...while the data is this peer's own, drawn from its seed.
    points, labels = make_spirals(POINTS, torch.Generator().manual_seed(seed % (1 << 63)))

    def make_loader(batch_size: int) -> DataLoader[tuple[torch.Tensor, ...]]:
        return DataLoader(
            TensorDataset(points, labels),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(seed % (1 << 63)),
        )

    return Plan(module=module, make_loader=make_loader)
