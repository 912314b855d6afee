"""api_key: requests under the protected paths need a valid API key.

    [plugins.api_key]
    keys = ["k-123", "k-456"]   # or keys_file = "keys.txt", one key per line
    header = "X-Api-Key"        # where clients send the key
    paths = ["/api/"]           # protected path prefixes (default: everything)

A request without a valid key gets 401 and never reaches an upstream; the
key itself is not forwarded upstream. Keys are compared in constant time.
"""

import hashlib
import hmac
from pathlib import Path

import rproxy

_digests = []
header = "X-Api-Key"
paths = ("/",)


def rproxy_configure(config, options):
    global _digests, header, paths
    keys = list(options.get("keys", []))
    if "keys_file" in options:
        path = Path(config.path).resolve().parent / options["keys_file"]
        try:
            keys += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except OSError as e:
            raise rproxy.ConfigError(f"cannot read {path}: {e.strerror}", key="keys_file") from None
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise rproxy.ConfigError("needs at least one key (keys = [...] or keys_file = ...)", key="keys")
    _digests = [hashlib.sha256(k.encode()).digest() for k in keys]
    header = options.get("header", "X-Api-Key")
    paths = tuple(options.get("paths", ["/"]))


def _valid(key):
    digest = hashlib.sha256(key.encode()).digest()
    return any(hmac.compare_digest(digest, d) for d in _digests)


def rproxy_request_filter(request):
    if not request.path.startswith(paths):
        return None
    key = request.headers.get(header)
    if key is not None and _valid(key):
        return None
    return rproxy.Response(
        401,
        {"WWW-Authenticate": f'ApiKey header="{header}"', "Content-Type": "text/plain"},
        "401 Unauthorized: a valid API key is needed\n",
    )


def rproxy_upstream_request(request):
    request.headers.remove(header)
