"""User-facing errors: one line that says what is wrong, where, and how to fix it."""


class DetnasError(Exception):
    """An input problem the user can fix; the CLI prints it as one line and exits with code 2."""

    exit_code = 2


class DetnasWarning(UserWarning):
    """Something detnas worked around that the user should know (e.g. skipped bad boxes); the CLI prints it as one
    'warning:' line, without Python's source-line format."""
