"""Security policy of the web viewer: CSP, Host-header and token checks.

The viewer binds to 127.0.0.1 and answers only requests whose ``Host`` header
names a loopback address on its port, which defeats DNS rebinding (a hostile page
that makes ``evil.example`` resolve to 127.0.0.1 still sends ``Host:
evil.example``). Serving on another interface needs an explicit ``--host`` and a
token; then every request must carry it (``?token=``, a cookie set from it, or
``Authorization: Bearer``).

The Content-Security-Policy allows only the viewer's own scripts, styles and
API: no inline script, no ``eval``, no remote image, font, frame or connection.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from urllib.parse import parse_qs

__all__ = ["CSP", "LOOPBACK_HOSTS", "SECURITY_HEADERS", "STATIC_DIR", "host_allowed", "token_ok"]

STATIC_DIR = Path(__file__).parent / "static"
"""The hand-written HTML, JS and CSS of the viewer (shipped in the package)."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""The Content-Security-Policy of every response (and of the exported page)."""

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")

TOKEN_COOKIE = "coral_view_token"


def host_allowed(host_header: str | None, port: int | None, extra: tuple[str, ...] = ()) -> bool:
    """Whether a ``Host`` header names this server on a loopback address (or ``extra``).

    >>> host_allowed("127.0.0.1:8000", 8000), host_allowed("evil.example:8000", 8000)
    (True, False)
    >>> host_allowed("localhost:9", 8000)
    False
    """
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        name += "]"
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port_text = host.partition(":")
    if port is not None and port_text != str(port):
        return False
    return name in LOOPBACK_HOSTS or name in extra


def token_ok(expected: str, query: bytes, headers: dict[bytes, bytes]) -> tuple[bool, bool]:
    """Check a request's token; returns ``(ok, from_query)``.

    ``from_query`` tells the caller to set the cookie so later requests (the page's
    own fetches and its event stream) carry the token without it in every URL.
    """
    if not expected:
        return False, False  # never a token that anyone's empty cookie would match
    given = parse_qs(query.decode("latin-1")).get("token", [""])[0]
    if given and hmac.compare_digest(given, expected):
        return True, True
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:], expected):
        return True, False
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        key, _, value = part.strip().partition("=")
        if key == TOKEN_COOKIE and hmac.compare_digest(value, expected):
            return True, False
    return False, False
