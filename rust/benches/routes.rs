//! Route matching cost at 10, 1,000 and 10,000 routes (`cargo bench
//! --bench routes`). Each table looks like a large gateway's: per-host
//! routes, per-service prefixes, exact paths, some method and header
//! conditions, a few regular expressions, and a catch-all. The requests
//! hit routes spread over the whole table, plus misses.

use rproxy_engine::config::RouteConfig;
use rproxy_engine::route::bench_match;

fn table(n: usize) -> Vec<RouteConfig> {
    let route = |json: String| serde_json::from_str::<RouteConfig>(&json).expect("route json");
    let mut routes = Vec::with_capacity(n);
    for i in 0..n.saturating_sub(1) {
        routes.push(route(match i % 10 {
            0 => format!(r#"{{"hosts": ["svc{i}.example.com"], "upstream": "p{}"}}"#, i % 7),
            1 => format!(r#"{{"hosts": ["*.tenant{i}.example.com"], "path_prefix": "/", "upstream": "p1"}}"#),
            2 => format!(r#"{{"path": "/health/{i}", "respond": {{"status": 200, "body": "ok"}}}}"#),
            3 => format!(
                r#"{{"path_prefix": "/api/v{i}/", "methods": ["GET", "HEAD"], "strip_prefix": true, "upstream": "p2"}}"#
            ),
            4 => format!(
                r#"{{"path_prefix": "/beta/{i}/", "headers": [{{"name": "x-beta", "cond": "present"}}], "upstream": "p3"}}"#
            ),
            5 if i % 1000 == 5 => format!(r#"{{"path_regex": "^/items/{i}/([0-9]+)$", "rewrite": "/i/$1", "upstream": "p4"}}"#),
            _ => format!(r#"{{"path_prefix": "/svc{i}/", "upstream": "p{}"}}"#, i % 7),
        }));
    }
    routes.push(route(
        r#"{"path_prefix": "/", "respond": {"status": 404}}"#.to_owned(),
    ));
    routes
}

fn requests(n: usize) -> Vec<http::Request<()>> {
    let mut out = Vec::new();
    let mut i = 7usize;
    for k in 0..200 {
        i = (i * 7919 + 13) % n.max(1);
        let (host, target) = match k % 6 {
            0 => (format!("svc{}.example.com", i - i % 10), "/".to_owned()),
            1 => (
                "www.example.com".to_owned(),
                format!("/svc{}/users/42?x=1", i - i % 10 + 6),
            ),
            2 => (
                "www.example.com".to_owned(),
                format!("/api/v{}/orders", i - i % 10 + 3),
            ),
            3 => ("a.tenant1.example.com".to_owned(), "/dashboard".to_owned()),
            4 => (
                "www.example.com".to_owned(),
                format!("/health/{}", i - i % 10 + 2),
            ),
            _ => ("www.example.com".to_owned(), "/no/such/route".to_owned()),
        };
        out.push(
            http::Request::get(target)
                .header("host", host)
                .header("user-agent", "bench")
                .body(())
                .expect("request"),
        );
    }
    out
}

fn main() {
    println!("routes  ns/request  matched");
    for n in [10, 1_000, 10_000] {
        let routes = table(n);
        let reqs = requests(n);
        bench_match(&routes, &reqs, 200).expect("warm-up");
        let (per, matched) = bench_match(&routes, &reqs, 2000).expect("bench");
        println!("{n:>6}  {:>10.0}  {matched}/{}", per.as_nanos(), reqs.len());
    }
}
