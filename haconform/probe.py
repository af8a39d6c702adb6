"""Availability prober: a steady stream of GETs from the client host during a fault.

    with Prober(lab.client.transport, f"http://{lab.vip}/") as prober:
        prober.wait_for("the prober saw the service answer", lambda s: any(x.ok for x in s),
                        timeout=BOUNDS.agent_start)
        injected = time.time()
        ...inject the fault, wait for the promised end state...
    samples = prober.samples
    worst = longest_outage(samples)          # Window or None
    svg = timeline_svg(samples, [(injected, "fault injected")])

The requests are sent by haconform/agent.py (mode "probe") on the client host,
on a fixed grid; this module reads its lines and analyses them.  The analysis
functions are pure: they take samples and return values.

Times are the client host's time.time(); marks must use the same clock (the
namespace lab shares the machine's clock; VMs must keep theirs in sync).
"""

from __future__ import annotations

import logging
import statistics
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

from .client import AgentProcess, Transport
from .errors import HaconformError
from .timeouts import BOUNDS, documented
from .wait import wait_until

log = logging.getLogger("haconform.probe")


@dataclass(frozen=True)
class ProbeSample:
    """One grid slot of the prober: a request, or a slot skipped because one was in flight."""

    seq: int
    t_slot: float           # the slot's place on the grid
    t_sent: float           # when the request left (or the slot was skipped)
    t_done: float | None    # when it completed or failed; None if skipped
    ok: bool                # a 2xx/3xx response came
    skipped: bool
    status: int | None = None
    first_line: str = ""    # first line of the page's text: names the real server
    error: str | None = None
    error_kind: str | None = None
    local_port: int | None = None
    server_header: str | None = None   # the value of the prober's server_header, if asked for

    @property
    def failed(self) -> bool:
        return not self.skipped and not self.ok

    @property
    def server(self) -> str | None:
        """Who answered (server header, else the page's first line); None unless the request succeeded."""
        if not self.ok:
            return None
        return self.server_header or self.first_line

    @property
    def outcome(self) -> str:
        if self.skipped:
            return "skipped"
        if self.ok:
            return self.server or ""
        return self.error_kind or f"http {self.status}"

    @classmethod
    def from_json(cls, line: dict) -> ProbeSample:
        return cls(seq=int(line["seq"]), t_slot=float(line["t_slot"]),
                   t_sent=float(line["t_sent"]),
                   t_done=None if line.get("t_done") is None else float(line["t_done"]),
                   ok=bool(line["ok"]), skipped=bool(line["skipped"]),
                   status=line.get("status"), first_line=line.get("first_line") or "",
                   error=line.get("error"), error_kind=line.get("error_kind"),
                   local_port=line.get("local_port"), server_header=line.get("server_header"))


@dataclass(frozen=True)
class Window:
    """An outage: from the first failed request to the first good one after it."""

    start: float
    end: float              # first good request's t_sent; last sample's end if never recovered
    duration: float
    failed_count: int
    recovered: bool         # False: still failing when the samples end


class Prober:
    """Runs the agent's probe mode on the client host and collects its samples."""

    def __init__(self, argv_prefix: Transport, url: str, interval_s: float = 0.1,
                 duration_s: float = 900.0, *, timeout_s: float = BOUNDS.probe_request,
                 server_header: str | None = None, python: str = "python3",
                 through_shell: bool | None = None, label: str | None = None):
        # duration_s is a safety stop for a forgotten prober; stop() is the normal end.
        self.url = url
        self.interval_s = interval_s
        self.duration_s = duration_s
        self.timeout_s = timeout_s
        self.label = label or f"prober {url}"
        mode_args = ["probe", url, "--interval-ms", f"{interval_s * 1000:g}",
                     "--duration", f"{duration_s:g}", "--timeout", f"{timeout_s:g}"]
        if server_header:
            mode_args += ["--server-header", server_header]
        self._process = AgentProcess(argv_prefix, mode_args, python=python,
                                     through_shell=through_shell, label=self.label)
        self._samples: list[ProbeSample] = []
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self.finished = False    # the agent wrote its closing line (duration reached or stdin closed)
        self.exited = False

    def start(self) -> Prober:
        if not self._started:
            self._started = True
            self._process.start(self._on_line, self._on_exit)
        return self

    def __enter__(self) -> Prober:
        return self.start()

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        try:
            self.stop()
        except HaconformError as exc:
            if exc_type is None:
                raise
            # Do not hide the failure that ended the with-block.
            log.warning("%s", exc)

    def _on_line(self, line: dict) -> None:
        if line.get("done"):
            self.finished = True
            return
        sample = ProbeSample.from_json(line)
        with self._lock:
            self._samples.append(sample)

    def _on_exit(self) -> None:
        self.exited = True

    @property
    def samples(self) -> list[ProbeSample]:
        """Samples so far, in grid order."""
        with self._lock:
            return sorted(self._samples, key=lambda sample: sample.seq)

    def state(self) -> str:
        """One line for failure messages: counts so far and the agent's health."""
        counts = summarize(self.samples)
        text = (f"{counts['sent']} sent, {counts['ok']} ok, {counts['failed']} failed, "
                f"{counts['skipped']} skipped, servers {counts['servers_seen']}")
        if self.exited and not self.finished:
            text += f"; the probe agent died: {self._process.stderr_tail()}"
        return text

    def wait_for(self, condition: str, predicate: Callable[[list[ProbeSample]], Any], *,
                 timeout: float) -> Any:
        """wait_until predicate(samples so far) holds; the timeout message shows the prober's state."""
        return wait_until(condition, lambda: predicate(self.samples), timeout=timeout,
                          observe=self.state)

    def stop(self) -> list[ProbeSample]:
        """Stop probing (the last request may finish) and return all samples."""
        if self._started and not self._stopped:
            self._stopped = True
            self._process.finish(documented(self.timeout_s))
            if not self.finished:
                raise HaconformError(
                    f"the probe agent ended without finishing (code {self._process.returncode}); "
                    f"its stderr: {self._process.stderr_tail()}",
                    where=self.label, fix=f"run it by hand: {self._process.describe()}")
        return self.samples


# -- analysis (pure) -------------------------------------------------------

def _in_order(samples: Iterable[ProbeSample]) -> list[ProbeSample]:
    return sorted(samples, key=lambda sample: sample.seq)


def outage_windows(samples: Iterable[ProbeSample]) -> list[Window]:
    """Every run of failed requests, from the first failure to the first good request after it.

    Skipped slots neither start nor end an outage: nothing was asked.
    """
    sent = [sample for sample in _in_order(samples) if not sample.skipped]
    windows: list[Window] = []
    start: float | None = None
    failed = 0
    for sample in sent:
        if not sample.ok:
            if start is None:
                start, failed = sample.t_sent, 0
            failed += 1
        elif start is not None:
            windows.append(Window(start, sample.t_sent, sample.t_sent - start, failed, True))
            start = None
    if start is not None:
        last = sent[-1]
        end = last.t_done if last.t_done is not None else last.t_sent
        windows.append(Window(start, end, end - start, failed, False))
    return windows


def longest_outage(samples: Iterable[ProbeSample]) -> Window | None:
    return max(outage_windows(samples), key=lambda window: window.duration, default=None)


def answered_by(samples: Iterable[ProbeSample]) -> list[tuple[float, str]]:
    """(t_sent, server) of every good request, in order: shows the balancing and the failover."""
    return [(sample.t_sent, sample.server or "") for sample in _in_order(samples) if sample.ok]


def summarize(samples: Iterable[ProbeSample]) -> dict[str, Any]:
    ordered = _in_order(samples)
    sent = [sample for sample in ordered if not sample.skipped]
    windows = outage_windows(ordered)
    longest = max((window.duration for window in windows), default=0.0)
    return {
        "slots": len(ordered),
        "sent": len(sent),
        "ok": sum(1 for sample in sent if sample.ok),
        "failed": sum(1 for sample in sent if not sample.ok),
        "skipped": len(ordered) - len(sent),
        "outages": [asdict(window) for window in windows],
        "longest_outage_s": longest,
        "servers_seen": dict(Counter(sample.server for sample in sent if sample.ok)),
        "failures": dict(Counter(sample.outcome for sample in sent if not sample.ok)),
        "first_t": ordered[0].t_slot if ordered else None,
        "last_t": ordered[-1].t_slot if ordered else None,
    }


# -- timeline --------------------------------------------------------------

SVG_NS = "http://www.w3.org/2000/svg"
_GOOD, _BAD, _SKIP, _MARK, _INK = "#2e9e44", "#d32f2f", "#a0a0a0", "#1f4e9e", "#333333"
_TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


def _lane_of(sample: ProbeSample) -> str:
    if sample.skipped:
        return "skipped"
    if sample.ok:
        return sample.server or "(empty page)"
    return "failed"


@dataclass(frozen=True)
class _TimelineFrame:
    """Where a timeline's lanes and times land on the page."""
    lanes: list[str]
    t0: float
    t1: float
    left: int
    top: int
    plot_w: int
    lane_h: int = 16
    gap: int = 4

    @property
    def lanes_bottom(self) -> int:
        return self.top + len(self.lanes) * (self.lane_h + self.gap)

    def x(self, t: float) -> float:
        return round(self.left + (t - self.t0) / (self.t1 - self.t0) * self.plot_w, 2)

    def lane_y(self, lane: str) -> int:
        return self.top + self.lanes.index(lane) * (self.lane_h + self.gap)


def timeline_svg(samples: Sequence[ProbeSample], marks: Iterable[tuple[float, str]] = (), *,
                 width: int = 960, title: str | None = None) -> str:
    """A self-contained SVG: one lane per answering server (green), failed (red),
    skipped (grey), vertical lines for marks such as "fault injected"."""
    ordered = _in_order(samples)
    marks = sorted(marks)
    lanes = list(dict.fromkeys(_lane_of(s) for s in ordered if s.ok))
    lanes.append("failed")
    if any(s.skipped for s in ordered):
        lanes.append("skipped")

    steps = [b.t_slot - a.t_slot for a, b in zip(ordered, ordered[1:])]
    slot = statistics.median(steps) if steps else 0.1
    spans = [(s, s.t_slot, (ordered[i + 1].t_slot if i + 1 < len(ordered) else s.t_slot + slot))
             for i, s in enumerate(ordered)]
    times = [t for _, a, b in spans for t in (a, b)] + [t for t, _ in marks]
    t0 = min(times, default=0.0)
    t1 = max(times, default=1.0)
    if t1 - t0 <= 0:
        t1 = t0 + 1.0

    left, right = 130, 20
    frame = _TimelineFrame(lanes=lanes, t0=t0, t1=t1, left=left, plot_w=width - left - right,
                           top=16 + (18 if title else 0) + (30 if marks else 0))
    height = frame.lanes_bottom + 34
    svg = ET.Element("svg", {"xmlns": SVG_NS, "width": str(width), "height": str(height),
                             "viewBox": f"0 0 {width} {height}", "font-family": "sans-serif",
                             "font-size": "11"})
    summary = summarize(ordered)
    ET.SubElement(svg, "title").text = title or "probe timeline"
    ET.SubElement(svg, "desc").text = (
        f"{summary['sent']} requests, {summary['ok']} ok, {summary['failed']} failed, "
        f"{summary['skipped']} skipped; longest outage {summary['longest_outage_s']:.3f} s")
    if title:
        ET.SubElement(svg, "text", {"x": str(left), "y": "14", "font-weight": "bold",
                                    "fill": _INK}).text = title
    _draw_lanes(svg, frame)
    _draw_runs(svg, frame, spans)
    _draw_time_axis(svg, frame)
    _draw_marks(svg, frame, marks)
    return ET.tostring(svg, encoding="unicode")


def _draw_lanes(svg: ET.Element, frame: _TimelineFrame) -> None:
    for lane in frame.lanes:
        y = frame.lane_y(lane)
        ET.SubElement(svg, "text", {"x": str(frame.left - 6), "y": str(y + frame.lane_h - 4),
                                    "text-anchor": "end", "fill": _INK}).text = lane[:20]
        ET.SubElement(svg, "rect", {"x": str(frame.left), "y": str(y), "width": str(frame.plot_w),
                                    "height": str(frame.lane_h), "fill": "#f4f4f4"})


def _draw_runs(svg: ET.Element, frame: _TimelineFrame, spans: list[tuple[ProbeSample, float, float]]) -> None:
    # Consecutive samples in one lane become one bar, so a long run stays one element.
    runs: list[list[Any]] = []   # [lane, start, end, members]
    for sample, start, end in spans:
        lane = _lane_of(sample)
        if runs and runs[-1][0] == lane and runs[-1][3][-1].seq + 1 == sample.seq:
            runs[-1][2] = end
            runs[-1][3].append(sample)
        else:
            runs.append([lane, start, end, [sample]])
    x, t0 = frame.x, frame.t0
    for lane, start, end, members in runs:
        y = frame.lane_y(lane)
        colour = _SKIP if lane == "skipped" else _BAD if lane == "failed" else _GOOD
        bar = ET.SubElement(svg, "rect", {
            "x": str(x(start)), "y": str(y + 2), "height": str(frame.lane_h - 4),
            "width": str(max(1.0, round(x(end) - x(start), 2))), "fill": colour})
        detail = f"{lane}: {len(members)} slot(s), seq {members[0].seq}-{members[-1].seq}, " \
                 f"{start - t0:.2f}-{end - t0:.2f} s"
        if lane == "failed":
            detail += "; " + ", ".join(f"{k} x{n}" for k, n in
                                       Counter(m.outcome for m in members).items())
        ET.SubElement(bar, "title").text = detail


def _draw_time_axis(svg: ET.Element, frame: _TimelineFrame) -> None:
    axis_y = frame.lanes_bottom + 4
    ET.SubElement(svg, "line", {"x1": str(frame.left), "x2": str(frame.left + frame.plot_w), "y1": str(axis_y),
                                "y2": str(axis_y), "stroke": _INK})
    span = frame.t1 - frame.t0
    step = next((s for s in _TICK_STEPS if span / s <= 10), _TICK_STEPS[-1])
    tick = 0.0
    while tick <= span + 1e-9:
        tx = frame.x(frame.t0 + tick)
        ET.SubElement(svg, "line", {"x1": str(tx), "x2": str(tx), "y1": str(axis_y),
                                    "y2": str(axis_y + 4), "stroke": _INK})
        ET.SubElement(svg, "text", {"x": str(tx), "y": str(axis_y + 16), "text-anchor": "middle",
                                    "fill": _INK}).text = f"{tick:g} s"
        tick = round(tick + step, 6)


def _draw_marks(svg: ET.Element, frame: _TimelineFrame, marks: list[tuple[float, str]]) -> None:
    for index, (t, label) in enumerate(marks):
        mx = frame.x(t)
        label_y = frame.top - 18 + (index % 2) * 12 - 4
        ET.SubElement(svg, "line", {"x1": str(mx), "x2": str(mx), "y1": str(label_y + 2),
                                    "y2": str(frame.lanes_bottom), "stroke": _MARK,
                                    "stroke-dasharray": "4 3"})
        anchor = "end" if mx > frame.left + frame.plot_w * 0.75 else "start"
        text = ET.SubElement(svg, "text", {"x": str(mx + (-3 if anchor == "end" else 3)),
                                           "y": str(label_y), "text-anchor": anchor,
                                           "fill": _MARK})
        text.text = f"{label} ({t - frame.t0:.2f} s)"
