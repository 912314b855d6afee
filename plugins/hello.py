"""hello: the smallest useful plugin.

Answers ``GET /hello`` itself — no upstream sees it — and tags every response
the proxy sends with ``X-Hello: plugin``. Drop it in ``plugins/`` and it is
on; ``[plugins] disable = ["hello"]`` turns it off.
"""

import rproxy


def rproxy_request_filter(request):
    if request.path == "/hello":
        return rproxy.Response(200, {"Content-Type": "text/plain"}, "hello from a plugin\n")
    return None


def rproxy_response(response):
    response.headers.set("X-Hello", "plugin")
