"""The Lightning strategy and everything that adapts hivemind (see README.md beside this file)."""
