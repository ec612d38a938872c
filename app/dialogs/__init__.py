"""Dialogs the tray opens: joining a run (with QR scanning) and the settings."""
