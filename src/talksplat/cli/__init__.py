"""Command-line interface. Each subcommand lives in its own module with a ``register(subparsers)``."""
