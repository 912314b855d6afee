"""request_id: one ID per request, sent upstream and back to the client.

    [plugins.request_id]
    header = "X-Request-Id"     # the field to use
    trust_incoming = false      # keep an ID the client sent (only behind a trusted edge)

The ID is in ``ctx["request_id"]`` for every later hook of the request, so
a log hook can write it too.
"""

import re
import uuid

import rproxy

_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")

header = "X-Request-Id"
trust_incoming = False


def rproxy_configure(options):
    global header, trust_incoming
    unknown = set(options) - {"header", "trust_incoming"}
    if unknown:
        raise rproxy.ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}", key=sorted(unknown)[0])
    header = options.get("header", "X-Request-Id")
    if not isinstance(header, str) or not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise rproxy.ConfigError("must be a header field name", key="header")
    trust_incoming = options.get("trust_incoming", False)
    if not isinstance(trust_incoming, bool):
        raise rproxy.ConfigError("must be true or false", key="trust_incoming")


def rproxy_request_filter(request, ctx):
    incoming = request.headers.get(header) if trust_incoming else None
    ctx["request_id"] = incoming if incoming and _VALID.fullmatch(incoming) else uuid.uuid4().hex


def rproxy_upstream_request(request, ctx):
    request.headers.set(header, ctx["request_id"])


def rproxy_response(response, ctx):
    if "request_id" in ctx:
        response.headers.set(header, ctx["request_id"])
