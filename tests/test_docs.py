"""The documentation stays true: README.md a front door of at most 150 lines, every relative link and
#anchor in README.md and docs/*.md resolving, every `tox -e NAME` an env of tox.ini, and every
`haconform ...` command shown a subcommand (and options) the CLI's parser knows.  No lab, no root."""

from __future__ import annotations

import argparse
import configparser
import re
from pathlib import Path

import pytest

from haconform.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
IDS = [str(p.relative_to(REPO)) for p in DOCS]
README_MAX_LINES = 150

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`([^`]+)`")
TOX_ENV = re.compile(r"\btox\s+-e\s+([A-Za-z0-9_.-]+(?:,[A-Za-z0-9_.-]+)*)")
HACONFORM = re.compile(r"(?:^|[\s;|&(])haconform\s+(\S.*)$")
SUBCOMMAND_WORD = re.compile(r"^(-h|--help|[a-z][a-z0-9_-]*:?)$")
WORD = re.compile(r"^[a-z][a-z0-9_-]*$")


def split_markdown(path: Path) -> tuple[list[str], list[str]]:
    """(prose lines, code lines): fenced blocks and indented blocks (4 spaces after a blank line) are code."""
    prose, code = [], []
    fenced, indented, previous_blank = False, False, True
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            code.append(line)
            continue
        if line.startswith("    ") and line.strip() and (previous_blank or indented):
            indented = True
            code.append(line)
        else:
            indented = indented and not line.strip()
            prose.append(line)
        previous_blank = not line.strip()
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)      # a link in a heading anchors by its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in split_markdown(path)[0]:
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    prose = "\n".join(split_markdown(path)[0])
    prose = INLINE_CODE.sub("", prose)       # a `[x](y)` inside inline code is not a link
    return [target for _text, target in LINK.findall(prose)]


def code_texts(path: Path) -> list[str]:
    """Code as the reader sees it: each line of a code block, and each inline code span (one line each)."""
    prose, code = split_markdown(path)
    spans = [" ".join(span.split()) for span in INLINE_CODE.findall("\n".join(prose))]
    return code + spans


def tox_envs() -> set[str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini", encoding="utf-8")
    envs = {section.split(":", 1)[1] for section in ini.sections() if section.startswith("testenv:")}
    envs |= {e.strip() for e in ini.get("tox", "envlist", fallback="").replace("\n", ",").split(",") if e.strip()}
    return envs


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return None


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def check_command(words: list[str]) -> str | None:
    """None when `haconform WORDS...` names subcommands and options the parser knows; else what is wrong.
    Placeholders ([--x], A|B, HOST, ...) are read as the docs write them: options in brackets are options."""
    parser, path = build_parser(), ["haconform"]
    words = list(words)
    while words:
        choices = subparsers(parser)
        if choices is None:
            break
        word = words.pop(0)
        if word in ("-h", "--help"):
            return None
        if word not in choices:
            return f"{' '.join(path)}: no subcommand {word!r} (known: {', '.join(sorted(choices))})"
        parser = choices[word]
        path.append(word)
    known = option_strings(parser)
    for word in words:
        if word in ("--", "|", "||", "&&", ";") or word.startswith(("#", "2>", ">", "<")):
            break
        option = word.strip("[]()").split("=", 1)[0]
        if option.startswith("--") and len(option) > 2 and option not in known:
            return f"{' '.join(path)}: no option {option!r} (known: {', '.join(sorted(known))})"
    return None


def printed_line(words: list[str]) -> bool:
    """"haconform verdict: ...", "haconform host access: ...": a line haconform prints, not a command."""
    for word in words[:3]:
        if not WORD.match(word.rstrip(":")):
            return False
        if word.endswith(":"):
            return True
    return False


def haconform_commands(path: Path) -> list[list[str]]:
    """Every `haconform WORD ...` in code; a line printed by haconform ("haconform verdict: ...") is output."""
    found = []
    for text in code_texts(path):
        text = re.sub(r"\s#\s.*$", "", text)         # a shell comment
        match = HACONFORM.search(text)
        if not match:
            continue
        words = match.group(1).split()
        if not SUBCOMMAND_WORD.match(words[0]):
            continue    # "lab haconform -> ssh ...": the name in a sentence, not a command
        if not printed_line(words):
            found.append(words)
    return found


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"


def test_readme_links_every_docs_file():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in links(README)}
    missing = [p.name for p in sorted((REPO / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md's links leave out {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_relative_links_resolve(doc: Path):
    problems = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):    # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            problems.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)} "
                            f"(headings: {', '.join(sorted(anchors(dest)))})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_no_link_inside_code(doc: Path):
    """A link in a code block shows as its brackets: name the file there instead."""
    inside = [line.strip() for line in split_markdown(doc)[1] if LINK.search(line) and ".md" in line]
    assert not inside, f"{doc.name}: a markdown link inside code: {inside}"


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_tox_envs_exist(doc: Path):
    envs = tox_envs()
    named = {env for match in TOX_ENV.findall(doc.read_text(encoding="utf-8")) for env in match.split(",")}
    unknown = sorted(named - envs)
    assert not unknown, f"{doc.name} names tox env(s) {unknown} that tox.ini does not define ({sorted(envs)})"


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_haconform_commands_exist(doc: Path):
    problems = [problem for words in haconform_commands(doc) if (problem := check_command(words))]
    assert not problems, "\n".join(problems)


def test_the_checks_see_what_the_docs_say():
    """The checks above are not vacuous: they find the commands, links and envs the docs are known to hold."""
    commands = {" ".join(words[:2]) for doc in DOCS for words in haconform_commands(doc)}
    assert {"lab up", "vm install", "describe --out", "report [RESULTS]"} <= commands, commands
    assert {"conformance", "unit", "safety", "perf", "nightly"} <= {
        env for doc in DOCS for match in TOX_ENV.findall(doc.read_text(encoding="utf-8")) for env in match.split(",")}
    assert sum(len(links(doc)) for doc in DOCS) >= 20
    assert check_command(["lab", "upp"]) is not None
    assert check_command(["report", "--no-such-option"]) is not None
    assert check_command(["vm", "box", "build", "[--force]"]) is None


@pytest.mark.parametrize("heading,anchor", [
    ("Options (pytest, also via environment)", "options-pytest-also-via-environment"),
    ("Side by side (`haconform/side_by_side.py`)", "side-by-side-haconformside_by_sidepy"),
    ("`--allow-destructive`: fail-stop restore", "--allow-destructive-fail-stop-restore"),
    ("The nightly's history and comparison", "the-nightlys-history-and-comparison"),
    ("Is the generator the limit?", "is-the-generator-the-limit"),
])
def test_slug_is_githubs(heading: str, anchor: str):
    assert slug(heading) == anchor
