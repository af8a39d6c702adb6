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

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import HaconformError
from .cluster import ClusterStage, FencingStage
from .files import apply_stage
from .model import ClusterSpec, Stage, load_stage
from .verify import cluster_drift, fencing_drift, file_drift

log = logging.getLogger("haconform.stages")
RUNBOOK_STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5")


class StageLeftOut(Exception):
    """The test needs a stage this run does not put the deployment in (verify mode); the reason says why."""


@dataclass
class StageInForce:
    """What a test gets from a stage fixture: the documented stage and the record of applying/verifying it."""
    stage: Stage
    record: dict
    cluster: ClusterSpec | None      # the stage's cluster, with the deployment's own names


class StageManager:
    def __init__(self, deployment, config_dir: Path, hacluster_password: str, *, mode: str = "apply",
                 deployment_stage: str = "stage5", algorithms_dir: Path | None = None,
                 names: Mapping[str, str] | None = None):
        self.deployment = deployment
        self.config_dir = Path(config_dir)
        self.algorithms_dir = Path(algorithms_dir) if algorithms_dir else None
        self.current: str | None = None
        self.history: list[dict] = []
        self.mode = mode
        self.deployment_stage = deployment_stage
        self.names = dict(names or {})
        self._password = hacluster_password
        self._stages: dict[str, Stage] = {}
        self._verified: dict[str, dict] = {}
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
                                 fix="stages 4 and 5 declare the cluster (see fixtures/documented/stage4)")
        return spec.renamed(self.names)

    def in_force(self, name: str, record: dict) -> StageInForce:
        stage = self.stage(name)
        return StageInForce(stage, record, self.cluster_spec(name) if stage.is_cluster_stage else None)

    # ----- what tests ask for ------------------------------------------------------------
    def ensure(self, name: str) -> StageInForce:
        """The deployment in stage `name` (apply), or that stage verified as the declared one (verify)."""
        if self.mode == "verify":
            if name != self.deployment_stage:
                raise StageLeftOut(self._not_applied(name))
            return self.in_force(name, self._verify_once(name))
        return self.in_force(name, self._apply(name))

    def ensure_setting(self, setting: str, introduced_in: str) -> StageInForce:
        """A setting's tests run in the stage that introduces it (apply) or in any declared stage keeping it (verify)."""
        if self.mode == "apply":
            return self.ensure(introduced_in)
        declared = self.stage(self.deployment_stage)
        if setting not in declared.provides:
            raise StageLeftOut(f"{self._not_applied(introduced_in)} ({self.deployment_stage} does not keep "
                               f"`{setting}`: its provides: {list(declared.provides)})")
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

    # ----- apply ---------------------------------------------------------------------------
    def _apply(self, name: str) -> dict:
        if self.current == name:
            return self.history[-1]
        stage = self.stage(name)
        if stage.is_cluster_stage:
            return self._apply_cluster_stage(stage)
        began = time.monotonic()
        first = apply_stage(stage, self.deployment.machines, self.deployment.topology)
        second = apply_stage(stage, self.deployment.machines, self.deployment.topology)
        record = {"stage": name, "seconds": round(time.monotonic() - began, 2),
                  "first_pass": first.summary(), "second_pass": second.summary(),
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
        began = time.monotonic()
        spec = self.cluster_spec(stage.name)
        cluster = ClusterStage(self.deployment, spec, self._password, name=stage.name)
        applier = FencingStage(self.deployment, self.deployment.target, cluster, name=stage.name) \
            if spec.stonith else cluster
        first = applier.apply()
        second = applier.apply()
        record = {"stage": stage.name, "seconds": round(time.monotonic() - began, 2),
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
    def _not_applied(self, name: str) -> str:
        return (f"verify-only (--stages verify): the deployment is declared at {self.deployment_stage}, and "
                f"haconform writes nothing to it; {name} would have to be applied")

    def _verify_once(self, name: str) -> dict:
        if name not in self._verified:
            began = time.monotonic()
            drift = self.drift(name)
            record = {"stage": name, "mode": "verify", "deployment declared at": self.deployment_stage,
                      "seconds": round(time.monotonic() - began, 2),
                      "drift (reported by the configuration test)": drift or "none"}
            self.history.append(record)
            log.info("verified %s: %s", name, record)
            self._verified[name] = record
        return self._verified[name]
