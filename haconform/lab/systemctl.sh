#!/bin/sh
# systemctl of a haconform lab host.
#
# Lab hosts boot with haconform's own init (haconform/lab/init.py), which runs
# the SysV scripts enabled in /etc/rc2.d.  Tools that drive services through
# systemctl (pcs 0.11 does, and the runbook's `systemctl stop haproxy`) get
# this translation onto /etc/init.d and update-rc.d.  It is installed in the
# host's own disk at first boot; the machine's systemctl is untouched.
set -u
action=""
units=""
for arg in "$@"; do
    case "$arg" in
        -*) ;;                                   # --quiet, --no-pager, --full, ...
        *) if [ -z "$action" ]; then action=$arg; else units="$units ${arg%.service}"; fi ;;
    esac
done

rc=0
case "$action" in
    start|stop|restart|reload|force-reload|status)
        for u in $units; do
            [ -x "/etc/init.d/$u" ] || { echo "Unit $u.service not found." >&2; exit 5; }
            "/etc/init.d/$u" "$action" || rc=$?
        done ;;
    try-restart|condrestart)
        for u in $units; do
            if "/etc/init.d/$u" status >/dev/null 2>&1; then "/etc/init.d/$u" restart || rc=$?; fi
        done ;;
    is-active)
        for u in $units; do
            if [ -x "/etc/init.d/$u" ] && "/etc/init.d/$u" status >/dev/null 2>&1; then echo active
            else echo inactive; rc=3; fi
        done ;;
    is-enabled)
        for u in $units; do
            if ls /etc/rc2.d/S??"$u" >/dev/null 2>&1; then echo enabled; else echo disabled; rc=1; fi
        done ;;
    enable|disable)
        # update-rc.d calls back into systemctl with this set: its SysV links are the whole job.
        [ -n "${SYSTEMCTL_SKIP_SYSV:-}" ] && exit 0
        for u in $units; do update-rc.d "$u" "$action" >/dev/null || rc=$?; done ;;
    list-unit-files)
        echo "UNIT FILE STATE"
        for script in /etc/init.d/*; do
            u=${script##*/}
            case "$u" in README|rc|rcS|skeleton) continue ;; esac
            if ls /etc/rc2.d/S??"$u" >/dev/null 2>&1; then s=enabled; else s=disabled; fi
            echo "$u.service $s"
        done ;;
    daemon-reload|reset-failed|mask|unmask) ;;
    *) echo "systemctl (haconform lab): '$action' is not supported" >&2; rc=1 ;;
esac
exit $rc
