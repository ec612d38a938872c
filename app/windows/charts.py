"""A small line chart drawn with QPainter. It repaints only when it is given new points."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

Points = Sequence[tuple[float, float]]
PALETTE = ("#2e7dd7", "#e07b00", "#2e9d4f")


class Chart(QWidget):
    """Plots one or more named series of (unix time, value) against time.

    ``zero_based`` keeps 0 on the value axis (rates, counts); otherwise the axis fits the data (loss).
    ``whole`` keeps the axis labels whole numbers (peers).
    """

    def __init__(
        self, title: str, *, zero_based: bool = True, whole: bool = False, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.title = title
        self.zero_based = zero_based
        self.whole = whole
        self._series: list[tuple[str, list[tuple[float, float]]]] = []
        self.setMinimumSize(QSize(260, 130))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAccessibleName(title)

    def set_series(self, series: Iterable[tuple[str, Points]]) -> None:
        self._series = [(name, list(points)) for name, points in series]
        self.update()

    def series(self) -> list[tuple[str, list[tuple[float, float]]]]:
        return self._series

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(360, 160)

    def paintEvent(self, _event: object) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        palette = self.palette()
        text = palette.windowText().color()
        faint = QColor(text)
        faint.setAlpha(60)
        painter.fillRect(self.rect(), palette.base())
        metrics = painter.fontMetrics()
        line = metrics.height()

        title_font = QFont(painter.font())
        title_font.setBold(True)
        painter.setFont(title_font)
        painter.setPen(text)
        painter.drawText(QPointF(8, 4 + metrics.ascent()), self.title)
        painter.setFont(QFont(self.font()))

        left, top = 8 + metrics.horizontalAdvance("0,000.0"), 12 + 2.6 * line
        plot = QRectF(left, top, max(10, self.width() - left - 10), max(10, self.height() - top - line - 8))
        points = [p for _, series in self._series for p in series]
        if not points:
            painter.setPen(faint.darker(50) if faint.lightness() > 128 else text)
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "No data yet")
            return

        t0 = min(t for t, _ in points)
        t1 = max(t for t, _ in points)
        low, high = self._value_range([v for _, v in points])
        if t1 - t0 < 1:
            t0 = t1 - 1

        painter.setPen(QPen(faint, 1))
        for i in range(3):
            y = plot.top() + plot.height() * i / 2
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            painter.setPen(text)
            label = _short(high - (high - low) * i / 2)
            painter.drawText(
                QRectF(0, y - line / 2, left - 6, line),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                label,
            )
            painter.setPen(QPen(faint, 1))
        painter.setPen(text)
        painter.drawText(QPointF(plot.left(), plot.bottom() + line), f"last {_span(t1 - t0)}")

        legend_x = 8.0
        for index, (name, series) in enumerate(self._series):
            colour = QColor(PALETTE[index % len(PALETTE)])
            if series:
                path = QPainterPath()
                for n, (t, v) in enumerate(series):
                    x = plot.left() + plot.width() * (t - t0) / (t1 - t0)
                    y = plot.bottom() - plot.height() * (v - low) / (high - low)
                    if n == 0:
                        path.moveTo(x, y)
                    else:
                        path.lineTo(x, y)
                painter.setPen(QPen(colour, 2))
                painter.setBrush(Qt.BrushStyle.NoBrush)
                painter.drawPath(path)
            latest = _short(series[-1][1]) if series else "–"
            label = f"{name or 'now'}: {latest}"
            painter.setPen(QPen(colour, 3))
            y = 8 + line * 1.5
            painter.drawLine(QPointF(legend_x, y), QPointF(legend_x + 12, y))
            painter.setPen(text)
            painter.drawText(QPointF(legend_x + 16, y + metrics.ascent() / 2 - 1), label)
            legend_x += 16 + metrics.horizontalAdvance(label) + 18

    def _value_range(self, values: list[float]) -> tuple[float, float]:
        """An axis from a round number to a round number with a round middle, holding every value."""
        low, high = min(values), max(values)
        if self.zero_based:
            low = min(0.0, low)
            top = nice_ceiling(max(high, 1e-9) / 2) * 2
            if self.whole:
                top = max(2.0, math.ceil(high / 2) * 2)
            return low, top
        step = nice_ceiling(max(high - low, abs(high) * 0.02, 1e-9) / 2)
        while True:
            bottom = math.floor(low / step) * step
            if bottom + 2 * step >= high:
                return bottom, bottom + 2 * step
            step = nice_ceiling(step * 1.01)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    for multiple in (1.0, 2.0, 2.5, 5.0, 10.0):
        if multiple * power >= value * (1 - 1e-12):
            return multiple * power
    return 10 * power


def _short(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value / 1000:,.0f}k"
    if magnitude >= 100 or value == math.floor(value):
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.2g}"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
