"""Locust user classes shaped like the runbook's traffic (a locustfile).

The runbook's deployment serves dynamic pages (index.php, backend app1),
static files (/images, .css, .js) and uploads through upload_file.php (POST,
which stage 3 sends to the other real server).  This file is copied into the
client host and run there by locust; it imports nothing from haconform.

The users are FastHttpUsers (geventhttpclient): python-requests' HttpUser
costs several times the CPU per request, and made locust, not HAProxy, the
limit of every phase.

Two modes:
    closed loop (default)  each user sends its next request when the previous one
                           is answered (plus think time); a request is timed from
                           when it was sent.  A stalled server stalls the users,
                           so the requests that were never sent during an
                           outage are never timed (coordinated omission).
    open loop (RATE > 0)   requests are DUE at a fixed total rate, whatever the
                           server does: each class has a schedule per worker
                           process (RATE x its share of the weights, at equal
                           intervals, as wrk2 does), a free user takes the next
                           due slot, sleeps until it is due, sends, and the
                           request is timed from when it was DUE: latency =
                           completion - due.  When every user is busy (a stalled
                           server), slots pile up and are sent as soon as a user
                           is free, late, and their wait is in their latency.
                           The users bound the requests in flight.

Settings come from the environment so master and workers agree:
    HACONFORM_PERF_SEED      base seed; worker k uses seed + k
    HACONFORM_PERF_WAIT      think time per user in seconds (0: closed loop); closed loop only
    HACONFORM_PERF_RATE      open loop: requests/s due over the whole run (0: closed loop)
    HACONFORM_PERF_WORKERS   worker processes sharing RATE
    HACONFORM_PERF_CLASSES   the classes of the run, comma-separated (their weights share RATE)
    HACONFORM_PERF_TIMEOUT   seconds before a connection or a read fails (every
                             request ends, and is counted, within the phase)
    HACONFORM_PERF_OUT       every locust process writes OUT_cpu_<pid>.json in its host (its
                             CPU time and run-queue wait from test start to test stopping);
                             the master writes OUT_served_by.json (who answered
                             what), OUT_seconds.json (per second: successes,
                             failures, response-time buckets; the second a request
                             completed in, or in open loop the second it was DUE
                             in), OUT_completed.json (per completion second: ok,
                             failed, in either mode) and OUT_workers.json (requests
                             per worker host), exact per second, where locust's own
                             history averages over a sliding window and hides a
                             short outage
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import socket
import time
import uuid
from collections import Counter, defaultdict

import gevent
import locust.stats
from locust import FastHttpUser, between, constant, events, task
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
RATE = float(os.environ.get("HACONFORM_PERF_RATE", "0") or 0)
WORKERS = max(1, int(os.environ.get("HACONFORM_PERF_WORKERS", "1") or 1))
TIMEOUT_S = float(os.environ.get("HACONFORM_PERF_TIMEOUT", "30") or 30)
# A request sent more than this after it was due: the generator had no free user for it.
LATE_S = 0.010
HOSTNAME = socket.gethostname()

# request name -> real server -> count, on this process (sent to the master).
served_by: defaultdict[str, Counter] = defaultdict(Counter)


def new_second() -> dict:
    return {"ok": 0, "failed": 0, "ms": Counter(), "late": 0, "lag_max_ms": 0.0}


# unix second -> {"ok", "failed", "ms": Counter(bucket -> n), "late", "lag_max_ms"}, on this process:
# keyed by completion second in closed loop, by due second in open loop.
seconds: defaultdict[int, dict] = defaultdict(new_second)
# unix second of completion -> {"ok", "failed"} (either mode: what was answered when).
completed: defaultdict[int, Counter] = defaultdict(Counter)
# worker host -> requests it sent (the master's view of who generated the load).
worker_hosts: Counter = Counter()
# this process's CPU counters at the start and the end of the load window
cpu_marks: dict = {}
uploads = itertools.count(1)


def think():
    return between(0, THINK_S) if THINK_S > 0 and RATE <= 0 else constant(0)


@events.init.add_listener
def seed_random(environment, **_):
    offset = environment.runner.worker_index + 1 if isinstance(environment.runner, WorkerRunner) else 0
    random.seed(SEED + offset)


def cpu_now() -> dict:
    """This process's CPU time (all its threads), and the time it spent runnable waiting for a CPU."""
    times = os.times()
    try:
        with open("/proc/self/schedstat") as fh:
            wait_s = int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        wait_s = None
    return {"cpu_s": times.user + times.system, "wait_s": wait_s, "wall": time.monotonic(), "at": time.time()}


@events.test_start.add_listener
def mark_load_start(environment, **_):
    cpu_marks.clear()
    cpu_marks["start"] = cpu_now()


@events.test_stopping.add_listener
def mark_load_end(environment, **_):
    """The end of the load window: this process writes its own CPU record beside its host's
    files (OUT_cpu_<pid>.json); a worker's last report can reach the master too late."""
    cpu_marks["end"] = cpu_now()
    prefix = os.environ.get("HACONFORM_PERF_OUT")
    record = cpu_record("worker" if isinstance(environment.runner, WorkerRunner) else "master")
    if prefix and record:
        with open(f"{prefix}_cpu_{os.getpid()}.json", "w") as fh:
            json.dump(record, fh)


def cpu_record(role: str) -> dict | None:
    """CPU this process used from test start to test stopping: the load window."""
    start, end = cpu_marks.get("start"), cpu_marks.get("end")
    if not start or not end or end["wall"] <= start["wall"]:
        return None
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    return {"host": HOSTNAME, "pid": os.getpid(), "role": role,
            "cpu_s": round(end["cpu_s"] - start["cpu_s"], 3),
            "wait_s": round(end["wait_s"] - start["wait_s"], 3) if start["wait_s"] is not None else None,
            "wall_s": round(end["wall"] - start["wall"], 3), "from": start["at"], "to": end["at"], "cpus": cpus}


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
def note_request(name, response, exception, response_time, context=None, **_):
    now = time.time()
    due = (context or {}).get("due")
    second = seconds[int(due if due is not None else now)]
    outcome = "failed" if exception is not None else "ok"
    second[outcome] += 1
    second["ms"][bucket_ms(response_time or 0)] += 1
    lag = (context or {}).get("lag_s")
    if lag is not None:
        second["late"] += lag > LATE_S
        second["lag_max_ms"] = max(second["lag_max_ms"], round(lag * 1000, 1))
    completed[int(now)][outcome] += 1
    worker_hosts[HOSTNAME] += 1
    if response is not None and exception is None:
        served_by[name][(response.headers or {}).get(SERVER_HEADER, "(no header)")] += 1


def seconds_as_json(table) -> dict:
    return {t: {"ok": s["ok"], "failed": s["failed"], "ms": dict(s["ms"]), "late": s["late"],
                "lag_max_ms": s["lag_max_ms"]} for t, s in sorted(table.items())}


@events.report_to_master.add_listener
def send_observations(client_id, data):
    data["served_by"] = {name: dict(counts) for name, counts in served_by.items()}
    data["seconds"] = seconds_as_json(seconds)
    data["completed"] = {t: dict(c) for t, c in completed.items()}
    data["worker_hosts"] = dict(worker_hosts)
    for table in (served_by, seconds, completed, worker_hosts):
        table.clear()



@events.worker_report.add_listener
def add_observations(client_id, data):
    for name, counts in data.get("served_by", {}).items():
        served_by[name].update(counts)
    for t, observed in data.get("seconds", {}).items():
        second = seconds[int(t)]
        second["ok"] += observed["ok"]
        second["failed"] += observed["failed"]
        second["ms"].update({int(float(k)): v for k, v in observed["ms"].items()})
        second["late"] += observed.get("late", 0)
        second["lag_max_ms"] = max(second["lag_max_ms"], observed.get("lag_max_ms", 0.0))
    for t, counts in data.get("completed", {}).items():
        completed[int(t)].update(counts)
    worker_hosts.update(data.get("worker_hosts", {}))


@events.quitting.add_listener
def write_observations(environment, **_):
    prefix = os.environ.get("HACONFORM_PERF_OUT")
    if prefix and not isinstance(environment.runner, WorkerRunner):
        with open(f"{prefix}_served_by.json", "w") as fh:
            json.dump({name: dict(counts) for name, counts in served_by.items()}, fh)
        with open(f"{prefix}_seconds.json", "w") as fh:
            json.dump(seconds_as_json(seconds), fh)
        with open(f"{prefix}_completed.json", "w") as fh:
            json.dump({t: dict(c) for t, c in sorted(completed.items())}, fh)
        with open(f"{prefix}_workers.json", "w") as fh:
            json.dump({"mode": "open" if RATE > 0 else "closed", "rate": RATE, "hosts": dict(worker_hosts)}, fh)


# ----- open loop: due times --------------------------------------------------------------

class Schedule:
    """The due times of one class's requests in one worker process: one every
    `interval` seconds from `start`, whatever happened to the earlier ones."""

    def __init__(self, interval: float, start: float):
        self.interval = interval
        self.start = start
        self.taken = 0

    def take(self) -> float:
        due = self.start + self.taken * self.interval
        self.taken += 1
        return due

    def backlog(self, now: float) -> int:
        """Slots due by `now` that no user has taken yet."""
        return max(0, int((now - self.start) // self.interval) + 1 - self.taken)


def class_interval(cls, rate: float, classes: list[str], workers: int) -> float:
    """Seconds between two due tasks of `cls` in one worker process, so that the run as a
    whole is due `rate` requests/s, shared by the classes' weights (a task of
    REQUESTS_PER_TASK requests counts that many)."""
    chosen = [c for c in USER_CLASSES if c.__name__ in classes] or list(USER_CLASSES)
    total_weight = sum(c.weight for c in chosen)
    requests_per_s = rate * cls.weight / total_weight / workers
    return cls.REQUESTS_PER_TASK / requests_per_s


schedules: dict[str, Schedule] = {}


def schedule_for(user) -> Schedule:
    cls = type(user)
    if cls.__name__ not in schedules:
        classes = [c for c in os.environ.get("HACONFORM_PERF_CLASSES", "").split(",") if c]
        interval = class_interval(cls, RATE, classes, WORKERS)
        runner = user.environment.runner
        index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        # workers' slots interleave rather than coincide
        schedules[cls.__name__] = Schedule(interval, time.time() + interval * (index % WORKERS) / WORKERS)
    return schedules[cls.__name__]


class RunbookUser(FastHttpUser):
    abstract = True
    wait_time = think()
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    REQUESTS_PER_TASK = 1

    def due(self) -> dict:
        """Closed loop: nothing (send now, time from sending).  Open loop: wait for the next
        due slot of this class; the request's context carries when it was due."""
        if RATE <= 0:
            return {}
        due = schedule_for(self).take()
        delay = due - time.time()
        if delay > 0:
            gevent.sleep(delay)
        return {"due": due, "lag_s": max(0.0, time.time() - due)}

    def send(self, method: str, path: str, *, name: str, context: dict, check=None, **kwargs):
        """One request; in open loop its response time is completion - due."""
        if not context and check is None:
            return self.client.request(method, path, name=name, **kwargs)    # the cheapest path
        with self.client.request(method, path, name=name, catch_response=True, context=context,
                                 **kwargs) as response:
            if "due" in context:
                response.request_meta["response_time"] = (time.time() - context["due"]) * 1000
            if check is not None and response.request_meta.get("exception") is None:
                check(response)
        return response


class DynamicPageVisitor(RunbookUser):
    """Reads the dynamic page (the runbook's app backend)."""
    weight = 6

    @task
    def dynamic_page(self):
        self.send("GET", DYNAMIC_PAGE, name="dynamic page", context=self.due())


class StaticFileVisitor(RunbookUser):
    """Fetches static files: images, stylesheets, scripts."""
    weight = 3

    @task
    def static_file(self):
        self.send("GET", random.choice(STATIC_FILES), name="static file", context=self.due())


def stored(response) -> None:
    if response.status_code == 200 and STORED not in (response.text or ""):
        response.failure(f"upload_file.php did not store the file: {(response.text or '')[-120:]!r}")


class Uploader(RunbookUser):
    """Opens the upload form, then posts a small GIF to upload_file.php."""
    weight = 1
    REQUESTS_PER_TASK = 2

    @task
    def upload(self):
        context = self.due()
        self.send("GET", DYNAMIC_PAGE, name="upload form", context=context)
        # Unique across phases, workers and runs (the seed repeats; a stored name must not).
        name = f"perf-{uuid.uuid4().hex[:16]}-{next(uploads)}.gif"
        # the post is due when the form has come back (the user's next step)
        after = {"due": time.time(), "lag_s": 0.0} if context else {}
        self.send("POST", UPLOAD_PAGE, name="upload", context=after, check=stored,
                  files={"file": (name, PIXEL_GIF, "image/gif")})


USER_CLASSES = (DynamicPageVisitor, StaticFileVisitor, Uploader)
