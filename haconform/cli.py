"""haconform command line: the embedded namespace lab, VMs, the golden list, trends, describe.

    haconform lab up|down|status [--name NAME] [--topology FILE] [--json]
    haconform lab exec [--name NAME] HOST -- CMD...
    haconform lab shell [--name NAME] HOST
    haconform lab power [--name NAME] HOST on|off|reset|crash
    haconform lab nic [--name NAME] HOST up|down
    haconform lab list
    haconform lab install
    haconform vm install|up|down|status|inventory [--name NAME] [--topology FILE]
    haconform vm box build [--force]
    haconform conformance list [--write]
    haconform conformance coverage [--config DIR] [--topology FILE] [--json]
    haconform report [RESULTS] [--compare A B | --targets A B] [--target KIND] [--config-digest PREFIX]
    haconform describe --out DIR [--lab-name NAME | --target ssh --inventory FILE] [--stage S] [--diff]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import HaconformError
from .guard import ReadOnlyRefused
from .redaction import redact


def _lab(args):
    from .lab.lab import NamespaceLab
    from .topology import load_topology

    topology = load_topology(args.topology) if getattr(args, "topology", None) else None
    return NamespaceLab(args.name, topology)


def cmd_up(args) -> int:
    lab = _lab(args)
    result = lab.up(install_packages=not args.no_install)
    print(f"lab {lab.name}: {len(lab.topology.hosts)} hosts up "
          f"({len(result['booted'])} booted) in {result['seconds']:.1f}s")
    return 0


def cmd_install(args) -> int:
    from .lab.lab import require_root
    from .packages import ensure_installed
    require_root()
    installed = ensure_installed()
    print(f"installed: {' '.join(installed)}" if installed else "every Debian package the lab needs is installed")
    return 0


def cmd_down(args) -> int:
    from .lab.lab import NamespaceLab
    lab = NamespaceLab(args.name, for_removal=True) if not args.topology else _lab(args)
    if lab.damaged:
        print(f"haconform: warning: {lab.dir / 'lab.json'} is damaged ({lab.damaged}): removing lab {lab.name} "
              "by its name; its guard route, if any, stays (pass --topology to remove it too)", file=sys.stderr)
    removed = lab.down()
    print(f"lab {lab.name} removed: {len(removed['processes'])} processes, "
          f"{len(removed['netns'])} namespaces, {len(removed['links'])} links, "
          f"{len(removed['mounts'])} mounts")
    return 0


def cmd_status(args) -> int:
    status = _lab(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"lab {status['lab']}: {'present' if status['exists'] else 'absent'} "
          f"(state {status['state_dir']})")
    for name, host in status["hosts"].items():
        print(f"  {name:12} {host['role']:10} {host['address']:15} power={host['power']:8} "
              f"nic={host['nic']:6} boot_id={host['boot_id'] or '-'}")
    return 0


def cmd_exec(args) -> int:
    lab = _lab(args)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise HaconformError("no command given", where="haconform lab exec",
                             fix="haconform lab exec HOST -- CMD...")
    argv = lab.exec_argv(args.host) + command
    os.execvp(argv[0], argv)


def cmd_shell(args) -> int:
    lab = _lab(args)
    argv = lab.exec_argv(args.host) + ["TERM=" + os.environ.get("TERM", "xterm"), "/bin/bash", "-l"]
    os.execvp(argv[0], argv)


def cmd_power(args) -> int:
    _lab(args).power(args.host, args.action)
    print(f"{args.host}: {args.action} done")
    return 0


def cmd_nic(args) -> int:
    _lab(args).set_nic(args.host, args.state)
    print(f"{args.host}: NIC {args.state}")
    return 0


def cmd_list(args) -> int:
    from .lab.lab import list_labs
    for name in list_labs():
        print(name)
    return 0


def cmd_conformance_list(args) -> int:
    from pathlib import Path

    from .conformance import declared, golden_text
    suites = Path("suites")   # the checkout's, from its top directory
    if not suites.is_dir():
        print("haconform: no suites/ here (fix: run `haconform conformance list` from a haconform checkout)",
              file=sys.stderr)
        return 2
    text = golden_text(declared(suites))
    if args.write:
        (suites / "conformance.yaml").write_text(text)
        print(f"wrote {suites / 'conformance.yaml'}")
    else:
        print(text, end="")
    return 0


def cmd_conformance_coverage(args) -> int:
    """Runbook coverage as text (haconform/coverage.py): the same as verdict.json's "coverage"."""
    from pathlib import Path

    from .coverage import coverage_for, coverage_text
    from .topology import load_topology
    config = Path(args.config or "fixtures/documented")
    golden = Path("suites") / "conformance.yaml"
    if not config.is_dir():
        raise HaconformError("not a directory", where=str(config),
                             fix="run from a haconform checkout, or pass --config DIR laid out like "
                                 "fixtures/documented")
    if not golden.is_file():
        raise HaconformError("no golden list", where=str(golden),
                             fix="run `haconform conformance coverage` from a haconform checkout")
    topology_path = Path(args.topology or "fixtures/topology.yaml")
    topology = load_topology(topology_path) if args.topology or topology_path.is_file() else None
    coverage = coverage_for(config, golden, topology)
    print(redact(json.dumps(coverage, indent=1, ensure_ascii=False)) if args.json else redact(coverage_text(coverage)),
          end="\n" if args.json else "")
    return 0


def _vm_env(args):
    from .topology import load_topology
    from .vm.env import VmEnvironment
    return VmEnvironment(args.name, load_topology(args.topology) if args.topology else None)


def _say(message: str) -> None:
    import time
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cmd_vm_install(args) -> int:
    import subprocess

    from .lab.lab import require_root
    from .packages import VM_PACKAGES, ensure_installed
    require_root()
    installed = ensure_installed(VM_PACKAGES)
    print(f"installed: {' '.join(installed)}" if installed else "every Debian package the VM target needs is installed")
    try:
        import vagrant  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "python-vagrant>=1.0"], check=True)
        print("installed: python-vagrant")
    return 0


def cmd_vm_box_build(args) -> int:
    from .vm.box import build_box
    build_box(force=args.force, say=_say)
    return 0


def cmd_vm_up(args) -> int:
    from .targets.vagrant import VagrantTarget
    env = _vm_env(args)
    target = VagrantTarget(env.topology, env.name)
    figures = target.up()
    _say(f"vm {env.name}: guests booted; ssh_config {env.ssh_config} ({figures})")
    return 0


def cmd_vm_down(args) -> int:
    removed = _vm_env(args).down(say=_say)
    _say(f"vm {args.name} removed: " + "; ".join(f"{k}: {len(v)}" for k, v in removed.items()))
    return 0


def cmd_vm_status(args) -> int:
    status = _vm_env(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"vm {status['vm']}: {'present' if status['exists'] else 'absent'} (state {status['state_dir']}, "
          f"libvirtd {status['libvirtd']}, fence_virtd {status['fence_virtd_pid'] or '-'})")
    for name, guest in status["guests"].items():
        print(f"  {name:12} {guest['domain']:8} {guest['address']:15} {guest['state']}")
    for name, host in status["lab_hosts"].items():
        print(f"  {name:12} {'netns':8} {host['address']:15} {host['power']}")
    return 0


def cmd_vm_inventory(args) -> int:
    print(_vm_env(args).inventory(), end="")
    return 0


def cmd_report(args) -> int:
    from .report.target_comparison import report_targets
    from .report.trends import report
    if (args.target or args.config_digest) and args.targets:
        print("haconform report: --target and --config-digest filter the trends; --targets compares two runs "
              "as given (fix: leave the filters out)", file=sys.stderr)
        return 2
    if args.fail_on_failed_session and not args.targets:
        print("haconform report: --fail-on-failed-session needs --targets A B", file=sys.stderr)
        return 2
    try:
        if args.targets:
            return report_targets(*args.targets, results=args.results, out=args.out or "reports/targets.html",
                                  fail_on_failed_session=args.fail_on_failed_session)
        return report(args.results, compare_dirs=args.compare, out=args.out or "reports/trends.html",
                      target=args.target, config_digest=args.config_digest)
    except FileNotFoundError as exc:
        print(f"haconform report: {redact(str(exc))}", file=sys.stderr)
        return 2


def cmd_describe(args) -> int:
    from pathlib import Path

    from .deployment import Deployment
    from .describe import describe, read_only_target
    from .stages.catalogue import documented as documented_stages
    from .topology import load_topology
    if not args.out and not args.diff:
        raise HaconformError("nothing to do", where="haconform describe",
                             fix="pass --out DIR (write the stage data), --diff (print the differences), or both")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HaconformError("exists and is not an empty directory", where=str(out),
                             fix="pass --out a new directory (describe never overwrites)")
    runbook = Path(args.runbook)
    first = documented_stages().names[0]
    if not (runbook / first / "stage.yaml").is_file():
        raise HaconformError(f"not a configuration directory (no {first}/stage.yaml)", where=str(runbook),
                             fix="pass --runbook a directory laid out like fixtures/documented/, or run from a "
                                 "haconform checkout")
    topology = load_topology(args.topology or "fixtures/topology.yaml")
    names = {}
    if args.names:
        from .pytest_plugin import _names
        names = _names(args.names)
    target = read_only_target(args.target, topology, lab_name=args.lab_name, inventory=args.inventory)
    names = {**dict(getattr(getattr(target, "inventory", None), "names", None) or {}), **names}
    try:
        description, manager = describe(Deployment(target), runbook, out, stage=args.stage, names=names)
        rows = manager.drift(description.stage) if args.diff else []
    finally:
        if target.kind == "ssh":
            target.down()   # the multiplexed ssh connections close; nothing on the hosts changes
    where = target.describe()
    print(redact(f"{description.stage} of {runbook}, read from {where.get('lab') or where.get('inventory') or where}"
                 + (f" (chosen by the fewest differences: {description.counts})" if description.counts else "")))
    if description.form:
        print(redact(f"the members that must run together: {description.form['found']} "
                     f"(the runbook: {description.form['documented']}; "
                     f"{'the same meaning' if description.form['same meaning'] else 'not the same meaning'})"))
    if out is not None:
        print(f"wrote {out}: {out / description.stage} ({description.files} files and stage.yaml), "
              f"names.yaml ({len(description.names)} ids differ), README.md")
        for item in description.unsaid:
            print(redact(f"  not said by the stage data: {item}"))
    if args.diff:
        print(f"{len(rows)} difference(s) from {description.stage} (by meaning, the rows HAC-CFG-001 shows):")
        for row in rows:
            print(redact(f"  {row['what']}: expected {row['expected']!r}, found {row['found']!r} ({row['where']})"))
    print(target.guard.statement())
    return 1 if rows else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="haconform", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="area", required=True)
    for add_commands in (_lab_commands, _vm_commands, _conformance_commands, _report_command, _describe_command):
        add_commands(sub)
    return parser


def _lab_commands(sub) -> None:
    lab = sub.add_parser("lab", help="the embedded namespace lab")
    lab_sub = lab.add_subparsers(dest="action", required=True)

    def add(name, func, help_text):
        p = lab_sub.add_parser(name, help=help_text)
        p.add_argument("--name", default="haconform", help="lab name (default: haconform)")
        p.add_argument("--topology", help="topology file (default: fixtures/topology.yaml)")
        p.set_defaults(func=func)
        return p

    up = add("up", cmd_up, "create the lab and boot every host")
    up.add_argument("--no-install", action="store_true",
                    help="fail instead of installing missing Debian packages")
    add("install", cmd_install, "install the Debian packages lab hosts run (starts no daemon)")
    add("down", cmd_down, "remove everything the lab made")
    st = add("status", cmd_status, "hosts, power state, boot ids")
    st.add_argument("--json", action="store_true")
    ex = add("exec", cmd_exec, "run a command in a host")
    ex.add_argument("host")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    sh = add("shell", cmd_shell, "interactive shell in a host")
    sh.add_argument("host")
    pw = add("power", cmd_power, "power a host on, off, reset it, or crash it")
    pw.add_argument("host")
    pw.add_argument("action", choices=["on", "off", "reset", "crash"])
    nic = add("nic", cmd_nic, "plug or pull a host's network cable")
    nic.add_argument("host")
    nic.add_argument("state", choices=["up", "down"])
    add("list", cmd_list, "labs present on this machine")


def _vm_commands(sub) -> None:
    vm = sub.add_parser("vm", help="the VM target: Vagrant/libvirt guests (--target vagrant)")
    vm_sub = vm.add_subparsers(dest="action", required=True)

    def add_vm(parent, name, func, help_text):
        p = parent.add_parser(name, help=help_text)
        p.add_argument("--name", default=os.environ.get("HACONFORM_VM_NAME", "hacvm"),
                       help="VM environment name (default: hacvm)")
        p.add_argument("--topology", help="topology file (default: fixtures/topology.yaml)")
        p.set_defaults(func=func)
        return p

    add_vm(vm_sub, "install", cmd_vm_install, "install vagrant, libvirt, qemu, fence_virtd, python-vagrant")
    add_vm(vm_sub, "up", cmd_vm_up, "start libvirt, the guests, the fence and client hosts")
    add_vm(vm_sub, "down", cmd_vm_down, "remove guests, networks, volumes, chains, daemons we started")
    vm_status = add_vm(vm_sub, "status", cmd_vm_status, "guests and their libvirt state")
    vm_status.add_argument("--json", action="store_true")
    add_vm(vm_sub, "inventory", cmd_vm_inventory, "an inventory for --target ssh reaching the running guests")
    box = vm_sub.add_parser("box", help="the Vagrant box")
    box_sub = box.add_subparsers(dest="box_action", required=True)
    build = box_sub.add_parser("build", help="build the box offline (only when its inputs changed)")
    build.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
    build.set_defaults(func=cmd_vm_box_build)


def _conformance_commands(sub) -> None:
    conf = sub.add_parser("conformance", help="the golden list of conformance tests")
    conf_sub = conf.add_subparsers(dest="action", required=True)
    listing = conf_sub.add_parser("list", help="print (or --write) suites/conformance.yaml")
    listing.add_argument("--write", action="store_true")
    listing.set_defaults(func=cmd_conformance_list)
    cover = conf_sub.add_parser("coverage", help="runbook coverage: each section's MUSTs, each documented setting's "
                                                 "MUSTs, the settings only the configuration diff checks")
    cover.add_argument("--config", help="the stages, laid out like fixtures/documented (default: that)")
    cover.add_argument("--topology", help="topology file (default: fixtures/topology.yaml)")
    cover.add_argument("--json", action="store_true", help="as verdict.json's \"coverage\"")
    cover.set_defaults(func=cmd_conformance_coverage)


def _report_command(sub) -> None:
    rep = sub.add_parser("report", help="trends across kept runs (reports/trends.html); --compare A B: what changed; "
                                        "--targets A B: one commit on two targets side by side")
    rep.add_argument("results", nargs="?", default="results",
                     help="the kept runs, one results/<timestamp>/ each (default: results)")
    pair = rep.add_mutually_exclusive_group()
    pair.add_argument("--compare", nargs=2, metavar=("A", "B"),
                      help="two run directories (or names under RESULTS): print what changed from A to B; "
                           "exit 1 when a verdict flipped from held to broken")
    pair.add_argument("--targets", nargs=2, metavar=("A", "B"),
                      help="two conformance runs of one commit on two targets (the nightly: the lab's, then the "
                           "VM's): results/<timestamp> directories, names under RESULTS, or the directories their "
                           "--junitxml wrote verdict.json into; prints bring-up, wall time, calibration, each "
                           "MUST's figures and waits side by side and writes reports/targets.html")
    rep.add_argument("--fail-on-failed-session", action="store_true",
                     help="with --targets: exit 1 when either run's pytest session did not exit 0 (as its "
                          "verdict.json records)")
    rep.add_argument("--target", metavar="KIND[:NAME]",
                     help="only the runs on this target: lab, vagrant or ssh, optionally with the lab's, VM's or "
                          "inventory's name (lab:haconform, ssh:prod.yaml)")
    rep.add_argument("--config-digest", metavar="PREFIX",
                     help="only the runs whose configuration directory had this digest (its first hex digits, as "
                          "the runs table shows them)")
    rep.add_argument("--out", default=None,
                     help="the page (default: reports/trends.html; with --targets: reports/targets.html)")
    rep.set_defaults(func=cmd_report)


def _describe_command(sub) -> None:
    desc = sub.add_parser("describe", help="a live deployment written down as stage data (read-only); --diff: its "
                                           "differences from the runbook's stage, by meaning")
    desc.add_argument("--out", help="a new directory for the configuration (laid out like fixtures/documented/)")
    desc.add_argument("--diff", action="store_true",
                      help="print the differences from the documented stage (the rows HAC-CFG-001 shows); "
                           "exit 1 when there are any")
    desc.add_argument("--target", choices=["lab", "ssh", "vagrant"], default="lab")
    desc.add_argument("--lab-name", default=os.environ.get("HACONFORM_LAB", "haconform"),
                      help="the lab to read (--target lab; default haconform)")
    desc.add_argument("--inventory", help="how to reach the deployment's hosts (--target ssh)")
    desc.add_argument("--topology", help="topology file (default: fixtures/topology.yaml)")
    desc.add_argument("--runbook", default="fixtures/documented",
                      help="the documented stages to compare with (default: fixtures/documented)")
    desc.add_argument("--stage", help="the stage the deployment is at (default: the one it differs least from)")
    desc.add_argument("--names", help="YAML: the runbook's names -> the deployment's (added to those found)")
    desc.set_defaults(func=cmd_describe)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HaconformError as exc:
        print(f"haconform: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except ReadOnlyRefused as exc:
        print(f"haconform: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A path given on the command line that cannot be read or written (--out in a read-only place).
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"haconform: error: {where}{exc.strerror or exc} (fix: check the path and its permissions)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
