"""Cut tests/data/verdict/results/ from real kept runs (run once by hand; the output is checked in).

    python tests/data/verdict/cut.py results/20261129-222637 results/20261129-225747 \
        results/20261129-230354 results/20261129-230946

- OLD (a run that kept only history.jsonl) -> results/<its name>/history.jsonl
- NEW -> results/<its name>/history.jsonl, and verdict.json as the session plugin writes it
  (target and versions filled in as the plugin records them on the lab)
- PERF... -> results/<its name>/summary.json (the figures trends read; per-request detail dropped)
- and a deliberate regression, results/20261130-021700/: NEW with HAC-HA-005 failed
  (held -> broken) and HAC-FENCE-002's fence slower by 3.5 s (6.7 s -> 10.2 s) and its outage
  by 4 s, and HAC-CFG-001 left out (a verify-only skip), written as history.jsonl only.

Only a subset of MUSTs is kept (one or more per stage, the parametrized ACL-001 and the xfail
LINT-002), and the large set-up evidence ("configuration: ...") is shortened.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from haconform.report.verdict import build_verdict, read_history, run_from_history  # noqa: E402

KEEP = {"HAC-RR-001", "HAC-RR-002", "HAC-ACL-001", "HAC-RW-002", "HAC-LINT-002", "HAC-LIM-002", "HAC-HA-003",
        "HAC-HA-005", "HAC-HA-006", "HAC-FENCE-002", "HAC-FENCE-003", "HAC-ALG-001", "HAC-CFG-001"}
REGRESSED = "20261130-021700"


def cut_record(raw: dict, keep_svg: bool) -> dict:
    raw = copy.deepcopy(raw)
    evidence = []
    for item in raw.get("evidence") or []:
        if item["title"].startswith("configuration:") and isinstance(item["content"], dict):
            item["content"] = {k: item["content"][k] for k in ("stage", "seconds") if k in item["content"]}
        if item["title"].startswith("deployment state recorded") and isinstance(item["content"], dict):
            item["content"] = {k: item["content"][k] for k in ("power", "nics", "seconds") if k in item["content"]}
        if item["kind"] == "svg" and not keep_svg:
            continue
        if item["kind"] == "log":
            item["content"] = item["content"][-20:]
        if isinstance(item["content"], list) and len(item["content"]) > 40:
            item["content"] = item["content"][:40]
        evidence.append(item)
    raw["evidence"] = evidence
    return raw


def cut_history(source: Path, keep_svg: bool) -> list[dict]:
    out = []
    for line in source.read_text().splitlines():
        raw = json.loads(line)
        if (raw.get("requirement") or {}).get("id") in KEEP:
            out.append(cut_record(raw, keep_svg))
    return out


def write_history(target: Path, records: list[dict]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    (target / "history.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def regress(records: list[dict]) -> list[dict]:
    out = copy.deepcopy(records)
    for raw in out:
        rid = raw["requirement"]["id"]
        if rid == "HAC-HA-005":
            raw["outcome"] = "failed"
        if rid == "HAC-CFG-001":
            raw.update(outcome="skipped", left_out="verify-only: the deployment is in stage4, not stage5",
                       evidence=[], duration=0.0)
        if rid == "HAC-FENCE-002":
            for item in raw["evidence"]:
                if item["title"] == "figures":
                    item["content"]["crash -> fence completed (s)"] = 10.2
                    item["content"]["outage seen by the client (s)"] = 11.7
    return out


def main(old: str, new: str, *perf: str) -> None:
    results = HERE / "results"
    old_dir, new_dir = Path(old), Path(new)
    write_history(results / old_dir.name, cut_history(old_dir / "history.jsonl", keep_svg=False))
    new_records = cut_history(new_dir / "history.jsonl", keep_svg=True)
    write_history(results / new_dir.name, new_records)
    records = read_history(results / new_dir.name / "history.jsonl")
    run = run_from_history(new_dir, records)
    run.update({"target": {"target": "lab", "lab": "haconform", "state_dir": "/var/lib/haconform/labs/haconform"},
                "versions": {"haproxy": "2.6.12-1+deb12u4", "pacemaker": "2.1.5", "corosync": "3.1.7",
                             "pcs": "0.11.5"},
                "source": "session", "duration_estimated": False})
    verdict = build_verdict(records, run=run, notes=[{"stage": "stage3", "section": "读写分离",
                                                      "text": "Stats page, logging and limits from stage2 stay."}],
                            stages={"stage4": "High availability: pacemaker + corosync on the directors"})
    (results / new_dir.name / "verdict.json").write_text(json.dumps(verdict, indent=1, ensure_ascii=False) + "\n")
    write_history(results / REGRESSED, regress([cut_record(r, keep_svg=False) for r in new_records]))
    for perf_dir in map(Path, perf):
        summary = json.loads((perf_dir / "summary.json").read_text())
        for phase in summary.get("phases", {}).values():
            for key in ("by_request", "served_by", "failure_kinds", "classes", "failure_windows", "silent_windows"):
                phase.pop(key, None)
        summary.pop("timing", None)
        (results / perf_dir.name).mkdir(parents=True, exist_ok=True)
        (results / perf_dir.name / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
