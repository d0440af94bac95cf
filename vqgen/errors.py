"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class VQGenError(Exception):
    """A user-facing problem: bad input, a wrong file, an impossible option."""
