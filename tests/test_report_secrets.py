"""`haconform report` (trends, --compare, --targets) registers the secrets of the configuration the runs
used before it writes anything, and redacts what it prints and writes: a run kept from before a secret
was known, or a reason that quotes a password, shows no run of 8 characters of any of its forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from haconform import redaction
from haconform.cli import main as cli_main
from haconform.errors import HaconformError
from haconform.report.target_comparison import report_targets
from haconform.report.trends import report

STATS_PASSWORD = "Rep0rt-Stats-Pw-7q"
HACLUSTER_PASSWORD = "hc-env-Pw-4242"


def verdict(run_dir: str, config: Path, verdict_of_fence: str, reason: str) -> dict:
    def must(must_id, stage, held, why="passed"):
        return {"id": must_id, "stage": stage, "must": f"{must_id} MUST hold", "section": "s", "verdict": held,
                "reason": why, "known_finding": False, "figures": [{"name": "outage", "value": 3.0, "unit": "s"}]}
    return {"schema_version": 1,
            "run": {"target": {"target": "lab"}, "run_dir": run_dir, "duration_s": 60.0, "exit_status": 0,
                    "config": str(config), "figures": {}, "verdicts": {"held": 1, "broken": 0}},
            "musts": [must("HAC-STATS-001", "stage2", "held"),
                      must("HAC-FENCE-002", "stage5", verdict_of_fence, reason)]}


@pytest.fixture
def kept_runs(tmp_path, monkeypatch):
    """Two runs whose verdicts quote the stats password of their own configuration directory, and the
    hacluster password in the environment (a deployment's)."""
    monkeypatch.setattr(redaction, "_secrets", set())
    monkeypatch.setenv(redaction.HACLUSTER_PASSWORD_VARIABLE, HACLUSTER_PASSWORD)
    config = tmp_path / "site-config"
    cfg = config / "stage2" / "role-director" / "etc" / "haproxy" / "haproxy.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"listen stats\n    bind *:8080\n    stats auth admin:{STATS_PASSWORD}\n")
    results = tmp_path / "results"
    quoted = (f"failed: curl -u admin:{STATS_PASSWORD} refused; pcs said: ...{HACLUSTER_PASSWORD[3:]}; "
              f"stderr tail: {STATS_PASSWORD[5:]}")
    for name, held, reason in (("20261201-020000", "held", "passed"), ("20261202-020000", "broken", quoted)):
        (results / name).mkdir(parents=True)
        (results / name / "verdict.json").write_text(json.dumps(verdict(name, config, held, reason)))
    assert not redaction._secrets
    return results


def runs_of_eight(text: str) -> list[str]:
    shown = {text[i:i + 8] for i in range(len(text) - 7)}
    forms = redaction.secret_forms(STATS_PASSWORD) | redaction.secret_forms(f"admin:{STATS_PASSWORD}") \
        | redaction.secret_forms(HACLUSTER_PASSWORD)
    return sorted(form for form in forms if any(form[i:i + 8] in shown for i in range(len(form) - 7)))


def test_trends_and_compare_show_no_run_of_a_secret(kept_runs, tmp_path):
    printed = []
    out = tmp_path / "trends.html"
    status = report(str(kept_runs), compare_dirs=["20261201-020000", "20261202-020000"], out=str(out),
                    golden="missing.yaml", config_dir=str(tmp_path / "no-such-dir"),
                    say=lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
    assert status == 1, "held -> broken is a regression"
    text = "\n".join(printed)
    assert "HAC-FENCE-002" in text and redaction.MASK in text, text
    assert runs_of_eight(text) == [] and runs_of_eight(out.read_text()) == []
    assert redaction.MASK in out.read_text()


def test_targets_shows_no_run_of_a_secret(kept_runs, tmp_path):
    printed = []
    out = tmp_path / "targets.html"
    report_targets(str(kept_runs / "20261201-020000"), str(kept_runs / "20261202-020000"), out=str(out),
                   golden="missing.yaml", config_dir=str(tmp_path / "no-such-dir"),
                   say=lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
    text = "\n".join(printed)
    assert "HAC-FENCE-002" in text, text
    assert runs_of_eight(text) == [] and runs_of_eight(out.read_text()) == []


def test_a_run_without_its_configuration_falls_back_to_the_documented_one(kept_runs, tmp_path):
    documented = tmp_path / "documented"
    (documented / "stage2").mkdir(parents=True)
    (documented / "stage2" / "haproxy.cfg").write_text("listen stats\n    stats auth admin:Documented-Pw-1\n")
    for run in kept_runs.iterdir():
        data = json.loads((run / "verdict.json").read_text())
        data["run"]["config"] = str(tmp_path / "moved-away")
        (run / "verdict.json").write_text(json.dumps(data))
    report(str(kept_runs), out=str(tmp_path / "t.html"), golden="missing.yaml", config_dir=str(documented),
           say=lambda *args, **kwargs: None)
    assert redaction.redact("Documented-Pw-1") == redaction.MASK
    assert redaction.redact(STATS_PASSWORD) == STATS_PASSWORD, "its own configuration is gone"


def test_a_short_password_in_the_environment_is_one_clear_error(kept_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(redaction.HACLUSTER_PASSWORD_VARIABLE, "abc")
    with pytest.raises(HaconformError, match="HACONFORM_HACLUSTER_PASSWORD"):
        report(str(kept_runs), out=str(tmp_path / "t.html"), golden="missing.yaml", say=lambda *a, **k: None)
    assert cli_main(["report", str(kept_runs), "--out", str(tmp_path / "t.html")]) == 2
    error = capsys.readouterr().err
    assert "haconform: error: HACONFORM_HACLUSTER_PASSWORD (environment): the hacluster password has 3" in error
    assert "Traceback" not in error and "abc" not in error.split("error:")[1].split("(fix")[0]
