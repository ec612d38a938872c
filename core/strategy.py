"""Kept where Lightning users import it: ``import hiveling.core.strategy`` registers
``Trainer(strategy="hivemind")``. The strategy lives in :mod:`hiveling.core.swarm.strategy`."""

from hiveling.core.swarm.strategy import HivemindStrategy

__all__ = ["HivemindStrategy"]
