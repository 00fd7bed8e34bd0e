"""User-facing errors: the CLI prints these as one line (problem and fix), never as a traceback."""


class TalksplatError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""
