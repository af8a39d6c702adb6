"""Per-test evidence a person can read: what was sent, who answered, what matched.

Suites and fixtures append to the `evidence` fixture; the plugin renders it
into the HTML report (and a JSON history per run) after the test.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from typing import Any

from .redaction import redact, redacted_head


@dataclass
class Item:
    kind: str      # text | table | log | svg | json
    title: str
    content: Any
    at: float = field(default_factory=time.time)


class Evidence:
    def __init__(self, test_id: str):
        self.test_id = test_id
        self.items: list[Item] = []

    def text(self, title: str, content: str) -> None:
        self.items.append(Item("text", title, redact(str(content))))

    def table(self, title: str, rows: list[dict]) -> None:
        self.items.append(Item("table", title, [{k: redact(str(v)) for k, v in r.items()} for r in rows]))

    def log(self, title: str, lines: list[str]) -> None:
        self.items.append(Item("log", title, [redact(line) for line in lines]))

    def svg(self, title: str, svg: str) -> None:
        self.items.append(Item("svg", title, svg))

    def data(self, title: str, value: Any) -> None:
        self.items.append(Item("json", title, json.loads(redact(json.dumps(value, default=str)))))

    def to_json(self) -> list[dict]:
        return [{"kind": i.kind, "title": i.title, "at": i.at, "content": i.content} for i in self.items]

    def to_html(self) -> str:
        parts = []
        for item in self.items:
            parts.append(f"<h4>{html.escape(item.title)}</h4>")
            if item.kind == "table" and item.content:
                cols = list(item.content[0])
                head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols)
                               + "</tr>" for r in item.content[:500])
                more = f"<p>({len(item.content) - 500} more rows)</p>" if len(item.content) > 500 else ""
                parts.append(f"<table border=1 cellspacing=0 cellpadding=2><tr>{head}</tr>{body}</table>{more}")
            elif item.kind == "svg":
                parts.append(item.content)
            elif item.kind == "log":
                parts.append("<pre>" + html.escape("\n".join(item.content[-300:])) + "</pre>")
            elif item.kind == "json":
                parts.append("<pre>" + html.escape(redacted_head(json.dumps(item.content, indent=1), 20000)) + "</pre>")
            else:
                parts.append("<pre>" + html.escape(redacted_head(str(item.content), 20000)) + "</pre>")
        return "<div class='haconform-evidence'>" + "\n".join(parts) + "</div>"
