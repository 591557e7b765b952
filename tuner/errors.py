"""Errors the user can act on. The CLI prints their message on one line, without a traceback."""


class TunerError(Exception):
    """A problem with the user's input or machine, with a message that says what to do."""


class TrialError(Exception):
    """One candidate failed (config rejected, load error, measurement failure).

    The search records it as a failed trial with this message as its reason and goes on.
    """
