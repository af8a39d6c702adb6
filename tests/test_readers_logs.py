"""LogWatch: lines appended after arm(), rotation, truncation, bounded waits."""

from __future__ import annotations

import os
import re

import pytest

from fakes import FakeHost, FakeResult, GrowingFile
from haconform.errors import WaitTimeout
from haconform.readers import CommandFailed, ParseError
from haconform.readers.logs import LogPosition, LogWatch

PATH = "/var/log/haproxy.log"


def watched(content: bytes | None = b"old line\n"):
    host = FakeHost(name="server1")
    log = GrowingFile(host, PATH, content)
    return host, log, LogWatch(host, PATH)


def test_arm_records_the_end_and_old_lines_never_count():
    host, log, watch = watched(b"before 1\nbefore 2\n")
    assert watch.arm() is watch
    assert watch.armed_at == LogPosition(inode=1000, size=18)
    assert watch.new_lines() == []
    log.append("after\n")
    assert watch.new_lines() == ["after"]
    assert host.commands[0] == f"stat -L -c '%i %s' {PATH}"


def test_new_lines_are_cumulative_and_read_incrementally():
    host, log, watch = watched()
    watch.arm()
    log.append("one\n")
    assert watch.new_lines() == ["one"]
    log.append("two\nthree\n")
    assert watch.new_lines() == ["one", "two", "three"]
    reads = [c for c in host.commands if c.startswith("tail")]
    # each read starts where the last one ended: byte 10 (+1) then byte 14 (+1)
    assert reads == [f"tail -c +10 {PATH} | head -c 4", f"tail -c +14 {PATH} | head -c 10"]


def test_a_partial_line_waits_for_its_newline():
    _, log, watch = watched()
    watch.arm()
    log.append("half a li")
    assert watch.new_lines() == []
    log.append("ne\nnext\n")
    assert watch.new_lines() == ["half a line", "next"]


def test_missing_file_at_arm_then_created():
    _, log, watch = watched(content=None)
    assert watch.arm().armed_at == LogPosition(inode=None, size=0)
    assert watch.new_lines() == []
    log.content = b"first line of a new file\n"
    assert watch.new_lines() == ["first line of a new file"]


def test_rotation_reads_the_new_file_from_the_start():
    _, log, watch = watched(b"x" * 100 + b"\n")
    watch.arm()
    log.append("last line of the old file\n")
    assert watch.new_lines() == ["last line of the old file"]
    log.rotate(b"a\nb\n")           # new inode, even though smaller
    assert watch.new_lines() == ["last line of the old file", "a", "b"]


def test_rotation_to_a_larger_file_is_still_seen_by_inode():
    _, log, watch = watched(b"short\n")
    watch.arm()
    log.rotate(b"a much longer first line in the new file\n")
    assert watch.new_lines() == ["a much longer first line in the new file"]


def test_truncation_reads_from_the_start_again():
    _, log, watch = watched(b"old old old old\n")
    watch.arm()
    log.truncate()
    log.append("new\n")
    assert watch.new_lines() == ["new"]


def test_unterminated_line_of_a_rotated_file_is_kept():
    _, log, watch = watched(b"")
    watch.arm()
    log.append("no newline at the end")
    assert watch.new_lines() == []
    log.rotate(b"fresh\n")
    assert watch.new_lines() == ["no newline at the end", "fresh"]


def test_file_removed_after_arm():
    _, log, watch = watched()
    watch.arm()
    log.remove()
    assert watch.new_lines() == []
    log.content = b"back\n"
    assert watch.new_lines() == ["back"]


def test_offsets_are_bytes_so_multibyte_text_is_not_cut():
    _, log, watch = watched("日志\n".encode())
    watch.arm()
    log.append("高可用 ok\n")
    assert watch.new_lines() == ["高可用 ok"]
    log.append("二\n")
    assert watch.new_lines() == ["高可用 ok", "二"]


def test_new_lines_before_arm_is_a_usage_error():
    _, _, watch = watched()
    with pytest.raises(RuntimeError, match="arm()"):
        watch.new_lines()


def test_stat_failures_are_clear():
    host = FakeHost(name="server1")
    host.on(re.compile("^stat "), rc=1, stderr="stat: cannot statx: Permission denied\n")
    with pytest.raises(CommandFailed, match="cannot stat /var/log/x.*Permission denied"):
        LogWatch(host, "/var/log/x").arm()
    odd = FakeHost(name="server1").on(re.compile("^stat "), stdout="regular file\n")
    with pytest.raises(ParseError, match="expected 'inode size'"):
        LogWatch(odd, "/var/log/x").arm()


def test_read_failure_is_clear():
    host, _, watch = watched()
    watch.arm()
    host.on(re.compile("^stat "), stdout="1000 50\n")
    host.on(re.compile("^tail "), rc=1, stderr="tail: error reading: Input/output error\n")
    with pytest.raises(CommandFailed, match="cannot read.*Input/output"):
        watch.new_lines()


# --- waiting --------------------------------------------------------------------------

def test_wait_for_returns_first_match_of_each_pattern():
    _, log, watch = watched()
    watch.arm()
    log.append("Server app/app1 is DOWN, reason: x\nServer app/app1 is UP\n"
               "Server app/app1 is DOWN, again\n")
    found = watch.wait_for({"down": r"Server app/app1 is DOWN", "up": re.compile(r"is UP")},
                           timeout=1)
    assert set(found) == {"down", "up"}
    assert found["down"].string == "Server app/app1 is DOWN, reason: x"


def test_wait_for_polls_until_the_line_arrives():
    host, log, watch = watched()
    watch.arm()
    stat_calls = 0
    original = log._stat

    def stat_and_grow(command: str) -> FakeResult:
        nonlocal stat_calls
        stat_calls += 1
        if stat_calls == 3:
            log.append("pacemaker-fenced: Operation 'reboot' targeting server4: OK\n")
        return original(command)

    host.on(re.compile("^stat "), stat_and_grow)
    found = watch.wait_for({"fenced": r"targeting server4"}, timeout=5)
    assert "reboot" in found["fenced"].string
    assert stat_calls >= 3


def test_wait_for_times_out_naming_what_is_missing():
    _, log, watch = watched()
    watch.arm()
    log.append("Server app/app1 is DOWN\n")
    with pytest.raises(WaitTimeout) as raised:
        watch.wait_for({"down": "is DOWN", "up": "is UP"}, timeout=0.3,
                       condition="app1 flaps")
    message = str(raised.value)
    assert "app1 flaps" in message and "missing ['up']" in message
    assert "Server app/app1 is DOWN" in message and "server1" in message


def test_lines_from_before_arm_cannot_satisfy_a_wait():
    _, log, watch = watched(b"Server app/app1 is UP\n")
    watch.arm()
    with pytest.raises(WaitTimeout):
        watch.wait_for({"up": "is UP"}, timeout=0.2)


def test_look_for_absence_reports_only_what_appeared():
    _, log, watch = watched()
    watch.arm()
    log.append("GET / 200\nGET /x 503\n")
    assert watch.look_for_absence({"5xx": r" 5\d\d$", "4xx": r" 4\d\d$"}) == {
        "5xx": ["GET /x 503"]}
    assert watch.look_for_absence({"4xx": r" 4\d\d$"}) == {}


def test_empty_pattern_set_is_refused():
    _, _, watch = watched()
    watch.arm()
    with pytest.raises(ValueError):
        watch.wait_for({}, timeout=0.1)


# --- on a real file through a real testinfra host ---------------------------------------

@pytest.fixture
def local_host():
    testinfra = pytest.importorskip("testinfra")
    return testinfra.get_host("local://")


def test_real_file_append_rotate_truncate(local_host, tmp_path):
    path = tmp_path / "haproxy.log"
    path.write_text("before\n")
    watch = LogWatch(local_host, str(path)).arm()
    with path.open("a") as log:
        log.write("after 1\n")
    assert watch.new_lines() == ["after 1"]

    os.rename(path, tmp_path / "haproxy.log.1")         # logrotate's create mode
    path.write_text("rotated 1\nrotated 2\n")
    assert watch.new_lines() == ["after 1", "rotated 1", "rotated 2"]

    with path.open("r+") as log:                         # copytruncate
        log.truncate(0)
    with path.open("a") as log:
        log.write("after truncate\n")
    assert watch.new_lines()[-1] == "after truncate"

    found = watch.wait_for({"rotated": "rotated 2"}, timeout=2)
    assert found["rotated"].string == "rotated 2"


def test_real_missing_file(local_host, tmp_path):
    path = tmp_path / "not-yet.log"
    watch = LogWatch(local_host, str(path)).arm()
    assert watch.armed_at == LogPosition(None, 0)
    path.write_text("now here\n")
    assert watch.new_lines() == ["now here"]


# --- a watch that must see its file (audits), and when each line was read ---------------------

def test_a_required_file_missing_at_arm_is_an_error_not_an_empty_log():
    host = FakeHost(name="server1")
    GrowingFile(host, PATH, None)
    with pytest.raises(CommandFailed, match="cannot stat /var/log/haproxy.log.*No such file"):
        LogWatch(host, PATH, required=True).arm()


def test_a_required_file_removed_after_arm_is_an_error_at_the_next_read():
    host = FakeHost(name="server1")
    log = GrowingFile(host, PATH, b"old\n")
    watch = LogWatch(host, PATH, required=True).arm()
    log.append("kept\n")
    assert watch.new_lines() == ["kept"]
    log.remove()
    with pytest.raises(CommandFailed, match="No such file"):
        watch.new_lines()
    log.content = b"back\n"
    assert watch.new_lines() == ["kept", "back"]   # lines already read stay


def test_seen_lines_carry_the_span_each_line_was_written_in():
    _, log, watch = watched()
    watch.arm()
    armed_at = watch._armed_time
    log.append("first\n")
    watch.new_lines()
    first_read_began, first_read_ended, _ = watch._reads[0]
    log.append("second\nthird\n")
    watch.new_lines()
    second_read_ended = watch.last_read
    first, second, third = watch.seen_lines()
    assert (first.text, first.after, first.by) == ("first", armed_at, first_read_ended)
    assert (second.after, second.by) == (first_read_began, second_read_ended) == (third.after, third.by)
    assert armed_at <= first_read_began <= first_read_ended <= second_read_ended


def test_seen_lines_need_no_new_read_and_an_unarmed_watch_has_none():
    host, log, watch = watched()
    with pytest.raises(RuntimeError, match="arm()"):
        watch.seen_lines()
    watch.arm()
    log.append("one\n")
    watch.new_lines()
    reads = len(host.commands)
    assert [s.text for s in watch.seen_lines()] == ["one"] and len(host.commands) == reads


# ----- a crashed host's log: shrunk, same inode, old lines first -------------------------------------

OLD = (b"Nov 30 05:28:27.943 server4 pacemaker-schedulerd[4313] (unpack_resources) error: NOTE: Clusters with "
       b"shared data need STONITH to ensure data integrity\n"
       b"Nov 30 05:28:28.001 server4 pacemaker-controld[4314] (do_state_transition) notice: State transition\n"
       b"  a continuation line of that record\n")


def crashed_host_watch(host_now: str):
    host = FakeHost(name="server4")
    host.on("date +%Y-%m-%dT%H:%M:%S%z", stdout=host_now + "\n")
    log = GrowingFile(host, "/var/log/pacemaker/pacemaker.log", OLD + b"Nov 30 05:35:20.000 server4 x: notice: y\n")
    return log, LogWatch(host, "/var/log/pacemaker/pacemaker.log", required=True)


def test_a_log_shrunk_by_a_crash_is_read_again_without_its_older_lines():
    log, watch = crashed_host_watch("2026-11-30T05:35:29+0000")
    watch.arm()
    log.append("Nov 30 05:35:30.100 server4 pacemaker-controld[4314] (x) notice: before the crash\n")
    assert len(watch.new_lines()) == 1
    # the crash: what was not synced is gone, the reboot appends to what survived (same inode)
    log.content = OLD + b"Nov 30 05:37:01.500 server4 pacemakerd[301] (main) notice: Starting Pacemaker\n"
    lines = watch.new_lines()
    assert not [line for line in lines if "05:28:" in line or "continuation" in line], lines
    assert lines[-1].endswith("Starting Pacemaker")


def test_a_shrunk_log_whose_lines_carry_no_stamp_is_read_whole():
    host = FakeHost(name="server1")
    host.on("date +%Y-%m-%dT%H:%M:%S%z", stdout="2026-11-30T05:35:29+0000\n")
    log = GrowingFile(host, PATH, b"old old old old\n")
    watch = LogWatch(host, PATH)
    watch.arm()
    log.content = b"plain\nlines\n"
    assert watch.new_lines() == ["plain", "lines"]


def test_line_stamps_in_syslog_rfc3339_and_pacemaker_forms():
    from datetime import datetime
    from haconform.readers.logs import line_stamp
    now = datetime.strptime("2027-01-01T00:00:30+0000", "%Y-%m-%dT%H:%M:%S%z")
    assert line_stamp("Dec 31 23:59:50 server1 haproxy[1]: x", now).year == 2026     # the nearest year
    assert line_stamp("2027-01-01T00:00:10.123456+00:00 server1 rsyslogd: x", now) < now
    assert line_stamp("Jan  1 00:00:40.5 server1 pacemakerd[1] (main) notice: x", now) > now
    assert line_stamp("no stamp here", now) is None
