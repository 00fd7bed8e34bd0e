"""User-facing errors: the CLI prints these as one line (problem and fix), never as a traceback.

Exit codes follow the usual convention: 2 for a :class:`UsageError` (the command line asked for
something wrong: a bad option value, a missing or unusable input file, a conflicting setting), 1
for any other :class:`TalksplatError` (the request was fine but could not be carried out: a
damaged checkpoint, a folder that cannot be written, no face in the video). Scripts can then tell
"fix the command" from "fix the machine or the data".
"""


class TalksplatError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""


class UsageError(TalksplatError):
    """The command's arguments are wrong (bad option, missing or invalid input file): exit code 2."""
