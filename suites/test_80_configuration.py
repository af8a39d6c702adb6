"""The deployment's configuration against the documented stage, compared by meaning.

Runs last: on the lab (apply) the deployment is then in stage 5, the stage
the run ended in; on an existing deployment (verify) it is the declared one.
Drift is this test's alone to report: the behavioural suites run regardless,
so cosmetic differences (comments, order, the deployment's own names mapped
by --names / the inventory's `names:`) never hide what the deployment does.
"""

from haconform.conformance import conformance
from haconform.differences import fail_on_differences


@conformance("HAC-CFG-001", stage="stage5", section="实现高可用",
             settings=("*",),
             must="The deployment's configuration MUST mean what the documented stage's configuration means: "
                  "haproxy.cfg by sections and directives, rsyslog by routes, limits by effective values, "
                  "the cluster by its CIB")
def test_configuration_means_the_documented_stage(stages, deployment_stage, evidence):
    rows = stages.drift(deployment_stage.name)
    evidence.data("compared with", {"stage": deployment_stage.name, "directory": str(deployment_stage.directory),
                                    "names mapped (runbook -> deployment)": stages.names or "none"})
    form = stages.cluster_form(deployment_stage.name)
    if form is not None:
        # Either form may keep the runbook's promise; the verdict says which one the deployment uses.
        evidence.data("the members that must run together: the form found", form)
    fail_on_differences(rows, f"{len(rows)} difference(s) from {deployment_stage.name}", evidence=evidence,
                        title=f"differences from {deployment_stage.name} ({len(rows)})")
