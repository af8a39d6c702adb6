"""A pytest plugin for tests/test_restore_on_the_lab.py: the restore after a destructive test finds the
cluster stopped on one director and may wait only 50 ms for the cluster to be as it was: its wait runs
out, as it would on a guest far slower than its bounds.  Not collected (no test_ prefix); loaded with -p."""

import shlex

import haconform.restore as restore_module
from haconform.cluster import Cluster

SETTLE_S = 0.05
real_restore = restore_module._restore


def impatient_restore(deployment, before, outcome, settle_timeout):
    cluster = Cluster(deployment)
    # What the restore finds: the director not running the group out of the cluster (a node the restore
    # does not start again, and the cluster needs seconds to notice in any case).
    running = cluster.group_node()
    other = next(d for d in deployment.directors if d.name != running)
    other.succeed(f"pcs cluster stop {shlex.quote(other.name)}")
    real_restore(deployment, before, outcome, SETTLE_S)


def pytest_configure(config):
    restore_module._restore = impatient_restore
