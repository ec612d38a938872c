"""Benchmark of the tray app's footprint, printed as JSON.

    python bench/app.py                    # 3 runs of each kind, 10 s idle window
    python bench/app.py --runs 5 --seconds 30 --display offscreen

For each kind of process it measures, from the parent: the start to a visible tray icon (ms), the
resident memory after the idle window (MiB, /proc/PID/status) and the CPU it used during that window
(% of one core, /proc/PID/stat). Kinds:

- ``baseline``: a bare QApplication with one QSystemTrayIcon, started the same way (python -c);
- ``app``: ``hiveling tray`` with no run joined yet;
- ``app_joined``: ``hiveling tray`` with a saved invite, its worker replaced by a recorded event stream
  (tests/fixtures/events/training.jsonl), so the GUI process does everything but start torch.

With Xvfb and trayer installed the processes run on a real X server with a system tray, and "visible"
means an X window of the process sits in the tray (polled with xdotool). Otherwise they run on Qt's
offscreen platform, where no tray exists: "visible" is the moment the process says it showed its icon
(the app then opens its Status window instead), which makes the start-up numbers less comparable.
The kinds alternate within each round, so both sides see the same machine state; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPLAY = ROOT / "tests" / "fixtures" / "events" / "training.jsonl"
PEER = "/ip4/127.0.0.1/tcp/31337/p2p/QmXoypizjW3WknFiJnKLwHCnL72vedxjQkDDP1mXWo6uco"
TICKS = os.sysconf("SC_CLK_TCK")

APP = "import sys; from hiveling.app.main import main; sys.exit(main(['tray']))"
BASELINE = """
import os, sys
from pathlib import Path
from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QApplication, QSystemTrayIcon

app = QApplication([sys.argv[0]])
app.setApplicationName("Baseline")
app.setQuitOnLastWindowClosed(False)
pixmap = QPixmap(22, 22)
pixmap.fill(QColor("green"))
tray = QSystemTrayIcon(QIcon(pixmap))
tray.setToolTip("baseline")
tray.show()
QTimer.singleShot(0, lambda: Path(os.environ["BENCH_MARKER"]).write_text("shown"))
sys.exit(app.exec())
"""
CLASS_NAMES = {"baseline": "Baseline", "app": "Hiveling", "app_joined": "Hiveling"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="the idle window")
    parser.add_argument("--settle", type=float, default=3.0, help="wait this long after visible first")
    parser.add_argument("--display", choices=("auto", "x11", "offscreen"), default="auto")
    args = parser.parse_args()

    x11 = args.display == "x11" or (
        args.display == "auto" and all(shutil.which(p) for p in ("Xvfb", "trayer", "xdotool"))
    )
    invite = make_invite_token()
    servers: list[subprocess.Popen[bytes]] = []
    display = None
    if x11:
        display, servers = start_x11()
    try:
        results: dict[str, list[dict[str, float]]] = {kind: [] for kind in CLASS_NAMES}
        for _ in range(args.runs):
            for kind in CLASS_NAMES:
                results[kind].append(measure(kind, display, invite, args.seconds, args.settle))
    finally:
        for server in reversed(servers):
            server.terminate()
            server.wait(10)

    medians = {kind: median_of(runs) for kind, runs in results.items()}
    base = medians["baseline"]
    report: dict[str, Any] = {
        "display": "xvfb+trayer" if x11 else "offscreen (no tray: start-up numbers are not comparable)",
        "runs": args.runs,
        "idle_seconds": args.seconds,
        "medians": medians,
        "ratios_to_baseline": {
            kind: {key: round(value / base[key], 2) if base[key] else None for key, value in m.items()}
            for kind, m in medians.items()
            if kind != "baseline"
        },
        "all_runs": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "qt": qt_version()},
    }
    print(json.dumps(report, indent=2))


def measure(kind: str, display: str | None, invite: str, seconds: float, settle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hiveling-bench-") as folder:
        home = Path(folder) / "home"
        marker = Path(folder) / "shown.json"
        env = {
            **os.environ,
            "HIVELING_HOME": str(home),
            "BENCH_MARKER": str(marker),
            "QT_QPA_PLATFORM": "xcb" if display else "offscreen",
        }
        if display:
            env["DISPLAY"] = display
        else:
            env["HIVELING_APP_STATE_FILE"] = str(marker)  # the app's test hook says when it has shown
        if kind == "app_joined":
            (home / "config").mkdir(parents=True)
            (home / "config" / "settings.json").write_text(json.dumps({"invite": invite}))
            env["HIVELING_APP_REPLAY"] = str(REPLAY)
        code = BASELINE if kind == "baseline" else APP
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = started + 120
            while not shown(kind, display, marker):
                if process.poll() is not None or time.monotonic() > deadline:
                    error = process.stderr.read().decode()[-2000:] if process.stderr else ""
                    raise RuntimeError(f"{kind} never showed its icon: {error}")
                time.sleep(0.01)
            start_ms = (time.monotonic() - started) * 1000
            time.sleep(settle)
            cpu_before, wall_before = cpu_seconds(process.pid), time.monotonic()
            time.sleep(seconds)
            cpu = (cpu_seconds(process.pid) - cpu_before) / (time.monotonic() - wall_before) * 100
            rss = rss_mib(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
    return {
        "start_to_visible_ms": round(start_ms, 1),
        "idle_rss_mib": round(rss, 1),
        "idle_cpu_percent": round(cpu, 3),
    }


def shown(kind: str, display: str | None, marker: Path) -> bool:
    if display is None:
        if not marker.exists():
            return False
        if kind == "baseline":
            return True
        try:
            state = json.loads(marker.read_text())
        except ValueError:
            return False
        return bool(state.get("tray") or state.get("status_window"))
    # On X11: a mapped window of the process, icon-sized, inside the tray at the top of the screen.
    out = subprocess.run(
        ["xdotool", "search", "--onlyvisible", "--class", CLASS_NAMES[kind]]
        + ["getwindowgeometry", "--shell", "%@"],
        env={**os.environ, "DISPLAY": display},
        capture_output=True,
        text=True,
    ).stdout
    for block in out.split("WINDOW=")[1:]:
        values = dict(line.split("=", 1) for line in block.splitlines()[1:] if "=" in line)
        if int(values.get("Y", 999)) < 32 and int(values.get("HEIGHT", 999)) <= 32:
            return True
    return False


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]}


def start_x11() -> tuple[str, list[subprocess.Popen[bytes]]]:
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-noreset", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        display = ":" + pipe.readline().strip()
    env = {**os.environ, "DISPLAY": display}
    tray = subprocess.Popen(
        ["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "160",
         "--heighttype", "pixel", "--height", "32", "--expand", "false"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not subprocess.run(["xdotool", "search", "--class", "trayer"], env=env, capture_output=True).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("trayer did not start")
        time.sleep(0.05)
    return display, [xvfb, tray]


def make_invite_token() -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hiveling.core.invites.invite import OrganizerKey, make_invite

    key = OrganizerKey(Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))
    return make_invite(
        key,
        run_name="Glyph classifier",
        recipe="glyphs",
        recipe_version="2.0",
        hparams={},
        target_batch_size=256,
        peers=[PEER],
        expires=datetime.now(UTC) + timedelta(days=30),
    ).token


def qt_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("PySide6-Essentials")
    except Exception:
        return None


if __name__ == "__main__":
    main()
