"""Subcommands of the ``gptextures`` CLI, one module per area; each has ``register(subparsers)``."""
