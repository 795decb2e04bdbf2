"""The one error type users see: it says what was wrong and what to do about it."""


class SampotError(ValueError):
    """Bad input or a missing resource. The message names the problem and the fix.

    The command line prints the message alone (no traceback) and exits with status 2.
    """


class SampotWarning(UserWarning):
    """Input that works but is probably not what the user meant (an inverted mask, a click in the background, an
    empty split). The command line prints the message alone, on one line, and goes on."""
