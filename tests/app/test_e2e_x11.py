"""End to end on a real X server: Xvfb, a system tray (trayer), the app started by main(), mouse and
keyboard from xdotool, a screenshot with ImageMagick's import. The app replays a recorded worker stream;
what it shows is read from its test-only state dump ($HIVELING_APP_STATE_FILE)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.app.test_tray import invite_token
from tests.conftest import wait_until

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"
PROGRAMS = {"Xvfb": "xvfb", "trayer": "trayer", "xdotool": "xdotool", "import": "imagemagick"}
MISSING = [name for name in PROGRAMS if shutil.which(name) is None]
PAUSED_BLUE = (0x3B, 0x78, 0xC4)  # icons.COLOURS["paused"]

pytestmark = pytest.mark.skipif(
    bool(MISSING),
    reason=f"needs {', '.join(MISSING)} for the X11 test: "
    f"apt-get install -y {' '.join(sorted({PROGRAMS[m] for m in MISSING}))}",
)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def display(tmp_path: Path) -> Iterator[str]:
    """A fresh Xvfb (on a free display number it picks) with a trayer system tray."""
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        # -noreset: by default the server resets when its last client leaves (the Qt probe below),
        # and a client connecting during the reset is refused.
        ["Xvfb", "-noreset", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    processes = [xvfb]
    try:
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()  # Xvfb writes it once it accepts clients
        assert number.isdigit(), "Xvfb did not start"
        name = f":{number}"
        env = {**os.environ, "DISPLAY": name}
        probe = subprocess.run(
            [sys.executable, "-c", "from PySide6.QtGui import QGuiApplication; QGuiApplication([])"],
            env={**env, "QT_QPA_PLATFORM": "xcb"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode != 0:
            pytest.skip(
                "Qt's xcb platform plugin does not load (install libxcb-icccm4 libxcb-keysyms1 "
                f"libxcb-cursor0 libxkbcommon-x11-0): {probe.stderr.strip().splitlines()[:1]}"
            )
        tray = subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "120",
             "--heighttype", "pixel", "--height", "32", "--expand", "false"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        processes.append(tray)
        assert wait_until(lambda: bool(xdotool(name, "search", "--class", "trayer")), timeout=15)
        yield name
    finally:
        for process in reversed(processes):
            stop(process)


def xdotool(display: str, *args: str) -> str:
    out = subprocess.run(
        ["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


def read_dump(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def blue_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    count = 0
    for pixel in image.convert("RGB").crop(box).getdata():
        if sum(abs(a - b) for a, b in zip(pixel, PAUSED_BLUE, strict=True)) < 60:
            count += 1
    return count


def test_click_the_tray_icon_open_its_menu_and_pause(display: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "settings.json").write_text(json.dumps({"invite": invite_token()}))
    dump = tmp_path / "state.json"
    env = {
        **os.environ,
        "DISPLAY": display,
        "QT_QPA_PLATFORM": "xcb",
        "HIVELING_HOME": str(home),
        "HIVELING_APP_STATE_FILE": str(dump),
        "HIVELING_APP_REPLAY": str(FIXTURES / "training.jsonl"),
    }
    app = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hiveling.app.main import main; sys.exit(main(['tray']))"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: read_dump(dump).get("step") == 1214, timeout=60), app.stderr
        shown = read_dump(dump)
        assert shown["tray"] is True
        assert shown["status_window"] is False  # with a tray, a joined app starts quietly
        assert shown["look"] == "training"
        x, y, width, height = shown["tray_geometry"]
        # The icon is a real X window where the app says it is: inside the tray, not the app's idea.
        windows = xdotool(display, "search", "--class", "Hiveling").split()
        places = {xdotool(display, "getwindowgeometry", "--shell", w) for w in windows}
        assert any(f"X={x}\nY={y}\nWIDTH={width}\nHEIGHT={height}" in place for place in places), places
        centre = (str(x + width // 2), str(y + height // 2))

        xdotool(display, "mousemove", *centre, "click", "1")
        assert wait_until(lambda: read_dump(dump).get("status_window") is True, timeout=15)

        visible = set(xdotool(display, "search", "--onlyvisible", "--class", "Hiveling").split())
        xdotool(display, "mousemove", *centre, "click", "3")
        assert wait_until(
            lambda: set(xdotool(display, "search", "--onlyvisible", "--class", "Hiveling").split()) - visible,
            timeout=15,
        ), "the tray menu did not open"
        # The first enabled entry of a training app's menu is "Pause now" (the status line and
        # Start are disabled).
        xdotool(display, "key", "Down", "Return")
        assert wait_until(lambda: read_dump(dump).get("worker") == "paused", timeout=15)
        shown = read_dump(dump)
        assert shown["look"] == "paused"
        assert shown["hold"] == "by you"
        assert shown["tooltip"].startswith("Paused: by you\n")
        assert shown["menu"] == {"start": True, "pause_now": False, "pause_step": False, "snooze": True}

        shot = tmp_path / "screen.png"

        def icon_repainted() -> bool:
            subprocess.run(
                ["import", "-window", "root", str(shot)],
                env={**os.environ, "DISPLAY": display},
                check=True,
                timeout=30,
            )
            with Image.open(shot) as image:
                return blue_pixels(image, (x, y, x + width, y + height)) > 40

        assert wait_until(icon_repainted, timeout=15), "the screenshot does not show the paused icon"

        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=30) == 0
        assert read_dump(dump)["quitting"] is True
    finally:
        stop(app)
        if app.stderr is not None:
            app.stderr.close()
