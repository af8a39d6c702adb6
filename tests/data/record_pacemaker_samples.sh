#!/bin/bash
# Re-record the Pacemaker samples in tests/data/pacemaker/ with the installed
# pacemaker tools (2.1.5) and no cluster daemons: crm_simulate computes and
# "executes" transitions on a CIB file, then crm_mon / crm_verify read that file
# through CIB_file.  The CIBs are the runbook's cluster (server1, server4,
# hagroup = VIP + haproxy, vmfence).  Not run by the tests; the recorded files
# are checked in.  Fence history cannot come from a CIB file: see README.md.
set -euo pipefail
OUT=$(cd "$(dirname "$0")" && pwd)/pacemaker
WORK=$(mktemp -d /tmp/hctest-pcmk.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

CIB_HEAD='<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.9" epoch="12" num_updates="0" admin_epoch="0" cib-last-written="Wed Nov 26 11:40:00 2025" update-origin="server1" update-client="cibadmin" update-user="root" have-quorum="1" dc-uuid="1">'
STONITH='<primitive class="stonith" id="vmfence" type="fence_xvm">
        <instance_attributes id="vmfence-instance_attributes">
          <nvpair id="vmfence-instance_attributes-pcmk_host_map" name="pcmk_host_map" value="server1:Node1;server4:Node4"/>
        </instance_attributes>
        <operations><op id="vmfence-monitor-interval-30s" interval="30s" name="monitor"/></operations>
      </primitive>'
GROUP='<group id="hagroup">
        <primitive class="ocf" id="VIP" provider="heartbeat" type="IPaddr2">
          <instance_attributes id="VIP-instance_attributes">
            <nvpair id="VIP-instance_attributes-cidr_netmask" name="cidr_netmask" value="24"/>
            <nvpair id="VIP-instance_attributes-ip" name="ip" value="172.25.5.100"/>
          </instance_attributes>
          <operations><op id="VIP-monitor-interval-30s" interval="30s" name="monitor"/></operations>
        </primitive>
        <primitive class="service" id="haproxy" type="haproxy">
          <operations><op id="haproxy-monitor-interval-60s" interval="60s" name="monitor"/></operations>
        </primitive>
      </group>'
ONLINE='<node_state id="1" uname="server1" in_ccm="true" crmd="online" crm-debug-origin="do_update_resource" join="member" expected="member"/>
    <node_state id="2" uname="server4" in_ccm="true" crmd="online" crm-debug-origin="do_update_resource" join="member" expected="member"/>'

cib() {  # cib FILE PROPERTIES RESOURCES STATUS
    cat > "$1" <<CIB
$CIB_HEAD
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-cluster-name" name="cluster-name" value="TestCluster"/>
        $2
      </cluster_property_set>
    </crm_config>
    <nodes>
      <node id="1" uname="server1"/>
      <node id="2" uname="server4"/>
    </nodes>
    <resources>
      $3
    </resources>
    <constraints/>
  </configuration>
  <status>
    $4
  </status>
</cib>
CIB
}
mon() { CIB_file="$1" crm_mon --output-as=xml --include=all --fence-history=3 > "$OUT/$2"; }
settle() { crm_simulate -x "$1" -S -O "$2" > /dev/null; }

# Stage 4/5 steady state: both nodes online, group and fence device started.
cib online.xml '' "$STONITH $GROUP" "$ONLINE"
settle online.xml running.xml
mon running.xml crm_mon_running.xml

# haproxy's monitor finds it stopped on the active node: failure, fail count, recovery.
active=$(CIB_file=running.xml crm_resource --locate --resource haproxy 2>/dev/null | sed -n 's/.*running on: //p')
crm_simulate -x running.xml -i "haproxy_monitor_60000@${active}=7" -S -O monfail.xml > /dev/null
mon monfail.xml crm_mon_monitor_failed.xml

# pcs node standby on the active node: the group moves to the other one.
cp running.xml standby.xml
CIB_file=standby.xml crm_attribute --node "$active" --name standby --update on
settle standby.xml standby-settled.xml
mon standby-settled.xml crm_mon_standby.xml

# The active node is lost (crash / split brain): it is fenced, the group moves.
crm_simulate -x running.xml --node-fail "$active" -S -O lost.xml > /dev/null
mon lost.xml crm_mon_node_lost.xml

# A partition without quorum: server4 gone, have-quorum=0, resources stopped.
sed -e 's/have-quorum="1"/have-quorum="0"/' running.xml > noquorum-in.xml
python3 - noquorum-in.xml <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s = re.sub(r'<node_state id="2"[^>]*?(/?)>', lambda m: '<node_state id="2" uname="server4" in_ccm="false" crmd="offline" join="down" expected="down"' + m.group(1) + '>', s)
open(p, "w").write(s)
PY
settle noquorum-in.xml noquorum.xml
mon noquorum.xml crm_mon_no_quorum.xml

# No DC elected yet, both nodes UNCLEAN: a cluster that has not formed.
cib nodc.xml '' "$STONITH $GROUP" ''
sed -i -e 's/ dc-uuid="1"//' nodc.xml
mon nodc.xml crm_mon_no_dc.xml

# Clones, a promotable clone, an unmanaged resource, a node in maintenance.
CLONES='<clone id="ping-clone"><primitive class="ocf" id="ping" provider="pacemaker" type="Dummy"/></clone>
      <clone id="state-clone">
        <meta_attributes id="state-clone-meta"><nvpair id="state-clone-promotable" name="promotable" value="true"/></meta_attributes>
        <primitive class="ocf" id="state" provider="pacemaker" type="Stateful"/>
      </clone>
      <primitive class="ocf" id="frozen" provider="pacemaker" type="Dummy">
        <meta_attributes id="frozen-meta"><nvpair id="frozen-managed" name="is-managed" value="false"/></meta_attributes>
      </primitive>'
cib clones-in.xml '' "$STONITH $GROUP $CLONES" "$ONLINE"
settle clones-in.xml clones.xml
CIB_file=clones.xml crm_attribute --node server1 --name maintenance --update true --lifetime forever
mon clones.xml crm_mon_clones.xml

# The runbook's crm_verify -LV before `pcs property set stonith-enabled=false`.
cib nostonith.xml '' "$GROUP" "$ONLINE"
crm_verify -x nostonith.xml -V --output-as=xml > "$OUT/crm_verify_no_stonith.xml" 2> "$OUT/crm_verify_no_stonith.stderr" || echo $? > "$OUT/crm_verify_no_stonith.rc"
crm_verify -x running.xml -V --output-as=xml > "$OUT/crm_verify_ok.xml" 2> "$OUT/crm_verify_ok.stderr" && echo 0 > "$OUT/crm_verify_ok.rc"

# CONSTRUCTED, not recorded: fence history comes from pacemaker-fenced, which
# cannot run here.  The elements follow pacemaker 2.1.5's
# lib/fencing/st_output.c stonith_event_xml (status success|failed|pending,
# extended-status for pending, completed as crm_time_as_string "YYYY-MM-DD
# hh:mm:ss" + "Z" or " +hh:mm"), crm_mon's <fence_history> list and
# stonith_admin's <list name="fencing history"> (lib/common/output_xml.c);
# both validate against api-result-2.25.rng below.
python3 - "$OUT" <<'PY'
import sys
out = sys.argv[1]
lost = open(f"{out}/crm_mon_node_lost.xml").read()
history = """  <fence_history>
    <fence_event action="reboot" target="server4" client="pacemaker-controld.1207" origin="server1" status="success" delegate="server1" completed="2025-11-26 11:41:07 +08:00"/>
    <fence_event action="reboot" target="server4" client="pacemaker-controld.1207" origin="server1" status="failed" delegate="server1" completed="2025-11-26 11:40:49 +08:00"/>
    <fence_event action="off" target="server1" client="stonith_admin.2231" origin="server4" status="pending" extended-status="2"/>
  </fence_history>
"""
assert '  <status code="0"' in lost
open(f"{out}/crm_mon_fenced.xml", "w").write(lost.replace('  <status code="0"', history + '  <status code="0"', 1))
open(f"{out}/stonith_admin_history.xml", "w").write("""<pacemaker-result api-version="2.25" request="stonith_admin --history * --verbose --output-as=xml">
  <list name="fencing history" count="2">
    <fence_event action="reboot" target="server4" client="pacemaker-controld.1207" origin="server1" status="success" delegate="server1" completed="2025-11-26 03:41:07Z"/>
    <fence_event action="reboot" target="server1" client="stonith_admin.3310" origin="server4" status="failed" exit-reason="Fence agent did not complete in time" delegate="server4" completed="2025-11-26 03:20:00Z"/>
  </list>
  <status code="0" message="OK"/>
</pacemaker-result>
""")
PY

# What the tools print on a machine where no cluster runs (recorded).
( crm_mon --output-as=xml --include=all --fence-history=3 > "$OUT/crm_mon_not_connected.xml" 2>/dev/null || true )
( stonith_admin --history '*' --verbose --output-as=xml > "$OUT/stonith_admin_not_connected.xml" 2>/dev/null || true )

# Two CIBs kept for tests that run the real crm_mon/crm_verify with CIB_file.
cp running.xml "$OUT/cib_running.xml"
cp nostonith.xml "$OUT/cib_no_stonith.xml"

crm_mon --version | head -1 > "$OUT/VERSION"
for f in "$OUT"/crm_mon_*.xml "$OUT"/crm_verify_*.xml "$OUT"/stonith_admin_*.xml; do
    xmllint --noout --relaxng /usr/share/pacemaker/api/api-result-2.25.rng "$f"
done
