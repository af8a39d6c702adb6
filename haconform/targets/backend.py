"""The one testinfra backend base of haconform's transports: outputs pass through the secrets first.

testinfra logs every command with its output (`RUN CommandResult(...)` at
DEBUG) the moment the command returns, before the caller has seen the output.
A secret read from a host (the fence key by `cat`, a configuration carrying
`stats auth`) would reach that log unregistered.  So the backend registers
first: credentials any output carries, and the whole output inside
secrets.secret_output() (Machine.read_secret).
"""

from __future__ import annotations

from typing import Union

from testinfra.backend import base

from ..secrets import discover, output_is_secret, register


class RedactingBackend(base.BaseBackend):
    def result(self, rc: int, cmd: bytes, stdout: Union[str, bytes], stderr: Union[str, bytes]) -> base.CommandResult:
        if output_is_secret():
            register(stdout)
        discover(stdout)
        return super().result(rc, cmd, stdout, stderr)
