"""The cache key: which stored responses a request may be answered with.

The engine runs its compiled form of this; this reference is what ``rproxy
run --no-native`` and the test kit (``rproxy.testing``) run, and it spells
out the default key of docs/caching.md in plain Python. It is ``trylast``,
so a plugin's ``rproxy_cache_key`` always gets the first say.

The default key is ``scheme://host:port/path?query``: the scheme of the
connection; the authority the request names (its target's, else ``Host``)
lower-cased, trailing dots dropped, split at its last colon into host and
port (80 or 443 by scheme when it has none); then the request target's path
and query exactly as received. A request that names no host is not cached
(``False``).
"""

from __future__ import annotations

import re

from rproxy._engine import Request
from rproxy.plan import native
from rproxy.plugins import hookimpl

__all__ = ["default_key", "key_of"]

#: What Rust's ``i32`` parser accepts: an optional sign, then ASCII digits.
_PORT = re.compile(r"[+-]?[0-9]+")
#: The bytes a header value may have to be read as text (``HeaderValue::to_str``).
_TEXT = re.compile(r"[\t\x20-\x7e]*")


def key_of(scheme: str, authority: str | None, target: str) -> str | None:
    """The default key of a request for ``target`` (path and query, as
    received) naming ``authority`` (``"host[:port]"``) over ``scheme``;
    ``None`` when it names no host, or a port that is not a number."""
    if authority is None or not _TEXT.fullmatch(authority):
        return None
    authority = authority.lower()
    default = 443 if scheme == "https" else 80
    host, colon, port = authority.rpartition(":")
    if colon and host and "]" not in port:
        if not port:
            number = default  # "host:" names the default port (RFC 3986 §3.2.3)
        elif not _PORT.fullmatch(port) or not -(2**31) <= int(port) < 2**31:
            return None
        else:
            number = int(port)
    else:
        host, number = authority, default
    host = host.rstrip(".")
    if not host:
        return None
    return f"{scheme}://{host}:{number}{target}"


def _host_of(authority: str) -> str:
    """The host of ``authority`` as ``Request.host`` gives it: without port,
    brackets and one trailing dot, lower-cased."""
    if authority.startswith("["):
        host = authority[1:].split("]", 1)[0]
    else:
        host = authority.rpartition(":")[0] if ":" in authority else authority
    return host.removesuffix(".").lower()


def default_key(request: Request) -> str | bool:
    """The default key of ``request``; ``False`` when it names no host.

    The authority is the ``Host`` field's — unless the request named
    another host (an absolute-form target, RFC 9112 §3.2.2, or HTTP/2's
    ``:authority``), which the view shows as ``request.host`` but without
    its port: then that host on the default port. (The engine's native key
    also keeps such a target's port; this reference does not see it.)
    """
    host = request.host
    if host is None:
        return False
    field = request.headers.get("host")
    if field is None or _host_of(field) != host:
        field = f"[{host}]" if ":" in host else host
    return key_of(request.scheme, field, request.uri) or False


@hookimpl(trylast=True)
@native("cache")
def rproxy_cache_key(request: Request) -> str | bool | None:
    return default_key(request)
