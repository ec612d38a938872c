"""This computer: what it has (``hardware``, no torch) and what torch can train on (``devices``)."""
