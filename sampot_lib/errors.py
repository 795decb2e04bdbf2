"""The one error type users see: it says what was wrong and what to do about it."""


class SampotError(ValueError):
    """Bad input or a missing resource. The message names the problem and the fix.

    The command line prints the message alone (no traceback) and exits with status 2.
    """
