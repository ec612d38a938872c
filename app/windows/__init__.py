"""The app's windows: Status (live charts) and Logs."""
