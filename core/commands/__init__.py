"""The ``hiveling`` command and its subcommands. Nothing else imports this package."""
