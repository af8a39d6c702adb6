"""A long-lived shell on a remote host, fed one command at a time.

A new ssh session per command costs a session set-up on the host (sshd fork,
PAM, login shell): ~0.15 s on a container, more on an emulated VM.  Suites
run thousands of short commands, and watchers that sample several hosts in a
row see a skewed picture when each sample is slow.  So each host keeps a few
shells open (`ssh HOST /bin/sh`), and a command is written to one:

    /bin/sh -c CMD </dev/null >OUT 2>ERR; printf 'TOKEN rc len(OUT) len(ERR)'; cat OUT ERR

The reply is read back by length, so output is binary-safe, and within a
deadline: a command that outlives it gets its shell killed (exit 124, like
`timeout`), and the next command gets a fresh shell.
"""

from __future__ import annotations

import os
import secrets as tokens
import select
import shlex
import signal
import subprocess
import threading
import time
from collections import deque


class ShellGone(Exception):
    """The shell's process ended (ssh could not connect, or the connection died)."""

    def __init__(self, returncode: int | None, stderr: str):
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"shell exited {returncode}: {stderr}")


class ShellTimeout(Exception):
    pass


class RemoteShell:
    """One shell process; not thread-safe (ShellPool hands each to one caller at a time)."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True)
        self._buffer = bytearray()
        self._stderr: deque[str] = deque(maxlen=20)
        self._stderr_reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_reader.start()

    def _drain_stderr(self) -> None:
        for raw in self.process.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr_tail(self) -> str:
        return " | ".join(self._stderr)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ShellTimeout()
        ready, _, _ = select.select([self.process.stdout], [], [], remaining)
        if not ready:
            raise ShellTimeout()
        chunk = os.read(self.process.stdout.fileno(), 65536)
        if not chunk:
            raise self._gone()
        self._buffer += chunk

    def _gone(self) -> ShellGone:
        try:
            returncode = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            returncode = None
        self._stderr_reader.join(timeout=1)   # ssh's last words say why it ended
        return ShellGone(returncode, self.stderr_tail())

    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self._buffer:
            self._fill(deadline)
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line

    def _read_exact(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            self._fill(deadline)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def run(self, command: str, timeout: float) -> tuple[int, bytes, bytes]:
        token = "haconform-" + tokens.token_hex(8)
        script = (f'__o=$(mktemp) && __e=$(mktemp) && {{ /bin/sh -c {shlex.quote(command)} </dev/null '
                  f'>"$__o" 2>"$__e"; __r=$?; printf "{token} %s %s %s\\n" "$__r" "$(wc -c <"$__o")" '
                  f'"$(wc -c <"$__e")"; cat "$__o" "$__e"; rm -f "$__o" "$__e"; }}\n')
        try:
            self.process.stdin.write(script.encode())
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self._gone() from None
        deadline = time.monotonic() + timeout
        while True:
            words = self._read_line(deadline).decode("utf-8", "replace").split()
            if len(words) == 4 and words[0] == token:
                break   # anything before the token is the shell's own noise (a login banner)
        rc, out_size, err_size = (int(w) for w in words[1:])
        return rc, self._read_exact(out_size, deadline), self._read_exact(err_size, deadline)

    def close(self) -> None:
        if self.alive:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class ShellPool:
    """Idle shells of one host; a caller takes one (or starts one), runs, gives it back."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self._idle: list[RemoteShell] = []
        self._lock = threading.Lock()
        self._all: list[RemoteShell] = []

    def _take(self) -> tuple[RemoteShell, bool]:
        with self._lock:
            while self._idle:
                shell = self._idle.pop()
                if shell.alive:
                    return shell, False
                self._all.remove(shell)
            shell = RemoteShell(self.argv)
            self._all.append(shell)
            return shell, True

    def _give_back(self, shell: RemoteShell) -> None:
        with self._lock:
            self._idle.append(shell)

    def _discard(self, shell: RemoteShell) -> None:
        shell.close()
        with self._lock:
            if shell in self._all:
                self._all.remove(shell)

    def run(self, command: str, timeout: float, *, connect_timeout: float = 0.0) -> tuple[int, bytes, bytes]:
        """(exit code, stdout, stderr); 124 on timeout; ShellGone when a fresh shell cannot run it.

        timeout bounds the command; a shell started for it also gets connect_timeout
        to connect (a short probe must not fail because the handshake is slow).
        """
        for _ in range(2):
            shell, fresh = self._take()
            try:
                result = shell.run(command, timeout + (connect_timeout if fresh else 0.0))
            except ShellTimeout:
                self._discard(shell)
                return 124, b"", f"(timed out after {timeout:g}s)".encode()
            except ShellGone:
                self._discard(shell)
                if fresh:
                    raise
                # An idle shell whose connection died meanwhile (a reboot): so did the other idle
                # ones; once more, on a fresh shell.
                self._drop_idle()
                continue
            self._give_back(shell)
            return result
        raise ShellGone(None, "no shell")  # not reached: the second round runs on a fresh shell

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._all = [s for s in self._all if s not in idle]
        for shell in idle:
            shell.close()

    def close(self) -> None:
        with self._lock:
            shells, self._all, self._idle = self._all, [], []
        for shell in shells:
            shell.close()
