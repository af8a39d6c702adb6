"""A fake testinfra host for unit tests of readers: commands map to recorded output.

    host = FakeHost()
    host.on("pcs --version", stdout="0.11.5\n")
    host.on(re.compile(r"^timeout \\S+ crm_mon "), stdout=read_sample("crm_mon_running.xml"))
    host.add_file("/etc/hosts", "127.0.0.1 localhost\n")

run(command, *args) quotes args exactly like testinfra (command % shlex.quote(arg)...),
so a reader's real command line is what gets matched.  A response is a FakeResult,
a list of them (consumed one per call, the last one repeating), or a callable
taking the command line and returning a FakeResult.  Later registrations win.
An unmatched command fails loudly with the command line, so a test shows what
the reader ran.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

DATA = Path(__file__).parent / "data"


def read_sample(relative: str) -> str:
    """Text of a recorded sample under tests/data/."""
    return (DATA / relative).read_text(encoding="utf-8")


class FakeResult:
    """What testinfra's CommandResult offers: rc, stdout, stderr, stdout_bytes."""

    def __init__(self, rc: int = 0, stdout: str | bytes = "", stderr: str = "",
                 command: str = ""):
        self.rc = rc
        self.stdout_bytes = stdout if isinstance(stdout, bytes) else stdout.encode("utf-8")
        self.stdout = self.stdout_bytes.decode("utf-8", "replace")
        self.stderr = stderr
        self.command = command

    @property
    def exit_status(self) -> int:
        return self.rc

    @property
    def succeeded(self) -> bool:
        return self.rc == 0

    @property
    def failed(self) -> bool:
        return self.rc != 0

    def __repr__(self) -> str:
        return (f"FakeResult(rc={self.rc}, command={self.command!r}, "
                f"stdout={self.stdout[:80]!r}, stderr={self.stderr[:80]!r})")


Response = Union[FakeResult, list, Callable[[str], FakeResult]]


@dataclass
class FakeFile:
    """What testinfra's host.file(path) offers that readers use."""

    path: str
    content: bytes | None = None  # None: the file does not exist

    @property
    def exists(self) -> bool:
        return self.content is not None

    @property
    def content_string(self) -> str:
        if self.content is None:
            raise AssertionError(f"FakeFile {self.path} does not exist")
        return self.content.decode("utf-8")

    @property
    def size(self) -> int:
        if self.content is None:
            raise AssertionError(f"FakeFile {self.path} does not exist")
        return len(self.content)


@dataclass
class FakeHost:
    name: str = "fakehost"
    commands: list[str] = field(default_factory=list)
    _responses: list[tuple[object, Response]] = field(default_factory=list)
    _files: dict[str, FakeFile] = field(default_factory=dict)

    def on(self, command: str | re.Pattern[str], response: Response | None = None, *,
           stdout: str | bytes = "", stderr: str = "", rc: int = 0) -> "FakeHost":
        """Answer `command` (an exact command line, or a regex searched in it)."""
        if response is None:
            response = FakeResult(rc=rc, stdout=stdout, stderr=stderr)
        if isinstance(response, list):
            response = list(response)  # consumed per call
        self._responses.insert(0, (command, response))
        return self

    def add_file(self, path: str, content: str | bytes | None) -> FakeFile:
        data = content.encode("utf-8") if isinstance(content, str) else content
        self._files[path] = FakeFile(path, data)
        return self._files[path]

    # --- the testinfra Host API ---------------------------------------------
    def run(self, command: str, *args: str) -> FakeResult:
        if args:
            command = command % tuple(shlex.quote(a) for a in args)
        self.commands.append(command)
        for key, response in self._responses:
            hit = key == command if isinstance(key, str) else key.search(command)
            if not hit:
                continue
            if callable(response) and not isinstance(response, FakeResult):
                result = response(command)
            elif isinstance(response, list):
                result = response.pop(0) if len(response) > 1 else response[0]
            else:
                result = response
            return FakeResult(rc=result.rc, stdout=result.stdout_bytes, stderr=result.stderr,
                              command=command)
        read = re.fullmatch(r"cat -- (\S+)", command)
        if read and shlex.split(read.group(1))[0] in self._files:   # Machine.read_secret of an added file
            return FakeResult(rc=0, stdout=self._files[shlex.split(read.group(1))[0]].content, command=command)
        raise AssertionError(f"FakeHost {self.name}: nothing recorded for command: {command}")

    def check_output(self, command: str, *args: str) -> str:
        result = self.run(command, *args)
        assert result.rc == 0, f"Unexpected exit code {result.rc} for {result}"
        return result.stdout.rstrip("\r\n")

    def file(self, path: str) -> FakeFile:
        return self._files.get(path, FakeFile(path, None))


HOST_CLOCK = "date +%Y-%m-%dT%H:%M:%S%z"   # what LogWatch.arm() asks a host


class GrowingFile:
    """A log file on a FakeHost that tests append to, rotate and truncate.

    Answers the commands a LogWatch runs (stat, tail | head) from its bytes,
    the way GNU coreutils would.
    """

    def __init__(self, host: FakeHost, path: str, content: bytes | None = b"", inode: int = 1000):
        self.path = path
        self.content = content
        self.inode = inode
        quoted = re.escape(shlex.quote(path))
        host.on(re.compile(rf"^stat -L -c '%i %s' {quoted}$"), self._stat)
        host.on(re.compile(rf"^tail -c \+'?(\d+)'? {quoted} \| head -c '?(\d+)'?$"), self._tail)
        if not any(key == HOST_CLOCK for key, _ in host._responses):   # a test may have set the host's time
            host.on(HOST_CLOCK, stdout="2026-11-30T00:00:00+0000\n")

    def append(self, text: str | bytes) -> None:
        data = text.encode("utf-8") if isinstance(text, str) else text
        self.content = (self.content or b"") + data

    def rotate(self, new_content: bytes = b"") -> None:
        """logrotate's default: the file is renamed away and a new one created."""
        self.inode += 1
        self.content = new_content

    def truncate(self) -> None:
        self.content = b""

    def remove(self) -> None:
        self.content = None

    def _stat(self, command: str) -> FakeResult:
        if self.content is None:
            return FakeResult(rc=1, stderr=f"stat: cannot statx '{self.path}': "
                                           f"No such file or directory\n")
        return FakeResult(stdout=f"{self.inode} {len(self.content)}\n")

    def _tail(self, command: str) -> FakeResult:
        if self.content is None:
            return FakeResult(rc=1, stderr=f"tail: cannot open '{self.path}' for reading: "
                                           f"No such file or directory\n")
        found = re.search(r"tail -c \+'?(\d+)'? .* head -c '?(\d+)'?$", command)
        start, length = int(found.group(1)) - 1, int(found.group(2))
        return FakeResult(stdout=self.content[start:start + length])


class GuardedFake:
    """The guarded side of the Target contract for a fake target: a guard (apply unless a test sets
    one: the harness's own deployment) and program_argv over the fake's own exec_argv prefix."""

    @property
    def guard(self):
        from haconform.guard import HostGuard
        if "_guard" not in self.__dict__:
            self.__dict__["_guard"] = HostGuard()
        return self.__dict__["_guard"]

    @guard.setter
    def guard(self, value):
        self.__dict__["_guard"] = value

    def exec_argv(self, name: str, *, keepalive: bool = True) -> list[str]:
        return []

    def program_argv(self, name: str, argv: list[str], *, keepalive: bool = True) -> list[str]:
        self.guard.check_program(name, argv).finished(None)
        return [*self.exec_argv(name, keepalive=keepalive), *argv]
