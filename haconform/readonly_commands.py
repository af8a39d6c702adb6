"""The read-only allow-list: which shell commands may reach a deployment's hosts in a read-only run.

    judge("crm_mon --one-shot --output-as=xml")          -> Verdict(read_only=True, rule="crm_mon: ...")
    judge("pcs node standby server1")                    -> Verdict(read_only=False, why="...")

A command is parsed as the shell would parse it (bashlex), never matched as a
string.  It is read-only when every simple command in it, in pipelines,
lists, conditionals, loops and command substitutions alike, is:
  - a program named by a literal word (not `$X`), found in the system's own
    directories when given by path;
  - allowed by that program's rule in RULES below, with its arguments as the
    shell will pass them (an argument the shell only knows when it runs, like
    `$X` or `$(...)`, counts as unknown, and a rule that looks at arguments
    refuses what it cannot know);
  - redirected nowhere but /dev/null or another descriptor (`<` reads, and is fine);
  - not a function definition, and not setting a variable that changes what
    later commands run (PATH, LD_*, IFS, ...).
Wrappers (`timeout`, `exec`, `env`, `nice`, `sh -c STRING`, `command`) are
looked through to the command they run.

The harness's own programs that take code as an argument (the client agent,
the stats-socket client, the calibration's probes) are allowed by their exact
source text, registered by the module that builds them (harness_program).
"""

from __future__ import annotations

import contextvars
import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Callable

import bashlex

# Directories a program may be named from by path: the system's own, not a file anyone could have put there.
SYSTEM_DIRECTORIES = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin",
                      "/etc/init.d", "/usr/lib/ocf/resource.d")
# Variables a command may be given in front of it: locale, terminal, pacemaker's CIB_file (read a saved CIB
# instead of the live one) and an OCF agent's environment.
PREFIX_VARIABLES = re.compile(r"(LC_[A-Z]+|LANG|LANGUAGE|TZ|TERM|COLUMNS|CIB_file|OCF_ROOT|OCF_RESOURCE_INSTANCE"
                              r"|OCF_RESKEY_\w+)")
# Variables whose value decides which program runs or how the shell reads the rest.
DANGEROUS_VARIABLES = re.compile(r"(PATH|IFS|ENV|BASH_ENV|SHELLOPTS|BASHOPTS|CDPATH|PS4|LD_\w+|PYTHON\w*|"
                                 r"PERL\w*|RUBY\w*|GCONV_PATH|HOSTALIASES|LOCALDOMAIN|RES_OPTIONS|TMPDIR)")
OUTPUT_REDIRECTS = {">", ">>", ">|", "&>", "&>>", "<>", ">&"}


class Unknown(str):
    """An argument whose value the shell only knows when it runs ($X, $(...), `...`)."""


UNKNOWN = Unknown("<unknown until run>")


@dataclass(frozen=True)
class Verdict:
    read_only: bool
    rule: str = ""      # why it is allowed (the rules that let each program through)
    why: str = ""       # why it is not


class NotReadOnly(Exception):
    pass


# ----- the harness's own programs that carry code in an argument ----------------------------------------

_HARNESS_PROGRAMS: dict[tuple[str, str], str] = {}


def harness_program(interpreter: str, source: str, why: str) -> str:
    """Allow `INTERPRETER -c|-r SOURCE ...` for exactly this source text; returns source, so a module
    can register a constant where it defines it."""
    _HARNESS_PROGRAMS[(interpreter, source)] = why
    return source


# ----- rules -----------------------------------------------------------------------------------------------

Rule = Callable[[list[str]], str]   # the arguments -> a description of what was allowed; raises NotReadOnly


def _literal(args: list[str], program: str) -> None:
    for arg in args:
        if isinstance(arg, Unknown):
            raise NotReadOnly(f"{program} with an argument only known when it runs: which {program} it is "
                              "cannot be told beforehand")


def _flags(args: list[str]) -> list[str]:
    return [a for a in args if not isinstance(a, Unknown) and a.startswith("-") and a != "-"]


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0]


def _forbid(program: str, args: list[str], forbidden: set[str], *, short: str = "") -> None:
    """forbidden: long and short flags that write; short: letters that write anywhere in a bundle (-rf)."""
    for arg in args:
        if isinstance(arg, Unknown):
            if arg.startswith("-"):
                raise NotReadOnly(f"{program} with an option only known when it runs")
            continue
        name = _flag_name(arg)
        if name in forbidden:
            raise NotReadOnly(f"`{program} {name}` writes")
        if short and arg.startswith("-") and not arg.startswith("--"):
            written = set(arg[1:]) & set(short)
            if written:
                raise NotReadOnly(f"`{program} -{''.join(sorted(written))}` writes")


def reads_anything(program: str) -> Rule:
    def rule(args: list[str]) -> str:
        return f"{program} reads"
    return rule


def reads_without(program: str, forbidden: set[str], *, short: str = "", literal: bool = False) -> Rule:
    def rule(args: list[str]) -> str:
        if literal:
            _literal(args, program)
        _forbid(program, args, forbidden, short=short)
        return f"{program} without {sorted(forbidden)}"
    return rule


def positionals(args: list[str], takes_value: set[str] = frozenset()) -> list[str]:
    """The arguments that are not options (an option in takes_value eats the next word)."""
    found, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--":
            continue
        if not isinstance(arg, Unknown) and arg.startswith("-") and arg != "-":
            skip = arg in takes_value
            continue
        found.append(arg)
    return found


def subcommands(program: str, allowed: tuple[tuple[str, ...], ...], *, takes_value: set[str] = frozenset(),
                forbidden: set[str] = frozenset()) -> Rule:
    """The words after the options must begin with one of `allowed` (a prefix of words; () allows the
    program with no subcommand)."""
    def rule(args: list[str]) -> str:
        _literal(args, program)
        _forbid(program, args, set(forbidden))
        words = positionals(args, takes_value)
        for prefix in sorted(allowed, key=len, reverse=True):
            if tuple(words[:len(prefix)]) == prefix and (prefix or not words):
                return f"{program} {' '.join(prefix)}".strip()
        raise NotReadOnly(f"`{program} {' '.join(words[:3])}` is not one of {program}'s read-only subcommands "
                          f"{[' '.join(p) for p in allowed]}")
    return rule


def needs_one_of(program: str, required: set[str], forbidden: set[str] = frozenset(), *,
                 allowed_only: set[str] | None = None) -> Rule:
    """One of `required` (a query flag) must be there, none of `forbidden`; allowed_only: every flag must be
    one of these (for tools whose other flags write)."""
    def rule(args: list[str]) -> str:
        _literal(args, program)
        flags = {_flag_name(f) for f in _flags(args)}
        _forbid(program, args, set(forbidden))
        if allowed_only is not None and not flags <= allowed_only:
            raise NotReadOnly(f"{program} {sorted(flags - allowed_only)}: only {sorted(allowed_only)} are read-only")
        if not flags & required:
            raise NotReadOnly(f"{program} without one of {sorted(required)} may change the cluster")
        return f"{program} {sorted(flags & required)[0]}"
    return rule


def ip_rule(args: list[str]) -> str:
    """ip [OPTIONS] OBJECT [show|list|get ...]: reading links, addresses, routes, neighbours."""
    _literal(args, "ip")
    words = [a for a in args if not a.startswith("-")]
    objects = {"link", "l", "addr", "address", "a", "route", "r", "ro", "neigh", "neighbour", "n", "rule",
               "maddr", "maddress", "netns"}
    if not words or words[0] not in objects:
        raise NotReadOnly(f"`ip {' '.join(words[:2])}` is not a read of links, addresses or routes")
    verb = words[1] if len(words) > 1 else "show"
    reads = {"show", "list", "ls", "lst", "sh", "get", "dev"} | ({"identify", "list-id"} if words[0] == "netns" else set())
    if verb not in reads:
        raise NotReadOnly(f"`ip {words[0]} {verb}` changes the host's network")
    return f"ip {words[0]} {verb}"


def curl_rule(args: list[str]) -> str:
    """curl fetching (GET/HEAD) to stdout: no body sent, no file written."""
    _literal(args, "curl")
    for index, arg in enumerate(args):
        name = _flag_name(arg)
        if name in {"-d", "--data", "--data-raw", "--data-binary", "--data-urlencode", "--data-ascii", "-F", "--form",
                    "--form-string", "-T", "--upload-file", "--json", "-O", "--remote-name", "--remote-name-all",
                    "-K", "--config", "-c", "--cookie-jar", "--create-dirs", "--trace", "--trace-ascii",
                    "--libcurl", "--etag-save", "--hsts", "--alt-svc", "-J", "--remote-header-name"}:
            raise NotReadOnly(f"`curl {name}` sends a body or writes a file")
        if name in {"-X", "--request"}:
            method = arg.split("=", 1)[1] if "=" in arg else (args[index + 1] if index + 1 < len(args) else "")
            if method.upper() not in ("GET", "HEAD"):
                raise NotReadOnly(f"`curl -X {method}` is not a read")
        if name in {"-o", "--output", "-D", "--dump-header", "--stderr"}:
            into = arg.split("=", 1)[1] if "=" in arg else (args[index + 1] if index + 1 < len(args) else "")
            if into not in ("-", "/dev/null"):
                raise NotReadOnly(f"`curl {name} {into}` writes a file")
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            bundle = set(arg[1:])
            if bundle & set("dFTOKcJ"):
                raise NotReadOnly(f"`curl {arg}` sends a body or writes a file")
    return "curl GET to stdout"


def haproxy_rule(args: list[str]) -> str:
    """haproxy -c (check a configuration), or its version: never a running proxy."""
    _literal(args, "haproxy")
    flags = {_flag_name(f) for f in _flags(args)}
    if flags & {"-v", "-vv", "-V"} and not flags - {"-v", "-vv", "-V", "-q"}:
        return "haproxy -v"
    if "-c" not in flags:
        raise NotReadOnly("haproxy without -c would start a proxy")
    extra = flags - {"-c", "-f", "-q", "-V", "-dW", "-dr", "-d"}
    if extra:
        raise NotReadOnly(f"haproxy -c with {sorted(extra)}")
    return "haproxy -c"


STATS_VERB = re.compile(r"show [a-z][\w .:/-]*|help")


def stats_verbs_read_only(data: str) -> bool:
    lines = [line.strip() for line in re.split(r"[;\n]", data) if line.strip()]
    return bool(lines) and all(STATS_VERB.fullmatch(line) for line in lines)


def socat_rule_for(stdin: str | None) -> Rule:
    """socat between its stdio and a UNIX socket (HAProxy's stats socket), its input one of `show ...`."""
    def rule(args: list[str]) -> str:
        _literal(args, "socat")
        addresses = positionals(args, {"-t", "-T", "-b"})
        if len(addresses) != 2 or addresses[0] not in ("stdio", "STDIO", "-") \
                or not re.match(r"(?i)unix(-connect|-client)?:", addresses[1]):
            raise NotReadOnly(f"socat {' '.join(addresses)}: only stdio to a UNIX socket (the stats socket) is a read")
        if stdin is None or not stats_verbs_read_only(stdin):
            raise NotReadOnly(f"socat to {addresses[1]} with input {stdin!r}: only `show ...` verbs are read-only")
        return "socat stdio UNIX-CONNECT (show verbs)"
    return rule


def service_rule(args: list[str]) -> str:
    _literal(args, "service")
    if args in (["--status-all"],) or (len(args) == 2 and args[1] == "status"):
        return "service NAME status"
    raise NotReadOnly(f"`service {' '.join(args)}` is not `service NAME status`")


def init_script_rule(name: str) -> Rule:
    def rule(args: list[str]) -> str:
        _literal(args, name)
        if args == ["status"]:
            return f"{name} status"
        raise NotReadOnly(f"`{name} {' '.join(args)}` is not `{name} status`")
    return rule


def ocf_agent_rule(name: str) -> Rule:
    def rule(args: list[str]) -> str:
        if args == ["meta-data"]:
            return "OCF agent meta-data"
        raise NotReadOnly(f"`{name} {' '.join(map(str, args))}`: only an OCF agent's meta-data is read-only")
    return rule


def fence_xvm_rule(args: list[str]) -> str:
    """fence_xvm's default action is reboot: the action must be given, and be a read."""
    _literal(args, "fence_xvm")
    action = None
    for index, arg in enumerate(args):
        if arg == "-o" and index + 1 < len(args):
            action = args[index + 1]
        elif arg.startswith("--action="):
            action = arg.split("=", 1)[1]
        elif arg.startswith("-o") and len(arg) > 2:
            action = arg[2:]
    if action not in ("list", "status", "monitor", "metadata", "validate-all"):
        raise NotReadOnly(f"fence_xvm -o {action or '(none: reboot)'} fences a node")
    return f"fence_xvm -o {action}"


# The PIDs the current judge() may let `kill` signal (its own_pids).
_OWN_PIDS: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("own_pids", default=frozenset())


def kill_rule(args: list[str]) -> str:
    """kill -SIGNAL PID...: only processes the harness started in this host itself (a capture it stops)."""
    _literal(args, "kill")
    pids = [a for a in args if not a.startswith("-")]
    own = _OWN_PIDS.get()
    if not pids or not all(p.isdigit() and int(p) in own for p in pids):
        raise NotReadOnly(f"kill {' '.join(pids)}: not a process the harness started in this host")
    return "kill of the harness's own process"


def version_only(program: str, flags: set[str]) -> Rule:
    def rule(args: list[str]) -> str:
        _literal(args, program)
        if not args or not set(args) <= flags:
            raise NotReadOnly(f"{program} {' '.join(args)}: only {program} {'/'.join(sorted(flags))} is read-only")
        return f"{program} {args[0]}"
    return rule


def interpreter_rule(interpreter: str, code_flag: str) -> Rule:
    """python3 / php only with the harness's own registered code (harness_program)."""
    def rule(args: list[str]) -> str:
        flags, rest = [], list(args)
        while rest and isinstance(rest[0], str) and not isinstance(rest[0], Unknown) and rest[0].startswith("-") \
                and rest[0] != code_flag:
            flags.append(rest.pop(0))
        if len(rest) < 2 or rest[0] != code_flag or isinstance(rest[1], Unknown):
            raise NotReadOnly(f"{interpreter} running code that is not the harness's own")
        why = _HARNESS_PROGRAMS.get((interpreter, rest[1]))
        if why is None or set(flags) - {"-B", "-u", "-I", "-E", "-s", "-S"}:
            raise NotReadOnly(f"{interpreter} {code_flag} with code that is not one of the harness's registered "
                              "read-only programs")
        return f"{interpreter}: {why}"
    return rule


def systemctl_rule(args: list[str]) -> str:
    return subcommands("systemctl", (("status",), ("show",), ("is-active",), ("is-enabled",), ("is-failed",),
                                     ("is-system-running",), ("list-units",), ("list-unit-files",), ("cat",),
                                     ("list-dependencies",), ()),
                       takes_value={"-p", "--property", "-t", "--type", "--state", "-n", "--lines", "-o",
                                    "--output"})(args)


PCS_READS = (("status",), ("config",), ("config", "show"), ("cluster", "status"), ("cluster", "config"),
             ("cluster", "config", "show"), ("resource",), ("resource", "status"), ("resource", "config"),
             ("resource", "show"), ("resource", "describe"), ("resource", "list"), ("resource", "agents"),
             ("resource", "op", "defaults"), ("resource", "defaults"), ("resource", "failcount", "show"),
             ("resource", "relations"), ("resource", "utilization"), ("stonith",), ("stonith", "status"),
             ("stonith", "config"), ("stonith", "show"), ("stonith", "list"), ("stonith", "describe"),
             ("stonith", "history", "show"), ("stonith", "level"), ("stonith", "level", "config"),
             ("property",), ("property", "config"), ("property", "show"), ("property", "list"),
             ("property", "describe"), ("constraint",), ("constraint", "config"), ("constraint", "show"),
             ("constraint", "list"), ("constraint", "ref"), ("constraint", "location"),
             ("constraint", "location", "config"), ("constraint", "location", "show"),
             ("constraint", "order"), ("constraint", "order", "config"), ("constraint", "order", "show"),
             ("constraint", "colocation"), ("constraint", "colocation", "config"),
             ("constraint", "colocation", "show"), ("node", "attribute"), ("node", "utilization"),
             ("quorum", "status"), ("quorum", "config"), ("alert",), ("alert", "config"), ("tag",),
             ("tag", "config"), ("host",), ("pcsd", "status"))


def pcs_rule(args: list[str]) -> str:
    _literal(args, "pcs")
    flags = {_flag_name(f) for f in _flags(args)}
    if flags == {"--version"} or flags == {"-h"} or flags == {"--help"}:
        return "pcs --version"
    words = positionals(args, {"-f", "--request-timeout", "-p"})
    # `pcs node attribute NODE NAME=VALUE` sets; only the bare read (at most a node) is allowed.
    if words[:2] == ["node", "attribute"] and any("=" in w for w in words[2:]):
        raise NotReadOnly("`pcs node attribute ... NAME=VALUE` sets an attribute")
    for prefix in sorted(PCS_READS, key=len, reverse=True):
        if tuple(words[:len(prefix)]) == prefix:
            rest = words[len(prefix):]
            # After a read verb only ids and filters follow; a further verb (`constraint location add`) writes.
            if prefix and prefix[-1] in ("resource", "stonith", "property", "constraint", "location", "order",
                                         "colocation", "alert", "tag", "level") and rest \
                    and rest[0] in {"add", "remove", "delete", "create", "update", "set", "unset", "clear",
                                    "enable", "disable", "move", "ban", "cleanup", "refresh", "restart",
                                    "manage", "unmanage", "op", "meta", "group", "ungroup", "clone", "promotable",
                                    "failcount", "debug-start", "debug-stop", "debug-promote", "debug-demote",
                                    "debug-monitor", "confirm", "fence", "sbd", "rule", "prefers", "avoids",
                                    "then", "with", "update-scsi-devices", "bundle", "defaults", "relocate"}:
                raise NotReadOnly(f"`pcs {' '.join(words[:len(prefix) + 1])}` changes the cluster")
            return f"pcs {' '.join(prefix)}"
    raise NotReadOnly(f"`pcs {' '.join(words[:3])}` is not one of pcs's read-only commands")


RULES: dict[str, Rule] = {
    # Programs that only read, whatever their arguments.
    **{name: reads_anything(name) for name in (
        "cat", "head", "tail", "wc", "stat", "ls", "readlink", "realpath", "basename", "dirname", "grep", "egrep",
        "fgrep", "zcat", "zgrep", "cut", "tr", "uniq", "seq", "uname", "id", "whoami", "groups", "getent", "ps",
        "pgrep", "pidof", "ss", "netstat", "df", "free", "uptime", "nproc", "sha256sum", "sha1sum", "md5sum",
        "cksum", "base64", "od", "hexdump", "strings", "file", "which", "type", "echo", "printf", "test", "[",
        "true", "false", ":", "exit", "return", "cd", "wait", "sleep", "lsof", "diff", "cmp", "comm", "expr", "getconf", "arch", "lscpu",
        "lsmod", "printenv", "jq")},
    # Readers with one way to write.
    "sort": reads_without("sort", {"-o", "--output"}),
    "date": reads_without("date", {"-s", "--set"}, short="s"),
    "hostname": reads_without("hostname", {"-F", "--file", "-b", "--boot"}, literal=True),
    "find": reads_without("find", {"-delete", "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprint0",
                                   "-fprintf", "-fls"}, literal=True),
    "journalctl": reads_without("journalctl", {"--rotate", "--vacuum-size", "--vacuum-time", "--vacuum-files",
                                               "--flush", "--sync", "--relinquish-var", "--smart-relinquish-var",
                                               "--setup-keys", "--update-catalog"}),
    "dpkg-query": reads_anything("dpkg-query"),
    "dpkg": needs_one_of("dpkg", {"-l", "--list", "-s", "--status", "-L", "--listfiles", "-S", "--search",
                                  "-p", "--print-avail", "--print-architecture"},
                         allowed_only={"-l", "--list", "-s", "--status", "-L", "--listfiles", "-S", "--search",
                                       "-p", "--print-avail", "--print-architecture"}),
    "tcpdump": reads_without("tcpdump", {"-C", "-G", "-W", "-z", "--relinquish-privileges"}),
    "ip": ip_rule,
    "curl": curl_rule,
    "haproxy": haproxy_rule,
    "service": service_rule,
    "systemctl": systemctl_rule,
    "fence_xvm": fence_xvm_rule,
    "python3": interpreter_rule("python3", "-c"),
    "php": interpreter_rule("php", "-r"),
    "pcs": pcs_rule,
    "kill": kill_rule,
    "pacemakerd": version_only("pacemakerd", {"--version", "-$"}),
    "corosync": version_only("corosync", {"-v"}),
    # Pacemaker and corosync: their query forms.
    "crm_mon": reads_without("crm_mon", {"-d", "--daemonize", "--output-to", "-E", "--external-agent",
                                         "-e", "--external-recipient", "-h", "--as-html", "-p", "--pid-file"}),
    "crm_verify": reads_without("crm_verify", {"--save-xml"}),
    "cibadmin": needs_one_of("cibadmin", {"-Q", "--query"},
                             allowed_only={"-Q", "--query", "-l", "--local", "-o", "--scope", "-A", "--xpath",
                                           "-e", "--no-children", "--node-path", "-V", "--verbose", "--output-as",
                                           "-N", "--node"}),
    "crm_attribute": needs_one_of("crm_attribute", {"-G", "--query"},
                                  {"-v", "--update", "-D", "--delete", "--attr-value", "-U", "--update-both",
                                   "--update-delay", "-B"}),
    "crm_resource": needs_one_of("crm_resource", {"-L", "--list", "-l", "--list-raw", "-W", "--locate", "-Y", "--why",
                                                  "-q", "--query-xml", "-w", "--query-xml-raw", "--list-agents",
                                                  "--show-metadata", "--list-ocf-providers", "--list-standards",
                                                  "--list-ocf-alternatives", "--list-operations", "-O",
                                                  "--list-all-operations", "-o", "--constraints", "-a",
                                                  "--stack", "-A", "-g", "--get-parameter", "-c", "--list-cts",
                                                  "--digests"},
                                 {"-C", "--cleanup", "-R", "--refresh", "-M", "--move", "-B", "--ban", "-U",
                                  "--clear", "-p", "--set-parameter", "-d", "--delete-parameter", "-r", "--restart",
                                  "--force-start", "--force-stop", "--force-check", "--force-promote",
                                  "--force-demote", "-D", "--delete", "--wait", "--validate", "--fail", "-F",
                                  "--cancel", "--set-param"}),
    "crm_node": needs_one_of("crm_node", {"-l", "--list", "-n", "--name", "-N", "--name-for-id", "-q", "--quorum",
                                          "-i", "--cluster-id", "-p", "--partition"},
                             {"-R", "--remove", "--force"}),
    "crm_simulate": reads_without("crm_simulate", {"-O", "--save-output", "-G", "--save-graph", "-D",
                                                   "--save-dotfile", "-I", "--save-input"}),
    "stonith_admin": needs_one_of("stonith_admin", {"-H", "--history", "-l", "--list", "-L", "--list-registered",
                                                    "-I", "--list-installed", "-M", "--metadata", "-Q", "--query",
                                                    "-s", "--last", "--list-targets", "-a", "--agent"},
                                  {"-F", "--fence", "-B", "--reboot", "-U", "--unfence", "-R", "--register",
                                   "-D", "--deregister", "-C", "--confirm", "--cleanup", "-r", "--register-level",
                                   "-d", "--deregister-level", "--broadcast"}),
    "corosync-cfgtool": needs_one_of("corosync-cfgtool", {"-s", "-n", "-i", "-a"}, {"-R", "-r", "-k", "-H"}),
    "corosync-quorumtool": needs_one_of("corosync-quorumtool", {"-s", "-l", "-p", "-m", "-f"},
                                        {"-e", "-v", "-c", "-n"}),
    "corosync-cmapctl": reads_without("corosync-cmapctl", {"-s", "-d", "-D", "-p", "-C"}),
}
WRAPPERS = {"timeout", "exec", "env", "nice", "command", "sh", "bash", "dash", "sudo"}


# ----- the walk --------------------------------------------------------------------------------------------

def join(argv: list[str]) -> str:
    return shlex.join(argv)


def _replace_arithmetic(command: str) -> str:
    """$((...)) (which bashlex cannot parse) as a literal 0: shell arithmetic computes, and can only set shell
    variables; one that runs a command (`$((x[$(cmd)]))`) is refused."""
    out, index = [], 0
    while True:
        start = command.find("$((", index)
        if start < 0:
            out.append(command[index:])
            return "".join(out)
        depth, position = 0, start + 1
        while position < len(command):
            char = command[position]
            depth += char == "("
            depth -= char == ")"
            position += 1
            if depth == 0:
                break
        inner = command[start + 3:position - 2]
        if depth or "$(" in inner.replace("$((", "") or "`" in inner:
            raise NotReadOnly("an arithmetic expansion that runs a command")
        out.append(command[index:start] + "0")
        index = position


def judge(command: str, *, input: bytes | str | None = None, own_pids: frozenset[int] | set[int] = frozenset()
          ) -> Verdict:
    """Is this shell command read-only?  input: the command's standard input, where a rule needs it
    (socat's verbs); own_pids: processes the harness started in this host itself (it may signal those)."""
    token = _OWN_PIDS.set(frozenset(own_pids))
    try:
        return _judge(command, input)
    finally:
        _OWN_PIDS.reset(token)


def _judge(command: str, input: bytes | str | None) -> Verdict:
    data = input.decode("utf-8", "replace") if isinstance(input, (bytes, bytearray)) else input
    rules: list[str] = []
    try:
        source = _replace_arithmetic(command)
        parts = bashlex.parse(source)
    except NotReadOnly as refused:
        return Verdict(False, why=str(refused))
    except Exception as exc:   # bashlex raises its own errors and NotImplementedError for what it cannot read
        return Verdict(False, why=f"the shell command cannot be parsed ({type(exc).__name__}: {exc}), so it "
                                  "cannot be shown to be read-only")
    try:
        for part in parts:
            _walk(part, source, rules, stdin=data)
    except NotReadOnly as refused:
        return Verdict(False, why=str(refused))
    return Verdict(True, rule="; ".join(dict.fromkeys(rules)) or "nothing runs")


def _walk(node, source: str, rules: list[str], *, stdin: str | None) -> None:
    kind = node.kind
    if kind == "command":
        _command(node, source, rules, stdin=stdin)
    elif kind == "pipeline":
        previous = None
        for part in node.parts:
            if part.kind == "pipe":
                continue
            _walk(part, source, rules, stdin=_piped_text(previous, source) if previous is not None else stdin)
            previous = part
    elif kind in ("list", "compound", "if", "for", "while", "until"):
        for part in getattr(node, "parts", None) or getattr(node, "list", None) or []:
            _walk(part, source, rules, stdin=stdin)
        for redirect in getattr(node, "redirects", None) or []:
            _redirect(redirect, source, rules)
    elif kind in ("operator", "pipe", "reservedword", "tilde", "heredoc"):
        return
    elif kind == "word":
        for part in getattr(node, "parts", None) or []:
            _walk(part, source, rules, stdin=None)
    elif kind == "parameter":
        return
    elif kind in ("commandsubstitution", "processsubstitution"):
        _walk(node.command, source, rules, stdin=None)
    elif kind == "redirect":
        _redirect(node, source, rules)
    elif kind == "assignment":
        for part in getattr(node, "parts", None) or []:
            _walk(part, source, rules, stdin=None)
    elif kind == "function":
        raise NotReadOnly("a function definition")
    else:
        raise NotReadOnly(f"a shell construct haconform does not judge ({kind})")


def _piped_text(node, source: str) -> str | None:
    """What `echo WORDS` / `printf WORDS` at the head of a pipeline writes (for socat's input)."""
    if node.kind != "command":
        return None
    words = [_word_value(p, source) for p in node.parts if p.kind == "word"]
    if not words or words[0] not in ("echo", "printf") or any(isinstance(w, Unknown) for w in words[1:]):
        return None
    return " ".join(w for w in words[1:] if not w.startswith("-"))


def _word_value(node, source: str) -> str:
    """The word as the program gets it: quotes removed as the shell removes them (bashlex leaves
    `'a'"'"'b'` as it is), or Unknown when an expansion decides it."""
    if getattr(node, "parts", None) and any(p.kind != "tilde" for p in node.parts):
        return Unknown(node.word)
    text = source[node.pos[0]:node.pos[1]]
    try:
        words = shlex.split(text)
    except ValueError:
        return Unknown(text)
    return words[0] if len(words) == 1 else Unknown(text)


def _redirect(node, source: str, rules: list[str]) -> None:
    heredoc = getattr(node, "heredoc", None)
    if heredoc is not None and ("$(" in heredoc.value or "`" in heredoc.value):
        # bashlex keeps a here-document's body as text; an unquoted one would run these.
        raise NotReadOnly("a here-document that may run commands ($(...) or `...` in it)")
    if node.type not in OUTPUT_REDIRECTS:
        return   # <, <<, <<<, <& read
    output = node.output
    if isinstance(output, int) or output == "-":
        return   # >&2, 2>&-: descriptors, no file
    word = output.word if hasattr(output, "word") else str(output)
    if getattr(output, "parts", None):
        raise NotReadOnly(f"a redirect into a file named only when it runs ({word})")
    if word in ("/dev/null", "/dev/stdout", "/dev/stderr") or word.isdigit() or word == "-":
        return
    raise NotReadOnly(f"a redirect into {word}")


def _command(node, source: str, rules: list[str], *, stdin: str | None) -> None:
    assignments, words = [], []
    for part in node.parts:
        if part.kind == "assignment":
            assignments.append(part)
            _walk(part, source, rules, stdin=None)
        elif part.kind == "word":
            words.append(part)
            _walk(part, source, rules, stdin=None)
        elif part.kind == "redirect":
            _redirect(part, source, rules)
        else:
            _walk(part, source, rules, stdin=stdin)
    for assignment in assignments:
        name = assignment.word.split("=", 1)[0]
        if DANGEROUS_VARIABLES.fullmatch(name):
            raise NotReadOnly(f"setting {name}, which decides what later commands run")
        if words and not PREFIX_VARIABLES.fullmatch(name):
            raise NotReadOnly(f"{name}=... in front of a command")
    if not words:
        return   # assignments alone: shell variables
    argv = [_word_value(w, source) for w in words]
    rules.append(_program(argv, rules, stdin=stdin))


def _program_name(word: str) -> str:
    if isinstance(word, Unknown):
        raise NotReadOnly(f"a program named only when it runs ({word})")
    if "/" not in word:
        return word
    normal = posixpath.normpath(word)
    if not any(normal.startswith(directory + "/") for directory in SYSTEM_DIRECTORIES):
        raise NotReadOnly(f"{word} is not in the system's own directories {SYSTEM_DIRECTORIES}")
    return normal


def _program(argv: list[str], rules: list[str], *, stdin: str | None) -> str:
    path = _program_name(argv[0])
    name = posixpath.basename(path)
    args = argv[1:]
    if path.startswith("/etc/init.d/"):
        return init_script_rule(path)(args)
    if path.startswith("/usr/lib/ocf/resource.d/"):
        return ocf_agent_rule(path)(args)
    if name in WRAPPERS:
        return _wrapper(name, args, rules, stdin=stdin)
    if name == "socat":
        return socat_rule_for(stdin)(args)
    if name.startswith("python3"):
        name = "python3"
    rule = RULES.get(name)
    if rule is None:
        raise NotReadOnly(f"`{name}` is not on the read-only allow-list")
    return rule(args)


def _wrapper(name: str, args: list[str], rules: list[str], *, stdin: str | None) -> str:
    """Look through a wrapper to the command it runs."""
    _literal(args[:1], name)
    rest = list(args)
    if name in ("sh", "bash", "dash"):
        if not rest or rest[0] != "-c" or len(rest) < 2 or isinstance(rest[1], Unknown):
            raise NotReadOnly(f"{name} without `-c COMMAND`: what it runs cannot be seen")
        verdict = _judge(rest[1], stdin)
        if not verdict.read_only:
            raise NotReadOnly(verdict.why)
        return f"{name} -c: {verdict.rule}"
    if name == "timeout":
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0)
            if flag in ("-s", "-k", "--signal", "--kill-after") and rest:
                rest.pop(0)
        rest = rest[1:]   # the duration
    elif name == "nice":
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0)
            if flag == "-n" and rest:
                rest.pop(0)
    elif name == "env":
        while rest and (rest[0].startswith("-") or "=" in rest[0]):
            item = rest.pop(0)
            if "=" in item and not item.startswith("-"):
                variable = item.split("=", 1)[0]
                if not PREFIX_VARIABLES.fullmatch(variable):
                    raise NotReadOnly(f"env {variable}=...")
            elif item not in ("-i", "--ignore-environment", "-"):
                raise NotReadOnly(f"env {item}")
        if not rest:
            return "env (prints the environment)"
    elif name == "command":
        if rest and rest[0] in ("-v", "-V"):
            return "command -v"
        while rest and rest[0] == "-p":
            rest.pop(0)
    elif name == "sudo":
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0)
            if flag == "--":
                break
            if flag not in ("-n", "--non-interactive"):
                raise NotReadOnly(f"sudo {flag}")
    if not rest:
        raise NotReadOnly(f"{name} with nothing to run")
    return f"{name} → {_program(rest, rules, stdin=stdin)}"
