#!/bin/bash
# Re-record the HAProxy samples in tests/data/haproxy/ from a real haproxy 2.6
# and rsyslog 8, run inside a throwaway network namespace (hctest-readers) so
# nothing listens or sends in the machine's own namespace.  Not run by the
# tests: the recorded files are checked in.  Run as root:
#     bash tests/data/record_haproxy_samples.sh
set -euo pipefail

NS=hctest-readers
WORK=$(mktemp -d /tmp/hctest-readers.XXXXXX)
OUT=${OUT:-$(cd "$(dirname "$0")" && pwd)/haproxy}
mkdir -p "$OUT" "$WORK/spool" "$WORK/www2" "$WORK/www3"
echo app1 > "$WORK/www2/index.html"
echo app2 > "$WORK/www3/index.html"
mkdir -p "$WORK/www3/images" && echo gif > "$WORK/www3/images/a.gif"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up

# The runbook's stage-2 configuration, ported to 2.6 syntax (bind lines),
# on loopback addresses of the private namespace.
cat > "$WORK/haproxy.cfg" <<CFG
global
    log 127.0.0.1 local2
    maxconn 4000
    stats socket $WORK/stats level admin
defaults
    mode http
    log global
    option httplog
    option dontlognull
    option http-server-close
    option forwardfor except 127.0.0.0/8
    option redispatch
    retries 3
    timeout http-request 10s
    timeout queue 1m
    timeout connect 10s
    timeout client 1m
    timeout server 1m
    timeout http-keep-alive 10s
    timeout check 10s
    maxconn 3000
frontend main
    bind 127.0.0.1:80
    acl url_static path_beg -i /static /images /javascript /stylesheets
    acl url_static path_end -i .jpg .gif .png .css .js
    use_backend static if url_static
    default_backend app
backend static
    balance roundrobin
    server app2 127.0.0.3:80 check inter 500
backend app
    balance roundrobin
    server app1 127.0.0.2:80 check inter 500
    server app3 127.0.0.4:80 check inter 500
    server app4 127.0.0.2:80 weight 3
listen stats
    bind 127.0.0.1:8080
    stats uri /status
    stats auth admin:password
CFG

cat > "$WORK/rsyslog.conf" <<CFG
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="514")
\$WorkDirectory $WORK/spool
local2.* $WORK/haproxy.log
local2.* $WORK/haproxy-traditional.log;RSYSLOG_TraditionalFileFormat
CFG

# `ip netns exec` execs the command, so $! is the daemon itself (a shell
# function here would leave the daemon orphaned when its subshell is killed).
ip netns exec "$NS" rsyslogd -n -f "$WORK/rsyslog.conf" -i "$WORK/rsyslog.pid" & pids+=($!)
ip netns exec "$NS" python3 -m http.server --bind 127.0.0.2 80 --directory "$WORK/www2" \
    >/dev/null 2>&1 & pids+=($!)
ip netns exec "$NS" python3 -m http.server --bind 127.0.0.3 80 --directory "$WORK/www3" \
    >/dev/null 2>&1 & pids+=($!)
ip netns exec "$NS" haproxy -db -f "$WORK/haproxy.cfg" 2>/dev/null & pids+=($!)

cli() { echo "$1" | socat stdio "UNIX-CONNECT:$WORK/stats"; }
# Bounded poll (a recording script, not a test): app1 and app2 UP, app3 DOWN.
for _ in $(seq 150); do
    stat=$(cli "show stat" 2>/dev/null || true)
    grep -q '^app,app1,.*,UP,' <<<"$stat" && grep -q '^static,app2,.*,UP,' <<<"$stat" &&
        grep -q '^app,app3,.*,DOWN,' <<<"$stat" && break
    sleep 0.1
done

in_ns curl -s -o /dev/null http://127.0.0.1/
in_ns curl -s -o /dev/null http://127.0.0.1/images/a.gif
in_ns curl -s -o /dev/null -X POST --data x=1 http://127.0.0.1/upload_file.php
in_ns curl -s -o /dev/null -I http://127.0.0.1/
in_ns curl -s -o /dev/null "http://127.0.0.1/q?a=%22x%20y%22"
in_ns curl -s -o /dev/null http://127.0.0.1:8080/status
in_ns curl -s -o /dev/null http://127.0.0.1/
cli "disable server static/app2" >/dev/null
in_ns curl -s -o /dev/null http://127.0.0.1/images/a.gif

cli "show info" > "$OUT/show_info.txt"
cli "show stat" > "$OUT/show_stat.csv"
cli "show servers state" > "$OUT/show_servers_state.txt"
in_ns curl -s -u admin:password "http://127.0.0.1:8080/status;csv" > "$OUT/status_page.csv"
in_ns curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:8080/status;csv" > "$OUT/status_page_noauth.code"

for _ in $(seq 100); do
    [ "$(grep -c . "$WORK/haproxy.log" 2>/dev/null || echo 0)" -ge 7 ] && break
    sleep 0.1
done
cp "$WORK/haproxy.log" "$OUT/haproxy_rfc3339.log"
cp "$WORK/haproxy-traditional.log" "$OUT/haproxy_traditional.log"
haproxy -v | head -1 > "$OUT/VERSION"
rsyslogd -v | head -1 >> "$OUT/VERSION"
