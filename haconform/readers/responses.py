"""Who answered an HTTP request: the page's first line, or the real server's own header."""

from __future__ import annotations

# The stage configuration's own header on every real-server response
# (fixtures/documented/README.md, "How a client tells server2 from server3").
REAL_SERVER_HEADER = "X-Real-Server"


def answers(http, url: str, count: int, **kwargs) -> list[str]:
    """First line of each of `count` consecutive responses (the page names its server)."""
    out = []
    for _ in range(count):
        response = http.get(url, **kwargs)
        out.append(response.first_line if response.ok else f"<{response.status or response.error}>")
    return out


def served_by(response) -> str | None:
    """Host name of the real server that answered, from its X-Real-Server header."""
    return response.headers.get(REAL_SERVER_HEADER)


def raw_response_header(data: bytes, name: str) -> str | None:
    """A header's value in the head of a raw HTTP response (bytes read off a TCP stream)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None
