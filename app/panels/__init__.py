"""Panels: widgets that other windows and dialogs embed."""
