"""The read-only default against an existing deployment (--target ssh without --allow-destructive).

Two guards:
- the collection hook (fixtures/left_out.py): a test marked writes_to_host is
  skipped there with a reason starting "writes to a host:", and listed as left
  out; on the lab, or with --allow-destructive, it runs;
- a static check of suites/*.py: a test that writes to a host (Machine.write_file,
  a shell command that writes, an upload), itself or through a helper or fixture
  it uses, must carry writes_to_host or be destructive.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / "suites"
FIXTURE_MODULES = sorted((ROOT / "fixtures").glob("*.py"))
DOCUMENTED = ROOT / "fixtures" / "documented"

# Tests that call something on the write list but write nothing to a conforming deployment, and why.
WRITE_FREE = {
    "test_30_write_routing.py::test_upload_of_wrong_type_refused":
        "upload_file.php refuses the file (the MUST under test): nothing is stored; the upload_name fixture's "
        "`rm -f` removes the harness's own unique name, absent unless the deployment stored it",
    "test_30_write_routing.py::test_upload_too_large_refused":
        "as test_upload_of_wrong_type_refused: a refused upload stores nothing",
}

# Methods that write to a host whatever their arguments.
WRITING_METHODS = {"write_file": "Machine.write_file", "post_multipart": "an upload (post_multipart)"}
# Methods whose first argument is a shell command run on a host.
COMMAND_METHODS = {"succeed", "execute", "fail", "run", "wait_until_succeeds", "wait_until_fails", "check_output"}
WRITING_WORDS = re.compile(
    r"(?:^|[\s;&|(`])(?P<word>logger|tee|mkdir|rm|rmdir|cp|mv|touch|dd|truncate|install|ln|chmod|chown|"
    r"sed\s+-i|systemctl\s+(?:start|stop|restart|reload|enable|disable|kill|mask)|"
    r"service\s+\S+\s+(?:start|stop|restart|reload)|"
    r"ip\s+(?:addr|address|link|route)\s+(?:add|del|delete|set|change|replace|flush)|"
    r"pcs\s+(?:\S+\s+)*?(?:set|update|create|delete|remove|standby|unstandby|cleanup|enable|disable|move|ban|"
    r"clear)|crm_resource|kill)(?=$|[\s;&|)`])")
REDIRECT = re.compile(r"\d?>>?\s*(?P<into>[^\s;&|)]+)")


def command_writes(command: str) -> str | None:
    """What in a shell command writes to the host, or None (`2>/dev/null`, `>&2` write nothing)."""
    found = WRITING_WORDS.search(command)
    if found:
        return f"`{found['word']}` in {command!r}"
    for redirect in REDIRECT.finditer(command):
        into = redirect["into"]
        if not into.startswith("&") and into != "/dev/null":
            return f"a redirect into {into} in {command!r}"
    return None


def string_of(node, constants: dict[str, str]) -> str | None:
    """A string literal, an f-string (placeholders as X) or a module constant; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "X" for part in node.values)
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = string_of(node.left, constants), string_of(node.right, constants)
        return left + right if left is not None and right is not None else None
    return None


def decorator_name(node) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    return ast.unparse(target)


def fixture_name(fn: ast.FunctionDef) -> str | None:
    for decorator in fn.decorator_list:
        if decorator_name(decorator) in ("pytest.fixture", "fixture"):
            if isinstance(decorator, ast.Call):
                for keyword in decorator.keywords:
                    if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                        return keyword.value.value
            return fn.name
    return None


def allowed_to_write(fn: ast.FunctionDef, module_marks: list) -> bool:
    """Marked writes_to_host or destructive (directly, via @conformance(destructive=True), or pytestmark)."""
    for decorator in [*fn.decorator_list, *module_marks]:
        name = decorator_name(decorator)
        if name in ("pytest.mark.writes_to_host", "pytest.mark.destructive"):
            return True
        if name == "conformance" and isinstance(decorator, ast.Call):
            if any(k.arg == "destructive" and isinstance(k.value, ast.Constant) and k.value.value is True
                   for k in decorator.keywords):
                return True
    return False


@dataclass
class Module:
    path: Path
    functions: dict[str, ast.FunctionDef]
    fixtures: dict[str, ast.FunctionDef]
    constants: dict[str, str]
    marks: list

    @classmethod
    def parse(cls, path: Path, source: str | None = None) -> "Module":
        tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
        functions, fixtures, constants, marks = {}, {}, {}, []
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                functions[node.name] = node
                name = fixture_name(node)
                if name:
                    fixtures[name] = node
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id == "pytestmark":
                    value = node.value
                    marks = list(value.elts) if isinstance(value, (ast.List, ast.Tuple)) else [value]
                else:
                    text = string_of(node.value, constants)
                    if text is not None:
                        constants[node.targets[0].id] = text
        return cls(path, functions, fixtures, constants, marks)


def direct_writes(fn: ast.FunctionDef, constants: dict[str, str]) -> list[str]:
    found = []
    for node in ast.walk(fn):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        method = node.func.attr
        if method in WRITING_METHODS:
            found.append(f"{WRITING_METHODS[method]} (line {node.lineno})")
        elif method in COMMAND_METHODS and node.args:
            command = string_of(node.args[0], constants)
            why = command_writes(command) if command is not None else None
            if why:
                found.append(f"{why} (line {node.lineno})")
    return found


def called_names(fn: ast.FunctionDef) -> set[str]:
    return {node.func.id for node in ast.walk(fn) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}


def parameters(fn: ast.FunctionDef) -> list[str]:
    return [a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]]


def writes_of(test: ast.FunctionDef, module: Module, shared_fixtures: dict[str, tuple[Module, ast.FunctionDef]]
              ) -> list[str]:
    """Every write the test makes: in its body, the module's helpers it calls, the fixtures it uses (and theirs)."""
    found, seen = [], set()
    pending: list[tuple[Module, ast.FunctionDef, str]] = [(module, test, test.name)]
    while pending:
        owner, fn, via = pending.pop()
        if (owner.path, fn.name) in seen:
            continue
        seen.add((owner.path, fn.name))
        found += [f"{what} in {via}" for what in direct_writes(fn, owner.constants)]
        for name in called_names(fn):
            if name in owner.functions and owner.functions[name] is not fn:
                pending.append((owner, owner.functions[name], f"{name}() of {owner.path.name}"))
        for name in parameters(fn):
            if name in owner.fixtures:
                pending.append((owner, owner.fixtures[name], f"fixture {name} of {owner.path.name}"))
            elif name in shared_fixtures:
                shared_module, fixture = shared_fixtures[name]
                pending.append((shared_module, fixture, f"fixture {name} of fixtures/{shared_module.path.name}"))
    return found


def unmarked_writers(modules: list[Module], shared: list[Module], write_free: dict[str, str]) -> list[str]:
    shared_fixtures = {name: (m, fn) for m in shared for name, fn in m.fixtures.items()}
    problems = []
    for module in modules:
        for name, fn in module.functions.items():
            if not name.startswith("test_") or allowed_to_write(fn, module.marks):
                continue
            key = f"{module.path.name}::{name}"
            writes = writes_of(fn, module, shared_fixtures)
            if writes and key not in write_free:
                problems.append(f"{key} writes to a host without @pytest.mark.writes_to_host(...) or destructive: "
                                + "; ".join(sorted(set(writes))))
    return problems


def suite_modules() -> list[Module]:
    return [Module.parse(path) for path in sorted(SUITES.glob("test_*.py"))]


# ----- the static guard ------------------------------------------------------------------

def test_every_suite_test_that_writes_to_a_host_is_marked():
    problems = unmarked_writers(suite_modules(), [Module.parse(p) for p in FIXTURE_MODULES], WRITE_FREE)
    assert not problems, "\n".join(problems)


def test_write_free_entries_name_existing_tests():
    declared = {f"{m.path.name}::{name}" for m in suite_modules() for name in m.functions}
    assert set(WRITE_FREE) <= declared, sorted(set(WRITE_FREE) - declared)


def check_source(source: str, fixtures_source: str = "") -> list[str]:
    module = Module.parse(Path("test_example.py"), textwrap.dedent(source))
    shared = [Module.parse(Path("shared.py"), textwrap.dedent(fixtures_source))] if fixtures_source else []
    return unmarked_writers([module], shared, {})


@pytest.mark.parametrize("body, what", [
    ('director.write_file("/tmp/x.cfg", b"x")', "Machine.write_file"),
    ('director.succeed(f"logger -t me {text}")', "`logger`"),
    ('director.succeed(f"echo {x} > /etc/motd")', "a redirect into /etc/motd"),
    ('director.execute("tee -a /var/log/x")', "`tee`"),
    ('client.succeed(f"ip addr add {a}/24 dev eth0")', "`ip addr add`"),
    ('director.succeed("pcs property set maintenance-mode=true")', "`pcs property set`"),
    ('http.post_multipart(url, files={"file": ("a.gif", b"", "image/gif")})', "an upload"),
])
def test_the_guard_names_an_unmarked_test_and_what_it_writes(body, what):
    problems = check_source(f"""
        def test_writes(director, client, http, text, x, a, url):
            {body}
    """)
    assert len(problems) == 1 and problems[0].startswith("test_example.py::test_writes writes to a host"), problems
    assert what in problems[0], problems


def test_the_guard_follows_helpers_and_fixtures():
    problems = check_source("""
        import pytest

        def helper(director):
            director.succeed("logger hello")

        @pytest.fixture
        def stored(director, request):
            request.addfinalizer(lambda: director.execute("rm -f /srv/x"))

        def test_via_helper(director):
            helper(director)

        def test_via_fixture(stored):
            pass

        def test_via_shared_fixture(marked_page):
            pass
    """, fixtures_source="""
        import pytest

        @pytest.fixture
        def marked_page(deployment):
            deployment.realservers[0].write_file("/var/www/html/x.php", "<?php")
    """)
    assert [p.split(" ", 1)[0] for p in problems] == ["test_example.py::test_via_helper",
                                                      "test_example.py::test_via_fixture",
                                                      "test_example.py::test_via_shared_fixture"], problems
    assert "helper() of test_example.py" in problems[0]
    assert "fixture stored of test_example.py" in problems[1]
    assert "fixture marked_page of fixtures/shared.py" in problems[2]


def test_marked_destructive_and_reading_tests_pass_the_guard():
    assert check_source("""
        import pytest
        from haconform.conformance import conformance

        @pytest.mark.writes_to_host("a line in /var/log/x")
        def test_marked(director):
            director.succeed("logger hello")

        @conformance("HAC-X-001", stage="s", section="s", must="x MUST y", destructive=True)
        def test_destructive(app):
            app.succeed("service apache2 stop")

        def test_reads(director, text):
            director.succeed("haproxy -v | head -1")
            director.execute("cat /etc/haproxy/haproxy.cfg 2>/dev/null; echo $$ >&2")
            director.execute("haproxy -c -f /dev/stdin", input=text)
            director.read_file("/etc/haproxy/haproxy.cfg")
    """) == []


# ----- the collection hook -----------------------------------------------------------------

MARKED_TESTS = """
    import pytest
    from haconform.conformance import conformance

    @pytest.mark.writes_to_host("a sentinel line in /var/log/haproxy.log")
    @conformance("HAC-RO-001", stage="stage2", section="日志", must="A line MUST reach the log")
    def test_writes():
        pass

    @pytest.mark.destructive
    @pytest.mark.writes_to_host("a file")
    def test_destructive_and_writes():
        pass

    def test_reads():
        pass
"""


def run_marked(pytester, *options: str):
    pytester.makepyfile(test_marked=MARKED_TESTS)
    history = pytester.path / "history"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "fixtures.left_out", "-rs",
                                          "--config", str(DOCUMENTED), "--history-dir", str(history), *options)
    records = [json.loads(line) for path in history.glob("*/history.jsonl") for line in path.read_text().splitlines()]
    return result, records


def test_a_writing_test_is_left_out_against_ssh_without_allow_destructive(pytester):
    result, records = run_marked(pytester, "--target", "ssh")
    result.assert_outcomes(passed=1, skipped=2)
    text = result.stdout.str()
    reason = ("writes to a host: a sentinel line in /var/log/haproxy.log; left out against an SSH target without "
              "--allow-destructive")
    assert re.search(rf"SKIPPED \[1\] test_marked.py:\d+: {re.escape(reason)}", text), text
    assert "destructive: left out against an SSH target" in text, text   # the plugin's skip, not a second one
    assert "left out against the ssh target: 2 test(s)" in text, text
    assert f"1 conformance test(s): HAC-RO-001\n    reason: {reason}" in text, text
    rows = [r for r in records if r["nodeid"] == "test_marked.py::test_writes"]
    assert [r.get("left_out") for r in rows] == [reason], f"one history row, left out with the reason: {rows}"


@pytest.mark.parametrize("options", [["--target", "lab"], ["--target", "ssh", "--allow-destructive"]])
def test_a_writing_test_runs_on_the_lab_and_with_allow_destructive(pytester, options):
    result, records = run_marked(pytester, *options)
    result.assert_outcomes(passed=3)
    assert "writes to a host:" not in result.stdout.str()
    assert not [r for r in records if r.get("left_out")], records


def test_a_writes_to_host_mark_must_say_what_it_writes(pytester):
    pytester.makepyfile(test_unnamed="""
        import pytest

        @pytest.mark.writes_to_host
        def test_writes():
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "fixtures.left_out", "--target", "lab",
                                          "--config", str(DOCUMENTED), "--history-dir", str(pytester.path / "h"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "test_unnamed.py::test_writes: @pytest.mark.writes_to_host needs what the test writes" in \
        result.stderr.str(), result.stderr.str()


def test_writes_to_host_reasons_are_left_out_reasons():
    from fixtures.left_out import LEFT_OUT_PREFIXES, WRITES_TO_HOST
    assert WRITES_TO_HOST == "writes to a host:" and WRITES_TO_HOST in LEFT_OUT_PREFIXES


def test_the_verdict_knows_every_left_out_prefix():
    from fixtures.left_out import LEFT_OUT_PREFIXES as fixtures_prefixes
    from haconform.report.plugin import LEFT_OUT_PREFIXES as report_prefixes
    assert set(report_prefixes) == set(fixtures_prefixes)


# ----- verify mode: a test of a stage the deployment is not at ----------------------------------

STAGED_TESTS = """
    import pytest
    from haconform.conformance import conformance

    @conformance("HAC-RO-002", stage="stage1", section="配置文件实例", destructive=True,
                 must="A stage-1 fault MUST be survived")
    def test_destructive_of_stage1(stage1):
        pass

    @pytest.mark.writes_to_host("an upload")
    @conformance("HAC-RO-003", stage="stage3", section="读写分离", must="An upload MUST land")
    def test_writes_of_stage3(write_routing_settings):
        pass

    @pytest.mark.writes_to_host("a sentinel line")
    @conformance("HAC-RO-004", stage="stage2", section="日志", must="A line MUST reach the log")
    def test_writes_of_a_kept_setting(logging_settings):
        pass

    def test_algorithm(algorithm):
        pass

    def test_of_no_stage():
        pass
"""


def run_staged(pytester, *options: str):
    pytester.makepyfile(test_staged=STAGED_TESTS)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "fixtures.stages", "-p", "fixtures.left_out",
                                        "-rs", "--config", str(DOCUMENTED), "--history-dir",
                                        str(pytester.path / "history"), *options)


def left_out_reasons(result) -> dict[str, str]:
    """conformance id (or node id) -> reason, from the left-out summary fixtures/left_out.py prints."""
    return {m["label"]: m["reason"] for m in re.finditer(
        r"^1 conformance test\(s\): (?P<label>\S+)\n    reason: (?P<reason>.*)$", result.stdout.str(), re.M)}


def test_verify_mode_leaves_out_a_test_of_another_stage_as_such_before_any_other_reason(pytester):
    """Against a stage-5 deployment read-only, a destructive stage-1 test would not run with
    --allow-destructive either: its reason is the stage (the verdict counts it as not applying there); a
    writing test of a setting stage 5 keeps is left out for its write."""
    result = run_staged(pytester, "--target", "ssh", "--deployment-stage", "stage5")
    result.assert_outcomes(passed=1, skipped=4)
    reasons = left_out_reasons(result)
    assert reasons["HAC-RO-002"].startswith("verify-only (--stages verify): the deployment is declared at stage5"), \
        reasons
    assert "stage1 would have to be applied" in reasons["HAC-RO-002"], reasons
    assert reasons["HAC-RO-003"].startswith("writes to a host: an upload"), reasons   # stage 5 keeps write routing
    assert reasons["HAC-RO-004"].startswith("writes to a host: a sentinel line"), reasons
    assert reasons["test_staged.py::test_algorithm"].startswith("verify-only"), reasons


def test_verify_mode_at_stage1_leaves_out_the_later_stages_settings(pytester):
    result = run_staged(pytester, "--target", "lab", "--stages", "verify", "--deployment-stage", "stage1",
                        "-k", "stage3 or algorithm")
    result.assert_outcomes(skipped=2)
    text = result.stdout.str()
    assert "stage1 does not keep `write-routing`" in text, text
    assert "algorithm-<name> would have to be applied" in text, text


def test_apply_mode_leaves_nothing_out_for_its_stage(pytester):
    result = run_staged(pytester, "--target", "lab", "-k", "of_no_stage or stage3", "--co")
    assert "verify-only" not in result.stdout.str()
