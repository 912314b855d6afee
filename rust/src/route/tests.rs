use super::*;
use crate::config::{RespondConfig, SplitConfig, UpstreamConfig};

fn pools() -> HashMap<&'static str, Arc<Upstream>> {
    let cfg: UpstreamConfig =
        serde_json::from_str(r#"{"servers": ["127.0.0.1:9"]}"#).expect("upstream config");
    ["a", "b", "c"]
        .into_iter()
        .map(|n| (n, Arc::new(Upstream::new(n, &cfg, 65536, 100))))
        .collect()
}

fn route(json: &str) -> RouteConfig {
    serde_json::from_str(json).expect("route config")
}

fn table(routes: &[RouteConfig]) -> RouteTable {
    RouteTable::compile(routes, &pools()).expect("routes compile")
}

fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> request::Parts {
    let mut b = http::Request::builder().method(method).uri(target);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).expect("request").into_parts().0
}

/// (pool, path, host) of a forward, or the status of an answer.
fn outcome(t: &RouteTable, parts: &request::Parts) -> String {
    let s = Subject::new(parts, "http").expect("normalisable");
    match t.decide(&s).map(|(_, d)| d) {
        None => "404".to_owned(),
        Some(Decision::Forward {
            upstream,
            path,
            host,
        }) => format!(
            "{} {} {}",
            upstream.name,
            path.as_deref().unwrap_or("-"),
            host.as_deref().unwrap_or("-")
        ),
        Some(Decision::Respond(r)) => format!("respond {}", r.to_response().status().as_u16()),
        Some(Decision::Answer(r)) => format!(
            "{} {}",
            r.status().as_u16(),
            r.headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        ),
    }
}

#[test]
fn first_match_in_file_order_wins() {
    let t = table(&[
        route(r#"{"path_prefix": "/api/v1/", "upstream": "b"}"#),
        route(r#"{"path_prefix": "/api/", "upstream": "a"}"#),
        route(r#"{"path_prefix": "/api/v1/special", "upstream": "c"}"#),
        route(r#"{"upstream": "c"}"#),
    ]);
    let get = |p: &str| outcome(&t, &request("GET", p, &[("host", "x")]));
    assert_eq!(get("/api/v1/special"), "b - -");
    assert_eq!(get("/api/x"), "a - -");
    assert_eq!(get("/other"), "c - -");
}

#[test]
fn hosts_methods_headers_and_query_conditions() {
    let t = table(&[
        route(r#"{"hosts": ["api.example.com"], "methods": ["POST"], "upstream": "a"}"#),
        route(
            r#"{"hosts": ["*.example.com"], "headers": [{"name": "x-env", "cond": "equals", "value": "staging"}], "upstream": "b"}"#,
        ),
        route(r#"{"query": [{"name": "v", "cond": "regex", "value": "^2"}], "upstream": "c"}"#),
        route(
            r#"{"path": "/only", "headers": [{"name": "x-no", "cond": "absent"}], "respond": {"status": 204}}"#,
        ),
    ]);
    let o = |m: &str, p: &str, h: &[(&str, &str)]| outcome(&t, &request(m, p, h));
    assert_eq!(o("POST", "/", &[("host", "API.example.com:80")]), "a - -");
    assert_eq!(o("GET", "/", &[("host", "api.example.com")]), "404");
    assert_eq!(
        o(
            "GET",
            "/",
            &[("host", "a.b.example.com"), ("x-env", "staging")]
        ),
        "b - -"
    );
    assert_eq!(
        o("GET", "/", &[("host", "example.com"), ("x-env", "staging")]),
        "404"
    );
    assert_eq!(o("GET", "/?a=1&v=%32x", &[("host", "h")]), "c - -");
    assert_eq!(o("GET", "/only", &[("host", "h")]), "respond 204");
    assert_eq!(o("GET", "/only", &[("host", "h"), ("x-no", "1")]), "404");
}

#[test]
fn rewrites_and_redirects() {
    let t = table(&[
        route(
            r#"{"path_prefix": "/api/", "strip_prefix": true, "upstream": "a", "upstream_host": "internal.$host"}"#,
        ),
        route(
            r#"{"path_regex": "^/u/(?P<id>[0-9]+)$", "rewrite": "/users/${id}", "upstream": "b"}"#,
        ),
        route(r#"{"path_regex": "^/q/(.*)$", "rewrite": "/search?q=$1", "upstream": "b"}"#),
        route(
            r#"{"name": "old", "path_prefix": "/old/", "redirect": {"status": 301, "location": "https://$host/new$request_uri#$route"}}"#,
        ),
    ]);
    let get = |p: &str| outcome(&t, &request("GET", p, &[("host", "Ex.org")]));
    assert_eq!(get("/api/users?x=1"), "a /users?x=1 internal.ex.org");
    assert_eq!(get("/api/"), "a / internal.ex.org");
    assert_eq!(get("//api/./x"), "a /x internal.ex.org");
    assert_eq!(get("/u/42?full=1"), "b /users/42?full=1 -");
    assert_eq!(get("/q/rust?page=2"), "b /search?q=rust -");
    assert_eq!(get("/old/a?b"), "301 https://ex.org/new/old/a?b#old");
}

#[test]
fn splits_follow_smooth_weighted_round_robin_or_stick() {
    assert_eq!(schedule(&[3, 1]), [0, 0, 1, 0]);
    assert_eq!(schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    let split = |w: [u32; 2]| {
        vec![
            SplitConfig {
                upstream: "a".into(),
                weight: w[0],
            },
            SplitConfig {
                upstream: "b".into(),
                weight: w[1],
            },
        ]
    };
    let t = table(&[RouteConfig {
        split: split([3, 1]),
        ..Default::default()
    }]);
    let picks: Vec<String> = (0..8)
        .map(|_| outcome(&t, &request("GET", "/", &[])))
        .collect();
    assert_eq!(
        picks.join(","),
        "a - -,a - -,b - -,a - -,a - -,a - -,b - -,a - -"
    );
    let sticky = table(&[RouteConfig {
        split: split([1, 1]),
        sticky_cookie: Some("uid".into()),
        ..Default::default()
    }]);
    let mut counts = [0usize; 2];
    for user in 0..2000 {
        let cookie = format!("x=1; uid=user{user}; y=2");
        let first = outcome(&sticky, &request("GET", "/", &[("cookie", &cookie)]));
        let again = outcome(&sticky, &request("GET", "/", &[("cookie", &cookie)]));
        assert_eq!(first, again);
        counts[usize::from(first.starts_with('b'))] += 1;
    }
    assert!(counts[0] > 900 && counts[1] > 900, "{counts:?}");
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn respond_routes_keep_their_response() {
    let t = table(&[RouteConfig {
        respond: Some(RespondConfig {
            status: 200,
            body: "ok".into(),
            headers: vec![],
        }),
        ..Default::default()
    }]);
    assert_eq!(outcome(&t, &request("GET", "/", &[])), "respond 200");
}

#[test]
fn bad_routes_are_refused() {
    let pools = pools();
    let bad = |json: &str| RouteTable::compile(&[route(json)], &pools).err();
    assert!(bad(r#"{"upstream": "zzz"}"#).is_some_and(|e| e.contains("unknown upstream")));
    assert!(bad(r#"{"path": "/a", "path_prefix": "/b", "upstream": "a"}"#).is_some());
    assert!(bad(r#"{"strip_prefix": true, "upstream": "a"}"#).is_some());
    assert!(bad(r#"{"path_regex": "(?=x)", "upstream": "a"}"#).is_some());
    assert!(bad(r#"{"rewrite": "/$1", "upstream": "a"}"#).is_some());
    assert!(bad(r#"{}"#).is_some());
}

/// A small deterministic generator (xorshift), so the test needs no crate.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn the_index_agrees_with_walking_the_table() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let hosts = ["", "a.com", "b.com", "*.a.com", "x.a.com", "*.com"];
    let paths = ["/", "/api", "/api/", "/api/v1", "/x", "/x/y", "/apix"];
    let mut routes = Vec::new();
    for _ in 0..300 {
        let mut r = RouteConfig {
            upstream: Some("a".into()),
            ..Default::default()
        };
        let h = g.pick(&hosts);
        if !h.is_empty() {
            r.hosts.push(h.to_owned());
        }
        match g.next() % 4 {
            0 => r.path = Some(g.pick(&paths).to_owned()),
            1 => r.path_prefix = Some(g.pick(&paths).to_owned()),
            2 => r.path_regex = Some(format!("^{}", g.pick(&paths))),
            _ => {}
        }
        if g.next() % 3 == 0 {
            r.methods.push(g.pick(&["GET", "POST"]).to_owned());
        }
        routes.push(r);
    }
    let t = table(&routes);
    let req_hosts = [
        "a.com",
        "b.com",
        "x.a.com",
        "y.x.a.com",
        "c.com",
        "com",
        "other",
    ];
    let req_paths = ["/", "/api", "/api/v1/z", "/x/y", "/apix", "/zzz", "/x"];
    for _ in 0..5000 {
        let parts = request(
            g.pick(&["GET", "POST", "PUT"]),
            g.pick(&req_paths),
            &[("host", g.pick(&req_hosts))],
        );
        let s = Subject::new(&parts, "http").expect("path");
        assert_eq!(t.find(&s), t.find_linear(&s));
    }
}
