"""The training worker (a child process), the events it speaks and the supervisor that runs it."""
