"""HivemindStrategy's refusals: each one clear, before or during setup, never leaving anything running."""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from hiveling.core import HivemindStrategy
from hiveling.core.swarm.peers import PeerAddressError

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


class Tiny(pl.LightningModule):
    def __init__(self, optimizers: int = 1, plateau: bool = False) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)
        self.n_optimizers = optimizers
        self.plateau = plateau

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) and torch.is_tensor(batch[0]) else torch.ones(2, 4)
        return self.layer(x).sum()

    def configure_optimizers(self) -> Any:
        optimizers = [torch.optim.SGD(self.parameters(), lr=0.1) for _ in range(self.n_optimizers)]
        if self.plateau:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizers[0])
            return {"optimizer": optimizers[0], "lr_scheduler": {"scheduler": scheduler, "monitor": "loss"}}
        return optimizers if len(optimizers) > 1 else optimizers[0]


def loader() -> DataLoader[Any]:
    return DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4)


def fit(model: pl.LightningModule, data: Any = None, **trainer_kwargs: Any) -> None:
    strategy = HivemindStrategy(target_batch_size=8, host_maddrs=LOOPBACK, run_id="refusals")
    trainer = pl.Trainer(
        strategy=strategy,
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(model, data if data is not None else loader())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_batch_size": 0}, "positive number of samples"),
        ({"target_batch_size": 8, "batch_size": -1}, "batch_size must be a positive"),
        ({"target_batch_size": 8, "delay_grad_averaging": True}, "needs delay_optimizer_step"),
        (
            {"target_batch_size": 8, "use_local_updates": True, "reuse_grad_buffers": True},
            "use_local_updates",
        ),
        ({"target_batch_size": 8, "average_state_every": 0}, "average_state_every"),
        (
            {"target_batch_size": 8, "delay_optimizer_step": True, "delay_state_averaging": False},
            "needs delay_state",
        ),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, MisconfigurationException), match=message):
        HivemindStrategy(**kwargs)


def test_target_batch_size_is_required_and_may_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TARGET_BATCH_SIZE", raising=False)
    with pytest.raises(MisconfigurationException, match="needs target_batch_size"):
        HivemindStrategy()
    monkeypatch.setenv("TARGET_BATCH_SIZE", "lots")
    with pytest.raises(MisconfigurationException, match="whole number"):
        HivemindStrategy()
    monkeypatch.setenv("TARGET_BATCH_SIZE", "512")
    assert HivemindStrategy().target_batch_size == 512


def test_registered_as_hivemind_for_lightning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARGET_BATCH_SIZE", "64")
    monkeypatch.setenv("INITIAL_PEERS", "")
    trainer = pl.Trainer(strategy="hivemind", accelerator="cpu", devices=1, logger=False)
    assert isinstance(trainer.strategy, HivemindStrategy)
    assert trainer.strategy.target_batch_size == 64


def test_quic_and_malformed_addresses_are_refused() -> None:
    with pytest.raises(PeerAddressError, match="quic"):
        HivemindStrategy(target_batch_size=8, host_maddrs=["/ip4/0.0.0.0/udp/0/quic"])
    with pytest.raises(PeerAddressError, match="not a multiaddr"):
        HivemindStrategy(target_batch_size=8, initial_peers="localhost:1234")


def test_windows_is_refused_with_a_pointer_to_wsl2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(MisconfigurationException, match="WSL2"):
        HivemindStrategy(target_batch_size=8)


def test_gradient_accumulation_is_refused() -> None:
    with pytest.raises(MisconfigurationException, match="remove accumulate_grad_batches"):
        fit(Tiny(), accumulate_grad_batches=2)


def test_several_devices_are_refused() -> None:
    with pytest.raises(MisconfigurationException, match="one device per process"):
        fit(Tiny(), devices=2)


def test_several_optimizers_are_refused() -> None:
    model = Tiny(optimizers=2)
    model.automatic_optimization = False
    with pytest.raises(MisconfigurationException, match="exactly one optimizer"):
        fit(model)


def test_plateau_scheduler_is_refused() -> None:
    with pytest.raises(MisconfigurationException, match="ReduceLROnPlateau"):
        fit(Tiny(plateau=True))


class Words(Dataset[str]):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> str:
        return "word"


def test_batches_without_tensors_need_an_explicit_batch_size() -> None:
    data = DataLoader(Words(), batch_size=2, collate_fn=lambda items: {"text": items})
    with pytest.raises(MisconfigurationException, match=r"pass HivemindStrategy\(batch_size=N\)"):
        fit(Tiny(), data)


def test_unreachable_initial_peer_gives_a_clear_error() -> None:
    dead = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWDVZeK8SjCvAPKuULv7rsLBrWUuZDf94GYZJbToZXfNSz"
    strategy = HivemindStrategy(target_batch_size=8, host_maddrs=LOOPBACK, initial_peers=dead)
    trainer = pl.Trainer(
        strategy=strategy, accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False
    )
    with pytest.raises(RuntimeError, match="Could not join through"):
        trainer.fit(Tiny(), loader())


def test_a_lone_peer_trains_reports_to_loggers_and_prints_how_to_join(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import csv

    from lightning.pytorch.loggers import CSVLogger

    strategy = HivemindStrategy(target_batch_size=8, host_maddrs=LOOPBACK, run_id="lone")
    trainer = pl.Trainer(
        strategy=strategy,
        accelerator="cpu",
        max_steps=12,
        log_every_n_steps=1,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with caplog.at_level("INFO"):
        trainer.fit(Tiny(), DataLoader(TensorDataset(torch.randn(48, 4)), batch_size=4))
    assert strategy.dht is None, "networking is shut down after fit"
    # 12 batches of 4 samples with a target of 8: one collaborative step every two batches.
    with open(f"{trainer.logger.log_dir}/metrics.csv") as file:  # type: ignore[union-attr]
        rows = list(csv.DictReader(file))
    steps = [float(row["hivemind/step"]) for row in rows if row.get("hivemind/step")]
    peers = {float(row["hivemind/peers"]) for row in rows if row.get("hivemind/peers")}
    assert max(steps) >= 5
    assert peers == {1.0}
    hints = [r.getMessage() for r in caplog.records if "INITIAL_PEERS=/ip4/127.0.0.1/" in r.getMessage()]
    assert len(hints) == 1
