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
from hiveling.core.worker.command import WorkerOptions
from hiveling.core.worker.events import Event
from hiveling.core.worker.supervisor import Supervisor

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
FINGERPRINT_TOLERANCE = 1e-6


@dataclass
class Member:
    """What the demo saw of one peer."""

    name: str
    first_loss: float | None = None
    loss: float | None = None
    first_accuracy: float | None = None
    accuracy: float | None = None
    step: int = 0
    peers: int = 1
    collab_sps: float = 0.0
    samples: int = 0
    #: (seconds since the demo began, loss, held-out accuracy) at each progress report
    history: list[tuple[float, float | None, float | None]] = field(default_factory=list)
    #: (seconds since the demo began, samples this peer trained) at each progress report
    samples_history: list[tuple[float, int]] = field(default_factory=list)
    fingerprints: dict[int, list[float]] = field(default_factory=dict)
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    energy_wh: float | None = None
    energy_source: str | None = None  # how the worker measures it (or estimates it)

    def __call__(self, event: Event) -> None:
        kind = event.get("type")
        if kind == "progress":
            loss = event.get("loss")
            if loss is not None:
                self.loss = float(loss)
                if self.first_loss is None:
                    self.first_loss = self.loss
            self._note_accuracy(event.get("accuracy"))
            self.step = int(event.get("step") or 0)
            self.peers = int(event.get("peers") or 1)
            self.collab_sps = float(event.get("collab_sps") or 0.0)
            self.samples = int(event.get("session_samples") or 0)
            if isinstance(event.get("energy_wh"), int | float):
                self.energy_wh = float(event["energy_wh"])
            self.history.append((time.monotonic() - self.started, self.loss, self.accuracy))
            self.samples_history.append((time.monotonic() - self.started, self.samples))
        elif kind == "state" and event.get("state") in ("stopping", "stopped", "failed"):
            # "stopping" comes before the network shuts down; "stopped" repeats it at the very end.
            if event.get("fingerprints"):
                self.fingerprints = {int(k): v for k, v in event["fingerprints"].items()}
            self._note_accuracy(event.get("accuracy"))
        elif kind == "hello" and isinstance(event.get("energy_source"), str):
            self.energy_source = event["energy_source"]
        elif kind == "error" and event.get("fatal"):
            self.error = str(event.get("message"))

    def _note_accuracy(self, value: object) -> None:
        if isinstance(value, int | float):
            self.accuracy = float(value)
            if self.first_accuracy is None:
                self.first_accuracy = self.accuracy


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


def run_demo(
    seconds: float = 120.0,
    recipe: str | None = None,
    volunteers: int = 2,
    chart: Path | None = None,
    steps: int | None = None,
    mode: str | None = None,
    local_steps: int | None = None,
    seen: list[Member] | None = None,
) -> int:
    """A host and ``volunteers`` on 127.0.0.1 train for ``seconds``, or until collaborative step ``steps``
    when that comes first. ``seen`` (benchmarks) receives what the demo saw of each peer."""
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
                mode=mode,
                local_steps=local_steps,
                env={"HIVELING_HOME": str(root / "host")},
            ),
            host_member,
            key_path=root / "organizer.key",
        )
        print(
            f"Starting a demo run of “{host.spec.recipe}”: a host and {volunteers} volunteers on 127.0.0.1, "
            f"{host.spec.mode_words}."
        )
        host.start()
        members = seen if seen is not None else []
        members.append(host_member)
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
            follow(members, seconds, steps)
        finally:
            stoppers = [threading.Thread(target=s.stop) for s in supervisors]
            for thread in stoppers:
                thread.start()
            for thread in stoppers:
                thread.join()
        code = summarize(members)
        if chart is not None:
            draw_chart(members, chart)
        return code


def follow(members: list[Member], seconds: float, steps: int | None = None) -> None:
    start = time.monotonic()
    host = members[0]
    while (elapsed := time.monotonic() - start) < seconds:
        if any(m.error for m in members) or (steps is not None and (host.step or 0) >= steps):
            return
        time.sleep(min(5.0, max(0.1, seconds - elapsed)))
        loss = "?" if host.loss is None else f"{host.loss:.3f}"
        accuracy = "" if host.accuracy is None else f" · accuracy {host.accuracy:.0%}"
        contributions = ", ".join(f"{m.name} {format_count(m.samples)}" for m in members[1:])
        print(
            f"[{time.monotonic() - start:4.0f} s] step {host.step} · "
            f"{host.peers} peer{'' if host.peers == 1 else 's'} · "
            f"{format_count(host.collab_sps)} samples/s · loss {loss}{accuracy} · samples: {contributions}",
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
        print("Parameters: the peers reported no collaborative step in common, so they were not compared:")
        for member in members:
            steps = sorted(member.fingerprints)
            seen = f"steps {steps[0]}–{steps[-1]}" if steps else "no step (it stopped before reporting)"
            print(f"  {member.name}: {seen}")
        print("A peer that reported none or other steps did not train with the rest at the end.")
        from hiveling.core import paths

        print(f"Every peer's log is in {paths.log_dir() / 'hiveling.log'}; please report it with that file.")
        return 1
    step, difference = agreed
    same = difference <= FINGERPRINT_TOLERANCE
    verdict = "agree" if same else "DIFFER"
    print(
        f"Parameters of all {len(members)} peers {verdict} at step {step} "
        f"(relative difference {difference:.1e})."
    )
    if host.first_accuracy is not None and host.accuracy is not None:
        print(f"Accuracy: {host.first_accuracy:.0%} at the start, {host.accuracy:.0%} at the end.")
    say_energy(members)
    ok = same and not failed and after < before
    if not ok:
        from hiveling.core import paths

        print(f"Every peer's log is in {paths.log_dir() / 'hiveling.log'}.")
    return 0 if ok else 1


def say_energy(members: list[Member]) -> None:
    """'Energy: 3.1 Wh for the 3 peers, estimated from the CPU time ...'"""
    from hiveling.core.energy.meter import format_energy

    measured = [m for m in members if m.energy_wh is not None]
    if not measured:
        return
    total = sum(m.energy_wh or 0.0 for m in measured)
    how = next((m.energy_source for m in measured if m.energy_source), None)
    print(f"Energy: {format_energy(total)} for the {len(measured)} peers" + (f", {how}." if how else "."))


def draw_chart(members: list[Member], path: Path) -> None:
    """Loss and held-out accuracy over time, a line per peer, as a PNG; says where it went."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        from matplotlib import pyplot
    except ImportError as error:
        print(f"No chart: matplotlib is not installed ({error}); pip install 'hiveling[demo]'")
        return
    figure, (losses, accuracies) = pyplot.subplots(2, 1, sharex=True, figsize=(8, 6), dpi=100)
    for member in members:
        times = [t for t, _, _ in member.history]
        losses.plot(times, [math.nan if v is None else v for _, v, _ in member.history], label=member.name)
        accuracies.plot(times, [math.nan if a is None else 100 * a for _, _, a in member.history])
    losses.set_ylabel("training loss")
    losses.legend()
    losses.set_title("Hiveling demo: one model, trained together")
    accuracies.set_ylabel("held-out accuracy (%)")
    accuracies.set_ylim(0, 100)
    accuracies.set_xlabel("seconds since the demo began")
    for axes in (losses, accuracies):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    except OSError as error:
        print(f"Could not write the chart to {path}: {error.strerror or error}; pass --chart PATH")
        return
    finally:
        pyplot.close(figure)
    print(f"Chart of loss and accuracy: {path.resolve()}")
