"""header_route: send a request to a pool chosen by one of its header fields.

    [plugins.header_route]
    header = "X-Tenant"
    pools = { acme = "acme_pool", globex = "globex_pool" }

A request whose field matches a key goes to that pool; any other request is
left to the configured ``[[routes]]``. Every pool named must exist.
"""

import rproxy

header = None
pools = {}


def rproxy_configure(config, options):
    global header, pools
    if not options:
        return  # not configured: routes nothing
    header = options.get("header")
    if not isinstance(header, str):
        raise rproxy.ConfigError("needs the header field to route by", key="header")
    pools = dict(options.get("pools", {}))
    if not pools:
        raise rproxy.ConfigError("needs at least one value = pool pair", key="pools")
    for value, pool in pools.items():
        if pool not in config.upstreams:
            raise rproxy.ConfigError(f'"{pool}" is not a pool of [upstreams]', key=f"pools.{value}")


def rproxy_route(request):
    if header is None:
        return None
    pool = pools.get(request.headers.get(header, ""))
    return rproxy.Route(upstream=pool) if pool else None
