"""The stage each test needs: applied (the lab, VMs) or verified (an existing deployment).

Stages are cumulative, so a test asks for the stage it verifies and the
manager puts the deployment in it when it is in another one.  Every
application is done twice: the second pass must change nothing
(idempotence), and both results go into the run's evidence.

In verify mode nothing is written.  The deployment is declared to be in one
stage (the inventory's `stage:`); a test of that stage runs, a test of a
setting that stage still provides (stats, logging, limits… see `provides:`)
runs against it too, and anything else is left out with the reason.  How
the deployment differs from the documented stage, compared by meaning, is
the drift test's to report (`drift()`); behaviour is tested regardless.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ..datafile import read_text_file
from ..errors import HaconformError
from ..guard import GRANTED
from ..readers.haproxy_config import config_sections
from . import catalogue
from .cluster import ClusterStage, FencingStage
from .files import apply_stage
from .model import ClusterSpec, Stage, load_stage
from .drift import HAPROXY_CFG, cluster_drift, cluster_form, fencing_drift, file_drift

log = logging.getLogger("haconform.stages")


# haproxy.cfg sections whose names a deployment may spell its own way (servers too: `server NAME ...`).
NAMED_PROXIES = ("frontend", "backend", "listen")


def load_all_stages(config_dir: Path, algorithms_dir: Path | None, topology) -> dict[str, Stage]:
    """Every stage of config_dir and algorithms_dir, validated now, keyed as StageManager.stage asks for
    them: a malformed stage fails the run at its start, whichever tests it selects.  A config_dir that
    holds any stage must hold every documented one (catalogue.documented())."""
    config_dir = Path(config_dir)
    found = {d.name: d for d in sorted(config_dir.iterdir()) if (d / "stage.yaml").exists()}
    missing = [name for name in catalogue.documented().names if name not in found]
    if found and missing:
        raise HaconformError(f"no {', '.join(missing)} (has {', '.join(found)})", where=str(config_dir),
                             fix=f"add {config_dir / missing[0]}/stage.yaml (see fixtures/documented/README.md)")
    stages = {name: load_stage(d, topology, search=(config_dir,)) for name, d in found.items()}
    if algorithms_dir is not None:
        for d in sorted(Path(algorithms_dir).iterdir()):
            name = f"algorithm-{d.name}"
            if (d / "stage.yaml").exists() and name not in stages:
                stages[name] = load_stage(d, topology, search=(config_dir,))
    return stages


def names_defined(stages: Iterable[Stage]) -> set[str]:
    """The runbook's names a deployment may call its own way (--names, the inventory's `names:`): the
    cluster's resource, device, group and constraint ids, and haproxy.cfg's proxies and servers."""
    names: set[str] = set()
    for stage in stages:
        if stage.cluster is not None:
            spec = stage.cluster
            names.update(r.id for r in [*spec.resources.values(), *spec.stonith.values()])
            names.update([spec.group_id] if spec.group_id else [])
            names.update(c.id for c in spec.constraints if c.id)
        for f in stage.files:
            if f.dest != HAPROXY_CFG:
                continue
            for section in config_sections(read_text_file(f.source, missing_fix="restore the stage's file")):
                if section.kind in NAMED_PROXIES and section.name:
                    names.add(section.name)
                names.update(d.words[1] for d in section.directives if d.words[0] == "server" and len(d.words) > 1)
    return names


def check_names(names: Mapping[str, str], defined: set[str], *, where: str, key_prefix: str = "") -> None:
    """Every key of a names mapping is a name the runbook defines: an unknown one would be ignored."""
    for key in names:
        if key not in defined:
            raise HaconformError(f"{key_prefix}{key}: not a name the runbook defines", where=where,
                                 fix=f"map one of {', '.join(sorted(defined)) or '(none: the --config has no stage)'}")


def stages_mode_of(config) -> str:
    """--stages of a pytest session: verify by default on an existing deployment (--target ssh), else apply."""
    return config.getoption("--stages") or ("verify" if config.getoption("--target") == "ssh" else "apply")


def declared_stage(config) -> str:
    """The stage an existing deployment is declared at: its inventory's `stage:`, else --deployment-stage."""
    inventory = getattr(config, "_haconform_inventory", None)
    return inventory.stage if inventory else config.getoption("--deployment-stage")


def not_applied(name: str, declared: str) -> str:
    """Why a test needing stage `name` is left out of a verify run of a deployment declared at `declared`."""
    return (f"verify-only (--stages verify): the deployment is declared at {declared}, and "
            f"haconform writes nothing to it; {name} would have to be applied")


def verify_left_out(declared: Stage, *, stage: str | None = None, setting: str | None = None,
                    introduced_in: str | None = None) -> str | None:
    """In verify mode, why a test needing `stage` (or `setting`, introduced in `introduced_in`) is left out
    of a run against a deployment at the `declared` stage; None when it runs.  StageManager asks it when
    a test sets up; the collection asks it too, so that a test that cannot apply is left out as such,
    before any other reason (destructive, writes to a host) is given."""
    if setting is not None:
        if setting in declared.provides:
            return None
        return (f"{not_applied(introduced_in, declared.name)} ({declared.name} does not keep `{setting}`: its "
                f"provides: {list(declared.provides)})")
    return None if stage == declared.name else not_applied(stage, declared.name)


def applied_twice(apply_once):
    """Both passes of an application (the second must change nothing), and how long they took:
    {"seconds": both, "pass_seconds": [first, second]}."""
    began = time.monotonic()
    first = apply_once()
    between = time.monotonic()
    second = apply_once()
    ended = time.monotonic()
    return (first, second), {"seconds": round(ended - began, 2),
                             "pass_seconds": [round(between - began, 2), round(ended - between, 2)]}


class StageLeftOut(Exception):
    """The test needs a stage this run does not put the deployment in (verify mode); the reason says why."""


@dataclass
class StageInForce:
    """What a test gets from a stage fixture: the documented stage and the record of applying/verifying it."""
    stage: Stage
    record: dict
    cluster: ClusterSpec | None      # the stage's cluster, with the deployment's own names


class StageFailedEarlier(HaconformError):
    """A stage that did not apply earlier in the session: the tests that need it fail at once, saying why."""

    def __init__(self, name: str, *, reason: str, test: str | None):
        super().__init__(f"{name} did not apply earlier in this session (in {test or 'the session set-up'}): "
                         f"{reason}; it is not applied again", where=name,
                         fix="see that test's failure for the whole story")


class StageManager:
    def __init__(self, deployment, config_dir: Path, hacluster_password: str, *, mode: str = "apply",
                 deployment_stage: str | None = None, algorithms_dir: Path | None = None,
                 names: Mapping[str, str] | None = None, preloaded: Mapping[str, Stage] | None = None):
        """deployment_stage: where the deployment is (verify), by default the last documented stage;
        preloaded: the stages load_all_stages validated at the session's start (same topology)."""
        self.deployment = deployment
        self.config_dir = Path(config_dir)
        self.algorithms_dir = Path(algorithms_dir) if algorithms_dir else None
        self.current: str | None = None
        self.history: list[dict] = []
        self.mode = mode
        self.deployment_stage = deployment_stage or catalogue.documented().last
        self.names = dict(names or {})
        self._password = hacluster_password
        self._stages: dict[str, Stage] = dict(preloaded or {})
        self._verified: dict[str, dict] = {}
        self.failed: dict[str, dict] = {}   # stage -> {"reason", "test"}: it did not apply, and is not tried again
        if mode == "verify":
            declared = self.stage(deployment_stage)
            if declared.is_cluster_stage:
                deployment.use_frontend(deployment.vip, "VIP")
                deployment.cluster_spec = self.cluster_spec(deployment_stage)

    # ----- the documented stages -------------------------------------------------------
    def stage(self, name: str) -> Stage:
        if name not in self._stages:
            self._stages[name] = load_stage(self.stage_dir(name), self.deployment.topology,
                                            search=(self.config_dir,))
        return self._stages[name]

    def stage_dir(self, name: str) -> Path:
        candidates = [self.config_dir / name]
        if self.algorithms_dir is not None:
            candidates.append(self.algorithms_dir / name.removeprefix("algorithm-"))
        for candidate in candidates:
            if (candidate / "stage.yaml").exists():
                return candidate
        raise HaconformError(f"no stage {name!r}", where=str(self.config_dir),
                             fix=f"add {self.config_dir / name}/stage.yaml (see fixtures/documented/README.md)")

    def cluster_spec(self, name: str) -> ClusterSpec:
        spec = self.stage(name).cluster
        if spec is None:
            raise HaconformError(f"{name} has no cluster: block", where=str(self.stage_dir(name) / "stage.yaml"),
                                 fix="the stages providing `cluster` declare it (see fixtures/documented/"
                                     f"{catalogue.documented().introduced_at('cluster')})")
        return spec.renamed(self.names)

    def in_force(self, name: str, record: dict) -> StageInForce:
        stage = self.stage(name)
        return StageInForce(stage, record, self.cluster_spec(name) if stage.is_cluster_stage else None)

    # ----- what tests ask for ------------------------------------------------------------
    def ensure(self, name: str) -> StageInForce:
        """The deployment in stage `name` (apply), or that stage verified as the declared one (verify)."""
        if self.mode == "verify":
            reason = verify_left_out(self.stage(self.deployment_stage), stage=name)
            if reason is not None:
                raise StageLeftOut(reason)
            return self.in_force(name, self._verify_once(name))
        # Applying writes the deployment's configuration: on an existing deployment (--allow-destructive) the
        # guard lets it through as a grant of its own, whichever test asked; read-only runs never apply.
        guard = self.deployment.target.guard
        if name in self.failed:
            raise StageFailedEarlier(name, **self.failed[name])
        try:
            with guard.grant(f"applying {name}") if guard.mode == GRANTED else contextlib.nullcontext():
                return self.in_force(name, self._apply(name))
        except Exception as exc:
            # Once: every later test needing this stage fails at once with this reason, instead of applying
            # it again (minutes each on a slow target, and the same failure).
            self.failed[name] = {"reason": f"{type(exc).__name__}: {exc}", "test": guard.test}
            raise

    def ensure_setting(self, setting: str, introduced_in: str) -> StageInForce:
        """A setting's tests run in the stage that introduces it (apply) or in any declared stage keeping it (verify)."""
        if self.mode == "apply":
            return self.ensure(introduced_in)
        reason = verify_left_out(self.stage(self.deployment_stage), setting=setting, introduced_in=introduced_in)
        if reason is not None:
            raise StageLeftOut(reason)
        return self.in_force(self.deployment_stage, self._verify_once(self.deployment_stage))

    def drift(self, name: str) -> list[dict]:
        """How the deployment differs from stage `name`, by meaning: rows of what, expected, found, where."""
        stage = self.stage(name)
        cluster_owns = ("haproxy",) if stage.is_cluster_stage else ()
        rows = file_drift(stage, self.deployment.machines, self.deployment.topology, cluster_owns=cluster_owns,
                          names=self.names)
        if stage.is_cluster_stage:
            spec = self.cluster_spec(name)
            cluster = ClusterStage(self.deployment, spec, self._password, name=name)
            rows += cluster_drift(cluster)
            if spec.stonith:
                rows += fencing_drift(FencingStage(self.deployment, self.deployment.target, cluster, name=name))
        return rows

    def cluster_form(self, name: str) -> dict | None:
        """How the deployment ties the members that must run together (group or constraints) beside the
        documented form; None for a stage without a cluster."""
        if not self.stage(name).is_cluster_stage:
            return None
        return cluster_form(ClusterStage(self.deployment, self.cluster_spec(name), self._password, name=name))

    # ----- apply ---------------------------------------------------------------------------
    def _apply(self, name: str) -> dict:
        if self.current == name:
            return self.history[-1]
        stage = self.stage(name)
        if stage.is_cluster_stage:
            return self._apply_cluster_stage(stage)
        (first, second), timing = applied_twice(lambda: apply_stage(stage, self.deployment.machines,
                                                                    self.deployment.topology))
        record = {"stage": name, **timing, "first_pass": first.summary(), "second_pass": second.summary(),
                  "idempotent": not second.changed_anything}
        self._applied(name, record, second.changed_anything, second.summary(), str(stage.directory))
        return record

    def _apply_cluster_stage(self, stage: Stage) -> dict:
        base = self.stage(stage.base) if stage.base else None
        if base is None:
            raise HaconformError(f"{stage.name} has a cluster but no base stage", where=str(stage.directory),
                                 fix="give it `base:` (the files stage whose configuration the cluster runs)")
        # Stages are cumulative; but once the cluster owns HAProxy, the files
        # stages' service rules (start haproxy everywhere) must not run again.
        at_cluster_stage = self.current is not None and self.stage(self.current).is_cluster_stage
        if self.current != base.name and not (at_cluster_stage and not base.is_cluster_stage):
            self._apply(base.name)
        spec = self.cluster_spec(stage.name)
        cluster = ClusterStage(self.deployment, spec, self._password, name=stage.name)
        applier = FencingStage(self.deployment, self.deployment.target, cluster, name=stage.name) \
            if spec.stonith else cluster
        (first, second), timing = applied_twice(applier.apply)
        record = {"stage": stage.name, **timing,
                  "first_pass": first.steps or "nothing to change", "observations": first.observations,
                  "second_pass": second.steps or "nothing to change", "idempotent": not second.changed_anything}
        self._applied(stage.name, record, second.changed_anything, second.steps, str(stage.directory / "stage.yaml"))
        self.deployment.use_frontend(self.deployment.vip, "VIP")
        self.deployment.cluster_spec = spec
        return record

    def _applied(self, name: str, record: dict, changed_again: bool, second, where: str) -> None:
        self.history.append(record)
        log.info("applied %s: %s", name, record)
        if changed_again:
            raise HaconformError(f"applying {name} twice changed something the second time: {second}",
                                 where=where, fix="a stage must converge: check its services, modes and cluster")
        self.current = name

    # ----- verify ----------------------------------------------------------------------------
    def _verify_once(self, name: str) -> dict:
        if name not in self._verified:
            began = time.monotonic()
            drift = self.drift(name)
            record = {"stage": name, "mode": "verify", "deployment declared at": self.deployment_stage,
                      "seconds": round(time.monotonic() - began, 2),
                      "drift (reported by the configuration test)": drift or "none"}
            form = self.cluster_form(name)
            if form is not None:
                record["the members that must run together"] = form
            self.history.append(record)
            log.info("verified %s: %s", name, record)
            self._verified[name] = record
        return self._verified[name]
