"""Runbook stages as data, and what puts a deployment in one or compares it with one.

    catalogue the stages as a whole: names, order, the last one, where each setting comes in
    model     Stage / ClusterSpec: stage.yaml and the stage's files, validated on load
    files     apply a files stage (stages 1-3, the balance algorithms)
    cluster   apply a cluster stage (stages 4-5) from its `cluster:` block, converging
    drift     how a deployment differs from a stage, by meaning, writing nothing
    semantic  haproxy.cfg, rsyslog and limits.conf compared by meaning (as haconform/readers parses them)
    manager   StageManager: the stage each test needs, applied or verified
"""

from .model import ClusterSpec, ResourceSpec, Stage, load_stage

__all__ = ["ClusterSpec", "ResourceSpec", "Stage", "load_stage"]
