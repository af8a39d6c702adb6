"""Locust user classes shaped like the runbook's traffic (a locustfile).

The runbook's deployment serves dynamic pages (index.php, backend app1),
static files (/images, .css, .js) and uploads through upload_file.php (POST,
which stage 3 sends to the other real server).  This file is copied into the
client host and run there by locust; it imports nothing from haconform.

Settings come from the environment so master and workers agree:
    HACONFORM_PERF_SEED      base seed; worker k uses seed + k
    HACONFORM_PERF_WAIT      think time per user in seconds (0: closed loop)
    HACONFORM_PERF_OUT       the master writes OUT_served_by.json (who answered
                             what) and OUT_seconds.json (per wall-clock second:
                             successes, failures, response-time buckets), exact
                             per second, where locust's own history averages
                             over a sliding window and hides a short outage
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict

import locust.stats
from locust import HttpUser, between, constant, events, task
from locust.runners import WorkerRunner

# The per-second history is read while the run goes on (the progress line):
# flush it every second instead of locust's default ten.
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 1

SERVER_HEADER = "X-Real-Server"
DYNAMIC_PAGE = "/index.php"
STATIC_FILES = ("/images/x.jpg", "/probe.css", "/probe.js", "/index.html")
UPLOAD_PAGE = "/upload_file.php"
# upload_file.php stores image/gif or image/jpeg under 20000 bytes: a 1x1 GIF.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
STORED = "Stored in:"

SEED = int(os.environ.get("HACONFORM_PERF_SEED", "1"))
THINK_S = float(os.environ.get("HACONFORM_PERF_WAIT", "0"))

# request name -> real server -> count, on this process (sent to the master).
served_by: defaultdict[str, Counter] = defaultdict(Counter)
# unix second -> {"ok": n, "failed": n, "ms": Counter(bucket -> n)}, on this process.
seconds: defaultdict[int, dict] = defaultdict(lambda: {"ok": 0, "failed": 0, "ms": Counter()})
uploads = itertools.count(1)


def think():
    return between(0, THINK_S) if THINK_S > 0 else constant(0)


@events.init.add_listener
def seed_random(environment, **_):
    offset = environment.runner.worker_index + 1 if isinstance(environment.runner, WorkerRunner) else 0
    random.seed(SEED + offset)


def bucket_ms(response_time: float) -> int:
    """Locust's own rounding of response times into buckets."""
    if response_time < 100:
        return round(response_time)
    if response_time < 1000:
        return round(response_time, -1)
    if response_time < 10000:
        return round(response_time, -2)
    return round(response_time, -3)


@events.request.add_listener
def note_request(name, response, exception, response_time, **_):
    second = seconds[int(time.time())]
    second["failed" if exception is not None else "ok"] += 1
    second["ms"][bucket_ms(response_time or 0)] += 1
    if response is not None and exception is None:
        served_by[name][response.headers.get(SERVER_HEADER, "(no header)")] += 1


@events.report_to_master.add_listener
def send_observations(client_id, data):
    data["served_by"] = {name: dict(counts) for name, counts in served_by.items()}
    data["seconds"] = {t: {"ok": s["ok"], "failed": s["failed"], "ms": dict(s["ms"])} for t, s in seconds.items()}
    served_by.clear()
    seconds.clear()


@events.worker_report.add_listener
def add_observations(client_id, data):
    for name, counts in data.get("served_by", {}).items():
        served_by[name].update(counts)
    for t, observed in data.get("seconds", {}).items():
        second = seconds[int(t)]
        second["ok"] += observed["ok"]
        second["failed"] += observed["failed"]
        second["ms"].update({int(float(k)): v for k, v in observed["ms"].items()})


@events.quitting.add_listener
def write_observations(environment, **_):
    prefix = os.environ.get("HACONFORM_PERF_OUT")
    if prefix and not isinstance(environment.runner, WorkerRunner):
        with open(f"{prefix}_served_by.json", "w") as fh:
            json.dump({name: dict(counts) for name, counts in served_by.items()}, fh)
        with open(f"{prefix}_seconds.json", "w") as fh:
            json.dump({t: {"ok": s["ok"], "failed": s["failed"], "ms": dict(s["ms"])}
                       for t, s in sorted(seconds.items())}, fh)


class DynamicPageVisitor(HttpUser):
    """Reads the dynamic page (the runbook's app backend)."""
    weight = 6
    wait_time = think()

    @task
    def dynamic_page(self):
        self.client.get(DYNAMIC_PAGE, name="dynamic page")


class StaticFileVisitor(HttpUser):
    """Fetches static files: images, stylesheets, scripts."""
    weight = 3
    wait_time = think()

    @task
    def static_file(self):
        self.client.get(random.choice(STATIC_FILES), name="static file")


class Uploader(HttpUser):
    """Opens the upload form, then posts a small GIF to upload_file.php."""
    weight = 1
    wait_time = think()

    @task
    def upload(self):
        self.client.get(DYNAMIC_PAGE, name="upload form")
        # Unique across phases, workers and runs (the seed repeats; a stored name must not).
        name = f"perf-{uuid.uuid4().hex[:16]}-{next(uploads)}.gif"
        with self.client.post(UPLOAD_PAGE, name="upload", catch_response=True,
                              files={"file": (name, PIXEL_GIF, "image/gif")}) as response:
            if response.status_code == 200 and STORED not in response.text:
                response.failure(f"upload_file.php did not store the file: {response.text[-120:]!r}")
