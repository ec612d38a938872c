"""``hiveling demo``: a host and two volunteers on this machine train the default recipe for a while.

Everything lives in a temporary folder (keys, identities, checkpoints) and is gone afterwards.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hiveling.core.commands.host import Host, HostOptions, free_port
from hiveling.core.commands.report import format_count
from hiveling.core.worker.events import Event
from hiveling.core.worker.supervisor import Supervisor, WorkerOptions

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
FINGERPRINT_TOLERANCE = 1e-6


@dataclass
class Member:
    """What the demo saw of one peer."""

    name: str
    first_loss: float | None = None
    loss: float | None = None
    step: int = 0
    peers: int = 1
    collab_sps: float = 0.0
    samples: int = 0
    fingerprints: dict[int, list[float]] = field(default_factory=dict)
    error: str | None = None
    stopped: threading.Event = field(default_factory=threading.Event)

    def __call__(self, event: Event) -> None:
        kind = event.get("type")
        if kind == "progress":
            loss = event.get("loss")
            if loss is not None:
                self.loss = float(loss)
                if self.first_loss is None:
                    self.first_loss = self.loss
            self.step = int(event.get("step") or 0)
            self.peers = int(event.get("peers") or 1)
            self.collab_sps = float(event.get("collab_sps") or 0.0)
            self.samples = int(event.get("session_samples") or 0)
        elif kind == "state" and event.get("state") in ("stopped", "failed"):
            if event.get("fingerprints"):
                self.fingerprints = {int(k): v for k, v in event["fingerprints"].items()}
            if event.get("source") == "supervisor" or event.get("state") == "failed":
                self.stopped.set()
        elif kind == "error" and event.get("fatal"):
            self.error = str(event.get("message"))


def agreement(members: list[Member]) -> tuple[int, float] | None:
    """The latest step every peer reported a fingerprint for, and the largest relative difference there."""
    common = set.intersection(*(set(m.fingerprints) for m in members)) if members else set()
    if not common:
        return None
    step = max(common)
    prints = [m.fingerprints[step] for m in members]
    scale = 1.0 + abs(prints[0][1])
    worst = max(abs(a - b) / scale for other in prints[1:] for a, b in zip(prints[0], other, strict=True))
    return step, worst


def run_demo(seconds: float = 90.0, recipe: str | None = None, volunteers: int = 2) -> int:
    from hiveling.core.recipes.catalog import DEFAULT

    recipe = recipe or DEFAULT.name
    with tempfile.TemporaryDirectory(prefix="hiveling-demo-") as folder:
        root = Path(folder)
        host_member = Member("host")
        host = Host(
            HostOptions(
                recipe=recipe,
                run_name="Hiveling demo",
                target_batch_size=512,
                port=free_port(),
                local=True,
                cpu_threads=1,
                checkpoint_every=10,
                env={"HIVELING_HOME": str(root / "host")},
            ),
            host_member,
            key_path=root / "organizer.key",
        )
        print(
            f"Starting a demo run of “{host.spec.recipe}”: a host and {volunteers} volunteers on 127.0.0.1."
        )
        host.start()
        members = [host_member]
        supervisors: list[Supervisor | Host] = [host]
        try:
            if not host.invite_ready.wait(timeout=120):
                print(f"The host did not start: {host_member.error or 'no answer within 120 s'}")
                return 1
            print(f"Host is up (organizer {host.key.fingerprint}); volunteers join with its invite:")
            print(f"  {host.invite.token[:60]}…")
            for index in range(volunteers):
                member = Member(f"volunteer {index + 1}")
                options = WorkerOptions(
                    invite=host.invite.token,
                    device="cpu",
                    cpu_threads=1,
                    listen=LOOPBACK,
                    env={"HIVELING_HOME": str(root / f"volunteer{index + 1}")},
                )
                supervisor = Supervisor(options, member)
                supervisor.start()
                members.append(member)
                supervisors.append(supervisor)
            follow(members, seconds)
        finally:
            stoppers = [threading.Thread(target=s.stop) for s in supervisors]
            for thread in stoppers:
                thread.start()
            for thread in stoppers:
                thread.join()
        return summarize(members)


def follow(members: list[Member], seconds: float) -> None:
    start = time.monotonic()
    host = members[0]
    while (elapsed := time.monotonic() - start) < seconds:
        if any(m.error for m in members):
            return
        time.sleep(min(5.0, max(0.1, seconds - elapsed)))
        loss = "?" if host.loss is None else f"{host.loss:.3f}"
        contributions = ", ".join(f"{m.name} {format_count(m.samples)}" for m in members[1:])
        print(
            f"[{time.monotonic() - start:4.0f} s] step {host.step} · "
            f"{host.peers} peer{'' if host.peers == 1 else 's'} · "
            f"{format_count(host.collab_sps)} samples/s · loss {loss} · samples: {contributions}",
            flush=True,
        )


def summarize(members: list[Member]) -> int:
    print()
    failed = [m for m in members if m.error]
    for member in failed:
        print(f"{member.name} failed: {member.error}")
    host = members[0]
    before = min((m.first_loss for m in members if m.first_loss is not None), default=math.nan)
    after = host.loss if host.loss is not None else math.nan
    print(f"Loss: {before:.3f} at the start, {after:.3f} at the end.")
    print(f"Collaborative steps: {host.step}.")
    for member in members[1:]:
        print(f"{member.name.capitalize()} contributed {format_count(member.samples)} samples.")
    agreed = agreement(members)
    if agreed is None:
        print("Parameters: no step was reported by every peer, so they could not be compared.")
        return 1
    step, difference = agreed
    same = difference <= FINGERPRINT_TOLERANCE
    verdict = "agree" if same else "DIFFER"
    print(
        f"Parameters of all {len(members)} peers {verdict} at step {step} "
        f"(relative difference {difference:.1e})."
    )
    return 0 if same and not failed and after < before else 1
