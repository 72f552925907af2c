"""Errors that the CLI reports as one line with exit code 2 (user mistakes, not bugs)."""


class UserError(Exception):
    """A mistake in the user's input: a bad name, path, option or file.

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback.
    """
