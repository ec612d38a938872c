"""What the tray asks of the operating system: idle time, battery state, starting at login.

Each concern is a small interface with one module per operating system; nothing here touches the
system until it is called.
"""
