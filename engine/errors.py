"""Errors that reach the user as one clear line.

UsageError: bad input from the user (flag, config file, model path, sink spec). The CLI prints
`engine: error: <message>` and exits with code 2.
SetupError: the machine cannot do what was asked (missing package, no GL, sink unavailable). Exit code 2 as
well: both are fixed by the user, not by a retry.
"""


class EngineError(Exception):
    """Base class: the message is a complete sentence naming what was wrong and what to do."""


class UsageError(EngineError):
    pass


class SetupError(EngineError):
    pass
