"""The tray's state icons, drawn with QPainter: a honeycomb cell whose colour and sign say the state.

Colour alone is not enough (colour blindness, monochrome panels), so every look has its own sign:
a plus (join a run), three dots (connecting), a play triangle (training), two bars (paused) and an
exclamation mark (error).
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap, QPolygonF

from hiveling.app.state import LOOKS

COLOURS = {
    "not_joined": "#8a8f98",
    "connecting": "#e0a106",
    "training": "#2e9d4f",
    "paused": "#3b78c4",
    "error": "#d23c32",
}
SIZES = (16, 22, 24, 32, 48, 64, 128)

_cache: dict[str, QIcon] = {}


def icon_for(look: str) -> QIcon:
    """The icon of ``look`` (one of state.LOOKS), drawn once per process in the usual tray sizes."""
    if look not in LOOKS:
        raise ValueError(f"unknown look {look!r}; expected one of {', '.join(LOOKS)}")
    icon = _cache.get(look)
    if icon is None:
        icon = QIcon()
        for size in SIZES:
            icon.addPixmap(draw(look, size))
        _cache[look] = icon
    return icon


def draw(look: str, size: int) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    try:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        _draw_cell(painter, size, QColor(COLOURS[look]))
        _draw_sign(painter, look, size)
    finally:
        painter.end()
    return pixmap


def _draw_cell(painter: QPainter, size: int, colour: QColor) -> None:
    centre = QPointF(size / 2, size / 2)
    radius = size * 0.48
    corners = [
        QPointF(centre.x() + radius * math.cos(math.radians(60 * i + 30)),
                centre.y() + radius * math.sin(math.radians(60 * i + 30)))
        for i in range(6)
    ]  # fmt: skip
    painter.setPen(QPen(colour.darker(140), max(1.0, size / 24)))
    painter.setBrush(QBrush(colour))
    painter.drawPolygon(QPolygonF(corners))


def _draw_sign(painter: QPainter, look: str, size: int) -> None:
    white = QColor("white")
    s = size / 32  # signs are designed on a 32 px grid
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(white)
    if look == "not_joined":
        painter.drawRect(QRectF(14.5 * s, 8 * s, 3 * s, 16 * s))
        painter.drawRect(QRectF(8 * s, 14.5 * s, 16 * s, 3 * s))
    elif look == "connecting":
        for x in (9.5, 16, 22.5):
            painter.drawEllipse(QPointF(x * s, 16 * s), 2.6 * s, 2.6 * s)
    elif look == "training":
        path = QPainterPath(QPointF(12 * s, 8.5 * s))
        path.lineTo(24 * s, 16 * s)
        path.lineTo(12 * s, 23.5 * s)
        path.closeSubpath()
        painter.drawPath(path)
    elif look == "paused":
        painter.drawRect(QRectF(10.5 * s, 9 * s, 4 * s, 14 * s))
        painter.drawRect(QRectF(17.5 * s, 9 * s, 4 * s, 14 * s))
    else:
        painter.drawRect(QRectF(14.3 * s, 7.5 * s, 3.4 * s, 11 * s))
        painter.drawEllipse(QPointF(16 * s, 22.5 * s), 2.1 * s, 2.1 * s)
