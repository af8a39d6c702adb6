#!/bin/bash
# Record the constraint samples in tests/data/pacemaker/ (cib_configuration_*.xml, crm_mon_constraints.xml)
# with the installed pcs (0.11) and pacemaker tools (2.1.5), no cluster daemons: `pcs -f FILE` edits a CIB
# file as it would edit the live one, `CIB_file=FILE cibadmin --query --scope configuration` reads it as the
# harness reads a deployment's.  Each starts from cib_running.xml (the runbook's stage 5: hagroup = VIP +
# haproxy, vmfence).  Not run by the tests; the recorded files are checked in.
set -euo pipefail
OUT=$(cd "$(dirname "$0")" && pwd)/pacemaker
WORK=$(mktemp -d /tmp/hctest-constraints.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

variant() {  # variant NAME PCS-COMMAND... (each a quoted string; none: the CIB as it is)
    local name=$1; shift
    cp "$OUT/cib_running.xml" "$name.xml"
    for command in "$@"; do
        # shellcheck disable=SC2086
        pcs -f "$name.xml" $command > /dev/null 2>&1 || { echo "pcs -f $name.xml $command failed" >&2; exit 1; }
    done
    CIB_file="$name.xml" cibadmin --query --scope configuration > "$OUT/cib_configuration_$name.xml"
}

UNGROUP="resource ungroup hagroup"
COLOCATE="constraint colocation add haproxy with VIP INFINITY"
ORDER="constraint order VIP then haproxy"

variant group                                                  # the runbook's own form
variant ungrouped "$UNGROUP"                                  # nothing ties the members
variant constraints "$UNGROUP" "$COLOCATE" "$ORDER"           # the same meaning, as pcs creates it
variant colocation_reversed "$UNGROUP" "constraint colocation add VIP with haproxy INFINITY" "$ORDER"
variant sets "$UNGROUP" "constraint colocation set VIP haproxy" "constraint order set VIP haproxy"
variant no_order "$UNGROUP" "$COLOCATE"                       # started in no particular order
variant score_100 "$UNGROUP" "constraint colocation add haproxy with VIP 100" "$ORDER"
variant order_optional "$UNGROUP" "$COLOCATE" "constraint order VIP then haproxy kind=Optional"
variant order_reversed "$UNGROUP" "$COLOCATE" "constraint order haproxy then VIP"
variant pinned "constraint location hagroup prefers server1"  # the group, pinned to one node
variant constraints_pinned "$UNGROUP" "$COLOCATE" "$ORDER" "constraint location haproxy prefers server4=INFINITY"

# The constraints' CIB settled and read by crm_mon: both members on one node without a group.
cp "$OUT/cib_running.xml" constraints.xml
for command in "$UNGROUP" "$COLOCATE" "$ORDER"; do
    # shellcheck disable=SC2086
    pcs -f constraints.xml $command > /dev/null
done
crm_simulate -x constraints.xml -S -O settled.xml > /dev/null
CIB_file=settled.xml crm_mon --output-as=xml --include=all --fence-history=3 > "$OUT/crm_mon_constraints.xml"
xmllint --noout --relaxng /usr/share/pacemaker/api/api-result-2.25.rng "$OUT/crm_mon_constraints.xml"
