"""Long-lived shells: framing, binary output, exit codes, timeouts, dead shells (a local /bin/sh stands in for ssh)."""

from __future__ import annotations

import pytest

from haconform.targets.remote_shell import RemoteShell, ShellGone, ShellPool


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
