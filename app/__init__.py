"""Hiveling's tray app (PySide6). It never imports torch or hivemind: it drives hiveling.core's supervisor."""
