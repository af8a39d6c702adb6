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

crm_mon --version | head -1 > "$OUT/VERSION"
for f in "$OUT"/crm_mon_*.xml "$OUT"/crm_verify_*.xml; do
    xmllint --noout --relaxng /usr/share/pacemaker/api/api-result-2.25.rng "$f"
done
