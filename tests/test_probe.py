"""The prober against a local HTTP server, and the pure analysis and timeline."""

from __future__ import annotations

import socket
import statistics
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from haconform.errors import HaconformError
from haconform.probe import (ProbeSample, Prober, answered_by, longest_outage,
                             outage_windows, summarize, timeline_svg)

SVG = "{http://www.w3.org/2000/svg}"
# Generous for a loaded 2-core machine; a wait returns as soon as it holds.
WAIT = 10.0


class FlakyServer(ThreadingHTTPServer):
    """Names itself in its page; can be told to answer 503 or to be slow."""

    daemon_threads = True

    def __init__(self, name: str):
        super().__init__(("127.0.0.1", 0), FlakyHandler)
        self.name = name
        self.failing = False
        self.delay = 0.0
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class FlakyHandler(BaseHTTPRequestHandler):
    server: FlakyServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.paths.append(self.path)
        if self.server.delay:
            time.sleep(self.server.delay)  # the slow server under test, not a wait
        status = 503 if self.server.failing else 200
        body = (b"<html><body><h1>503 Service Unavailable</h1>\n" if self.server.failing
                else f"{self.server.name}\n".encode())
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Real-Server", self.server.name)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = FlakyServer("server2")
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def prober_for(url: str, **kwargs) -> Prober:
    return Prober([], url, python=sys.executable, **kwargs)


def count(predicate):
    return lambda samples: sum(1 for sample in samples if predicate(sample))


def test_outage_window_is_found_where_the_server_failed(server):
    # A generous timeout: on a loaded machine a slow answer must not count as the outage.
    with prober_for(server.url, interval_s=0.05, timeout_s=3.0) as prober:
        prober.wait_for("3 good answers", lambda s: count(lambda x: x.ok)(s) >= 3, timeout=WAIT)
        server.failing = True
        failing_from = time.time()
        seen = len(prober.samples)
        prober.wait_for("5 failures after the fault",
                        lambda s: count(lambda x: x.failed)(s[seen:]) >= 5, timeout=WAIT)
        server.failing = False
        failing_until = time.time()
        seen = len(prober.samples)
        prober.wait_for("3 good answers after recovery",
                        lambda s: count(lambda x: x.ok)(s[seen:]) >= 3, timeout=WAIT)
    samples = prober.stop()

    windows = outage_windows(samples)
    assert len(windows) == 1, windows
    window = windows[0]
    assert window.recovered
    # A request sent just before a flip may be served just after it: allow one slot.
    assert failing_from - 0.05 <= window.start <= failing_from + 0.3, (window, failing_from)
    assert failing_until - 0.05 <= window.end <= failing_until + 0.3, (window, failing_until)
    assert window.failed_count >= 5
    assert longest_outage(samples) == window
    failures = [s for s in samples if s.failed]
    assert {s.status for s in failures} == {503}
    assert {s.first_line for s in failures} == {"503 Service Unavailable"}

    summary = summarize(samples)
    assert summary["servers_seen"] == {"server2": summary["ok"]}
    assert summary["failed"] == len(failures) == window.failed_count
    assert summary["failures"] == {"http 503": len(failures)}
    assert summary["longest_outage_s"] == pytest.approx(window.duration)
    assert [seq for seq in (s.seq for s in samples)] == list(range(len(samples)))


def test_grid_does_not_shift_and_overlaps_are_skipped(server):
    server.delay = 0.12
    interval = 0.05
    prober = prober_for(server.url + "page?a=1", interval_s=interval, duration_s=1.0,
                        timeout_s=3.0, server_header="X-Real-Server").start()
    prober.wait_for("the prober ends at its duration", lambda _: prober.finished, timeout=WAIT)
    samples = prober.stop()

    assert [s.seq for s in samples] == list(range(len(samples)))
    assert len(samples) == round(1.0 / interval)
    gaps = [b.t_slot - a.t_slot for a, b in zip(samples, samples[1:])]
    assert max(gaps) - min(gaps) < 1e-6, "slots are not on a fixed grid"
    assert gaps[0] == pytest.approx(interval, abs=1e-6)

    sent = [s for s in samples if not s.skipped]
    skipped = [s for s in samples if s.skipped]
    assert skipped, "a 0.12 s request every 0.05 s must skip slots"
    assert all(s.ok for s in sent), [s.error for s in sent]
    for earlier, later in zip(sent, sent[1:]):
        assert earlier.t_done <= later.t_sent, "two probe requests overlapped"
    assert all(s.t_sent >= s.t_slot - 1e-3 for s in sent)
    assert statistics.median(s.t_sent - s.t_slot for s in sent) < interval
    assert {s.server for s in sent} == {"server2"}
    assert len({s.local_port for s in sent}) == len(sent)  # one connection per request

    probed = [urllib.parse.urlsplit(path) for path in server.paths]
    assert [p.query for p in probed] == [f"a=1&probe={s.seq}" for s in sent]


def test_refused_requests_are_failures_with_a_kind():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with prober_for(f"http://127.0.0.1:{port}/", interval_s=0.05) as prober:
        prober.wait_for("3 failures", lambda s: count(lambda x: x.failed)(s) >= 3, timeout=WAIT)
    samples = prober.stop()
    assert {s.error_kind for s in samples if not s.skipped} == {"refused"}
    (window,) = outage_windows(samples)
    assert not window.recovered


def test_a_dead_probe_agent_is_reported():
    prober = Prober([sys.executable, "-c", "import sys; sys.exit('transport broke')", "--"],
                    "http://127.0.0.1:9/").start()
    prober.wait_for("the agent is gone", lambda _: prober.exited, timeout=WAIT)
    assert "transport broke" in prober.state()
    with pytest.raises(HaconformError, match="transport broke"):
        prober.stop()


# -- pure analysis on hand-made samples ---------------------------------------

def sample(seq, outcome, t0=1000.0, step=0.1):
    """outcome: a server name (ok), "x" (failed) or "-" (skipped)."""
    t = t0 + seq * step
    if outcome == "-":
        return ProbeSample(seq, t, t, None, ok=False, skipped=True)
    if outcome == "x":
        return ProbeSample(seq, t, t, t + 0.05, ok=False, skipped=False,
                           error="timeout: ...", error_kind="timeout")
    return ProbeSample(seq, t, t, t + 0.01, ok=True, skipped=False, status=200,
                       first_line=outcome)


def samples_of(pattern: str) -> list[ProbeSample]:
    """"aab-xx-b": a/b answered by server a/b, x failed, - skipped."""
    return [sample(i, {"a": "server2", "b": "server3"}.get(c, c)) for i, c in enumerate(pattern)]


def test_outage_windows_from_first_failure_to_first_good_answer():
    samples = samples_of("aaxx-xbbbx-xaa" + "x-x")
    windows = outage_windows(samples)
    assert [(round(w.start - 1000, 3), round(w.end - 1000, 3), w.failed_count, w.recovered)
            for w in windows] == [(0.2, 0.6, 3, True), (0.9, 1.2, 2, True), (1.4, 1.65, 2, False)]
    assert longest_outage(samples).start == pytest.approx(1000.2)
    assert longest_outage(samples_of("abab")) is None
    assert outage_windows([]) == []


def test_skipped_slots_neither_start_nor_end_an_outage():
    assert outage_windows(samples_of("a--a")) == []
    (window,) = outage_windows(samples_of("ax--a"))
    assert window.failed_count == 1 and window.duration == pytest.approx(0.3)


def test_answered_by_and_summary():
    samples = samples_of("abx-ab")
    assert [server for _, server in answered_by(samples)] == \
        ["server2", "server3", "server2", "server3"]
    summary = summarize(list(reversed(samples)))  # order of input does not matter
    assert (summary["slots"], summary["sent"], summary["ok"], summary["failed"],
            summary["skipped"]) == (6, 5, 4, 1, 1)
    assert summary["servers_seen"] == {"server2": 2, "server3": 2}
    assert summary["failures"] == {"timeout": 1}
    assert summary["outages"] == [{"start": pytest.approx(1000.2), "end": pytest.approx(1000.4),
                                   "duration": pytest.approx(0.2), "failed_count": 1,
                                   "recovered": True}]


def test_timeline_is_valid_svg_with_lanes_bars_and_marks():
    samples = samples_of("ababxxxx--xbbb")
    marks = [(1000.35, "fault <injected> & watched"), (1001.1, "recovered")]
    root = ET.fromstring(timeline_svg(samples, marks, title="VIP during standby"))
    assert root.tag == f"{SVG}svg"
    texts = [el.text for el in root.iter(f"{SVG}text")]
    for lane in ("server2", "server3", "failed", "skipped"):
        assert lane in texts
    assert any(t.startswith("fault <injected> & watched") for t in texts)
    assert any(t.startswith("recovered") for t in texts)
    fills = [rect.get("fill") for rect in root.iter(f"{SVG}rect")]
    red = fills.count("#d32f2f")
    assert red == 2, fills          # "xxxx" and the lone "x": one bar per run
    assert fills.count("#2e9e44") == 4 + 1  # a,b,a,b alternate; then one "bbb" run
    assert fills.count("#a0a0a0") == 1
    dashed = [line for line in root.iter(f"{SVG}line") if line.get("stroke-dasharray")]
    assert len(dashed) == 2
    assert float(dashed[0].get("x1")) < float(dashed[1].get("x1"))


def test_timeline_of_nothing_still_renders():
    root = ET.fromstring(timeline_svg([]))
    assert root.tag == f"{SVG}svg"

