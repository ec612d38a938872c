"""The `hiveling` command on bad input: one line that says what to do, a non-zero status, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hiveling.core.invites.invite import OrganizerKey, make_invite, parse_invite
from tests.conftest import wait_until

PEER = "/ip4/127.0.0.1/tcp/9/p2p/QmXoypizjW3WknFiJnKLwHCnL72vedxjQkDDP1mXWo6uco"


def run(args: list[str], home: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HIVELING_HOME": str(home)}
    env.pop("DISPLAY", None)
    return subprocess.run(
        [sys.executable, "-m", "hiveling.core.commands.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def invite(recipe: str = "glyphs", version: str = "2.0", expires: timedelta = timedelta(days=1)) -> str:
    key = OrganizerKey.generate()
    made = make_invite(
        key,
        run_name="cli test",
        recipe=recipe,
        recipe_version=version,
        hparams={},
        target_batch_size=64,
        peers=[PEER],
        expires=expires,
    )
    return made.token


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_a_token(tmp_path: Path) -> None:
    token = invite()
    assert parse_invite(token).run_name == "cli test"


@pytest.mark.parametrize(
    ("mangle", "words"),
    [
        (lambda t: "hello there", ("not a Hiveling invite",)),
        (lambda t: t[: len(t) // 2], ("cut off",)),
        (lambda t: t[:40] + ("A" if t[40] != "A" else "B") + t[41:], ("damaged",)),
        (lambda t: t.replace("HIVE1-", "HIVE7-", 1), ("newer", "pip install -U hiveling")),
    ],
    ids=["not-an-invite", "truncated", "corrupted", "newer-format"],
)
def test_a_bad_invite_is_refused_with_one_line(
    tmp_path: Path, mangle: object, words: tuple[str, ...]
) -> None:
    token = mangle(invite())  # type: ignore[operator]
    assert_one_clear_line(run(["--headless", "--invite", token], tmp_path), *words)


def test_an_expired_invite_names_the_date(tmp_path: Path) -> None:
    token = invite(expires=timedelta(seconds=1))
    expiry = parse_invite(token).expires
    assert wait_until(lambda: datetime.now(UTC) > expiry, timeout=5)
    assert_one_clear_line(run(["--headless", "--invite", token], tmp_path), "expired", "UTC")


def test_an_unknown_recipe_says_what_to_install(tmp_path: Path) -> None:
    assert_one_clear_line(
        run(["--headless", "--invite", invite(recipe="weather")], tmp_path), "weather", "install"
    )


def test_the_invite_comes_from_a_file_or_stdin(tmp_path: Path) -> None:
    path = tmp_path / "invite.txt"
    path.write_text("junk")
    assert_one_clear_line(run(["--headless", "--invite-file", str(path)], tmp_path), "not a Hiveling invite")
    assert_one_clear_line(
        run(["--headless", "--invite-file", str(tmp_path / "missing.txt")], tmp_path), "cannot read"
    )
    assert_one_clear_line(
        run(["--headless", "--invite", "-"], tmp_path, stdin="junk\n"), "not a Hiveling invite"
    )


def test_the_invite_file_may_be_an_image_of_its_qr_code(tmp_path: Path) -> None:
    from PIL import Image

    from hiveling.core.invites.qr import png_bytes

    code = tmp_path / "invite.png"
    code.write_bytes(png_bytes(invite(recipe="weather")))
    # Read from the image, the invite gets as far as its recipe, which is not installed here.
    assert_one_clear_line(run(["--headless", "--invite-file", str(code)], tmp_path), "weather", "install")
    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(blank)
    assert_one_clear_line(run(["--headless", "--invite-file", str(blank)], tmp_path), "QR code", "--invite")


def test_help_lists_no_internal_command_and_explains_every_option(tmp_path: Path) -> None:
    for command in ([], ["host"], ["demo"], ["devices"]):
        result = run([*command, "--help"], tmp_path)
        assert result.returncode == 0, result.stderr
        assert "SUPPRESS" not in result.stdout
        assert "worker" not in result.stdout.split("options:")[0]
        options = result.stdout.split("options:")[1]
        # An option without help text is a line that names the flag and nothing else.
        bare = [
            line for line in options.splitlines() if line.strip().startswith("-") and "  " not in line.strip()
        ]
        continued = [line for line in bare if not options.split(line, 1)[1].startswith("\n" + " " * 10)]
        assert continued == [], result.stdout


def test_wrong_flags_get_one_line_with_the_way_to_help(tmp_path: Path) -> None:
    assert_one_clear_line(
        run(["--headless", "--invite", "x", "--frobnicate"], tmp_path), "--frobnicate", "--help"
    )
    assert_one_clear_line(run(["--headless"], tmp_path), "--invite")
    assert_one_clear_line(run(["host"], tmp_path), "--recipe")


def test_a_missing_gpu_is_one_line_that_names_the_choices(tmp_path: Path) -> None:
    result = run(["--headless", "--invite", invite(), "--device", "cuda:99"], tmp_path)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    assert any(
        "cuda:99" in line for line in result.stdout.splitlines() if "Error" in line or "Cannot" in line
    )


def test_hosting_with_bad_options_is_one_line(tmp_path: Path) -> None:
    assert_one_clear_line(run(["host", "--recipe", "weather"], tmp_path), "weather")
    assert_one_clear_line(
        run(["host", "--recipe", "glyphs", "--expires-days", "nan"], tmp_path), "--expires-days"
    )
    assert_one_clear_line(run(["host", "--recipe", "glyphs", "--port", "70000"], tmp_path), "--port")
    assert_one_clear_line(
        run(["host", "--recipe", "glyphs", "--announce", "nonsense"], tmp_path), "multiaddr"
    )
    assert_one_clear_line(run(["host", "--recipe", "glyphs", "--name", " x"], tmp_path), "name")
    assert_one_clear_line(run(["host", "--recipe", "glyphs", "--set", "nope=1"], tmp_path), "nope")


def test_devices_and_recipes_list_what_this_machine_has(tmp_path: Path) -> None:
    devices = run(["devices", "--json"], tmp_path)
    assert devices.returncode == 0, devices.stderr
    assert '"cpu"' in devices.stdout
    recipes = run(["recipes"], tmp_path)
    assert "glyphs" in recipes.stdout
    assert "charlm" in recipes.stdout


def test_hosting_picks_the_recipes_mode_unless_the_organizer_chooses(tmp_path: Path) -> None:
    from hiveling.core.commands.host import DEFAULT_LOCAL_STEPS, HostOptions, plan_run

    key = tmp_path / "organizer.key"
    assert plan_run(HostOptions(recipe="glyphs"), key)[1].local_steps is None
    assert plan_run(HostOptions(recipe="charlm"), key)[1].local_steps == 50  # the larger recipe's own
    assert plan_run(HostOptions(recipe="charlm", mode="sync"), key)[1].local_steps is None
    assert plan_run(HostOptions(recipe="glyphs", mode="local"), key)[1].local_steps == DEFAULT_LOCAL_STEPS
    assert plan_run(HostOptions(recipe="glyphs", local_steps=20), key)[1].local_steps == 20
    assert_one_clear_line(
        run(["host", "--recipe", "glyphs", "--mode", "sync", "--local-steps", "5"], tmp_path), "--local-steps"
    )
    assert_one_clear_line(
        run(["host", "--recipe", "glyphs", "--local-steps", "0"], tmp_path), "--local-steps"
    )
