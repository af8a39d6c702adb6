"""Secrets in every form they take never reach a log record, a report or a file haconform writes.

The forms are computed here with the standard library, independently of haconform/redaction.py, so a
form register() forgets fails a test.  The last test runs a small pytest session (pytester, in a
subprocess so its registered secrets and logging stay its own) with the haconform plugin loaded
the way tox loads it (the package's pytest11 entry point), at --log-level=DEBUG with live logging,
a log file, JUnit XML and pytest-html, and looks for the secrets in everything that session wrote.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import random
import re
import secrets as random_tokens
import string
import textwrap
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from haconform import redaction
from haconform.errors import HaconformError
from haconform.redaction import MASK, install_log_filter, redact, redact_bytes, redact_obj, register

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
# Seeded, not fresh each run: the escaped forms of random bytes have runs of little entropy (`\\xc3\\xa9 `),
# and one that happens to continue into the text around a form would make a test fail one run in a hundred.
SEEDED = random.Random(23)
# Characters every escaping treats differently: quotes, markup, space, '+', '/', '%', non-ASCII.
TOKEN = base64.urlsafe_b64encode(SEEDED.randbytes(12)).decode()
PASSWORD = "hc-" + TOKEN + "\"'<&> +/%é"
KEY = SEEDED.randbytes(4096)


def text_forms(secret: str) -> dict[str, str]:
    data = secret.encode("utf-8")
    standard, urlsafe = base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()
    return {"raw": secret, "hex": data.hex(), "HEX": data.hex().upper(),
            "base64": standard, "base64 unpadded": standard.rstrip("="),
            "urlsafe base64": urlsafe, "urlsafe base64 unpadded": urlsafe.rstrip("="),
            "JSON": json.dumps(secret)[1:-1], "JSON non-ASCII": json.dumps(secret, ensure_ascii=False)[1:-1],
            "URL": quote(secret, safe=""), "URL plus": quote_plus(secret), "HTML": html.escape(secret),
            "bytes repr": repr(data)[2:-1]}


def bytes_forms(secret: bytes) -> dict[str, str]:
    standard, urlsafe = base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode()
    return {"latin-1": secret.decode("latin-1"), "hex": secret.hex(), "HEX": secret.hex().upper(),
            "bytes repr": repr(secret)[2:-1], "base64": standard, "base64 unpadded": standard.rstrip("="),
            "urlsafe base64": urlsafe, "urlsafe base64 unpadded": urlsafe.rstrip("=")}


FORMS = {**{f"password {name}": form for name, form in text_forms(PASSWORD).items()},
         **{f"key {name}": form for name, form in bytes_forms(KEY).items()}}


def leaked(text: str) -> list[str]:
    """The names of the forms found in text."""
    return [name for name, form in FORMS.items() if form in text]


@pytest.fixture(scope="module")
def secrets_of_these_tests():
    """A set of forms holding the password and the key, made once: the patterns of a 4 KiB key's forms
    take about a second to build, and redact() builds them again for every new set."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redaction, "_secrets", set(redaction._secrets))
        register(PASSWORD)
        register(KEY)
        return redaction._secrets


@pytest.fixture
def registered(monkeypatch, secrets_of_these_tests):
    """The password and the key registered for this test only, and the log record factory installed."""
    monkeypatch.setattr(redaction, "_secrets", secrets_of_these_tests)
    install_log_filter()


class Collected(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record):
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def root_handler():
    """A handler on the root logger at DEBUG: it sees child loggers' records, which root's own filters never
    do.  The child loggers are set to DEBUG (pytest resets the root logger's level after each phase)."""
    root = logging.getLogger()
    children = [logging.getLogger(name) for name in ("testinfra", "haconform")]
    levels = [child.level for child in children]
    handler = Collected()
    root.addHandler(handler)
    for child in children:
        child.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    for child, level in zip(children, levels):
        child.setLevel(level)


def test_the_forms_differ_from_each_other():
    """Otherwise a test below could pass on a form it never really checked."""
    password = text_forms(PASSWORD)
    assert len({password["raw"], password["JSON"], password["JSON non-ASCII"], password["URL"],
                password["URL plus"], password["HTML"], password["bytes repr"]}) == 7
    assert len(set(bytes_forms(KEY).values())) == 8


@pytest.mark.parametrize("name", sorted(FORMS))
def test_each_form_is_redacted_in_a_child_loggers_debug_record(registered, root_handler, name):
    form = FORMS[name]
    logging.getLogger("testinfra").debug("RUN CommandResult(stdout=%s)", form)
    logging.getLogger("haconform.stages.cluster").debug(f"inline {form} then %s", form)
    assert len(root_handler.lines) == 2
    assert not leaked("\n".join(root_handler.lines)), root_handler.lines
    assert all(MASK in line for line in root_handler.lines)
    for record in root_handler.records:   # no handler can format the arguments again
        assert record.args == () and form not in record.msg


def test_arguments_of_any_type_are_redacted(registered, root_handler):
    log = logging.getLogger("testinfra")
    log.debug("%r %s %r", KEY, {"password": PASSWORD}, PASSWORD.encode())
    log.debug("%(key)s %(pw)s", {"key": KEY.hex(), "pw": PASSWORD})
    log.debug("%s", base64.b64encode(KEY))   # str(bytes): the repr of the base64 bytes
    text = "\n".join(root_handler.lines)
    assert not leaked(text), text
    assert text.count(MASK) >= 6


def test_a_record_whose_arguments_do_not_format_is_kept_and_redacted(registered, root_handler):
    logging.getLogger("testinfra").debug("%d %d", PASSWORD)
    assert root_handler.lines and "message not formatted" in root_handler.lines[0]
    assert not leaked(root_handler.lines[0])


def test_an_exception_and_the_stack_are_redacted(registered, root_handler):
    log = logging.getLogger("haconform.fence")
    try:
        raise RuntimeError(f"key {KEY.hex()} for {PASSWORD}")
    except RuntimeError:
        log.exception("starting the fence device with %s", PASSWORD)
    log.debug("stack of %s", PASSWORD, stack_info=True)
    record = root_handler.records[0]
    assert record.exc_info is None and "RuntimeError: key " + MASK + " for " + MASK in record.exc_text
    assert "Traceback (most recent call last)" in root_handler.lines[0]
    assert not leaked("\n".join(root_handler.lines)), root_handler.lines


def test_install_is_idempotent(registered):
    factory = logging.getLogRecordFactory()
    install_log_filter()
    install_log_filter()
    assert logging.getLogRecordFactory() is factory
    root = logging.getLogger()
    assert sum(isinstance(f, redaction.RedactingFilter) for f in root.filters) == 1


def test_redact_obj_walks_nested_json(registered):
    document = {"hosts": [{"name": "director1", "auth": PASSWORD, "key": KEY.hex()}],
                f"user:{PASSWORD}": ("ok", {"b64": base64.b64encode(KEY).decode(), "n": 3, "x": None}),
                "raw": KEY, "nested": [[[f"... {bytes_forms(KEY)['bytes repr']} ..."]]]}
    redacted = redact_obj(document)
    assert not leaked(json.dumps(redacted, ensure_ascii=False, default=str))
    assert not leaked(json.dumps(redacted, default=str))
    assert redacted["hosts"][0] == {"name": "director1", "auth": MASK, "key": MASK}
    assert redacted[f"user:{MASK}"][1]["n"] == 3 and redacted[f"user:{MASK}"][1]["x"] is None
    assert KEY not in redacted["raw"]
    assert PASSWORD in document["hosts"][0]["auth"], "a copy: the original is left alone"


@pytest.mark.parametrize("name", sorted(FORMS))
def test_redact_bytes_masks_every_form(registered, name):
    for encoding in ("utf-8", "latin-1"):
        try:
            blob = b"head " + FORMS[name].encode(encoding) + b" tail"
        except UnicodeEncodeError:
            continue
        redacted = redact_bytes(blob)
        assert redacted == b"head " + MASK.encode() + b" tail", (name, encoding)


def test_the_raw_key_is_redacted_inside_bytes(registered):
    assert KEY not in redact_bytes(b"\x00" * 7 + KEY + b"\xff")
    assert PASSWORD.encode() not in redact_bytes(b"echo " + PASSWORD.encode() + b" | chpasswd")


def test_base64_wrapped_in_lines_is_redacted(registered):
    for wrapped in (base64.encodebytes(KEY).decode(), "\n".join(textwrap.wrap(base64.b64encode(KEY).decode(), 64))):
        redacted = redact(wrapped)
        lines = wrapped.splitlines()
        assert len(lines) > 60
        assert [line for line in lines if line in redacted] == [], "a line of the key's base64 is shown"


@pytest.mark.parametrize("prefix", ["hacluster:", "admin:x", "ab"])
def test_base64_of_a_blob_holding_the_secret_hides_it(registered, prefix):
    """Basic auth's user:password, or a file carrying the key: the secret at any offset mod 3."""
    for secret in (PASSWORD.encode(), KEY):
        blob = base64.b64encode(prefix.encode() + secret + b"\n").decode()
        redacted = redact(blob)
        assert MASK in redacted
        shown = redacted.replace(MASK, "")
        # the prefix's own groups, the group mixing it with the secret, the last group (secret and "\n")
        assert len(shown) <= len(base64.b64encode(prefix.encode())) + 8, f"left of {len(blob)}: {shown!r}"


@pytest.mark.parametrize("secret", ["abc", b"\x01\x02\x03", "é", "ab"])
def test_a_secret_too_short_to_redact_is_refused_loudly(monkeypatch, secret):
    monkeypatch.setattr(redaction, "_secrets", set())
    refusal = r"has \d characters?: too short .* \(fix: use a secret of at least 4"
    with pytest.raises(redaction.ShortSecret, match=refusal):
        register(secret)
    assert not redaction._secrets


def test_no_secret_is_nothing_to_register(monkeypatch):
    monkeypatch.setattr(redaction, "_secrets", set())
    register("")
    register(None)
    register(b"")
    assert not redaction._secrets


def test_the_refusal_names_the_secret_where_and_fix_but_never_shows_it(monkeypatch):
    monkeypatch.setattr(redaction, "_secrets", set())
    with pytest.raises(redaction.ShortSecret) as refused:
        register("xyz", what="the hacluster password", where="HACONFORM_HACLUSTER_PASSWORD",
                 fix="export a password of at least 4 characters")
    assert str(refused.value).startswith("HACONFORM_HACLUSTER_PASSWORD: the hacluster password has 3 characters")
    assert "xyz" not in str(refused.value) and str(refused.value).endswith("at least 4 characters)")


def test_forms_of_four_to_seven_characters_are_masked_whole(monkeypatch):
    monkeypatch.setattr(redaction, "_secrets", set())
    register("abcd")
    assert redact("xabcdx abc") == f"x{MASK}x abc"
    assert all(len(form) >= redaction.MIN_FORM for form in redaction._secrets)
    register("\u00e9\u00e9\u00e9\u00e9")   # its URL form is 24 chars, its JSON 24, its raw 4: all kept
    assert redact(quote("\u00e9" * 4, safe="")) == MASK
    assert redact(quote("\u00e9" * 4, safe="")[3:]) == MASK, "a run of 8 of its URL form"


def test_forms_registered_later_are_redacted(monkeypatch):
    """The patterns follow register() and a replaced set (as tests' monkeypatch does)."""
    monkeypatch.setattr(redaction, "_secrets", set())
    assert redact("alpha-secret beta-secret") == "alpha-secret beta-secret"
    register("alpha-secret")
    assert redact("alpha-secret beta-gamma") == f"{MASK} beta-gamma"
    register("beta-gamma")
    assert redact("alpha-secret beta-gamma") == f"{MASK} {MASK}"
    monkeypatch.setattr(redaction, "_secrets", set())
    assert redact("alpha-secret") == "alpha-secret"
    register("alpha-secret")
    assert redact("alpha-secret") == MASK, "registered again into the new set"


# ----- fragments: a secret cut, wrapped or half shown ----------------------------------------------

def fragments(form: str, size: int = redaction.FRAGMENT) -> set[str]:
    return {form[i:i + size] for i in range(len(form) - size + 1)}


def fragments_shown(text: str, forms: dict[str, str] = FORMS) -> list[str]:
    """The names of the forms of which a run of FRAGMENT characters shows in text, between its masks (the
    key's latin-1 form holds every character: the mask's own '»' and what follows may be a run of it)."""
    shown = set().union(*(fragments(piece) for piece in text.split(MASK)))
    return sorted(name for name, form in forms.items() if not shown.isdisjoint(fragments(form)))


@pytest.mark.parametrize("name", sorted(FORMS))
def test_a_cut_prefix_or_suffix_of_every_form_is_masked(registered, name):
    form = FORMS[name]
    for piece in (form[:8], form[-8:], form[:len(form) // 2], form[len(form) // 2:], form[3:-3]):
        redacted = redact(f"stderr: ...{piece}")
        # (a dot before the piece may be masked with it: the key's latin-1 form holds every character)
        assert redacted in (f"stderr: ...{MASK}", f"stderr: ..{MASK}"), (name, piece)


@pytest.mark.parametrize("name", sorted(FORMS))
def test_every_run_of_eight_is_masked_and_seven_may_show(registered, name):
    form = FORMS[name]
    start = len(form) // 3
    run = form[start:start + 8]
    redacted = redact(f"<{run}>")
    # (the characters around it may be runs of a form too: the key's latin-1 form holds every character)
    assert run not in redacted and MASK in redacted and len(redacted) <= len(MASK) + 2, redacted
    assert not fragments_shown(redact("x".join(form[i:i + 7] for i in range(0, len(form), 7))))


def test_wrapped_and_cut_base64_of_the_key_is_masked(registered):
    wrapped = base64.encodebytes(KEY).decode()
    for text in (wrapped, wrapped[37:], wrapped[:-41], "\n".join(textwrap.wrap(base64.b64encode(KEY).decode(), 64))):
        redacted = redact(text)
        assert not fragments_shown(redacted), fragments_shown(redacted)
        assert set(redacted) <= set(MASK + "\n"), redacted[:200]


def test_half_of_a_hex_key_as_pytests_saferepr_shows_it_is_masked(registered):
    from _pytest._io.saferepr import saferepr

    for value in (KEY.hex(), KEY, base64.b64encode(KEY).decode(), PASSWORD * 20):
        shown = saferepr(value, maxsize=240)
        assert "..." in shown, "saferepr did not cut: the test would prove nothing"
        assert not fragments_shown(redact(shown)), (fragments_shown(redact(shown)), redact(shown))


def test_ordinary_text_is_left_alone(registered):
    text = ("Jun 12 10:00:01 server1 pacemaker-controld[812]: notice: State transition S_IDLE -> "
            "S_POLICY_ENGINE | sha256 " + hashlib.sha256(b"x").hexdigest() + " " + str(uuid.uuid4()))
    assert redact(text) == text, redact(text)


def test_redacted_tail_cuts_after_redacting_and_keeps_a_mask_whole(registered):
    output = "pcs: Error: unable to authenticate with " + PASSWORD
    assert PASSWORD[-5:] in output[-5:]
    for limit in range(1, 60):
        tail = redaction.redacted_tail(output, limit)
        assert PASSWORD[-4:] not in tail and TOKEN[-4:] not in tail, (limit, tail)
        assert tail.endswith(MASK) and len(tail) <= max(limit, len(MASK))
        assert MASK not in tail or tail.count("«") == tail.count("»")
    head = redaction.redacted_head(PASSWORD + " was refused", 5)
    assert head == MASK
    assert redaction.redacted_tail(b"ok " + KEY, 300).startswith(("ok ", MASK))
    assert redaction.redacted_tail(None, 10) == ""


def test_a_long_text_is_redacted_quickly(registered):
    """redact() runs on every log record and every report: a megabyte of ordinary text and of secrets."""
    import time

    ordinary = (string.ascii_letters + string.digits + " \n:/.-_=") * (1_000_000 // 70)
    secret = (KEY.hex() + " " + PASSWORD + " " + base64.encodebytes(KEY).decode()) * (1_000_000 // 14_000)
    for text in (ordinary, secret):
        began = time.perf_counter()
        redact(text)
        redact_bytes(text.encode())
        assert time.perf_counter() - began < 3.0, "redact() of 1 MB is too slow for reports"


# ----- a whole pytest session ----------------------------------------------------------------------

LEAKY_TESTS = """
    import base64
    import logging
    import sys
    import warnings
    from pathlib import Path

    import pytest
    from haconform.conformance import conformance
    from haconform.redaction import register

    HERE = Path(__file__).parent
    PASSWORD = (HERE / "password.txt").read_text(encoding="utf-8")
    KEY = (HERE / "fence.key").read_bytes()
    register(PASSWORD)
    register(KEY)
    log = logging.getLogger("testinfra")


    @pytest.fixture
    def stage(evidence):
        log.debug("RUN %r", KEY)
        print("setting up with", PASSWORD)
        yield
        print("tearing down with", KEY.hex(), file=sys.stderr)


    @conformance("HAC-SEC-001", stage="stage4", section="s", must="A secret MUST never be shown")
    def test_fails_with_the_secrets(stage, evidence):
        log.debug("RUN CommandResult(command=b'pcs host auth -p %s', stdout=%r)", PASSWORD, KEY)
        log.info("key as base64: %s", base64.b64encode(KEY).decode())
        print(base64.encodebytes(KEY).decode())
        print(PASSWORD, KEY.hex().upper(), file=sys.stderr)
        evidence.text("the password", PASSWORD)
        evidence.data("the key", {"key": base64.urlsafe_b64encode(KEY).decode()})
        try:
            raise RuntimeError(f"pcs refused {PASSWORD!r}")
        except RuntimeError:
            log.exception("applying stage 4")
        assert PASSWORD == "", f"hacluster password {PASSWORD} and key {KEY.hex()}"


    @conformance("HAC-SEC-002", stage="stage4", section="s", must="A late secret MUST never be shown")
    def test_passes_and_registers_late(evidence, record_property):
        late = (HERE / "late.txt").read_text(encoding="utf-8")
        print("before it was registered:", late)
        evidence.text("late", late)
        record_property("late", late)
        register(late)


    @conformance("HAC-SEC-003", stage="stage4", section="s", must="A skip reason MUST hide secrets")
    def test_skips_with_the_password():
        pytest.skip(f"no way in with {PASSWORD}")


    def test_fails_holding_the_secrets_in_locals():
        # -l shows every local through saferepr, which cuts a long value to its two ends
        key, key_hex, key_base64 = KEY, KEY.hex(), base64.b64encode(KEY).decode()
        password, credentials = PASSWORD, {"hacluster": PASSWORD, "fence": KEY.hex()}
        assert key_hex == password


    def test_fails_on_a_command_whose_output_ends_with_a_secret():
        # cut to its tail before it is redacted, as a transport does with a failed command's output
        stdout = "Loading fence key\\n" + base64.b64encode(KEY).decode() + "\\nusing " + PASSWORD
        raise RuntimeError(f"`fence_xvm -o list` exited 1; stdout: {stdout[-37:]!r}; key tail: {KEY.hex()[-11:]}")


    @pytest.mark.xfail(reason=f"a known finding about {PASSWORD}", strict=True)
    def test_xfails_with_the_password_in_its_reason():
        assert False


    def test_warns_with_the_password():
        warnings.warn(f"the hacluster password {PASSWORD} is the runbook's own")
        warnings.warn(UserWarning(f"fence key {KEY.hex()[:100]}"))


    def test_prints_what_a_later_test_registers():
        print("not yet a secret:", (HERE / "later.txt").read_text(encoding="utf-8"))


    def test_registers_what_an_earlier_test_printed():
        # its captured output is already in JUnit's and pytest-html's data: only the last pass masks it there
        register((HERE / "later.txt").read_text(encoding="utf-8"))


    def test_prints_the_secrets():
        print("-s shows", PASSWORD, "and", KEY.hex()[:500])
        sys.stdout.write(PASSWORD[:9])   # one secret in two writes
        sys.stdout.write(PASSWORD[9:] + "\\n")
        print(repr(KEY)[:300], file=sys.stderr)
"""


def run_session(pytester, test_source: str, *options: str):
    """A pytest session in a subprocess, with the haconform plugin loaded through its entry point."""
    pytester.makepyfile(test_leaky=test_source)
    (pytester.path / "documented").mkdir()
    reports = pytester.path / "reports"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--config", str(pytester.path / "documented"),
        "--history-dir", str(pytester.path / "results"), "-rA", *options)
    return result, reports


def _json_unescaped(text: str) -> str:
    return re.sub(r'\\(u[0-9a-fA-F]{4}|["\\/bfnrt])',
                  lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "u"
                  else json.loads(f'"\\{m.group(1)}"'), text)


def runs_shown(forms: dict[str, str | bytes], outputs: dict[str, str]) -> set[tuple[str, str]]:
    """(output, form) for each run of FRAGMENT characters of a form that shows in an output: as it is,
    HTML-unescaped, or JSON-unescaped inside HTML (pytest-html's data blob)."""
    runs = {name: fragments(form) for name, form in forms.items()}
    found = set()
    for where, text in outputs.items():
        views = {text, html.unescape(text)}
        views.add(_json_unescaped(html.unescape(text)))
        shown = set().union(*(fragments(view) for view in views))
        found |= {(where, name) for name, pieces in runs.items() if not shown.isdisjoint(pieces)}
    return found


def session_outputs(pytester, result) -> dict[str, str]:
    outputs = {"terminal": result.stdout.str() + result.stderr.str()}
    outputs.update({path.relative_to(pytester.path).as_posix(): path.read_text(encoding="utf-8", errors="replace")
                    for folder in ("reports", "results") for path in sorted((pytester.path / folder).rglob("*"))
                    if path.is_file()})
    return outputs


def write_the_secrets(pytester) -> tuple[str, str]:
    """The files LEAKY_TESTS reads: the password, the key, and two secrets registered late."""
    late, later = ("late-" + random_tokens.token_urlsafe(12)), ("later-" + random_tokens.token_urlsafe(12))
    (pytester.path / "password.txt").write_text(PASSWORD, encoding="utf-8")
    (pytester.path / "fence.key").write_bytes(KEY)
    (pytester.path / "late.txt").write_text(late, encoding="utf-8")
    (pytester.path / "later.txt").write_text(later, encoding="utf-8")
    return late, later


def test_a_session_shows_no_secret_anywhere(pytester):
    late, later = write_the_secrets(pytester)
    result, reports = run_session(
        pytester, LEAKY_TESTS, "-l", "--log-level=DEBUG", "-o", "log_cli=true", "--log-cli-level=DEBUG",
        "--log-file", str(pytester.path / "reports" / "debug.log"), "--log-file-level=DEBUG",
        "--junitxml", str(pytester.path / "reports" / "junit.xml"), "-o", "junit_logging=all",
        "--html", str(pytester.path / "reports" / "report.html"), "--self-contained-html")
    result.assert_outcomes(passed=5, failed=3, skipped=1, xfailed=1, warnings=3)   # and JUnit xunit2 on record_property
    outputs = session_outputs(pytester, result)
    terminal = outputs["terminal"]
    assert "not yet a secret: «redacted»" in terminal and "not yet a secret: " in outputs["reports/junit.xml"]
    # the secrets did reach every output (so their absence below means they were redacted)
    assert terminal.count(MASK) >= 5, terminal
    for shown in ("Captured stdout call", "Captured log call", "key_hex ", "credentials ", "XFAIL",
                  "warnings summary", "stdout: '", "key tail: "):
        assert shown in terminal, shown
    assert {"reports/junit.xml", "reports/report.html", "reports/debug.log", "reports/verdict.json",
            "reports/verdict.html"} <= set(outputs), sorted(outputs)
    for name in ("reports/junit.xml", "reports/report.html", "reports/debug.log"):
        assert MASK in outputs[name] or json.dumps(MASK)[1:-1] in outputs[name], name
    history = next(text for name, text in outputs.items() if name.endswith("history.jsonl"))
    rows = [json.loads(line) for line in history.splitlines()]
    assert sorted((r["nodeid"].split("::")[1], r["phase"]) for r in rows) == [
        ("test_fails_with_the_secrets", "call"), ("test_passes_and_registers_late", "call"),
        ("test_skips_with_the_password", "call")]

    forms = {**FORMS, **{f"late {name}": form for name, form in text_forms(late).items()},
             **{f"later {name}": form for name, form in text_forms(later).items()}}
    found = runs_shown(forms, outputs)
    assert found == set(), f"runs of {redaction.FRAGMENT} characters of secrets shown: {sorted(found)}"


def test_a_session_with_s_shows_no_secret_on_the_terminal(pytester):
    """-s: what the tests print goes to the terminal directly, past every report."""
    write_the_secrets(pytester)
    result, _ = run_session(pytester, LEAKY_TESTS, "-s", "-l", "--junitxml",
                            str(pytester.path / "reports" / "junit.xml"))
    result.assert_outcomes(passed=5, failed=3, skipped=1, xfailed=1, warnings=3)   # and JUnit xunit2 on record_property
    outputs = session_outputs(pytester, result)
    assert "-s shows «redacted» and «redacted»" in outputs["terminal"], outputs["terminal"]
    assert "setting up with «redacted»" in outputs["terminal"]
    found = runs_shown(FORMS, outputs)
    assert found == set(), f"runs of {redaction.FRAGMENT} characters of secrets shown: {sorted(found)}"


# ----- secrets read from hosts are registered before testinfra logs them ---------------------------------

@pytest.fixture
def fresh_secrets(monkeypatch):
    monkeypatch.setattr(redaction, "_secrets", set(redaction._secrets))
    install_log_filter()


def test_discover_registers_stats_auth_and_userlist_credentials(fresh_secrets):
    config = ("listen stats\n    bind *:8080\n    stats auth  admin:s3cr3t-Stats\n"
              "userlist ops\n    user alice insecure-password al1ce-Pass\n")
    redaction.discover(config.encode())
    text = redact("s3cr3t-Stats admin:s3cr3t-Stats al1ce-Pass " + base64.b64encode(b"admin:s3cr3t-Stats").decode())
    assert "s3cr3t" not in text and "al1ce" not in text and "YWRtaW46czNjcjN0LVN0YXRz" not in text, text


def test_discover_ignores_text_without_credentials(fresh_secrets):
    before = set(redaction._secrets)
    redaction.discover("global\n    maxconn 65535\n# auth is documented elsewhere\n")
    assert redaction._secrets == before


class EchoBackend:
    """A GuardedBackend that 'runs' a command by returning fixed output."""

    def __new__(cls, output: bytes):
        from haconform.guard import HostGuard
        from haconform.targets.backend import GuardedBackend

        class Backend(GuardedBackend):
            def run_checked(self, command, *, timeout, input):
                return self.result(0, self.encode(command), output, b"")
        return Backend("fake", guard=HostGuard())


def test_a_key_read_inside_secret_output_is_registered_before_testinfra_logs_it(fresh_secrets, root_handler):
    key = random_tokens.token_bytes(128)
    backend = EchoBackend(key)
    with redaction.secret_output():
        backend.run("cat -- /etc/cluster/fence_xvm.key")
    runs = [line for line in root_handler.lines if "RUN" in line]
    assert runs, "testinfra logged no RUN line: the test would prove nothing"
    assert not any(repr(key)[2:-1] in line or key.hex() in line for line in runs), runs
    assert MASK in runs[-1]


def test_output_outside_secret_output_is_not_registered_wholesale(fresh_secrets, root_handler):
    backend = EchoBackend(b"an ordinary output line")
    backend.run("echo")
    assert "an ordinary output line" in root_handler.lines[-1]


def test_a_config_read_with_cat_is_logged_without_its_stats_password(fresh_secrets, root_handler):
    backend = EchoBackend(b"listen stats\n    stats auth admin:Cat-Read-Pw1\n")
    backend.run("cat /etc/haproxy/haproxy.cfg")
    assert "Cat-Read-Pw1" not in root_handler.lines[-1] and MASK in root_handler.lines[-1]


# ----- pcsd tokens and the CIB's secrets ---------------------------------------------------------------

KNOWN_HOSTS = """{
  "format_version": 1,
  "data_version": 3,
  "known_hosts": {
    "server1": {"dest_list": [{"addr": "server1", "port": 2224}], "token": "5f8c2a1e-0b7d-4c3e-9a61-2d4f7e8b9c10"},
    "server4": {"dest_list": [{"addr": "server4", "port": 2224}], "token": "a1b2c3d4-e5f6-4789-8abc-def012345678"}
  }
}
"""

CIB = """<cib crm_feature_set="3.17.4" validate-with="pacemaker-3.9" epoch="12">
  <configuration>
    <resources>
      <primitive id="vmfence" class="stonith" type="fence_xvm">
        <instance_attributes id="vmfence-instance_attributes">
          <nvpair id="vmfence-key_file" name="key_file" value="/etc/cluster/fence_xvm.key"/>
          <nvpair id="vmfence-pcmk_host_map" name="pcmk_host_map" value="server1:Node1;server4:Node4"/>
        </instance_attributes>
      </primitive>
      <primitive id="ipmi1" class="stonith" type="fence_ipmilan">
        <instance_attributes id="ipmi1-ia">
          <nvpair value="Ipmi&amp;Pass&quot;42" name="password" id="ipmi1-password"/>
          <nvpair id="ipmi1-password_script" name="password_script" value="/usr/local/bin/ipmi-pass"/>
          <nvpair id="ipmi1-lanplus" name="lanplus" value="1"/>
        </instance_attributes>
      </primitive>
      <primitive id="aws" class="stonith" type="fence_aws">
        <instance_attributes id="aws-ia">
          <nvpair id="aws-access_key" name="access_key" value="AKIAEXAMPLE12345"/>
          <nvpair id="aws-secret_key" name="secret_key" value='wJalrXUtnFEMI/K7MDENG'/>
          <nvpair id="aws-region" name="region" value="eu-west-1"/>
        </instance_attributes>
      </primitive>
    </resources>
  </configuration>
</cib>
"""

PCS_JSON = json.dumps({"primitives": [{"id": "vmware", "agent_name": {"type": "fence_vmware_rest"},
                                       "instance_attributes": [{"id": "vmware-ia", "nvpairs": [
                                           {"id": "vmware-passwd", "name": "passwd", "value": "vmw-Pass-77"},
                                           {"id": "vmware-ssl", "name": "ssl_insecure", "value": "1"},
                                           {"id": "vmware-apikey", "name": "apiKey", "value": "k-0123456789"}]}]}],
                       "totem_options": {"token": "3000", "token_coefficient": "650"}})


def test_pcsd_tokens_of_known_hosts_are_registered_when_read(fresh_secrets):
    redaction.discover(KNOWN_HOSTS.encode(), source="/var/lib/pcsd/known-hosts")
    shown = redact(KNOWN_HOSTS)
    assert "5f8c2a1e" not in shown and "def012345678" not in shown and shown.count(MASK) == 2, shown
    assert '"port": 2224' in shown


def test_pcs_09_tokens_are_registered(fresh_secrets):
    redaction.discover('{"format_version": 2, "tokens": {"server1": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}}')
    assert redact("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d") == MASK


def test_cib_nvpairs_that_hold_secrets_are_registered_and_paths_are_not(fresh_secrets):
    redaction.discover(CIB.encode(), source="cibadmin -Q on server1")
    for secret in ('Ipmi&Pass"42', "AKIAEXAMPLE12345", "wJalrXUtnFEMI/K7MDENG"):
        assert redact(f"x {secret} x") == f"x {MASK} x", secret
    shown = redact(CIB)
    assert "Ipmi&amp;Pass&quot;42" not in shown and "AKIAEXAMPLE" not in shown and "wJalrXUtnFEMI" not in shown
    # where a secret is kept is evidence, not a secret; so are the other parameters
    for kept in ("/etc/cluster/fence_xvm.key", "/usr/local/bin/ipmi-pass", "server1:Node1;server4:Node4",
                 "eu-west-1", 'name="lanplus" value="1"'):
        assert kept in shown, kept


def test_pcs_json_parameters_that_hold_secrets_are_registered(fresh_secrets):
    redaction.discover(PCS_JSON)
    shown = redact(PCS_JSON)
    assert "vmw-Pass-77" not in shown and "k-0123456789" not in shown, shown
    assert '"token": "3000"' in shown, "corosync's token is a timeout, not a secret"
    assert '"value": "1"' in shown


@pytest.mark.parametrize("name, secret", [
    ("password", True), ("ipmi_password", True), ("passwd", True), ("passphrase", True), ("apikey", True),
    ("apiKey", True), ("secret_key", True), ("access_key", True), ("token", True), ("auth_token", True),
    ("key_file", False), ("keyfile", False), ("password_script", False), ("passwd_script", False),
    ("identity_file", False), ("ssh_key_path", False), ("key_dir", False), ("pcmk_host_map", False),
    ("ipaddr", False), ("login", False)])
def test_which_parameters_hold_secrets(name, secret):
    assert redaction.secret_parameter(name) is secret


def test_a_short_secret_in_the_cib_is_refused_naming_where(fresh_secrets):
    cib = '<cib>\n<nvpair id="f-password" name="password" value="ab"/>\n</cib>'
    with pytest.raises(redaction.ShortSecret, match=r"^cibadmin -Q line 2: nvpair 'password': the value of password "
                                                   r"has 2 characters"):
        redaction.discover(cib, source="cibadmin -Q")


def test_a_short_stats_password_in_stage_data_is_refused_naming_file_line_and_fix(tmp_path):
    stage = tmp_path / "stage2"
    (stage / "role-director" / "etc" / "haproxy").mkdir(parents=True)
    (stage / "stage.yaml").write_text("stage: stage2\ntitle: t\nrunbook_sections: [s]\n")
    cfg = stage / "role-director" / "etc" / "haproxy" / "haproxy.cfg"
    cfg.write_text("global\n    daemon\nlisten stats\n    bind *:8080\n    stats auth admin:pw1\n")
    from haconform.stages.model import load_stage
    with pytest.raises(HaconformError) as refused:
        load_stage(stage)
    assert str(refused.value) == (
        f"{cfg} line 5: the password of `stats auth` has 3 characters: too short to keep out of logs and reports "
        "(a form under 4 characters cannot be masked without masking ordinary text everywhere) "
        "(fix: use a password of at least 4 characters)")


def test_a_short_hacluster_password_ends_the_session_before_anything_runs(pytester, monkeypatch):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    monkeypatch.setenv("HACONFORM_HACLUSTER_PASSWORD", "xyz")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "fixtures.stages", "--config", str(ROOT / "fixtures" / "documented"),
        "--history-dir", str(pytester.path / "results"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    error = result.stderr.str()
    assert ("HACONFORM_HACLUSTER_PASSWORD (environment): the hacluster password has 3 characters" in error
            and "(fix: export HACONFORM_HACLUSTER_PASSWORD" in error), error
    assert "Traceback" not in error and "xyz" not in error


# ----- the terminal: a stream that redacts what passes ----------------------------------------------------

class Written:
    def __init__(self):
        self.parts: list[str] = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def isatty(self):
        return True


def test_a_secret_written_in_pieces_is_masked_whole(registered):
    sink = Written()
    stream = redaction.RedactingStream(sink)
    stream.write("progress ...")
    stream.flush()
    for piece in (PASSWORD[:3], PASSWORD[3:5], PASSWORD[5:]):   # each too short to recognise alone
        stream.write(piece)
        stream.flush()
    stream.write(" done\nnext " + KEY.hex()[:6])
    stream.flush()
    stream.write(KEY.hex()[6:40])
    stream.drain()
    shown = "".join(sink.parts)
    assert shown == f"progress ...{MASK} done\nnext {MASK}", shown
    assert stream.isatty(), "the wrapped stream's own attributes"


def test_a_flush_passes_on_all_but_the_last_characters_and_never_splits_a_mask(registered):
    sink = Written()
    stream = redaction.RedactingStream(sink)
    stream.write(f"collected 3 items {PASSWORD} and then some")
    stream.flush()
    assert "".join(sink.parts) == f"collected 3 items {MASK} and th", sink.parts
    stream.write(f"\nkey {KEY.hex()[:30]}")
    stream.flush()
    # the line up to its newline; then the run reaching the end is held whole (it may go on)
    assert "".join(sink.parts) == f"collected 3 items {MASK} and then some\nkey ", sink.parts
    stream.drain()
    assert "".join(sink.parts) == f"collected 3 items {MASK} and then some\nkey {MASK}", sink.parts
