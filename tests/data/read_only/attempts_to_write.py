"""Tests that try to write to a deployment's hosts without any marker: each must be refused at run time.

Not collected by the unit job (the name does not start with test_); tests/test_ssh_read_only.py passes
this file to a read-only `--target ssh` run beside the suites.  Every attempt is expected to FAIL with
ReadOnlyRefused, and to have changed nothing: the ssh test compares every file on the hosts and the
CIB's epoch before and after.  The writes are real ones (a file under /etc, a cluster property, a
resource refresh), so a guard that let one through would show in that comparison.
"""

import shlex

from haconform.cluster import Cluster

SENTINEL = "/etc/haconform-read-only-sentinel"


def test_writes_a_file_built_with_an_f_string(deployment):
    deployment.directors[0].succeed(f"touch {shlex.quote(SENTINEL)}")


def test_writes_a_file_through_a_command_held_in_a_variable(deployment):
    command = "echo written > " + SENTINEL
    deployment.directors[0].execute(command)


def test_writes_a_file_with_a_percent_formatted_command(deployment):
    deployment.realservers[0].execute("tee %s" % shlex.quote(SENTINEL), input="written\n")


def test_writes_a_file_with_a_shlex_joined_command(deployment):
    deployment.realservers[0].execute(shlex.join(["cp", "/etc/hostname", SENTINEL]))


def test_changes_the_cluster_with_crm_attribute(deployment):
    deployment.directors[0].execute("crm_attribute --type crm_config --name haconform-probe --update 1")


def test_refreshes_the_cluster_resources(deployment):
    deployment.directors[0].execute("pcs resource refresh")


def test_sets_a_property_through_the_library(deployment):
    Cluster(deployment).set_property("maintenance-mode", "true")


def test_writes_a_file_through_the_library(deployment):
    deployment.directors[0].write_file(SENTINEL, "written\n")


def test_writes_through_testinfras_host_directly(deployment):
    deployment.directors[0].host.run("touch %s", SENTINEL)


def test_catches_the_refusal_and_carries_on(deployment):
    try:
        deployment.directors[0].succeed(f"logger -t haconform {shlex.quote('a sentinel line')}")
    except Exception:   # noqa: BLE001 - the point: a refusal swallowed is still a failed test
        pass
