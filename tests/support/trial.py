"""A local collaboration: two peers on 127.0.0.1 train one small classifier with HivemindStrategy.

    python -m tests.support.trial [--steps 60] [--peers 2]

Each peer is its own process, as on separate machines. The first peer starts the run; the others
join through its address, download its state and train with it. The demo ends with whether the
peers hold identical parameters at the last collaborative step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


@dataclass
class PeerConfig:
    """What one demo peer does; also the knobs the integration tests turn."""

    steps: int = 60
    linger_steps: int = 2
    run_id: str = "hiveling_demo"
    target_batch_size: int = 128
    batch_size: int = 16
    seed: int = 0
    data_seed: int = 1
    initial_peers: str | list[str] | None = None
    strategy: dict[str, Any] = field(default_factory=dict)
    precision: str = "32-true"
    scheduler: bool = False
    sleep: float = 0.05
    checkpoint_dir: str | None = None
    resume_from: str | None = None
    fail_at_step: int | None = None
    grad_compression: str | None = None
    perturb_at_step: int | None = None
    nan_after_batches: int | None = None  # from then on every loss is NaN: a user's bug, a bad shard
    # Train only once this many peers are in the collaboration (or 120 s have passed): a test whose
    # second peer starts slowly on a loaded machine must not find the first one finished already.
    wait_for_peers: int = 1
    # Go on until this many peers were seen together, and for `steps` steps from then (or 120 s have
    # passed): a newcomer that starts slowly still finds the run going, and trains with it.
    end_with_peers: int = 1
    # A closed run: run_id, organizer_key, join_secret and (the host) signing_key, in hex.
    admission: dict[str, str] | None = None


def emit(event: dict[str, Any]) -> None:
    """One JSON object per line on stdout."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def run_peer(config: PeerConfig) -> None:
    import lightning.pytorch as pl
    import torch
    from hivemind.p2p import PeerID
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    if os.environ.get("TRIAL_LOG"):  # e.g. TRIAL_LOG=DEBUG: our own modules' messages on stderr too
        logging.basicConfig(level=os.environ["TRIAL_LOG"], format="%(asctime)s %(name)s %(message)s")
    from hiveling.core.swarm.strategy import HivemindStrategy

    torch.set_num_threads(1)
    torch.manual_seed(config.seed)

    # A learnable task that needs no download: labels come from a fixed random "teacher" network.
    teacher = torch.Generator().manual_seed(1234)
    features = torch.randn(4096, 32, generator=teacher)
    projection = torch.randn(32, 8, generator=teacher)
    labels = (features @ projection).argmax(dim=1)
    loader = DataLoader(
        TensorDataset(features, labels),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(config.data_seed),
    )

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.batches = getattr(self, "batches", 0) + 1
            if config.nan_after_batches is not None and self.batches > config.nan_after_batches:
                loss = loss * float("nan")
            self.log("loss", loss, on_step=True, prog_bar=False)
            if config.sleep:
                time.sleep(config.sleep)  # stands for accelerator time, so peers share the work
            return loss

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.Adam(self.parameters(), lr=3e-3)
            if not config.scheduler:
                return optimizer
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + step))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    options: dict[str, Any] = {"host_maddrs": [LOOPBACK], "matchmaking_time": 2.0, "averaging_timeout": 10.0}
    options.update(config.strategy)
    if config.admission is not None:  # hex strings, as JSON carries them
        from hiveling.core.swarm.admission import Admission

        options["admission"] = Admission(
            run_id=config.admission["run_id"],
            organizer_key=bytes.fromhex(config.admission["organizer_key"]),
            join_secret=bytes.fromhex(config.admission["join_secret"]),
            signing_key=bytes.fromhex(config.admission["signing_key"])
            if config.admission.get("signing_key")
            else None,
        )
    if config.grad_compression is not None:
        from hivemind.compression import Float16Compression, Uniform8BitQuantization

        options["grad_compression"] = {"fp16": Float16Compression, "8bit": Uniform8BitQuantization}[
            config.grad_compression
        ]()
    strategy = HivemindStrategy(
        target_batch_size=config.target_batch_size,
        run_id=config.run_id,
        initial_peers=config.initial_peers,
        **options,
    )

    class Reporter(pl.Callback):
        """Reports every collaborative step: parameters right after the optimizer applied it, and loss."""

        def __init__(self) -> None:
            self.last_loss = math.nan
            self.reported_join = False
            self.peers_seen = 0
            self.together_from: int | None = 0 if config.end_with_peers <= 1 else None
            self.started = time.monotonic()

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            optimizer = strategy.hivemind_optimizer
            assert optimizer is not None
            outer = getattr(optimizer, "outer_params", None)
            emit(
                {
                    "type": "joined",
                    "addresses": strategy.join_addresses(),
                    "step": strategy.collaborative_step,
                    "time": time.time(),
                    # The low-communication mode's global parameters, as restored from a checkpoint.
                    **({} if outer is None else {"outer": self.outer_report(outer)}),
                }
            )
            if hasattr(optimizer, "outer_params"):  # the low-communication mode: report outer steps
                optimizer.on_outer_step = self.on_outer_step
            else:
                optimizer.opt.register_step_post_hook(self.on_optimizer_step)
            deadline = time.monotonic() + 120
            while optimizer.num_peers < config.wait_for_peers and time.monotonic() < deadline:
                time.sleep(0.1)  # the tracker fetches the swarm's progress in the background

        def on_optimizer_step(self, opt: torch.optim.Optimizer, *_: Any) -> None:
            optimizer = strategy.hivemind_optimizer
            if optimizer is None:
                return  # the last update, applied while the strategy shuts down
            params = torch.cat(
                [p.detach().reshape(-1).float().cpu() for g in opt.param_groups for p in g["params"]]
            )
            scheduler = optimizer.state_averager.scheduler
            emit(
                {
                    "type": "step",
                    "step": int(optimizer.state_averager.local_epoch),
                    "params": params.tolist(),
                    "lr": float(opt.param_groups[0]["lr"]),
                    "scheduler_steps": None if scheduler is None else int(scheduler._step_count),
                    "peers": int(optimizer.tracker.global_progress.num_peers),
                    "overlapped": int(getattr(optimizer, "overlapped_updates", 0)),
                    # False after a failed round: this update holds this peer's gradients only.
                    "averaged": bool(getattr(optimizer, "step_averaged", True)),
                    "failed_rounds": int(getattr(optimizer, "failed_rounds", 0)),
                    "resynced_rounds": int(getattr(optimizer, "resynced_rounds", 0)),
                    "loss": self.last_loss,
                }
            )

        def outer_report(self, outer: list[torch.Tensor]) -> dict[str, Any]:
            optimizer = strategy.hivemind_optimizer
            momentum = [optimizer.outer_optimizer.state[t]["momentum_buffer"] for t in outer]  # type: ignore[union-attr]
            return {
                "params": torch.cat([t.reshape(-1) for t in outer]).tolist(),
                "momentum_norm": float(torch.cat([m.reshape(-1) for m in momentum]).norm()),
            }

        def on_outer_step(self, outer: list[torch.Tensor]) -> None:
            optimizer = strategy.hivemind_optimizer
            if optimizer is None:
                return
            emit(
                {
                    "type": "step",
                    "step": int(optimizer.local_epoch),
                    **self.outer_report(outer),
                    "peers": int(optimizer.tracker.global_progress.num_peers),
                    "averaged": bool(optimizer.step_averaged),
                    "failed_rounds": int(optimizer.failed_rounds),
                    "waited": round(float(getattr(optimizer, "waited_seconds", 0.0)), 3),
                    "group": int(optimizer.last_group_size),
                    # Who took this outer step together: peers compare parameters only within a round.
                    "me": optimizer.dht.peer_id.to_base58(),
                    "round": sorted(PeerID(peer).to_base58() for peer in optimizer.last_group),
                    "loss": self.last_loss,
                }
            )

        def on_train_batch_end(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.last_loss = float(loss)
            step = strategy.collaborative_step
            optimizer = strategy.hivemind_optimizer
            peers = 0 if optimizer is None else int(optimizer.tracker.global_progress.num_peers)
            if self.together_from is None and peers >= config.end_with_peers:
                self.together_from = step
            if peers != self.peers_seen:  # how many peers this one sees, when that changes
                self.peers_seen = peers
                emit({"type": "peers", "count": peers, "step": step, "time": time.time()})
            if config.perturb_at_step is not None and step >= config.perturb_at_step:
                config.perturb_at_step = None  # once: simulate a peer whose parameters went astray
                with torch.no_grad():
                    for param in pl_module.parameters():
                        param.add_(0.01)
                emit({"type": "perturbed", "step": step})
            if config.fail_at_step is not None and step >= config.fail_at_step:
                raise RuntimeError(f"demo peer failing on purpose at step {step}")
            start = self.together_from
            if start is None and time.monotonic() - self.started > 120:
                start = 0
            if start is not None and step >= start + config.steps + config.linger_steps:
                trainer.should_stop = True

    callbacks: list[pl.Callback] = [Reporter()]
    if config.checkpoint_dir:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=config.checkpoint_dir, save_last=True))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        strategy=strategy,
        precision=config.precision,  # type: ignore[arg-type]
        max_epochs=-1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=bool(config.checkpoint_dir),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Classifier(), loader, ckpt_path=config.resume_from)
    emit({"type": "done", "step": strategy.collaborative_step})


REPOSITORY = Path(__file__).resolve().parents[2]


class PeerProcess:
    """A demo peer as a child process; its stderr is drained into a ring buffer for error reports."""

    def __init__(self, config: PeerConfig, env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "tests.support.trial", "peer", json.dumps(config.__dict__)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            cwd=REPOSITORY,  # where ``tests`` is importable
            env={**os.environ, **(env or {})},
        )
        self.stderr_tail: deque[str] = deque(maxlen=600)
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line)

    def events(self) -> Iterator[dict[str, Any]]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                yield json.loads(line)

    def tail(self) -> str:
        self._drain.join(timeout=5)
        return "".join(self.stderr_tail)

    def stop(self, timeout: float = 20) -> int:
        """Wait for the peer to exit; terminate, then kill, its whole process group if it does not."""
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
            try:
                code = self.proc.wait(timeout=timeout if sig is None else 10)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            code = self.proc.wait()
        return code


def run_demo(peers: int, steps: int) -> int:
    print(
        f"Starting a local collaboration: {peers} peers on 127.0.0.1, {steps} collaborative steps.",
        flush=True,
    )
    first = PeerProcess(PeerConfig(steps=steps, data_seed=1))
    procs = [first]
    params: dict[int, dict[int, list[float]]] = {index: {} for index in range(peers)}
    first_events = first.events()
    try:
        joined = next((e for e in first_events if e["type"] == "joined"), None)
        if joined is None:
            print(f"The first peer failed to start:\n{first.tail()}")
            return 1
        address = joined["addresses"][0]
        print(f"Peer 1 started the run at {address}", flush=True)
        for index in range(1, peers):
            procs.append(PeerProcess(PeerConfig(steps=steps, data_seed=index + 1, initial_peers=address)))

        def follow(index: int, events: Iterator[dict[str, Any]]) -> None:
            for event in events:
                if event["type"] == "step":
                    if index > 0 and not params[index]:
                        print(f"Peer {index + 1} joined the run at step {event['step']}", flush=True)
                    params[index][event["step"]] = event["params"]
                    if index == 0 or event["step"] % 5 == 0:
                        print(
                            f"peer {index + 1}: step {event['step']:3d}  loss {event['loss']:.3f}  "
                            f"peers {event['peers']}",
                            flush=True,
                        )

        threads = [threading.Thread(target=follow, args=(0, first_events))]
        threads += [
            threading.Thread(target=follow, args=(i, p.events())) for i, p in enumerate(procs) if i > 0
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        codes = [peer.stop() for peer in procs]
    failed = [i for i, code in enumerate(codes) if code != 0]
    if failed:
        print(f"Peer {failed[0] + 1} failed:\n{procs[failed[0]].tail()}")
        return 1
    # Peers stop a couple of steps after `steps` (the first to leave ends the others' last rounds alone).
    common = {s for s in set.intersection(*(set(seen) for seen in params.values())) if s <= steps}
    if not common:
        print("The peers never reached a common collaborative step: the later ones did not join in time.")
        return 1
    last = max(common)
    finals = [params[index][last] for index in range(peers)]
    diff = max(max(abs(a - b) for a, b in zip(finals[0], other, strict=True)) for other in finals[1:])
    verdict = "identical parameters" if diff <= 1e-6 else "DIFFERENT parameters"
    print(f"All {peers} peers reached collaborative step {last} with {verdict} (max difference {diff:.1e}).")
    return 0 if diff <= 1e-6 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.trial", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command")
    peer = sub.add_parser("peer", help="run one peer (used by the demo itself)")
    peer.add_argument("config", help="PeerConfig as JSON")
    parser.add_argument("--peers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args(argv)
    if args.command == "peer":
        run_peer(PeerConfig(**json.loads(args.config)))
        return 0
    if args.peers < 2 or args.steps < 1:
        parser.error("--peers must be at least 2 and --steps at least 1")
    return run_demo(args.peers, args.steps)


if __name__ == "__main__":
    sys.exit(main())
