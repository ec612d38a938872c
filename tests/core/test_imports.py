"""Importing Hiveling, any module of it, does nothing: no folders, no logging set-up, no heavy imports
until used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, logging, sys
import hiveling.core
light = "torch" not in sys.modules and "hivemind" not in sys.modules
import importlib, pkgutil
for module in pkgutil.walk_packages(hiveling.core.__path__, "hiveling.core."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
print(json.dumps({"light": light, "root_handlers": len(logging.getLogger().handlers)}))
"""


def test_importing_creates_no_files_configures_no_logging_and_loads_lazily(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "c"), "XDG_DATA_HOME": str(home / "d")}
    # Where matplotlib is installed (the demo extra), torchmetrics imports it under Lightning, and
    # matplotlib keeps its own config and font cache: not Hiveling's doing, so it goes elsewhere here.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["MPLCONFIGDIR"] = str(elsewhere)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"light": True, "root_handlers": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "home"]
    assert list(home.iterdir()) == []
