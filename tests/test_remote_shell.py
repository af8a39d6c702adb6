"""Long-lived shells: framing, binary output, exit codes, timeouts, dead shells (a local /bin/sh stands in for ssh)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import threading
from pathlib import Path

import pytest

from haconform.targets.remote_shell import DIRECTORY_PREFIX, RemoteShell, ShellGone, ShellPool
from haconform.timeouts import BOUNDS
from haconform.wait import wait_until


@pytest.fixture
def pool():
    p = ShellPool(["/bin/sh"])
    yield p
    p.close()


def test_output_exit_code_and_stderr_come_back_intact(pool):
    assert pool.run("printf 'a\\0b\\n'; echo oops >&2; exit 3", 10) == (3, b"a\x00b\n", b"oops\n")


def test_one_shell_serves_many_commands(pool):
    first = pool.run("echo $PPID", 10)[1]
    assert all(pool.run("echo $PPID", 10)[1] == first for _ in range(5))


def test_commands_do_not_read_the_shells_stdin(pool):
    assert pool.run("cat", 10) == (0, b"", b"")
    assert pool.run("echo still here", 10)[1] == b"still here\n"


def test_a_command_outliving_its_bound_kills_its_shell_only(pool):
    rc, _, err = pool.run("sleep 30", 0.5)
    assert rc == 124 and b"timed out" in err
    assert pool.run("echo next", 10) == (0, b"next\n", b"")


def test_shell_that_cannot_start_raises_with_its_stderr():
    pool = ShellPool(["/bin/sh", "-c", "echo 'ssh: connect to host x port 22: Connection refused' >&2; exit 255"])
    with pytest.raises(ShellGone) as caught:
        pool.run("true", 5)
    assert caught.value.returncode == 255 and "Connection refused" in caught.value.stderr


def test_idle_shell_that_died_is_replaced(pool):
    pool.run("true", 10)
    for shell in pool._idle:
        shell.process.kill()
        shell.process.wait()
    assert pool.run("echo fresh", 10)[1] == b"fresh\n"


def test_concurrent_callers_get_separate_shells(pool):
    import threading
    results = []
    threads = [threading.Thread(target=lambda: results.append(pool.run("sleep 0.2; echo ok", 10))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(0, b"ok\n", b"")] * 4


def test_banner_before_the_reply_is_skipped():
    shell = RemoteShell(["/bin/sh", "-c", "echo 'Welcome to host'; exec /bin/sh"])
    try:
        assert shell.run("echo hi", 10) == (0, b"hi\n", b"")
    finally:
        shell.close()


def test_a_fresh_shell_gets_time_to_connect_beyond_the_command_bound():
    slow_login = ShellPool(["/bin/sh", "-c", "sleep 1; exec /bin/sh"])
    try:
        assert slow_login.run("echo up", 0.5, connect_timeout=5) == (0, b"up\n", b"")
        assert slow_login.run("sleep 2", 0.5, connect_timeout=5)[0] == 124   # a reused shell: the bound alone
    finally:
        slow_login.close()


# ----- the shell's private directory and a command's input ---------------------------------

def shell_directories(root) -> list:
    return sorted(p for p in root.iterdir() if p.name.startswith(DIRECTORY_PREFIX))


def test_each_shell_has_one_private_directory_gone_after_close(tmp_path):
    pool = ShellPool(["/bin/sh"], tmp_root=str(tmp_path))
    pool.run("true", 10)
    [directory] = shell_directories(tmp_path)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {"o": 0o600, "e": 0o600}
    for _ in range(3):
        pool.run("echo again", 10)
    assert shell_directories(tmp_path) == [directory], "one directory per shell, not per command"
    pool.close()
    assert list(tmp_path.iterdir()) == []


def test_a_shell_killed_with_sigkill_leaves_a_directory_the_next_shell_removes(tmp_path):
    first = RemoteShell(["/bin/sh"], tmp_root=str(tmp_path))
    first.run("true", 10)
    [stale] = shell_directories(tmp_path)
    os.killpg(first.process.pid, signal.SIGKILL)    # no trap runs: the harness died at once
    first.process.wait(timeout=5)
    assert stale.exists()
    second = RemoteShell(["/bin/sh"], tmp_root=str(tmp_path))
    try:
        second.run("true", 10)
        [own] = shell_directories(tmp_path)
        assert own != stale and not stale.exists()
    finally:
        second.close()
        first.close()
    assert list(tmp_path.iterdir()) == []


def test_a_live_shells_directory_is_left_alone_by_a_new_shell(tmp_path):
    first = ShellPool(["/bin/sh"], tmp_root=str(tmp_path))
    second = ShellPool(["/bin/sh"], tmp_root=str(tmp_path))
    try:
        first.run("true", 10)
        [mine] = shell_directories(tmp_path)
        second.run("true", 10)
        assert mine in shell_directories(tmp_path) and len(shell_directories(tmp_path)) == 2
        assert first.run("echo still", 10) == (0, b"still\n", b"")
    finally:
        first.close()
        second.close()
    assert list(tmp_path.iterdir()) == []


def test_a_shell_ended_by_its_command_timing_out_cleans_up(tmp_path):
    pool = ShellPool(["/bin/sh"], tmp_root=str(tmp_path))
    assert pool.run("sleep 30", 0.5)[0] == 124
    wait_until("the killed shell's directory removed", lambda: not shell_directories(tmp_path),
               timeout=BOUNDS.host_halt, observe=lambda: shell_directories(tmp_path))
    pool.close()


@pytest.mark.parametrize("data", [b"", b"one line\n", bytes(range(256)) * 3,
                                  b"HACONFORM_INPUT_0\nEOF\n'\"$(x)`y`\\\n", os.urandom(300_000)],
                         ids=["empty", "line", "every-byte", "delimiter-like", "300k"])
def test_input_round_trips_binary_safe(pool, data):
    assert pool.run("cat", 30, input=data) == (0, data, b"")
    assert pool.run("wc -c", 30, input=data)[1].strip() == str(len(data)).encode()


def test_commands_keep_the_logins_umask(tmp_path):
    """The shell's own files are made under umask 077; the commands it runs must not inherit that."""
    pool = ShellPool(["/bin/sh"], tmp_root=str(tmp_path))
    login_umask = os.umask(0o022)
    try:
        pool.run("true", 10)    # the shell starts now, with the login's umask 022
    finally:
        os.umask(login_umask)
    try:
        assert pool.run("umask", 10)[1].strip() == b"0022"
        assert pool.run("umask", 10, input=b"x")[1].strip() == b"0022"
        pool.run(f": > {tmp_path}/made-by-a-command", 10)
        assert stat.S_IMODE((tmp_path / "made-by-a-command").stat().st_mode) == 0o644
    finally:
        pool.close()


def test_input_is_never_on_a_command_line_and_its_file_is_private_and_removed(tmp_path):
    secret = b"s3cret-" + os.urandom(8).hex().encode()
    pool = ShellPool(["/bin/sh"], tmp_root=str(tmp_path))
    seen: dict = {"cmdline": [], "input file modes": set()}
    done = threading.Event()

    def watch():
        while not done.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        if secret in (entry / "cmdline").read_bytes():
                            seen["cmdline"].append(entry.name)
                    except OSError:
                        pass
            for directory in shell_directories(tmp_path):
                try:
                    seen["input file modes"].add(stat.S_IMODE((directory / "i").stat().st_mode))
                except OSError:
                    pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert pool.run("sleep 1; cat", 10, input=secret) == (0, secret, b"")
    finally:
        done.set()
        watcher.join()
    assert seen["cmdline"] == []
    assert seen["input file modes"] == {0o600}, "the watcher saw the input file while the command ran"
    [directory] = shell_directories(tmp_path)
    assert not (directory / "i").exists()
    pool.close()


# ----- streaming: a read-only run writes nothing on the host ------------------------------------------

@pytest.fixture
def streaming(tmp_path):
    p = ShellPool(["/bin/sh"], tmp_root=str(tmp_path), streaming=True)
    yield p
    p.close()


def test_streamed_output_exit_code_stderr_and_input_come_back_intact(streaming, tmp_path):
    assert streaming.run("printf 'a\\0b\\n'; echo oops >&2; exit 3", 10) == (3, b"a\x00b\n", b"oops\n")
    key = os.urandom(512)
    assert streaming.run("cat", 10, input=key) == (0, key, b"")
    assert streaming.run("printf 'no newline'", 10) == (0, b"no newline", b"")
    big = streaming.run("head -c 300000 /dev/zero", 10)
    assert big[0] == 0 and big[1] == b"\0" * 300000
    assert streaming.run("sleep 30", 0.5)[0] == 124
    assert streaming.run("echo next; echo err >&2", 10) == (0, b"next\n", b"err\n")
    assert not list(tmp_path.iterdir()), "a streaming shell made files in its tmp root"


def test_a_streaming_shell_makes_no_file_anywhere(tmp_path):
    """Every file the shell and its commands open for writing, traced: none (the input goes through a pipe)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (`haconform lab install` installs it)")
    trace = tmp_path / "trace"
    pool = ShellPool([strace, "-f", "-qq", "-e", "trace=openat,creat,mkdir,mkdirat,rename,unlink,unlinkat",
                      "-o", str(trace), "/bin/sh"], tmp_root=str(tmp_path / "tmp"), streaming=True)
    try:
        assert pool.run("cat", 10, input=b"secret input\n") == (0, b"secret input\n", b"")
        assert pool.run("crm_mon --version >/dev/null 2>&1; echo done", 10)[1] == b"done\n"
    finally:
        pool.close()
    writes = [line for line in trace.read_text().splitlines()
              if ("O_WRONLY" in line or "O_RDWR" in line or "O_CREAT" in line or "mkdir" in line
                  or "unlink" in line or "rename" in line) and "/dev/null" not in line and "/dev/tty" not in line]
    assert not writes, writes
