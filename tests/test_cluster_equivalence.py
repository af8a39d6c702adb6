"""The VIP and HAProxy tied by a group or by colocation + order constraints: compared by what they mean.

Unit tests read CIBs recorded with pcs 0.11 and pacemaker 2.1.5 (tests/data/record_constraint_samples.sh:
`pcs -f` on the runbook's stage-5 CIB, read back with cibadmin).  The lab tests (marked `lab`) bring a lab
to stage 5, replace the group by hand with the two constraints pcs creates, and run verify mode on it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from haconform.cluster import Cluster
from haconform.errors import HaconformError
from haconform.readers.cluster import PCMK_INFINITY, parse_cib_configuration, parse_crm_mon, score_value
from haconform.restore import read_cluster_view
from haconform.stages.cluster import cluster_differences, together_differences, together_form
from haconform.stages.manager import names_defined
from haconform.stages.model import load_stage
from haconform.timeouts import BOUNDS
from haconform.topology import load_topology
from tests.fakes import read_sample
from tests.test_cluster import Deployment, Director

REPO = Path(__file__).resolve().parent.parent
DOCUMENTED = REPO / "fixtures" / "documented"
TOPOLOGY = load_topology(REPO / "fixtures" / "topology.yaml")
GROUP_SPEC = load_stage(DOCUMENTED / "stage5", TOPOLOGY).cluster

CONSTRAINTS_BLOCK = """  constraints:                            # pcs constraint colocation add haproxy with VIP INFINITY
    - colocation: {resource: haproxy, with: vip, score: INFINITY}
    - order: {first: vip, then: haproxy}  # pcs constraint order VIP then haproxy
"""
GROUP_BLOCK = """  group:                                  # pcs resource group add hagroup VIP haproxy (689)
    id: hagroup
    members: [vip, haproxy]
"""


def cib(name: str):
    return parse_cib_configuration(read_sample(f"pacemaker/cib_configuration_{name}.xml"), source=name)


def constraints_config(tmp_path: Path, block: str = CONSTRAINTS_BLOCK) -> Path:
    """The documented configuration with stage 4's group replaced by `block`."""
    config = Path(shutil.copytree(DOCUMENTED, tmp_path / "config"))
    stage4 = config / "stage4" / "stage.yaml"
    text = stage4.read_text()
    assert GROUP_BLOCK in text
    stage4.write_text(text.replace(GROUP_BLOCK, block))
    return config


@pytest.fixture
def constraints_spec(tmp_path):
    return load_stage(constraints_config(tmp_path) / "stage5", TOPOLOGY).cluster


def rows(differences) -> list[tuple[str, str, str]]:
    return [(d.what, d.expected, d.found) for d in differences]


# ----- the CIB's constraints, read -----------------------------------------------------------------

def test_the_constraints_pcs_creates_are_read_from_the_cib():
    configuration = cib("constraints")
    assert configuration.groups == {}
    [colocation] = configuration.colocations
    assert (colocation.id, colocation.rsc, colocation.with_rsc, colocation.score) == \
        ("colocation-haproxy-VIP-INFINITY", "haproxy", "VIP", "INFINITY")
    assert colocation.pairs() == [("haproxy", "VIP")]
    [order] = configuration.orders
    assert (order.first, order.then, order.kind, order.symmetrical) == ("VIP", "haproxy", "Mandatory", True)
    assert (order.first_action, order.then_action) == ("start", "start")
    assert order.path == "/cib/configuration/constraints/rsc_order[@id='order-VIP-haproxy-mandatory']"
    assert configuration.locations == ()


def test_sets_optional_orders_and_locations_are_read():
    sets = cib("sets")
    assert sets.colocations[0].pairs() == [("haproxy", "VIP")]
    assert sets.orders[0].pairs() == [("VIP", "haproxy")]
    assert cib("order_optional").orders[0].kind == "Optional"
    [pin] = cib("pinned").locations
    assert (pin.resources, pin.node, pin.score) == (("hagroup",), "server1", "INFINITY")
    assert "hagroup on server1" in pin.describe()


@pytest.mark.parametrize("text, value", [("INFINITY", PCMK_INFINITY), ("+INFINITY", PCMK_INFINITY),
                                         ("-INFINITY", -PCMK_INFINITY), ("100", 100), ("2000000", PCMK_INFINITY),
                                         ("nonsense", None), (None, None)])
def test_scores_are_read_as_pacemaker_reads_them(text, value):
    assert score_value(text) == value


# ----- the same meaning in either form -------------------------------------------------------------

@pytest.mark.parametrize("sample", ["group", "constraints", "colocation_reversed", "sets"])
def test_either_form_keeps_the_documented_group(sample):
    assert together_differences(GROUP_SPEC, cib(sample)) == []


@pytest.mark.parametrize("sample", ["group", "constraints", "colocation_reversed", "sets"])
def test_either_form_keeps_documented_constraints(constraints_spec, sample):
    assert together_differences(constraints_spec, cib(sample)) == []


def test_the_whole_cluster_conforms_in_constraints_form():
    # The recorded CIB leaves stonith-enabled at pacemaker's default (true): the spec asks for it set.
    spec = dataclasses.replace(GROUP_SPEC, properties={})
    assert cluster_differences(spec, cib("constraints"), haproxy_agent_for=lambda r: r.agent_without_systemd
                               or r.agent) == []


def test_the_form_found_is_reported():
    group = together_form(GROUP_SPEC, cib("group"))
    assert group == {"documented": "group hagroup (VIP, haproxy)", "found": "group hagroup (VIP, haproxy)",
                     "form found": "group", "same meaning": True}
    constraints = together_form(GROUP_SPEC, cib("constraints"))
    assert constraints["form found"] == "constraints" and constraints["same meaning"] is True
    assert "colocation haproxy with VIP score INFINITY (colocation-haproxy-VIP-INFINITY)" in constraints["found"]
    assert "order start VIP then start haproxy Mandatory, symmetrical (order-VIP-haproxy-mandatory)" \
        in constraints["found"]
    assert together_form(GROUP_SPEC, cib("no_order"))["same meaning"] is False
    assert together_form(GROUP_SPEC, cib("ungrouped"))["found"] == "nothing ties them"


def test_the_lab_after_the_hand_made_change_keeps_the_group_and_without_its_order_does_not():
    # Recorded from a stage-5 lab: `pcs resource ungroup hagroup`, the two constraints; then the order deleted.
    lab = cib("lab_constraints")
    assert lab.groups == {} and len(lab.colocations) == len(lab.orders) == 1
    assert together_differences(GROUP_SPEC, lab) == []
    assert [d.found for d in together_differences(GROUP_SPEC, cib("lab_no_order"))] == ["no order constraint"]


# ----- something else is a difference with its own row -----------------------------------------------

def test_no_order_is_one_difference():
    found = together_differences(GROUP_SPEC, cib("no_order"))
    assert rows(found) == [("VIP started before haproxy, stopped after",
                            "start VIP then start haproxy, Mandatory, symmetrical (stopped in reverse) "
                            "(group hagroup, or a constraint meaning the same)", "no order constraint")]
    assert found[0].where == "/cib/configuration/constraints"
    # Put back in the stage's own form: what ties them now goes, then the group is made.
    assert found[0].repair == (("pcs", "constraint", "delete", "colocation-haproxy-VIP-INFINITY"),
                               ("pcs", "resource", "group", "add", "hagroup", "VIP", "haproxy"))


def test_a_different_colocation_score_is_one_difference(constraints_spec):
    found = together_differences(constraints_spec, cib("score_100"))
    assert len(found) == 1, rows(found)
    assert found[0].what == "haproxy and VIP on one node"
    assert found[0].expected == "haproxy with VIP, score INFINITY"
    assert "score 100" in found[0].found and "colocation-haproxy-VIP-100" in found[0].found
    assert found[0].repair == (("pcs", "constraint", "delete", "colocation-haproxy-VIP-100"),
                               ("pcs", "constraint", "colocation", "add", "haproxy", "with", "VIP", "INFINITY"))


@pytest.mark.parametrize("sample, words", [("order_optional", "Optional"), ("order_reversed", "start haproxy then start VIP")])
def test_an_order_that_says_something_else_is_one_difference(constraints_spec, sample, words):
    found = together_differences(constraints_spec, cib(sample))
    assert len(found) == 1, rows(found)
    assert found[0].what == "VIP started before haproxy, stopped after"
    assert words in found[0].found


@pytest.mark.parametrize("sample, constraint", [("pinned", "location-hagroup-server1-INFINITY"),
                                                ("constraints_pinned", "location-haproxy-server4-INFINITY")])
def test_a_location_constraint_pinning_the_members_is_a_difference(sample, constraint):
    found = together_differences(GROUP_SPEC, cib(sample))
    assert rows(found) == [(f"location constraint {constraint}", "none (the members may run on either node)",
                            next(loc.describe() for loc in cib(sample).locations))]
    assert found[0].repair == (("pcs", "constraint", "delete", constraint),)


def test_nothing_ties_them_the_stage_creates_its_own_form(constraints_spec):
    [group] = together_differences(GROUP_SPEC, cib("ungrouped"))
    assert (group.what, group.expected, group.found) == ("group hagroup", "VIP haproxy", "missing")
    assert group.repair == (("pcs", "resource", "group", "add", "hagroup", "VIP", "haproxy"),)
    found = together_differences(constraints_spec, cib("ungrouped"))
    assert [d.repair for d in found] == [
        (("pcs", "constraint", "colocation", "add", "haproxy", "with", "VIP", "INFINITY"),),
        (("pcs", "constraint", "order", "start", "VIP", "then", "start", "haproxy"),)]
    assert [d.found for d in found] == ["no colocation constraint", "no order constraint"]


def test_a_group_in_the_way_of_constraints_goes_whole_and_they_are_made_again(constraints_spec):
    from tests.test_stage_model import cib as cib_xml
    found = together_differences(constraints_spec, parse_cib_configuration(cib_xml(order=("haproxy", "VIP"))))
    assert [d.what for d in found] == ["VIP started before haproxy, stopped after"]
    assert "group hagroup" in found[0].found
    # Ungrouping takes the colocation too: both constraints are made again, in one row.
    assert found[0].repair == (("pcs", "resource", "ungroup", "hagroup"),
                               ("pcs", "constraint", "colocation", "add", "haproxy", "with", "VIP", "INFINITY"),
                               ("pcs", "constraint", "order", "start", "VIP", "then", "start", "haproxy"))


def test_a_member_tied_to_another_resource_is_a_difference():
    xml = read_sample("pacemaker/cib_configuration_constraints.xml").replace(
        "</constraints>", '  <rsc_order id="order-haproxy-vmfence" first="haproxy" then="vmfence"/>\n  </constraints>')
    found = together_differences(GROUP_SPEC, parse_cib_configuration(xml))
    assert [(d.what, d.found) for d in found] == [
        ("order of haproxy and vmfence (ties vmfence to the members)",
         "order start haproxy then start vmfence Mandatory, symmetrical (order-haproxy-vmfence)")]


def test_the_deployments_own_names_are_mapped(constraints_spec):
    names = {"VIP": "WebIP", "haproxy": "lb", "hagroup": "web"}
    xml = read_sample("pacemaker/cib_configuration_constraints.xml")
    for ours, theirs in names.items():
        xml = re.sub(rf'(id|rsc|with-rsc|first|then)="{ours}"', rf'\1="{theirs}"', xml)
    renamed = parse_cib_configuration(xml)
    assert together_differences(GROUP_SPEC, renamed), "the documented ids are not the deployment's"
    assert together_differences(GROUP_SPEC.renamed(names), renamed) == []
    assert together_differences(constraints_spec.renamed(names), renamed) == []


# ----- the stage data ---------------------------------------------------------------------------------

def test_a_stage_may_say_constraints(constraints_spec, tmp_path):
    assert constraints_spec.form == "constraints" and constraints_spec.group_id is None
    assert constraints_spec.together == ("vip", "haproxy")
    assert constraints_spec.together_ids() == ["VIP", "haproxy"]
    assert constraints_spec.together_label == "VIP + haproxy"
    assert GROUP_SPEC.together_ids() == GROUP_SPEC.group_ids() == ["VIP", "haproxy"]
    named = load_stage(constraints_config(tmp_path / "named", CONSTRAINTS_BLOCK.replace(
        "score: INFINITY}", "score: INFINITY, id: web-together}")) / "stage5", TOPOLOGY)
    assert "web-together" in names_defined([named])
    assert named.cluster.renamed({"web-together": "theirs"}).constraints[0].id == "theirs"


def test_a_stage_based_on_a_group_switches_to_constraints(tmp_path):
    config = Path(shutil.copytree(DOCUMENTED, tmp_path / "config"))
    stage5 = config / "stage5" / "stage.yaml"
    stage5.write_text(stage5.read_text().replace("cluster:\n", "cluster:\n  group: null\n" + CONSTRAINTS_BLOCK, 1))
    spec = load_stage(config / "stage5", TOPOLOGY).cluster
    assert spec.form == "constraints" and spec.together_ids() == ["VIP", "haproxy"]


@pytest.mark.parametrize("block, key, words", [
    (GROUP_BLOCK + CONSTRAINTS_BLOCK, "cluster.constraints", "not both"),
    (CONSTRAINTS_BLOCK.replace("with: vip", "with: web"), "cluster.constraints[0].colocation.with", "'web'"),
    (CONSTRAINTS_BLOCK.replace("score: INFINITY", "score: lots"), "cluster.constraints[0].colocation.score",
     "not a pacemaker score"),
    (CONSTRAINTS_BLOCK + "    - order: {first: haproxy, then: vip}\n", "cluster.constraints", "cycle"),
    (CONSTRAINTS_BLOCK + "    - {}\n", "cluster.constraints[2]", "one `colocation:` or one `order:`"),
    (CONSTRAINTS_BLOCK.replace("first: vip", "first: vip, kind: Sometimes"), "cluster.constraints[1].order.kind",
     "Mandatory"),
])
def test_malformed_constraints_are_refused_naming_the_key(tmp_path, block, key, words):
    config = constraints_config(tmp_path, block)
    with pytest.raises(HaconformError) as caught:
        load_stage(config / "stage4", TOPOLOGY)
    message = str(caught.value)
    assert str(config / "stage4" / "stage.yaml") in message and key in message and "fix" in message, message
    assert words in message, message


# ----- the members that must run together, at run time --------------------------------------------------

def test_the_members_node_without_a_group(constraints_spec):
    state = parse_crm_mon(read_sample("pacemaker/crm_mon_constraints.xml"))
    assert state.groups == ()
    deployment = Deployment(server1=Director("server1", crm_mon="crm_mon_constraints.xml",
                                             cib="cib_configuration_constraints.xml"),
                            server4=Director("server4", crm_mon="crm_mon_constraints.xml",
                                             cib="cib_configuration_constraints.xml"))
    deployment.cluster_spec = constraints_spec
    node = Cluster(deployment).group_node()
    assert node is not None and state.where_is("VIP") == state.where_is("haproxy") == [node]
    view, _ = read_cluster_view(deployment)
    assert view.groups == {"VIP + haproxy": ["VIP", "haproxy"]}, "restore checks they run whole"


# ----- on a lab: the group replaced by hand -----------------------------------------------------------

LAB = f"eqc{os.getpid() % 10000}"
HAND = ("pcs resource ungroup hagroup", "pcs constraint colocation add haproxy with VIP INFINITY",
        "pcs constraint order VIP then haproxy")


def run_suites(tmp: Path, name: str, *args: str, lab: str = LAB) -> dict[str, set[str]]:
    """pytest suites in a subprocess against the lab; conformance id -> outcomes (passed/failed/skipped)."""
    junit = tmp / f"{name}.xml"
    command = [sys.executable, "-m", "pytest", "suites", "-n", "0", "-p", "no:cacheprovider", "-q",
               "--lab-name", lab, "--history-dir", str(tmp / "results"), f"--junitxml={junit}", *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    (tmp / f"{name}.log").write_text(result.stdout + result.stderr)
    outcomes: dict[str, set[str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None \
            else "skipped" if case.find("skipped") is not None else "passed"
        for prop in case.iter("property"):
            if prop.get("name") == "conformance_id":
                outcomes.setdefault(prop.get("value"), set()).add(outcome)
    return outcomes


def on_lab(*command: str, lab: str = LAB) -> str:
    result = subprocess.run([sys.executable, "-m", "haconform.cli", "lab", "exec", "--name", lab, "server1", "--",
                             *command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stdout}{result.stderr}"
    return result.stdout


def held(outcomes) -> set[str]:
    return {cid for cid, seen in outcomes.items() if seen == {"passed"}}


@pytest.fixture
def stage5_lab(tmp_path_factory):
    """A lab at stage 5, taken down after its test: one lab at a time."""
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    tmp = tmp_path_factory.mktemp("equivalence")
    try:
        built = run_suites(tmp, "build", "--keep-lab", "-k", "test_80_configuration")
        assert built.get("HAC-CFG-001") == {"passed"}, (tmp / "build.log").read_text()[-3000:]
        yield tmp
    finally:
        subprocess.run([sys.executable, "-m", "haconform.cli", "lab", "down", "--name", LAB], cwd=REPO,
                       capture_output=True, timeout=300)


VERIFY = ("--reuse-lab", "--keep-lab", "--stages", "verify", "--deployment-stage", "stage5")
# The MUSTs of the cluster's stages, each form's: those of stages 1-3 are judged from haproxy.cfg, rsyslog
# and the limits on each director and from requests to the VIP's holder, and how pacemaker ties the VIP to
# haproxy is not among their inputs (the tie's effect on the data path is HAC-HA-002's, through the VIP).
CLUSTER_SUITES = ("-k", "test_60_cluster or test_70_fencing or test_80_configuration")


@pytest.mark.lab(expected_s=280, own_lab=True)
def test_constraints_made_by_hand_keep_every_cluster_must_the_group_kept(stage5_lab):
    with_group = run_suites(stage5_lab, "group", *VERIFY, *CLUSTER_SUITES)
    assert with_group.get("HAC-CFG-001") == {"passed"}, (stage5_lab / "group.log").read_text()[-3000:]
    for command in HAND:
        on_lab(*command.split())
    # Between the ungroup and the colocation pacemaker may have placed them apart: its own settle wait.
    on_lab("crm_resource", "--wait", f"--timeout={round(BOUNDS.cluster_settle)}s")
    assert "<group" not in on_lab("cibadmin", "--query", "--scope", "resources")
    with_constraints = run_suites(stage5_lab, "constraints", *VERIFY, *CLUSTER_SUITES)
    log = (stage5_lab / "constraints.log").read_text()
    assert held(with_constraints) == held(with_group), (sorted(held(with_group) ^ held(with_constraints)), log[-4000:])
    assert {"HAC-HA-001", "HAC-HA-007", "HAC-CFG-001"} <= held(with_constraints)
    # CFG-001 says which form it found (its evidence, in the run's history).
    history = "".join(p.read_text() for p in (stage5_lab / "results").rglob("history.jsonl"))
    assert "colocation-haproxy-VIP-INFINITY" in history and '"form found": "constraints"' in history

    on_lab("pcs", "constraint", "delete", "order-VIP-haproxy-mandatory")
    on_lab("crm_resource", "--wait", f"--timeout={round(BOUNDS.cluster_settle)}s")
    without_order = run_suites(stage5_lab, "no-order", *VERIFY, "-k", "configuration_means or configured_as")
    log = (stage5_lab / "no-order.log").read_text()
    assert without_order.get("HAC-CFG-001") == {"failed"}, log[-3000:]
    assert without_order.get("HAC-HA-007") == {"failed"}, log[-3000:]
    assert "VIP started before haproxy, stopped after" in log and "no order constraint" in log, log[-3000:]


@pytest.mark.lab(expected_s=55, own_lab=True)
def test_a_stage_with_constraints_is_applied_with_pcs_twice_the_same(tmp_path):
    """A configuration whose stage 4 says `constraints:`: applied on a fresh lab (each stage twice, the second
    pass must change nothing), the CIB has the two constraints and no group, and the configuration test holds."""
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    config = constraints_config(tmp_path)
    lab = f"{LAB}a"   # beside the module's stage-5 lab, never in its place
    try:
        outcomes = run_suites(tmp_path, "apply", "--keep-lab", "--config", str(config), "-k",
                              "test_80_configuration or cluster_configured_as or run_together", lab=lab)
        log = (tmp_path / "apply.log").read_text()
        assert {"HAC-CFG-001", "HAC-HA-001", "HAC-HA-007"} <= held(outcomes), log[-4000:]
        configuration = parse_cib_configuration(on_lab("cibadmin", "--query", "--scope", "configuration", lab=lab))
        assert configuration.groups == {}
        assert [(c.rsc, c.with_rsc, c.score) for c in configuration.colocations] == [("haproxy", "VIP", "INFINITY")]
        assert [(o.first, o.then, o.kind) for o in configuration.orders] == [("VIP", "haproxy", "Mandatory")]
        history = "".join(p.read_text() for p in (tmp_path / "results").rglob("history.jsonl"))
        assert "pcs constraint colocation add haproxy with VIP INFINITY" in history, "the first pass made it"
        assert '"idempotent": true' in history and '"idempotent": false' not in history
    finally:
        subprocess.run([sys.executable, "-m", "haconform.cli", "lab", "down", "--name", lab], cwd=REPO,
                       capture_output=True, timeout=300)
