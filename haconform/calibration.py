"""The calibration step: how much slower than the lab the target's hosts are, measured at bring-up.

The harness's allowances (haconform/timeouts.py SCALED) were tuned on the
embedded namespace lab.  At bring-up, a few short read-only probes run on the
target's directors and real servers, each timed inside the host (`date +%s%N`
around it), REPEATS times, the median kept:

    fork_exec        30 x /bin/true              process: init scripts, daemons, commands
    python_imports  python3 importing ssl, json  python: pcs and pcsd (directors)
    ocf_meta_data   IPaddr2 meta-data            agent: a resource operation's start-up (directors)
    php_cli         php -r 'echo 1;'             php: the work behind an HTTP request (real servers)
    transport       `true` through the transport transport: timed by the harness, what a command costs

Per category the slowest host counts: ratio = its median / the lab's reference
(haconform/calibration_reference.yaml), factor = the ratio within [1.0, CEILING]
(the lab's figures are the floor; a ratio below NOISE, the lab's own spread,
counts as 1.0; the ceiling is timeouts.CEILING, capped factors are reported as such).  Only allowances scale: a documented interval
stays the MUST.  HACONFORM_CALIBRATION=off keeps every factor at 1.0 and says so.

The client and fence hosts are not probed: on the lab and VM targets they are
namespaces on the harness's own machine, not the target's hosts.

    python -m haconform.calibration --reference    # the probes on this machine (the lab's reference)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

from .errors import HaconformError
from .readonly_commands import harness_program
from .redaction import redacted_tail
from .timeouts import (BASE, CATEGORIES, CEILING, HANG_CEILING, HANG_GUARDS, MARGIN, MARGIN_CATEGORY, NOT_SCALED,
                       SCALED)

log = logging.getLogger("haconform.calibration")

ENV = "HACONFORM_CALIBRATION"
REPEATS = 3
# A ratio below this is the lab's own spread, not a slower target: the embedded lab measured
# 1.04 to 1.21 against its idle reference in a nightly (the slowest of four hosts, through testinfra).
NOISE = 1.25
REFERENCE_FILE = Path(__file__).with_name("calibration_reference.yaml")
PROBED_ROLES = ("director", "realserver")
EVERY_ROLE = "*"   # the machine itself when it measures the reference: it plays every role


@dataclass(frozen=True)
class Probe:
    name: str
    category: str
    roles: tuple[str, ...]
    command: str | None       # timed inside the host; None: `true` through the transport, timed here
    why: str


# The probes' code, on the read-only allow-list by its exact text: a read-only run may time them too.
PYTHON_IMPORTS = harness_program("python3", "import ssl, json, http.client, xml.etree.ElementTree",
                                 "the calibration's python start-up probe")
PHP_ECHO = harness_program("php", "echo 1;", "the calibration's PHP start-up probe")

PROBES = (
    Probe("fork_exec", "process", PROBED_ROLES,
          "i=0; while [ $i -lt 30 ]; do /bin/true; i=$((i + 1)); done",
          "30 fork/exec: what init scripts, resource agents and every command are made of"),
    Probe("python_imports", "python", ("director",),   # -B: read-only even where a .pyc is missing
          f"python3 -B -c {shlex.quote(PYTHON_IMPORTS)}",
          "the start-up of pcs and pcsd"),
    Probe("ocf_meta_data", "agent", ("director",),
          "OCF_ROOT=/usr/lib/ocf /usr/lib/ocf/resource.d/heartbeat/IPaddr2 meta-data",
          "a resource operation's shell start-up (read-only)"),
    Probe("php_cli", "php", ("realserver",),
          f"php -r {shlex.quote(PHP_ECHO)}",
          "PHP's start-up, the work behind an HTTP request"),
    Probe("transport", "transport", PROBED_ROLES, None,
          "a round trip of `true` through the target's transport"),
)


class CalibrationError(HaconformError):
    """A probe could not run: the target is not usable as it is."""


@dataclass
class ProbeResult:
    name: str
    category: str
    reference_s: float
    runs: dict[str, list[float]]          # host -> seconds of each run

    @property
    def per_host(self) -> dict[str, float]:
        return {host: statistics.median(runs) for host, runs in self.runs.items()}

    @property
    def slowest_host(self) -> str:
        medians = self.per_host
        return max(medians, key=medians.get)

    @property
    def measured_s(self) -> float:
        return self.per_host[self.slowest_host]

    @property
    def ratio(self) -> float:
        return self.measured_s / self.reference_s


@dataclass
class Calibration:
    enabled: bool
    probes: list[ProbeResult] = field(default_factory=list)
    reference: dict = field(default_factory=dict)        # measured_at, measured_on, note
    took_s: float = 0.0
    off_reason: str | None = None
    ceiling: float = CEILING

    @property
    def ratios(self) -> dict[str, float | None]:
        """Per category the slowest probe's ratio (None: nothing of that category was probed)."""
        ratios: dict[str, float | None] = {category: None for category in CATEGORIES}
        for probe in self.probes:
            ratios[probe.category] = max(probe.ratio, ratios[probe.category] or 0.0)
        return ratios

    @property
    def factors(self) -> dict[str, float]:
        """Per category: 1.0 up to NOISE (the lab itself measures that much above its reference, host to
        host and run to run), else the ratio, at most the ceiling."""
        return {category: 1.0 if ratio is None or ratio < NOISE else min(ratio, self.ceiling)
                for category, ratio in self.ratios.items()}

    @property
    def capped(self) -> dict[str, bool]:
        return {category: ratio is not None and ratio > self.ceiling for category, ratio in self.ratios.items()}

    @property
    def hang_factors(self) -> dict[str, float]:
        """Per category, for the allowances that only guard against a hang (timeouts.HANG_GUARDS): the
        factor, or beyond the ceiling the ratio itself (up to HANG_CEILING, past which calibrate refuses
        the target)."""
        factors = self.factors
        return {category: factors[category] if not self.capped[category] else min(ratio, HANG_CEILING)
                for category, ratio in self.ratios.items()}

    def beyond_the_ceiling(self) -> list[str]:
        """What the verdict says of each category slower than the ceiling: the hang guards it stretched."""
        hang = self.hang_factors
        return [f"{category} ratio {ratio:.1f} is beyond the ceiling ×{self.ceiling:g}: the hang guards "
                f"({', '.join(g for g in HANG_GUARDS if SCALED.get(g) == category)}) scale ×{hang[category]:.1f}, "
                f"every other allowance stays ×{self.ceiling:g}"
                for category, ratio in self.ratios.items() if self.capped[category]
                and any(SCALED.get(g) == category for g in HANG_GUARDS)]

    def factor(self, category: str, *, hang_guard: bool = False) -> float:
        return (self.hang_factors if hang_guard else self.factors).get(category, 1.0)

    def allowances(self) -> list[dict]:
        """Each scaled figure: base, factor, applied (MARGIN first)."""
        rows = [("MARGIN", MARGIN_CATEGORY, MARGIN)]
        rows += [(name, category, getattr(BASE, name)) for name, category in SCALED.items()]
        return [{"field": name, "category": category, "base_s": base, "hang_guard": name in HANG_GUARDS,
                 "factor": round(self.factor(category, hang_guard=name in HANG_GUARDS), 3),
                 "applied_s": round(base * self.factor(category, hang_guard=name in HANG_GUARDS), 3)}
                for name, category, base in rows]

    def to_json(self) -> dict:
        ratios, factors, capped = self.ratios, self.factors, self.capped
        return {
            "enabled": self.enabled, "off_reason": self.off_reason, "ceiling": self.ceiling, "repeats": REPEATS,
            "took_s": round(self.took_s, 2), "reference": dict(self.reference),
            "probes": [{"name": p.name, "category": p.category, "reference_s": p.reference_s,
                        "measured_s": round(p.measured_s, 4), "slowest_host": p.slowest_host,
                        "ratio": round(p.ratio, 3),
                        "per_host": {h: round(m, 4) for h, m in p.per_host.items()},
                        "runs_s": {h: [round(r, 4) for r in runs] for h, runs in p.runs.items()}}
                       for p in self.probes],
            "categories": [{"category": c, "ratio": None if ratios[c] is None else round(ratios[c], 3),
                            "factor": round(factors[c], 3), "capped": capped[c],
                            "fields": [f for f, cat in SCALED.items() if cat == c]
                            + (["MARGIN"] if c == MARGIN_CATEGORY else [])}
                           for c in CATEGORIES],
            "allowances": self.allowances(),
            "hang_guards": list(HANG_GUARDS), "hang_ceiling": HANG_CEILING,
            "beyond_the_ceiling": self.beyond_the_ceiling() if self.enabled else [],
            "not_scaled": list(NOT_SCALED),
            "summary": self.summary(),
        }

    def summary(self) -> str:
        if not self.enabled:
            return f"calibration off ({self.off_reason}): every allowance factor 1.00"
        ratios, capped = self.ratios, self.capped
        parts = []
        for category, factor in self.factors.items():
            ratio = ratios[category]
            if ratio is None:
                parts.append(f"{category} ×1.00 (not probed)")
            else:
                parts.append(f"{category} ×{factor:.2f}" + (f" (capped; ratio {ratio:.2f})" if capped[category]
                                                            else f" (ratio {ratio:.2f})"))
        beyond = self.beyond_the_ceiling()
        return (f"calibration: {', '.join(parts)}; ceiling ×{self.ceiling:g}"
                + (f"; {'; '.join(beyond)}" if beyond else ""))


# ----- measuring ---------------------------------------------------------------------------------

def timed_command(probe: Probe) -> str:
    """The probe REPEATS times, each timed inside the host, bounded by the unscaled BOUNDS.command."""
    script = (f"for run in {' '.join(map(str, range(1, REPEATS + 1)))}; do start=$(date +%s%N); "
              f"{{ {probe.command} ; }} >/dev/null </dev/null || exit $?; "
              f'end=$(date +%s%N); echo "ns $((end - start))"; done')
    return f"timeout {BASE.command:g} /bin/sh -c {shlex.quote(script)}"


def parse_timed(output: str) -> list[float] | None:
    """Seconds of each run from timed_command's output; None unless exactly REPEATS are there."""
    runs = []
    for line in output.splitlines():
        word, _, value = line.strip().partition(" ")
        if word == "ns":
            try:
                runs.append(int(value) / 1e9)
            except ValueError:
                return None
    return runs if len(runs) == REPEATS and all(r >= 0 for r in runs) else None


def _execute(machine: Any, probe: Probe, command: str):
    try:
        return machine.execute(command)
    except Exception as exc:   # whatever the transport raised: the probe could not run
        raise CalibrationError(f"probe {probe.name} on {machine.name}: {type(exc).__name__}: {exc}",
                               where="calibration", fix="the host must answer and run the probe") from None


def run_probe(machine: Any, probe: Probe) -> list[float]:
    """Seconds of each of REPEATS runs of probe on machine."""
    if probe.command is None:
        runs = []
        for _ in range(REPEATS):
            began = time.monotonic()
            result = _execute(machine, probe, "true")
            runs.append(time.monotonic() - began)
            if result.rc != 0:
                raise CalibrationError(f"probe {probe.name} on {machine.name}: `true` exited {result.rc}: "
                                       f"{redacted_tail((result.stderr or '').strip(), 300)!r}", where="calibration",
                                       fix="a host that cannot run `true` is not usable")
        return runs
    command = timed_command(probe)
    result = _execute(machine, probe, command)
    runs = parse_timed(result.stdout) if result.rc == 0 else None
    if runs is None:
        why = "timed out" if result.rc == 124 else f"exit {result.rc}"
        stderr = redacted_tail((result.stderr or "").strip(), 300)
        stdout = redacted_tail((result.stdout or "").strip(), 200)
        raise CalibrationError(
            f"probe {probe.name} on {machine.name}: {why}; stderr: {stderr!r}; stdout: {stdout!r}", where="calibration",
            fix=f"the probe is `{probe.command}` ({probe.why}); it needs GNU date (+%N) and the package "
                f"that provides it on a {'/'.join(probe.roles)}")
    return runs


def measure(machines: Iterable[Any]) -> dict[str, dict[str, list[float]]]:
    """{probe: {host: runs}}, one host after the other (probes in parallel would time each other)."""
    found: dict[str, dict[str, list[float]]] = {probe.name: {} for probe in PROBES}
    for machine in machines:
        for probe in PROBES:
            if machine.role in probe.roles or machine.role == EVERY_ROLE:
                found[probe.name][machine.name] = run_probe(machine, probe)
    return found


def probed_machines(target_or_machines: Any) -> list[Any]:
    """The directors and real servers of a target (those its inventory can reach), or the machines given."""
    from .targets.base import Machine, Target

    if not isinstance(target_or_machines, Target):
        return [m for m in target_or_machines if m.role in PROBED_ROLES]
    target = target_or_machines
    inventory = getattr(target, "inventory", None)
    unreachable = {n for n, access in inventory.hosts.items() if access.kind == "none"} if inventory else set()
    return [Machine(target, spec) for spec in target.topology.hosts.values()
            if spec.role in PROBED_ROLES and spec.name not in unreachable]


def load_reference(path: Path = REFERENCE_FILE) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CalibrationError(f"cannot read the reference figures: {exc}", where=str(path),
                               fix="restore haconform/calibration_reference.yaml from the checkout") from None
    figures = data.get("probes") or {}
    missing = [p.name for p in PROBES if not isinstance(figures.get(p.name), (int, float)) or figures[p.name] <= 0]
    if missing:
        raise CalibrationError(f"no reference figure for {', '.join(missing)}", where=str(path),
                               fix="run `python -m haconform.calibration --reference` on the lab's machine "
                                   "and record its figures")
    return data


def switched_off() -> bool:
    value = os.environ.get(ENV, "").strip().lower()
    if value not in ("", "on", "off"):
        raise HaconformError(f"{ENV}={value!r}", where="environment", fix=f"set {ENV}=off, or on, or leave it unset")
    return value == "off"


def calibrate(target_or_machines: Any, *, reference: dict | None = None) -> Calibration:
    """Measure the probes on the target's directors and real servers; a probe that cannot run is an error."""
    reference = load_reference() if reference is None else reference
    about = {k: reference.get(k) for k in ("measured_at", "measured_on", "note")}
    if switched_off():
        calibration = Calibration(enabled=False, reference=about, off_reason=f"{ENV}=off")
        log.info("%s", calibration.summary())
        return calibration
    began = time.monotonic()
    found = measure(probed_machines(target_or_machines))
    probes = [ProbeResult(p.name, p.category, float(reference["probes"][p.name]), found[p.name])
              for p in PROBES if found[p.name]]
    calibration = Calibration(enabled=True, probes=probes, reference=about, took_s=time.monotonic() - began)
    log.info("%s (%.1f s)", calibration.summary(), calibration.took_s)
    too_slow = [p for p in probes if p.ratio > HANG_CEILING]
    if too_slow:
        raise CalibrationError(
            "the target is too slow to judge: " + "; ".join(
                f"{p.name} ({p.category}) took {p.measured_s:.3f} s on {p.slowest_host}, {p.ratio:.0f} times the "
                f"lab's {p.reference_s:.3f} s" for p in too_slow)
            + f"; beyond ×{HANG_CEILING:g} the runbook's own intervals (a 30 s monitor) cannot hold, and a red "
              "verdict would be about the machine, not the deployment",
            where="calibration at bring-up",
            fix="run it where the hosts are faster (KVM instead of TCG, fewer guests per core, an idle machine), "
                f"or {ENV}=off to judge it against the lab's figures anyway")
    return calibration


# ----- the reference: the probes on this machine, as the lab's hosts run them --------------------

class ThisMachine:
    """The machine itself, reached as the lab reaches a host (nsenter, a clean environment), but into
    the harness's own namespaces: the lab's hosts run this machine's binaries."""

    name = "this machine"
    role = EVERY_ROLE

    def execute(self, command: str):
        from .lab.lab import HOST_PATH, run_in_host

        argv = ["nsenter", "-t", str(os.getpid()), "-a", "--", "/usr/bin/env", "-i", f"PATH={HOST_PATH}",
                "HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "/bin/sh", "-c", command]
        raw = run_in_host(argv, timeout=BASE.command)
        return SimpleNamespace(rc=raw.returncode, stdout=raw.stdout.decode("utf-8", "replace"),
                               stderr=raw.stderr.decode("utf-8", "replace"))


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "unknown OS")
    except OSError:
        return "unknown OS"


def reference_block() -> str:
    """The reference figures measured on this machine, as calibration_reference.yaml holds them."""
    import yaml

    if os.geteuid() != 0:
        raise HaconformError("the reference runs the probes through nsenter, as the lab does", where="--reference",
                             fix="run as root on the lab's machine")
    load = os.getloadavg()
    found = measure([ThisMachine()])
    block = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "measured_on": (f"{_os_name()}, {os.cpu_count()} CPUs, kernel {platform.release()}; "
                        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} when it began"),
        "probes": {name: round(statistics.median(runs["this machine"]), 4) for name, runs in found.items()},
        "runs_s": {name: [round(r, 4) for r in runs["this machine"]] for name, runs in found.items()},
    }
    return yaml.safe_dump(block, sort_keys=False, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m haconform.calibration", description=__doc__.split("\n")[0])
    parser.add_argument("--reference", action="store_true",
                        help="run the probes on this machine (no network, nothing written) and print the "
                             "reference block for haconform/calibration_reference.yaml")
    args = parser.parse_args(argv)
    if not args.reference:
        parser.print_help()
        return 2
    try:
        sys.stdout.write(reference_block())
    except HaconformError as exc:
        print(f"haconform: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
