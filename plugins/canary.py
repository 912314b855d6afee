"""canary: send a stable share of users to a canary pool.

    [plugins.canary]
    pool = "app_canary"     # the canary pool
    percent = 5             # share of users, 0 to 100
    cookie = "session"      # identifies a user; without it, the client address does

A user is in the canary share or not by a hash of the cookie value, so the
same user always lands on the same side while ``percent`` stays the same,
and raising ``percent`` only moves users into the canary. Requests outside
the share are left to the configured ``[[routes]]``.
"""

import hashlib
from http.cookies import CookieError, SimpleCookie

import rproxy

pool = None
percent = 0.0
cookie = "session"


def rproxy_configure(config, options):
    global pool, percent, cookie
    if not options:
        return  # not configured: routes nothing
    pool = options.get("pool")
    if pool not in config.upstreams:
        raise rproxy.ConfigError(f'"{pool}" is not a pool of [upstreams]', key="pool")
    percent = options.get("percent", 0)
    if not isinstance(percent, int | float) or not 0 <= percent <= 100:
        raise rproxy.ConfigError("must be a number from 0 to 100", key="percent")
    cookie = options.get("cookie", "session")


def _user(request):
    raw = request.headers.get("cookie")
    if raw:
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            jar = None
        if jar is not None and cookie in jar:
            return "c:" + jar[cookie].value
    return "a:" + (request.client or "")


def in_canary(user_key):
    """Whether a user (by key) is in the canary share: 10,000 buckets."""
    bucket = int.from_bytes(hashlib.sha256(user_key.encode()).digest()[:8], "big") % 10_000
    return bucket < percent * 100


def rproxy_route(request, ctx):
    if pool is None:
        return None
    if in_canary(_user(request)):
        ctx["canary"] = True
        return rproxy.Route(upstream=pool)
    return None
