"""The runbook's haproxy.cfg texts against today's HAProxy (配置文件实例 and after).

fixtures/documented/verbatim/ holds each config text byte for byte as the
runbook prints it; fixtures/documented/stageN/ holds the port the harness
applies.  Three statements are checked on a director's own HAProxy:

- the ported files pass `haproxy -c` in zero-warning mode;
- the verbatim files do not: HAProxy 1.5 took the listening address on the
  section line (`frontend main *:80`), 2.x wants a `bind` line.  That is a
  finding about the runbook, so it is reported as an expected failure of the
  runbook's own text (strict: it turns red if HAProxy ever accepts it).  Only
  that finding (VerbatimRefused) is the expected failure: any other refusal,
  and a command that could not run (CommandFailed), fails outright;
- the port changes nothing but that syntax.

`haproxy -c` reads the text on its standard input (`-f /dev/stdin`): it
parses and sends nothing, and no copy is written on the director, so the
checks run on an existing deployment's director too (--target ssh).

The runbook's texts are those of the configuration the session was given
(--config): its verbatim/ directory, listed in verbatim/INDEX.yaml.  A
configuration directory without one (an operator's own, or what `haconform
describe` wrote) is compared with the documented runbook's texts: they are
the runbook's, not the deployment's.
"""

import difflib
from pathlib import Path

import pytest
import yaml

from haconform.conformance import conformance
from haconform.datafile import read_text_file
from haconform.readers.haproxy_config import check_alerts, config_section, config_sections
from haconform.stages.catalogue import DOCUMENTED

SECTION = "配置文件实例"
VERBATIM = "verbatim"   # the runbook's own texts, in the --config directory
PORTED = "role-director/etc/haproxy/haproxy.cfg"

# What HAProxy 2.6 says about a 1.5-style section line, and about the lines of
# the section it then drops (src/cfgparse-listen.c, src/cfgparse.c).
BIND_REFUSAL = "please use the 'bind' keyword for listening addresses."
ORPHANED_LINE = "'listen' or 'defaults' expected."


class VerbatimRefused(AssertionError):
    """The finding HAC-LINT-002 documents: HAProxy refuses the verbatim text for the 1.5 bind syntax alone."""


STDIN = "/dev/stdin"


def haproxy_check(director, text: bytes, label: str, *flags: str) -> dict:
    """`haproxy -c` of text given on its standard input (nothing written on the director): exit code and
    messages, the path shown as label."""
    result = director.execute(f"haproxy {' '.join(flags)} -c -f {STDIN}", input=text)
    output = (result.stderr + result.stdout).replace(STDIN, label)
    return {"rc": result.rc, "output": output.strip().splitlines(), "version": director.succeed(
        "haproxy -v | head -1").strip()}


def section_lines_with_address(text: str) -> list[int]:
    """Line numbers of `frontend NAME ADDR` / `listen NAME ADDR` lines (HAProxy 1.x syntax)."""
    return [section.line for section in config_sections(text)
            if section.kind in ("frontend", "listen") and section.header_address]


def section_line_with_address(line: str) -> tuple[str, str, str] | None:
    """(kind, name, address) of a lone `frontend NAME ADDR` / `listen NAME ADDR` line, None for any other line."""
    [section] = config_sections(line) or [None]
    if section and section.kind in ("frontend", "listen") and section.header_address and not section.lines:
        return section.kind, section.name, section.header_address
    return None


def verbatim_dir(config_dir: Path) -> Path:
    """The runbook's own texts: the --config directory's verbatim/, else the documented runbook's."""
    own = config_dir / VERBATIM
    return own if (own / "INDEX.yaml").exists() else DOCUMENTED / VERBATIM


def verbatim_configs(config_dir: Path) -> dict[str, dict]:
    """Stage -> its verbatim haproxy.cfg's entry in verbatim/INDEX.yaml (file, seed lines, runbook section)."""
    listed = read_text_file(verbatim_dir(config_dir) / "INDEX.yaml", option="--config",
                            missing_fix="give --config a verbatim/ directory with the runbook's own texts and their "
                                        "INDEX.yaml, as fixtures/documented/verbatim/")
    index = yaml.safe_load(listed)["files"]
    return {entry["stage"]: {"file": name, **entry} for name, entry in index.items()
            if name.endswith(".haproxy.cfg")}


def pytest_generate_tests(metafunc):
    # One test per stage the runbook prints a haproxy.cfg for, read from the session's --config.
    if "stage" in metafunc.fixturenames:
        metafunc.parametrize("stage", sorted(verbatim_configs(Path(metafunc.config._haconform_config_dir))))


@pytest.fixture
def director(deployment):
    return deployment.directors[0]


@pytest.fixture
def config_dir(request) -> Path:
    return Path(request.config._haconform_config_dir)


@pytest.fixture
def configs(config_dir) -> dict[str, dict]:
    return verbatim_configs(config_dir)


@conformance("HAC-LINT-001", stage="stage1-3", section=SECTION,
             must="Each ported haproxy.cfg the harness applies (stages 1-3) MUST pass `haproxy -c` on a "
                  "director in zero-warning mode (-dW)")
def test_ported_config_is_valid(stage, director, config_dir, configs, evidence):
    ported = config_dir / stage / PORTED
    result = haproxy_check(director, ported.read_bytes(), str(ported), "-dW")
    evidence.data(f"haproxy -dW -c -f {ported.name} ({stage}, runbook section {configs[stage]['section']})",
                  result)
    assert result["rc"] == 0, f"{ported} refused by {result['version']}: {result['output']}"


@pytest.mark.xfail(strict=True, raises=VerbatimRefused,
                   reason="finding: HAProxy 2.6 refuses the runbook's 1.5 syntax `frontend main *:80` / "
                          f"`listen stats *:8080`: \"{BIND_REFUSAL}\", then \"{ORPHANED_LINE}\" for "
                          "every line of that section")
@conformance("HAC-LINT-002", stage="stage1-3", section=SECTION,
             must="The runbook's verbatim haproxy.cfg MUST pass `haproxy -c` on the deployed HAProxy")
def test_verbatim_config_is_valid(stage, director, config_dir, configs, evidence):
    name = configs[stage]["file"]
    text = (verbatim_dir(config_dir) / name).read_text()
    result = haproxy_check(director, text.encode(), f"{VERBATIM}/{name}")
    evidence.data(f"haproxy -c -f {VERBATIM}/{name} (seed lines {configs[stage]['lines']}, "
                  f"section {configs[stage]['section']})", result)
    if result["rc"] != 0:
        alerts = check_alerts(result["output"])
        address_lines = section_lines_with_address(text)
        other = [alert.text for alert in alerts
                 if not (alert.message in (BIND_REFUSAL, ORPHANED_LINE) or alert.is_summary)]
        refused_at = [alert.line for alert in alerts if alert.message == BIND_REFUSAL]
        evidence.data("why", {"section lines with an address": address_lines,
                              "refused for the bind syntax at": refused_at, "other alerts": other})
        if other or refused_at != address_lines:
            pytest.fail(f"verbatim/{name} is refused for more than the bind syntax: {result['output']}")
        raise VerbatimRefused(f"{result['version']} refuses verbatim/{name}: {result['output'][:3]}")


@conformance("HAC-LINT-003", stage="stage1-3", section=SECTION,
             settings=("haproxy.cfg[frontend main].bind", "haproxy.cfg[listen stats].bind"),
             must="A ported haproxy.cfg MUST differ from the runbook's verbatim text only where an address "
                  "moves from the section line to a `bind` line (plus comments saying so)")
def test_port_changes_only_the_bind_syntax(stage, config_dir, configs, evidence):
    verbatim = (verbatim_dir(config_dir) / configs[stage]["file"]).read_text().splitlines()
    ported = (config_dir / stage / PORTED).read_text().splitlines()
    removed, added = [], []
    for tag, a1, a2, b1, b2 in difflib.SequenceMatcher(a=verbatim, b=ported, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += verbatim[a1:a2]
            added += ported[b1:b2]
    evidence.data(f"diff verbatim -> ported ({stage})", {"removed": removed, "added": added})
    moved = []
    for line in removed:
        section = section_line_with_address(line)
        assert section, f"the port removed a line that is not a section line with an address: {line!r}"
        moved.append(section)
    assert moved, f"the port changed nothing, yet {stage} is ported: removed {removed}"
    sections = sorted((section.kind, section.name) for section in config_sections("\n".join(added))
                      if section.kind in ("frontend", "listen"))
    assert sections == sorted((kind, name) for kind, name, _ in moved), \
        f"section lines removed {moved}, section lines added {sections}"
    ported_text = "\n".join(ported)
    for kind, name, address in moved:
        binds = config_section(ported_text, kind, name).arguments("bind")
        assert binds == [(address,)], f"`{kind} {name}` must bind {address} in the port, binds {binds}"
    others = [line for line in added if line.split()[:1] not in (["bind"], ["frontend"], ["listen"])
              and not line.lstrip().startswith("#") and line.strip()]
    assert not others, f"the port added lines other than bind, section and comment lines: {others}"
