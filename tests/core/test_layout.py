"""Dependencies between core's subpackages flow one way, and the app uses only core's public names."""

from __future__ import annotations

import ast
from pathlib import Path

import hiveling.core

ROOT = Path(__file__).resolve().parents[2]
TOP = {"config", "paths", "run", "logs"}  # shared leaves at core's top level
#: Which parts of core each part may import (besides itself and the top-level leaves).
ALLOWED = {
    "commands": {"worker", "swarm", "machine", "invites", "recipes", "energy"},
    "worker": {"swarm", "machine", "invites", "recipes", "energy"},
    "energy": set(),
    "swarm": set(),
    "invites": {"swarm", "recipes"},  # swarm.peers: address checks, no hivemind
    "machine": {"recipes"},
    "recipes": set(),
}
SHIMS = {"strategy", "cli", "__init__"}  # kept where users import them; they re-export


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def part_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if module.startswith("hiveling.core.") and len(parts) > 2 else None


def test_each_part_of_core_imports_only_the_parts_below_it() -> None:
    wrong = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        relative = path.relative_to(ROOT / "core").parts
        part = relative[0] if len(relative) > 1 else path.stem
        if part in SHIMS:
            continue
        allowed = TOP if part in TOP else ALLOWED[part] | TOP | {part}
        for module in imported_modules(path):
            used = part_of(module)
            if used is not None and used not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []


def test_the_app_imports_only_what_hiveling_core_names_as_public() -> None:
    public = set(hiveling.core.__all__)
    wrong = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hiveling.core"):
                names = {alias.name for alias in node.names}
                if node.module != "hiveling.core" or not names <= public:
                    wrong.append(f"{path.relative_to(ROOT)}: from {node.module} import {sorted(names)}")
            elif isinstance(node, ast.Import):
                wrong += [
                    f"{path.relative_to(ROOT)}: import {a.name}"
                    for a in node.names
                    if "hiveling.core" in a.name
                ]
    assert wrong == []


def test_every_public_name_resolves() -> None:
    for name in hiveling.core.__all__:
        if name != "HivemindStrategy":  # loads torch; the strategy tests import it
            assert getattr(hiveling.core, name) is not None
