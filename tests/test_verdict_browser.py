"""verdict.html and trends.html in a real browser: Debian's chromium, headless, driven over the
DevTools protocol on a pipe (--remote-debugging-pipe: fds 3 and 4, NUL-separated JSON; no
dependency beyond the standard library).

The pages are generated from the recorded runs in tests/data/verdict/results/ (see cut.py
there).  Checked in the browser: the verdict table (a row per MUST, the verdict each row
shows agrees with verdict.json), every in-page link resolves and the evidence link scrolls
to its evidence, the evidence renders (the prober's SVG, a timeline), the trends page's
plots have a size and points, the compare section names the flipped MUST; a waived MUST
(amber, with its reason, ticket and days to expiry), the waivers with the stale one, and the
runbook coverage; and no console error, no uncaught exception, no request leaving the page
(self-contained).

The browser sees no CJK font, whatever this machine has installed: it runs with a fontconfig
of its own (FONTCONFIG_FILE) that knows one Latin font, as a fresh Debian 12 with Chromium and
no fonts-noto-cjk would.  The test checks that premise (`fc-list :lang=zh` finds nothing in
that environment, and the runbook's headings draw as the same box as a character no font has),
then that every section's English title is in the page, visible, and drawn with real glyphs.

Skipped, not failed, where chromium is not installed (`apt-get install -y chromium`).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import datetime as dt

from haconform.conformance import SECTION_TITLES, read_section_titles
from haconform.coverage import coverage_for
from haconform.report.html import render_verdict_html
from haconform.report.trends import report
from haconform.report.verdict import build_verdict, read_history, with_section_titles
from haconform.topology import load_topology
from haconform.waivers import Waiver

CHROMIUM = shutil.which("chromium")
FC_LIST = shutil.which("fc-list")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
              pytest.mark.skipif(FC_LIST is None, reason="fc-list is not installed (apt-get install -y fontconfig)")]
SECTIONS = Path(__file__).resolve().parent.parent / "suites" / SECTION_TITLES
# The font the browser gets, when this machine has it (fonts-dejavu-core, which chromium pulls in).
LATIN_FONT = "DejaVuSans.ttf"

DATA = Path(__file__).parent / "data" / "verdict" / "results"
NEWEST = DATA / "20261129-225747"
REGRESSED = DATA / "20261130-021700"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--window-size=1400,1000", "--remote-debugging-pipe"]


class DevToolsError(RuntimeError):
    pass


class Browser:
    """A headless chromium driven over --remote-debugging-pipe."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds():   # the browser reads commands on fd 3 and writes answers on fd 4
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.stderr_path = workdir / "chromium.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [CHROMIUM, *FLAGS, f"--user-data-dir={workdir / 'profile'}", "about:blank"],
                preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stderr, env=env)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise DevToolsError(f"chromium did not answer in time (stderr: {self._stderr_tail()})")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise DevToolsError(f"chromium closed the pipe (stderr: {self._stderr_tail()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-600:]

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise DevToolsError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, session: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            self.events.append(self._read(deadline))

    def open(self, url: str) -> "Page":
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        return Page(self, session, url)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except DevToolsError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


class Page:
    def __init__(self, browser: Browser, session: str, url: str):
        self.browser, self.session, self.url = browser, session, url

    def js(self, expression: str):
        result = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                        "awaitPromise": True}, session=self.session)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def _events(self, method: str) -> list[dict]:
        return [e["params"] for e in self.browser.events if e.get("method") == method
                and e.get("sessionId") == self.session]

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries, requests that leave the page."""
        found = []
        for params in self._events("Runtime.consoleAPICalled"):
            if params["type"] in ("error", "assert"):
                found.append("console." + params["type"] + ": "
                             + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        for params in self._events("Runtime.exceptionThrown"):
            details = params["exceptionDetails"]
            found.append("exception: " + str((details.get("exception") or {}).get("description") or details["text"]))
        for params in self._events("Log.entryAdded"):
            if params["entry"]["level"] == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        for params in self._events("Network.requestWillBeSent"):
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:", "about:")):
                found.append(f"request leaving the page: {url}")
        return found


def fc_files(pattern: str, env: dict[str, str] | None = None) -> list[str]:
    result = subprocess.run([FC_LIST, pattern, "--format", "%{file}\n"], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0, f"fc-list {pattern}: {result.stderr}"
    return sorted(set(result.stdout.split()))


@pytest.fixture(scope="module")
def no_cjk_fonts(tmp_path_factory) -> dict[str, str]:
    """An environment whose fontconfig knows one Latin font and no CJK one (FONTCONFIG_FILE)."""
    workdir = tmp_path_factory.mktemp("fonts")
    cjk = set(fc_files(":lang=zh"))
    latin = [f for f in fc_files(":lang=en") if f not in cjk and f.endswith((".ttf", ".otf"))]
    assert latin, "this machine has no Latin font outside the CJK ones (apt-get install -y fonts-dejavu-core)"
    chosen = next((f for f in latin if Path(f).name == LATIN_FONT), latin[0])
    (workdir / "fonts").mkdir()
    (workdir / "fonts" / Path(chosen).name).symlink_to(chosen)
    (workdir / "fonts.conf").write_text(
        "<?xml version='1.0'?>\n<!DOCTYPE fontconfig SYSTEM 'fonts.dtd'>\n<fontconfig>\n"
        f"  <dir>{workdir / 'fonts'}</dir>\n  <cachedir>{workdir / 'cache'}</cachedir>\n</fontconfig>\n")
    return {**os.environ, "FONTCONFIG_FILE": str(workdir / "fonts.conf")}


@pytest.fixture(scope="module")
def browser(tmp_path_factory, no_cjk_fonts):
    b = Browser(tmp_path_factory.mktemp("chromium"), env=no_cjk_fonts)
    yield b
    b.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("pages")
    # Recorded before section titles existed: given them as a session writing its verdict now does.
    verdict = with_section_titles(json.loads((NEWEST / "verdict.json").read_text()), read_section_titles(SECTIONS))
    (out / "verdict.html").write_text(render_verdict_html(verdict, read_history(NEWEST / "history.jsonl")))
    status = report(str(DATA), compare_dirs=[str(NEWEST), str(REGRESSED)], out=str(out / "trends.html"),
                    golden=str(out / "no-golden-list"), config_dir=str(out / "no-config"),
                    say=lambda *a, **k: None)
    assert status == 1   # the recorded regression flips HAC-HA-005 from held to broken
    (out / "waived.html").write_text(render_verdict_html(*waived_verdict()))
    return {"verdict": out / "verdict.html", "trends": out / "trends.html", "data": verdict,
            "waived": out / "waived.html"}


TODAY = dt.date(2026, 12, 7)
INTERVAL = "cluster.resources.vip.operations[monitor].interval"


def waived_verdict() -> tuple[dict, list[dict]]:
    """The recorded run with HAC-CFG-001 failed only by a waived difference, a stale waiver, and the coverage."""
    repo = Path(__file__).resolve().parent.parent
    records = read_history(NEWEST / "history.jsonl")
    accepted = Waiver("HAC-CFG-001", "monitor at 20 s: agreed with the application team", dt.date(2027, 3, 1),
                      "waivers.yaml: waivers[0]", key=INTERVAL, found="20s", ticket="OPS-1")
    stale = Waiver("HAC-LIM-002", "the process cap is the kernel's", dt.date(2027, 1, 1), "waivers.yaml: waivers[1]")
    for record in records:
        if record["nodeid"].endswith("test_configuration_means_the_documented_stage"):
            record.update(outcome="waived", reason=f"DifferencesFound: 1 difference(s) from stage5: ... key {INTERVAL}",
                          waiver={"outcome": "waived", "applied": [accepted.source], "seen": [accepted.source],
                                  "expired": [], "note": "", "waivers": [accepted.to_json(TODAY)],
                                  "must": "HAC-CFG-001", "failure": "DifferencesFound"})
    coverage = coverage_for(repo / "fixtures" / "documented", repo / "suites" / "conformance.yaml",
                            load_topology(repo / "fixtures" / "topology.yaml"))
    verdict = build_verdict(records, run={"target": {"target": "lab", "lab": "haconform"}},
                            waivers=[accepted.to_json(TODAY), stale.to_json(TODAY)], coverage=coverage)
    return verdict, records


def test_console_errors_are_seen(browser, tmp_path):
    """The detector itself: a page that logs an error and throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('boom');"
                   "setTimeout(function(){throw new Error('thrown')},0)</script></body></html>")
    page = browser.open(bad.as_uri())
    page.js("new Promise(r => setTimeout(r, 100))")
    problems = page.problems()
    assert any("boom" in p for p in problems), problems
    assert any("thrown" in p for p in problems), problems


def test_verdict_page_renders(browser, pages):
    page = browser.open(pages["verdict"].as_uri())
    rows = page.js("[...document.querySelectorAll('table.verdicts tr.must')].map(tr => "
                   "[tr.querySelector('td.id').textContent, tr.querySelector('.badge').textContent, "
                   "tr.getBoundingClientRect().height])")
    expected = {m["id"]: m for m in pages["data"]["musts"]}
    assert [r[0] for r in rows] == [m["id"] for m in pages["data"]["musts"]]
    for must_id, badge, height in rows:
        must = expected[must_id]
        assert badge.startswith(must["verdict"]), (must_id, badge, must["verdict"])
        assert height > 10, f"{must_id}: row not laid out"
    assert expected["HAC-LINT-002"]["known_finding"] and expected["HAC-HA-003"]["verdict"] == "held"
    banner = page.js("document.getElementById('banner').innerText")
    assert "held" in banner and "HAC-LINT-002" in banner
    figures = page.js("document.querySelector('#must-HAC-FENCE-002 td.figures').innerText")
    assert "fence time: 6.7 s" in figures and "outage" in figures
    assert page.js("document.querySelectorAll('#findings li').length") >= 2

    dangling = page.js("[...document.querySelectorAll('a[href^=\"#\"]')].map(a => a.getAttribute('href'))"
                       ".filter(h => !document.getElementById(decodeURIComponent(h.slice(1))))")
    assert dangling == []
    links = page.js("[...document.querySelectorAll('tr.must a.ev')].length")
    assert links == len(rows)

    # the evidence link of the known finding scrolls its evidence to the top
    page.js("document.querySelector('#must-HAC-LINT-002 a.ev').click()")
    page.js("new Promise(r => setTimeout(r, 200))")
    assert page.js("location.hash") == "#ev-HAC-LINT-002"
    top = page.js("document.getElementById('ev-HAC-LINT-002').getBoundingClientRect().top")
    assert -2 <= top <= 60, top

    # evidence renders: the prober's SVG has a size, the fault's timeline is drawn, tables are tables
    svg = page.js("(() => { const s = document.querySelector('#ev-HAC-FENCE-002 div.svg svg');"
                  " const r = s.getBoundingClientRect();"
                  " return [r.width, r.height, s.querySelectorAll('rect').length] })()")
    assert svg[0] > 300 and svg[1] > 50 and svg[2] > 10, svg
    assert page.js("document.querySelectorAll('#ev-HAC-FENCE-002 svg.timeline circle').length") >= 4
    assert page.js("document.querySelectorAll('#ev-HAC-RR-001 .chips span').length") == 8
    assert page.js("document.querySelectorAll('#evidence pre').length") < page.js(
        "document.querySelectorAll('#evidence table').length"), "evidence mostly raw text instead of tables"
    assert page.problems() == []


def test_trends_page_renders(browser, pages):
    page = browser.open(pages["trends"].as_uri())
    plots = page.js("[...document.querySelectorAll('svg.plot')].map(s => { const r = s.getBoundingClientRect();"
                    " return [s.querySelector('title').textContent, r.width, r.height,"
                    " s.querySelectorAll('circle').length, s.querySelectorAll('polyline').length] })")
    by_title = {p[0]: p for p in plots}
    assert len(plots) >= 10
    for title, width, height, points, _ in plots:
        assert width > 200 and height > 100 and points >= 1, (title, width, height, points)
    # a figure recorded by all three conformance runs: three points joined by a line
    fence = by_title["HAC-FENCE-002 · fence time"]
    assert fence[3] == 3 and fence[4] == 1, fence
    assert "run · conformance wall time" in by_title
    assert by_title["perf · vip requests/s"][3] == 2       # two perf runs kept
    compare = page.js("document.getElementById('compare').innerText")
    assert "REGRESSION" in compare and "HAC-HA-005" in compare and "HAC-FENCE-002 · fence time" in compare
    cells = page.js("document.querySelectorAll('table.matrix span.sq.broken').length")
    assert cells >= 1
    assert page.problems() == []


def test_a_waived_must_and_the_coverage_on_the_page(browser, pages):
    page = browser.open(pages["waived"].as_uri())
    row = page.js("(() => { const tr = document.getElementById('must-HAC-CFG-001');"
                  " const badge = tr.querySelector('.badge');"
                  " return [tr.className, badge.textContent, getComputedStyle(badge).backgroundColor,"
                  " tr.querySelector('.waiver').innerText, tr.querySelector('.waiver').dataset.daysLeft,"
                  " tr.getBoundingClientRect().height] })()")
    classes, badge, colour, waiver, days_left, height = row
    assert "waived" in classes.split() and badge == "waived", row
    assert colour == "rgb(255, 191, 0)", f"the waived badge is not amber: {colour}"
    assert "monitor at 20 s: agreed with the application team" in waiver and "ticket OPS-1" in waiver
    assert "expires 2027-03-01 (84 days left)" in waiver and days_left == "84" and height > 10, row
    banner = page.js("document.getElementById('banner').innerText")
    assert "1 waived" in banner and "HAC-CFG-001" in banner
    waivers = page.js("[...document.querySelectorAll('#waivers table.waivers tr')].slice(1).map(tr => "
                      "[tr.className, tr.innerText])")
    assert [w[0] for w in waivers] == ["applied", "stale"], waivers
    assert "HAC-LIM-002 held: the deviation it accepts is gone" in waivers[1][1]

    sections = page.js("[...document.querySelectorAll('#coverage table.coverage-sections tbody tr')]"
                       ".map(tr => tr.cells[0].innerText + ': ' + tr.cells[2].innerText)")
    assert len(sections) >= 8 and any(s.startswith("读写分离: HAC-RW-001") for s in sections), sections
    only = page.js("[...document.querySelectorAll('#coverage .coverage-only span')].map(s => s.innerText)")
    assert "haproxy.cfg[defaults].timeout server" in only and "haproxy.cfg[defaults].retries" in only, only
    page.js("document.querySelector('#coverage details').open = true")
    interval = page.js("[...document.querySelectorAll('#coverage table.coverage-settings tr')]"
                       f".find(tr => tr.cells[0].innerText === '{INTERVAL}').cells[2].innerText")
    assert interval == "HAC-HA-003, HAC-HA-007"
    dangling = page.js("[...document.querySelectorAll('a[href^=\"#\"]')].map(a => a.getAttribute('href'))"
                       ".filter(h => !document.getElementById(decodeURIComponent(h.slice(1))))")
    assert dangling == []


# Draws each character of `text` in the font of the first element matching `selector`, and says for each
# whether it came out as the box of a missing glyph: the same pixels as a character no font has.
DRAWN_AS_BOX = """((selector, text) => {
  const font = getComputedStyle(document.querySelector(selector)).font;
  const canvas = document.createElement('canvas'); canvas.width = 64; canvas.height = 64;
  const g = canvas.getContext('2d');
  const draw = ch => { g.clearRect(0, 0, 64, 64); g.font = font; g.fillStyle = '#000'; g.fillText(ch, 8, 44);
                       return Array.from(g.getImageData(0, 0, 64, 64).data).join(','); };
  const box = draw('\\u{10FFFD}');
  const blank = Array.from(new Uint8ClampedArray(64 * 64 * 4)).join(',');
  return [...text].filter(ch => ch.trim()).map(ch => [ch, draw(ch) === box, draw(ch) === blank]);
})"""


def test_the_page_reads_on_a_machine_without_a_cjk_font(browser, pages, no_cjk_fonts):
    """Every runbook section shows its English title, visible and drawn with real glyphs, where the
    runbook's own headings can only be drawn as boxes."""
    assert fc_files(":lang=zh", no_cjk_fonts) == [], "the browser's fontconfig still offers a CJK font"
    assert len(fc_files(":", no_cjk_fonts)) == 1, fc_files(":", no_cjk_fonts)
    page = browser.open(pages["verdict"].as_uri())
    cells = page.js("[...document.querySelectorAll('table.verdicts tr.must')].map(tr => { "
                    "const en = tr.querySelector('td.sec .sec-en'), orig = tr.querySelector('td.sec .sec-orig'); "
                    "const r = en ? en.getBoundingClientRect() : {width: 0, height: 0}; "
                    "return [tr.querySelector('td.id').textContent, en && en.innerText, orig && orig.innerText, "
                    "r.width, r.height, en && getComputedStyle(en).visibility] })")
    titles = read_section_titles(SECTIONS)
    expected = {m["id"]: m["section"] for m in pages["data"]["musts"]}
    assert len(cells) == len(expected)
    for must_id, english, original, width, height, visibility in cells:
        assert original == expected[must_id], (must_id, original)
        assert english == titles[expected[must_id]], (must_id, english)
        assert width > 20 and height > 8 and visibility == "visible", (must_id, english, width, height)
    # The premise holds in the browser too: the headings' Chinese characters are boxes (or nothing) here ...
    chinese = "".join(sorted({ch for section in expected.values() for ch in section if "\u4e00" <= ch <= "\u9fff"}))
    assert len(chinese) > 20, chinese
    heading = page.js(f"{DRAWN_AS_BOX}('td.sec .sec-orig', {json.dumps(chinese)})")
    not_boxes = [ch for ch, as_box, blank in heading if not (as_box or blank)]
    assert not not_boxes, f"a CJK font drew {not_boxes}: the browser is not font-free as the test needs"
    # ... and the English titles are real glyphs, none of them a box nor blank.
    english = page.js(f"{DRAWN_AS_BOX}('td.sec .sec-en', {json.dumps(''.join(titles.values()))})")
    boxes = [ch for ch, as_box, blank in english if as_box or blank]
    assert english and not boxes, f"English titles drawn as boxes or blank: {boxes}"
    # The stage notes and the evidence headings carry the title too.
    notes = page.js("[...document.querySelectorAll('#findings li .sec-en')].map(e => e.innerText)")
    assert notes and all(n for n in notes), notes
    assert page.js("document.querySelector('#evidence section.ev h3 .sec-en').innerText") in titles.values()
    assert page.problems() == []
