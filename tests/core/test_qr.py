"""QR codes: invite sizes, PNG and terminal round trips, codes inside screenshots, unreadable images."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image, ImageDraw

from hiveling.core.invites.invite import Invite, OrganizerKey, make_invite, parse_invite
from hiveling.core.invites.qr import (
    QRError,
    make_qr,
    png_bytes,
    read_invites,
    read_qr,
    terminal_text,
    write_png,
)

KEY = OrganizerKey(Ed25519PrivateKey.from_private_bytes(b"\x05" * 32))
HOST = "QmXoypizjW3WknFiJnKLwHCnL72vedxjQkDDP1mXWo6uco"
SECOND_HOST = "QmSoLnSGccFuZQJzRadHn95W2CrSFmZuTdDWP8HXaHca9z"
PUBLIC = f"/ip4/203.0.113.5/tcp/31337/p2p/{HOST}"
LAN = f"/ip4/192.168.1.20/tcp/31337/p2p/{HOST}"
OTHER = f"/ip4/198.51.100.7/tcp/31337/p2p/{SECOND_HOST}"


def typical_invite(peers: list[str]) -> Invite:
    return make_invite(
        KEY,
        run_name="tiny-shakespeare",
        recipe="charlm",
        recipe_version="2.0",
        hparams={"lr": 0.001, "layers": 4, "d_model": 128},
        target_batch_size=4096,
        peers=peers,
        expires=datetime(2030, 1, 1, tzinfo=UTC),
    )


TOKEN = typical_invite([PUBLIC, LAN]).token


@pytest.mark.parametrize(
    ("peers", "characters", "version"),
    [
        ([PUBLIC], 373, 10),
        ([PUBLIC, LAN], 390, 10),  # the organizer's host, public and LAN address: the usual invite
        ([PUBLIC, OTHER], 445, 11),  # two hosts: each peer id costs 34 bytes
    ],
)
def test_invite_sizes_measured(peers: list[str], characters: int, version: int) -> None:
    """The figures: a typical invite is a version 10 code at level L (57x57 modules)."""
    invite = typical_invite(peers)
    assert len(invite.token) == characters
    code = make_qr(invite.token)
    assert code.mode == "alphanumeric"
    assert code.version == version
    assert code.error == "L"


def test_error_correction_is_raised_when_it_costs_no_size() -> None:
    code = make_qr("HIVE1-ABCDEF")
    assert code.version == 1
    assert code.error in ("Q", "H")  # a short text fits version 1 even at a high level
    assert not code.is_micro


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_png_round_trip(tmp_path: Path, scale: int) -> None:
    path = write_png(TOKEN, tmp_path / "invite.png", scale=scale)
    assert path == tmp_path / "invite.png"
    with Image.open(path) as image:
        assert image.size[0] == (57 + 8) * scale  # version 10 plus a 4-module quiet zone each side
    assert read_qr(path) == [TOKEN]
    assert read_qr(png_bytes(TOKEN, scale)) == [TOKEN]
    assert parse_invite(read_invites(path)[0], check_recipe=False).token == TOKEN


def screenshot(*codes: tuple[bytes, tuple[int, int]]) -> Image.Image:
    """A noisy 1600x1000 'desktop' with window-like boxes and the given PNGs pasted at positions."""
    rng = random.Random(7)
    canvas = Image.frombytes("L", (1600, 1000), rng.randbytes(1600 * 1000)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(40):
        x, y = rng.randrange(1400), rng.randrange(800)
        box = [x, y, x + rng.randrange(10, 200), y + rng.randrange(10, 200)]
        draw.rectangle(box, outline=(rng.randrange(256), rng.randrange(256), 0), width=3)
    draw.text((20, 960), "Join our run: scan the code", fill=(255, 255, 255))
    for data, position in codes:
        with Image.open(io.BytesIO(data)) as image:
            canvas.paste(image, position)
    return canvas


def test_codes_inside_a_screenshot_are_found_and_invites_picked() -> None:
    canvas = screenshot(
        (png_bytes(TOKEN, scale=3), (900, 400)), (png_bytes("https://example.org/agenda", 4), (80, 90))
    )
    assert sorted(read_qr(canvas)) == sorted([TOKEN, "https://example.org/agenda"])
    assert read_invites(canvas) == [TOKEN]
    jpeg = io.BytesIO()
    canvas.save(jpeg, "JPEG", quality=80)  # screenshots get shared lossy
    assert read_invites(jpeg.getvalue()) == [TOKEN]


def test_link_form_is_recognised_as_an_invite() -> None:
    link = typical_invite([PUBLIC]).link
    assert read_invites(png_bytes(link, 4)) == [link]
    assert read_invites(png_bytes(link.upper(), 4)) == [link.upper()]


def test_no_code_gives_an_empty_list() -> None:
    assert read_qr(Image.new("RGB", (300, 200), "white")) == []
    assert read_invites(screenshot()) == []


def from_terminal(text: str, pixels: int = 6) -> Image.Image:
    """Paints terminal_text as a dark terminal shows it: blocks light, blanks dark."""
    halves = {"█": (255, 255), "▀": (255, 0), "▄": (0, 255), " ": (0, 0)}
    lines = text.splitlines()
    image = Image.new("L", (len(lines[0]), 2 * len(lines)))
    for y, line in enumerate(lines):
        for x, character in enumerate(line):
            top, bottom = halves[character]
            image.putpixel((x, 2 * y), top)
            image.putpixel((x, 2 * y + 1), bottom)
    return image.resize((image.width * pixels, image.height * pixels), Image.Resampling.NEAREST)


def test_terminal_text_shape_and_round_trip() -> None:
    text = terminal_text(TOKEN)
    lines = text.splitlines()
    width = 57 + 2 * 4
    assert text.endswith("\n")
    assert len(lines) == (width + 1) // 2
    assert {len(line) for line in lines} == {width}
    assert set(text) <= {"█", "▀", "▄", " ", "\n"}
    assert lines[0] == lines[1] == "█" * width  # quiet zone, drawn light
    assert lines[-1] == "▀" * width  # odd row count: the last half line is terminal background
    assert read_qr(from_terminal(text)) == [TOKEN]


def test_too_long_a_text_is_a_clear_error() -> None:
    with pytest.raises(QRError, match="too long for a QR code"):
        make_qr("x" * 5000)


def test_unreadable_images_are_one_clear_error(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    truncated = png_bytes(TOKEN)[:300]
    cases: list[tuple[Path | bytes, str]] = [
        (tmp_path / "missing.png", "does not exist"),
        (text_file, "not an image"),
        (b"", "not an image"),
        (truncated, "damaged"),
        (tmp_path, "cannot read"),
    ]
    for source, words in cases:
        with pytest.raises(QRError) as caught:
            read_qr(source)
        assert words in str(caught.value)
        assert "\n" not in str(caught.value)


def test_a_huge_image_is_refused_before_it_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    data = png_bytes(TOKEN, scale=8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # instead of a 100-megapixel file
    with pytest.raises(QRError, match="too large"):
        read_qr(data)


def test_write_png_to_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(QRError, match="writable"):
        write_png(TOKEN, tmp_path / "no" / "such" / "invite.png")
