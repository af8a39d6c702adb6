"""A long-lived shell on a remote host, fed one command at a time.

A new ssh session per command costs a session set-up on the host (sshd fork,
PAM, login shell): ~0.15 s on a container, more on an emulated VM.  Suites
run thousands of short commands, and watchers that sample several hosts in a
row see a skewed picture when each sample is slow.  So each host keeps a few
shells open (`ssh HOST /bin/sh`), and a command is written to one:

    /bin/sh -c CMD <IN >$d/o 2>$d/e; printf 'TOKEN rc len(o) len(e)'; cat $d/o $d/e

The reply is read back by length, so output is binary-safe, and within a
deadline: a command that outlives it gets its shell killed (exit 124, like
`timeout`), and the next command gets a fresh shell.

Two ways to bring a command's output back:

spooled (the default; targets haconform built, and --allow-destructive):
$d is the shell's one private directory (mktemp -d, 0700), made when the shell
starts and removed when it exits (trap on EXIT: a harness that dies closes the
shell's stdin, so the shell reads EOF, exits and cleans up).  Its name carries
the shell's PID, so each new shell first removes the directories of shells
that are gone (killed with SIGKILL, or cut off with their host) in the same
start-up script: no extra round trip.  A command's input (IN) travels in the
script itself as a here-document of its base64, decoded on the host into $d/i
(umask 077) and removed after the command: it is never part of any argv.

streamed (a read-only run: nothing may be written to the host, not even to /tmp):
nothing is made on the host.  stdout is held in a shell variable, base64-encoded
(so binary output survives), the exit code appended after a newline, and sent as
`TOKEN length` and the encoded text; stderr goes as it is onto the ssh session's
own stderr channel between two marker lines.  The input is a here-document of
its base64 decoded into the command's stdin through a pipe (dash makes
here-documents with pipes, not files).  A command that leaves a daemon holding
its stdout would keep the shell waiting, which is why only read-only runs (whose
commands start nothing) stream.
"""

from __future__ import annotations

import base64
import os
import secrets
import select
import shlex
import signal
import subprocess
import threading
import time
from collections import deque

from ..timeouts import BOUNDS


class ShellGone(Exception):
    """The shell's process ended (ssh could not connect, or the connection died)."""

    def __init__(self, returncode: int | None, stderr: str):
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"shell exited {returncode}: {stderr}")


class ShellTimeout(Exception):
    pass


# A shell told to exit (stdin closed) is gone within this; one that is not (its host is
# unreachable, ssh waits for ServerAlive) is killed instead.
SHELL_EXIT_S = BOUNDS.shell_exit
DEFAULT_TMP_ROOT = "/tmp"
DIRECTORY_PREFIX = "haconform-shell."


def start_script(tmp_root: str) -> str:
    """What a new shell runs first: remove directories of dead shells, make its own.

    The shell keeps the login's umask for the commands it runs ($__m); only its own
    files are made under umask 077.  o and e are made once here and truncated per
    command, so they stay 0600.
    """
    root = shlex.quote(tmp_root)
    return (
        '__m=$(umask); umask 077\n'
        f'for __s in {root}/{DIRECTORY_PREFIX}*; do '
        f'__p=${{__s##*/{DIRECTORY_PREFIX}}}; __p=${{__p%%.*}}; '
        "case $__p in ''|*[!0-9]*) continue;; esac; "
        '[ -d "/proc/$__p" ] || rm -rf "$__s" 2>/dev/null; done\n'
        f'__d=$(mktemp -d {root}/{DIRECTORY_PREFIX}$$.XXXXXXXX) || '
        f'{{ echo "haconform: mktemp -d in {tmp_root} failed" >&2; exit 1; }}\n'
        "trap 'rm -rf \"$__d\"' EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM\n"
        ': >"$__d/o"; : >"$__d/e"; umask "$__m"\n')


# What a streaming shell runs first: nothing on the host's disks, only the umask of its commands.
STREAMING_START = ""


def streamed_command_script(command: str, token: str, input: bytes | None) -> str:
    """One command for a streaming shell (see the module docstring): writes nothing on the host."""
    run = f"/bin/sh -c {shlex.quote(command)}"
    begin, end = stderr_markers(token)
    if input is None:
        body = f"__o=$( {{ {run} </dev/null; printf '\\n%s' \"$?\"; }} | base64 )\n"
    else:
        delimiter = f"HACONFORM_INPUT_{token.removeprefix('haconform-')}"
        data = base64.encodebytes(input).decode("ascii")
        body = (f"__o=$( {{ base64 -d <<'{delimiter}' | {run}; printf '\\n%s' \"$?\"; }} | base64\n"
                f"{data}{delimiter}\n)\n")
    return (f"printf '%s\\n' {begin} >&2\n" + body +
            f"printf '\\n%s\\n' {end} >&2; printf '%s %s\\n' {token} \"${{#__o}}\"; printf '%s' \"$__o\"\n")


def stderr_markers(token: str) -> tuple[str, str]:
    return f"{token}-begin", f"{token}-end"


def command_script(command: str, token: str, input: bytes | None) -> str:
    """One command for the shell: its reply starts with a line `TOKEN rc len(stdout) len(stderr)`."""
    reply = (f'printf "{token} %s %s %s\\n" "$__r" "$(wc -c <"$__d/o")" "$(wc -c <"$__d/e")"; '
             'cat "$__d/o" "$__d/e"; : >"$__d/o"; : >"$__d/e"')
    run = f'/bin/sh -c {shlex.quote(command)}'
    if input is None:
        return f'{{ {run} </dev/null >"$__d/o" 2>"$__d/e"; __r=$?; {reply}; }}\n'
    # "_" is not in base64's alphabet: no line of the data can end the here-document early.
    delimiter = f"HACONFORM_INPUT_{token.removeprefix('haconform-')}"
    data = base64.encodebytes(input).decode("ascii")
    return (f"umask 077; base64 -d >\"$__d/i\" <<'{delimiter}'\n{data}{delimiter}\n"
            '__b=$?; umask "$__m"\n'
            f'{{ if [ "$__b" = 0 ]; then {run} <"$__d/i" >"$__d/o" 2>"$__d/e"; __r=$?; '
            'else __r=125; : >"$__d/o"; echo "haconform: the command\'s input could not be decoded" >"$__d/e"; fi; '
            f'rm -f "$__d/i"; {reply}; }}\n')


class RemoteShell:
    """One shell process; not thread-safe (ShellPool hands each to one caller at a time).
    streaming: bring output back without writing anything on the host (see the module docstring)."""

    def __init__(self, argv: list[str], *, tmp_root: str = DEFAULT_TMP_ROOT, streaming: bool = False):
        self.argv = argv
        self.tmp_root = tmp_root
        self.streaming = streaming
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True)
        self._buffer = bytearray()
        self._stderr: deque[str] = deque(maxlen=20)
        self._errors = bytearray()                  # streaming: the stderr channel not yet handed out
        self._errors_grew = threading.Condition()
        self._stderr_reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_reader.start()
        try:
            # Queued behind the login: the first command's reply waits for it, no round trip of its own.
            self.process.stdin.write((STREAMING_START if streaming else start_script(tmp_root)).encode())
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass   # the shell is already gone: the first run() says why

    def _drain_stderr(self) -> None:
        if not self.streaming:
            for raw in self.process.stderr:
                self._stderr.append(raw.decode("utf-8", "replace").rstrip())
            return
        fd = self.process.stderr.fileno()
        while True:
            chunk = os.read(fd, 65536)
            with self._errors_grew:
                if chunk:
                    self._errors += chunk
                self._errors_grew.notify_all()
            if not chunk:
                return

    def _command_stderr(self, token: str, deadline: float) -> bytes:
        """Streaming: the bytes the command wrote on stderr, between its two marker lines."""
        begin, end = (f"{marker}\n".encode() for marker in stderr_markers(token))
        closing = b"\n" + end
        with self._errors_grew:
            while closing not in self._errors:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self._stderr_reader.is_alive() and closing not in self._errors):
                    raise ShellTimeout()
                self._errors_grew.wait(remaining)
            noise, _, rest = bytes(self._errors).partition(begin)
            command_err, _, after = rest.partition(closing)
            self._errors = bytearray(after)
        for line in noise.decode("utf-8", "replace").splitlines():
            self._stderr.append(line.rstrip())   # the login's own words (a banner), for error messages
        return command_err

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

    def run(self, command: str, timeout: float, *, input: bytes | None = None) -> tuple[int, bytes, bytes]:
        """(exit code, stdout, stderr); input: the command's stdin (else /dev/null)."""
        token = "haconform-" + secrets.token_hex(8)
        if self.streaming:
            return self._run_streamed(command, token, timeout, input)
        deadline = self._send(command_script(command, token, input), timeout)
        rc, out_size, err_size = (int(w) for w in self._header(token, 3, deadline))
        return rc, self._read_exact(out_size, deadline), self._read_exact(err_size, deadline)

    def _send(self, script: str, timeout: float) -> float:
        """Hand the shell one command's script; the deadline of its reply."""
        try:
            self.process.stdin.write(script.encode())
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self._gone() from None
        return time.monotonic() + timeout

    def _header(self, token: str, fields: int, deadline: float) -> list[str]:
        """The fields of the reply's first line `TOKEN field...`; anything before it is the shell's own
        noise (a login banner)."""
        while True:
            words = self._read_line(deadline).decode("utf-8", "replace").split()
            if len(words) == fields + 1 and words[0] == token:
                return words[1:]

    def _run_streamed(self, command: str, token: str, timeout: float, input: bytes | None) -> tuple[int, bytes, bytes]:
        deadline = self._send(streamed_command_script(command, token, input), timeout)
        (length,) = self._header(token, 1, deadline)
        encoded = self._read_exact(int(length), deadline)
        payload = base64.b64decode(encoded)
        stdout, _, rc = payload.rpartition(b"\n")
        return int(rc), stdout, self._command_stderr(token, deadline)

    def end_input(self) -> None:
        """EOF on the shell's stdin: an idle shell exits and removes its directory."""
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def close(self, *, graceful: bool = True) -> None:
        """graceful: let the shell exit on EOF (it cleans up after itself); a busy one
        (graceful=False: a command that outlived its bound) is killed at once."""
        if graceful and self.alive:
            self.end_input()
            try:
                self.process.wait(timeout=SHELL_EXIT_S)
            except subprocess.TimeoutExpired:
                pass
        if self.alive:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=5)
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class ShellPool:
    """Idle shells of one host; a caller takes one (or starts one), runs, gives it back.
    streaming: the shells write nothing on the host (a read-only run; see the module docstring)."""

    def __init__(self, argv: list[str], *, tmp_root: str = DEFAULT_TMP_ROOT, streaming: bool = False):
        self.argv = argv
        self.tmp_root = tmp_root
        self.streaming = streaming
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
            shell = RemoteShell(self.argv, tmp_root=self.tmp_root, streaming=self.streaming)
            self._all.append(shell)
            return shell, True

    def _give_back(self, shell: RemoteShell) -> None:
        with self._lock:
            self._idle.append(shell)

    def _discard(self, shell: RemoteShell) -> None:
        shell.close(graceful=False)
        with self._lock:
            if shell in self._all:
                self._all.remove(shell)

    def run(self, command: str, timeout: float, *, connect_timeout: float = 0.0,
            input: bytes | None = None) -> tuple[int, bytes, bytes]:
        """(exit code, stdout, stderr); 124 on timeout; ShellGone when a fresh shell cannot run it.

        timeout bounds the command; a shell started for it also gets connect_timeout
        to connect (a short probe must not fail because the handshake is slow).
        input: the command's stdin (else /dev/null).
        """
        for _ in range(2):
            shell, fresh = self._take()
            try:
                result = shell.run(command, timeout + (connect_timeout if fresh else 0.0), input=input)
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
        self._close_all(idle)

    def close(self) -> None:
        with self._lock:
            shells, self._all, self._idle = self._all, [], []
        self._close_all(shells)

    @staticmethod
    def _close_all(shells: list[RemoteShell]) -> None:
        # Every shell is told first, so their exits overlap instead of adding up.
        for shell in shells:
            shell.end_input()
        for shell in shells:
            shell.close()
