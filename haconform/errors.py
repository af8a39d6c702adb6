"""Errors that end a run with one clear sentence instead of a traceback."""


class HaconformError(Exception):
    """A user-facing error: says what is wrong, where, and how to fix it."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text += f" (fix: {self.fix})"
        return text


class CommandFailed(HaconformError):
    """A command on a host did not do what it was run for.

    Raised by Machine.succeed/fail (haconform/targets/base.py) and by the readers'
    commands (haconform/readers/).  Deliberately not an AssertionError: a command
    that could not run is the harness failing to act or observe, not a finding
    about the deployment, so an xfail(raises=AssertionError) never swallows it.
    """


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message names the condition and the last observation."""
