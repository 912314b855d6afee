"""rproxy against nginx, on this machine, in one run.

    python loadtests/bench.py                 # 3 rounds x 10 s per size and proxy
    python loadtests/bench.py --duration 3 --rounds 1   # a quick look

An origin nginx serves a 1 KiB and a 64 KiB response. In front of it run
nginx as a reverse proxy (2 workers, upstream keep-alive, and by default the
same forwarding headers rproxy adds: Host preserved, X-Forwarded-*, Via) and
rproxy (2 workers). wrk (-t2 -c64) loads each proxy in turn, rounds interleaved so
that drift of this shared machine hits both alike. For each run it records
requests/s, p50/p99 latency and the proxy's CPU time per request (user +
system of its master and workers, from /proc), and prints medians with
rproxy/nginx ratios. nginx and wrk are installed from Debian if missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = {"1k": 1024, "64k": 64 * 1024}
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    proxy: str
    size: str
    round: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float
    errors: int


def ensure_tools() -> None:
    missing = [
        pkg
        for tool, pkg in (("nginx", "nginx-light"), ("wrk", "wrk"))
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        print(f"installing {' '.join(missing)} ...", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing],
            check=True,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )


def free_port() -> int:
    # Only for the peers' own config files (nginx cannot report a port it picked).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(workdir: Path, name: str, body: str) -> subprocess.Popen[bytes]:
    conf = workdir / f"{name}.conf"
    conf.write_text(f"""
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}.error.log warn;
{body}
""")
    return subprocess.Popen([nginx_bin(), "-c", str(conf), "-p", str(workdir)])


def origin_conf(workdir: Path, port: int, extra_ports: Sequence[int] = ()) -> str:
    www = workdir / "www"
    www.mkdir(exist_ok=True)
    for name, size in SIZES.items():
        (www / name).write_bytes(b"x" * size)
    extra = "".join(f"\n        listen 127.0.0.1:{p} reuseport backlog=4096;" for p in extra_ports)
    return f"""
worker_processes 1;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;{extra}
        root {www};
        location / {{ }}
        # The cache-hit variants ask for /c/1k: the same file, cacheable for an hour.
        location /c/ {{
            alias {www}/;
            add_header Cache-Control "public, max-age=3600";
        }}
    }}
}}"""


#: What rproxy does to every request by default, so that nginx does the same work.
NGINX_FORWARDING = """
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header Via "1.1 nginx";
            add_header Via "1.1 nginx";"""


def nginx_proxy_conf(port: int, origin: int, forwarding: bool = True, cache_dir: Path | None = None) -> str:
    """nginx as a reverse proxy; with ``cache_dir``, with ``proxy_cache`` on
    (the responses' Cache-Control decides, as in rproxy)."""
    extra = NGINX_FORWARDING if forwarding else ""
    cache_zone = ""
    if cache_dir is not None:
        cache_zone = f"proxy_cache_path {cache_dir} levels=1:2 keys_zone=hits:10m max_size=256m;"
        extra += """
            proxy_cache hits;
            proxy_cache_key $scheme$host$request_uri;"""
    return f"""
worker_processes 2;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    {cache_zone}
    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";{extra}
        }}
    }}
}}"""


#: rproxy variants: name -> plugin folder (None: no Python on the request path).
VARIANTS: dict[str, Path | None] = {
    "rproxy": None,
    "rproxy+1hook": HERE / "plugins" / "one",
    "rproxy+5hooks": HERE / "plugins" / "five",
    "rproxy+1async": HERE / "plugins" / "one_async",
    "rproxy+gateway": None,
    "rproxy+4servers": None,
    "rproxy+cache": None,
}
#: Python hooks each variant runs per request.
HOOKS_PER_REQUEST = {
    "rproxy": 0,
    "rproxy+1hook": 1,
    "rproxy+5hooks": 5,
    "rproxy+1async": 1,
    "rproxy+gateway": 0,
    "rproxy+4servers": 0,
    "rproxy+cache": 0,
}
#: Variants measured on cache hits (/c/1k, cacheable), against nginx with proxy_cache.
CACHED = {"rproxy+cache", "nginx+cache"}
#: Request header fields wrk sends to a variant.
WRK_HEADERS = {"rproxy+gateway": ["X-Api-Key: bench-key-2"]}

#: The "typical gateway": 20 routes (the benchmark's requests take the last),
#: header rules on requests and responses, and API-key auth — all native.
GATEWAY = """
[headers.request]
remove = ["x-debug"]
set = {{ "x-request-id" = "$request_id", "x-real-ip" = "$client_ip" }}

[headers.response]
set = {{ "x-request-id" = "$request_id" }}

[auth.partners]
type = "api_key"
keys = {{ acme = "bench-key-1", globex = "bench-key-2", initech = "bench-key-3" }}
{routes}
[[routes]]
name = "site"
path_prefix = "/"
upstream = "origin"
auth = "partners"
response_headers = {{ set = {{ "cache-control" = "no-store" }} }}
"""


def gateway_routes() -> str:
    """19 routes a request to /1k or /64k passes over: hosts, prefixes, a
    regex, methods, a header condition, a redirect and a health check."""
    out = ['[[routes]]\npath = "/healthz"\nrespond = { body = "ok" }\n']
    for i in range(1, 12):
        out.append(f'[[routes]]\nname = "svc{i}"\npath_prefix = "/svc{i}/"\nupstream = "origin"\nstrip_prefix = true\n')
    out.append('[[routes]]\nhost = "*.internal.example"\nupstream = "origin"\n')
    out.append('[[routes]]\nhost = "admin.example"\npath_prefix = "/"\nupstream = "origin"\nallow = ["10.0.0.0/8"]\n')
    out.append('[[routes]]\npath_regex = "^/users/([0-9]+)$"\nrewrite = "/u/$1"\nupstream = "origin"\n')
    out.append('[[routes]]\npath_prefix = "/write/"\nmethods = ["POST", "PUT"]\nupstream = "origin"\n')
    out.append('[[routes]]\npath_prefix = "/beta/"\nheaders = { x-beta = true }\nupstream = "origin"\n')
    out.append('[[routes]]\npath_prefix = "/old/"\nredirect = { status = 301, location = "/new$request_uri" }\n')
    out.append('[[routes]]\npath = "/maintenance"\nrespond = { status = 503, body = "later" }\n')
    return "\n".join(out)


def rproxy_conf(
    port: int,
    origin: int,
    plugins: Path | None = None,
    gateway: bool = False,
    servers: Sequence[int] = (),
    cache: bool = False,
) -> str:
    """``servers``: the pool's ports (default: just ``origin``); ``cache``:
    with the cache on for every route."""
    dirs = f'["{plugins}"]' if plugins else "[]"
    routes = (
        GATEWAY.format(routes=gateway_routes())
        if gateway
        else """
[[routes]]
path_prefix = "/"
upstream = "origin"
"""
    )
    cache_table = '\n[cache]\nenabled = true\nmax_size = "64MiB"\n' if cache else ""
    return f"""
[server]
listen = ["127.0.0.1:{port}"]
workers = 2
{cache_table}
[upstreams.origin]
servers = [{", ".join(f'"127.0.0.1:{p}"' for p in (servers or [origin]))}]
{routes}
[plugins]
dirs = {dirs}
"""


def sizes_for(name: str, args: argparse.Namespace) -> tuple[str, ...]:
    """The hook variants are measured on the 1 KiB response (their target) unless --all-sizes."""
    return tuple(SIZES) if name in ("nginx", "rproxy") or args.all_sizes else ("1k",)


def target(name: str, size: str) -> str:
    """What wrk asks ``name`` for: the cacheable copy for the cache variants."""
    return f"/c/{size}" if name in CACHED else f"/{size}"


def pids_of(root: int) -> list[int]:
    """``root`` and all its descendants."""
    out = [root]
    for pid in out:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        out += [int(c) for c in children]
    return out


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def parse_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def run_wrk(
    port: int, path: str, duration: int, threads: int, conns: int, headers: list[str] | None = None
) -> tuple[int, float, float, float, int]:
    extra = [arg for h in headers or [] for arg in ("-H", h)]
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", *extra, f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = parse_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = parse_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return requests, rps, p50, p99, errors


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2, help="seconds of load before measuring each proxy")
    ap.add_argument("--json", type=Path, help="also write the runs here")
    ap.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=["rproxy", "rproxy+1hook", "rproxy+5hooks", "rproxy+gateway", "rproxy+4servers"],
        help="rproxy variants to run (default: plain, one hook, five hooks, the gateway, a 4-server pool)",
    )
    ap.add_argument("--all-sizes", action="store_true", help="run the hook variants on 64 KiB too")
    ap.add_argument(
        "--nginx-plain", action="store_true", help="run nginx without the forwarding headers rproxy adds by default"
    )
    args = ap.parse_args()

    ensure_tools()
    runs: list[Run] = []
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="rproxy-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx workers run as an unprivileged user
        try:
            origin_port, nginx_port = free_port(), free_port()
            # Three more ports on the same origin, for the 4-server pool.
            spare_ports = [free_port() for _ in range(3)]
            procs.append(start_nginx(work, "origin", origin_conf(work, origin_port, spare_ports)))
            procs.append(start_nginx(work, "proxy", nginx_proxy_conf(nginx_port, origin_port, not args.nginx_plain)))
            proxies = {"nginx": (procs[1].pid, nginx_port)}
            if "rproxy+cache" in args.variants:
                cache_port = free_port()
                (work / "nginx-cache").mkdir()
                conf = nginx_proxy_conf(cache_port, origin_port, not args.nginx_plain, work / "nginx-cache")
                procs.append(start_nginx(work, "proxycache", conf))
                proxies["nginx+cache"] = (procs[-1].pid, cache_port)
            for variant in args.variants:
                port = free_port()
                conf = work / f"{variant}.toml"
                four = [origin_port, *spare_ports] if variant == "rproxy+4servers" else []
                conf.write_text(
                    rproxy_conf(
                        port,
                        origin_port,
                        VARIANTS[variant],
                        gateway=variant == "rproxy+gateway",
                        servers=four,
                        cache=variant in CACHED,
                    )
                )
                proc = subprocess.Popen([sys.executable, "-m", "rproxy", "run", str(conf)], stdout=subprocess.DEVNULL)
                procs.append(proc)
                proxies[variant] = (proc.pid, port)
            for port in [origin_port, *(p for _, p in proxies.values())]:
                wait_port(port)
            for name, (_, port) in proxies.items():
                for size in sizes_for(name, args):
                    headers = WRK_HEADERS.get(name)
                    run_wrk(port, target(name, size), args.warmup, args.threads, args.connections, headers)
            for rnd in range(1, args.rounds + 1):
                # Alternate the order, so that drift of the machine within a
                # round favours no proxy.
                order = list(proxies.items()) if rnd % 2 else list(reversed(proxies.items()))
                for size in SIZES:
                    for name, (pid, port) in order:
                        if size not in sizes_for(name, args):
                            continue
                        pids = pids_of(pid)
                        before = cpu_ticks(pids)
                        path, headers = target(name, size), WRK_HEADERS.get(name)
                        requests, rps, p50, p99, errors = run_wrk(
                            port, path, args.duration, args.threads, args.connections, headers
                        )
                        cpu_us = (cpu_ticks(pids) - before) / CLK_TCK * 1e6 / max(requests, 1)
                        runs.append(Run(name, size, rnd, requests, rps, p50, p99, cpu_us, errors))
                        print(
                            f"round {rnd} {size:>3} {name:<14} {rps:>10.0f} req/s  p50 {p50:6.2f} ms  "
                            f"p99 {p99:6.2f} ms  {cpu_us:6.1f} CPU-us/req  errors {errors}",
                            file=sys.stderr,
                        )
        finally:
            for p in reversed(procs):
                stop(p)

    print(report(runs, args))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    return 0


def report(runs: list[Run], args: argparse.Namespace) -> str:
    def med(proxy: str, size: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs if r.proxy == proxy and r.size == size)

    def ratio(size: str, attr: str, proxy: str, base: str = "nginx") -> float:
        """Median over rounds of proxy / base within the same round."""
        by_round: dict[int, dict[str, float]] = {}
        for r in runs:
            if r.size == size:
                by_round.setdefault(r.round, {})[r.proxy] = getattr(r, attr)
        return statistics.median(v[proxy] / v[base] for v in by_round.values() if proxy in v and base in v)

    forwarding = "without forwarding headers" if args.nginx_plain else "adding the forwarding headers rproxy adds"
    nginx_version = subprocess.run([nginx_bin(), "-v"], capture_output=True, text=True, check=False).stderr.strip()
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        f"nginx: {nginx_version}; wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{args.rounds} interleaved round(s), {args.warmup}s warm-up, order alternating per round; "
        f"nginx {forwarding}. Figures are medians over rounds; ratios are the median of the per-round "
        "ratios (proxy / nginx in the same round).",
        "",
        "| size | proxy | req/s | p50 ms | p99 ms | CPU-µs/req | req/s vs nginx | CPU/req vs nginx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        for proxy in ["nginx", *VARIANTS, "nginx+cache"]:
            if not any(r.proxy == proxy and r.size == size for r in runs):
                continue
            rps, cpu = med(proxy, size, "rps"), med(proxy, size, "cpu_us_per_req")
            rps_ratio = ratio(size, "rps", proxy) if proxy != "nginx" else 1.0
            cpu_ratio = ratio(size, "cpu_us_per_req", proxy) if proxy != "nginx" else 1.0
            lines.append(
                f"| {size} | {proxy} | {rps:.0f} | {med(proxy, size, 'p50_ms'):.2f} | {med(proxy, size, 'p99_ms'):.2f} "
                f"| {cpu:.1f} | {rps_ratio:.2f}× | {cpu_ratio:.2f}× |"
            )
    lines.append("")
    if any(r.proxy == "rproxy" and r.size == "1k" for r in runs):
        base = med("rproxy", "1k", "cpu_us_per_req")
        for variant, hooks in HOOKS_PER_REQUEST.items():
            if hooks and any(r.proxy == variant and r.size == "1k" for r in runs):
                extra = med(variant, "1k", "cpu_us_per_req") - base
                lines.append(
                    f"{variant}: {extra:+.1f} CPU-µs per request over plain rproxy, "
                    f"{extra / hooks:.2f} µs per hook call"
                )
    for variant in VARIANTS:
        if HOOKS_PER_REQUEST.get(variant) == 0 and variant != "rproxy":
            for size in SIZES:
                if any(r.proxy == variant and r.size == size for r in runs):
                    lines.append(
                        f"{variant} {size}: {ratio(size, 'rps', variant, 'rproxy'):.2f}× the req/s and "
                        f"{ratio(size, 'cpu_us_per_req', variant, 'rproxy'):.2f}× the CPU-µs/req of plain rproxy "
                        "(median of the per-round ratios)"
                    )
    if any(r.proxy == "rproxy+cache" for r in runs) and any(r.proxy == "nginx+cache" for r in runs):
        lines.append(
            f"rproxy+cache 1k (cache hits): {ratio('1k', 'rps', 'rproxy+cache', 'nginx+cache'):.2f}× the req/s and "
            f"{ratio('1k', 'cpu_us_per_req', 'rproxy+cache', 'nginx+cache'):.2f}× the CPU-µs/req of nginx "
            "with proxy_cache (median of the per-round ratios)"
        )
    errors = sum(r.errors for r in runs)
    lines.append(f"errors (non-2xx or socket) across all runs: {errors}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
