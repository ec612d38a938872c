"""What a worker trains: a run's description, from an invite (volunteers) or from the host's options."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    run_name: str
    recipe: str
    recipe_version: str
    target_batch_size: int
    hparams: dict[str, Any] = field(default_factory=dict)
    peers: tuple[str, ...] = ()
    last_step: int | None = None  # the run ends at this collaborative step (None: when the host stops)
    #: The low-communication mode's local steps between exchanges; None: the synchronous mode.
    local_steps: int | None = None
    #: A closed run's credentials, in hex: the organizer's public key and the invite's join secret.
    organizer_key: str | None = None
    join_secret: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peers": list(self.peers)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunSpec:
        return cls(
            run_id=str(raw["run_id"]),
            run_name=str(raw["run_name"]),
            recipe=str(raw["recipe"]),
            recipe_version=str(raw["recipe_version"]),
            target_batch_size=int(raw["target_batch_size"]),
            hparams=dict(raw.get("hparams") or {}),
            peers=tuple(raw.get("peers") or ()),
            last_step=int(raw["last_step"]) if raw.get("last_step") else None,
            local_steps=int(raw["local_steps"]) if raw.get("local_steps") else None,
            organizer_key=str(raw["organizer_key"]) if raw.get("organizer_key") else None,
            join_secret=str(raw["join_secret"]) if raw.get("join_secret") else None,
        )

    @property
    def mode_words(self) -> str:
        """How the peers train together, for people."""
        if self.local_steps is None:
            return "synchronous (every step averaged)"
        return f"low-communication (an exchange every ~{self.local_steps} local steps)"

    @property
    def dht_prefix(self) -> str:
        """The key prefix peers of this run share in the DHT (hivemind's run_id)."""
        return "hiveling_" + self.run_id


def data_seed(peer_id: str) -> int:
    """Each peer reads its own order of the data, stable across its restarts."""
    return int.from_bytes(hashlib.sha256(peer_id.encode()).digest()[:4], "big")
