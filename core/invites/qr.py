"""QR codes of invites: made with segno, read with zxing-cpp (from files, PNG bytes or PIL images).

Problems a user can cause (an unreadable image, a text too long for a QR code) raise
:class:`QRError`, whose message is one line that says what to do.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Final

import segno
import zxingcpp
from PIL import Image, UnidentifiedImageError

from hiveling.core.invites.invite import looks_like_invite

QUIET_ZONE: Final = 4  # modules of light border, as the QR standard asks

# A dark terminal draws a full block light: the code appears dark on light, as cameras expect.
_BLOCKS: Final = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}


class QRError(ValueError):
    """An image that cannot be read, or a text that does not fit a QR code."""


def make_qr(text: str) -> segno.QRCode:
    """The smallest QR code of ``text``, with the strongest error correction that keeps it that small.

    A screen shows a clean image, so size (big modules a phone camera resolves from afar) matters more
    than the redundancy that protects printed codes from dirt: level L at least, raised where free.
    Upper-case text (an invite's ``token``) uses alphanumeric mode, about a third smaller than bytes.
    """
    try:
        return segno.make(text, error="L", boost_error=True, micro=False)
    except segno.DataOverflowError:
        raise QRError(f"a text of {len(text)} characters is too long for a QR code; shorten it") from None


def write_png(text: str, path: Path, scale: int = 8) -> Path:
    """Saves the QR code of ``text`` as a PNG of ``scale`` pixels per module; returns ``path``."""
    path = Path(path)
    try:
        path.write_bytes(png_bytes(text, scale))
    except OSError as error:
        raise QRError(f"cannot write {path} ({error.strerror or error}); choose a writable file") from None
    return path


def png_bytes(text: str, scale: int = 8) -> bytes:
    buffer = io.BytesIO()
    make_qr(text).save(buffer, kind="png", scale=scale, border=QUIET_ZONE)
    return buffer.getvalue()


def terminal_text(text: str) -> str:
    """The QR code of ``text`` drawn with half blocks (two modules a character) for a dark terminal.

    Light modules and the quiet zone are drawn as blocks, dark modules as blanks; each line ends with
    a newline. On a light terminal the code appears inverted, which most phone readers still accept.
    """
    rows = [[not dark for dark in row] for row in make_qr(text).matrix_iter(scale=1, border=QUIET_ZONE)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    lines = (
        "".join(_BLOCKS[top, bottom] for top, bottom in zip(upper, lower, strict=True))
        for upper, lower in zip(rows[::2], rows[1::2], strict=True)
    )
    return "".join(line + "\n" for line in lines)


def read_qr(source: Path | bytes | Image.Image) -> list[str]:
    """The texts of all QR codes found in an image file, encoded image bytes or PIL image; [] for none."""
    image = _open(source) if not isinstance(source, Image.Image) else source
    try:
        grey = image.convert("L")
    except (OSError, ValueError) as error:  # a file whose pixel data is cut off fails only here
        raise QRError(f"{_name(source)} is damaged ({error}); take the screenshot or photo again") from None
    found = zxingcpp.read_barcodes(grey, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode))
    return list(dict.fromkeys(result.text for result in found if result.valid))


def read_invites(source: Path | bytes | Image.Image) -> list[str]:
    """The texts of the QR codes in ``source`` that look like invites or invite links."""
    return [text for text in read_qr(source) if looks_like_invite(text)]


def _open(source: Path | bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            if isinstance(source, bytes | bytearray | memoryview):
                return Image.open(io.BytesIO(bytes(source)))
            return Image.open(Path(source))
        except FileNotFoundError:
            raise QRError(f"{_name(source)} does not exist; check the file name") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise QRError(
                f"{_name(source)} is too large to scan; crop it to the part that shows the code"
            ) from None
        except UnidentifiedImageError:
            raise QRError(
                f"{_name(source)} is not an image Hiveling can read; use a PNG or JPEG screenshot"
            ) from None
        except OSError as error:
            raise QRError(
                f"cannot read {_name(source)} ({error.strerror or error}); check the file"
            ) from None


def _name(source: object) -> str:
    return str(source) if isinstance(source, str | Path) else "the image"
