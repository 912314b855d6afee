//! Templates of `rewrite`, `redirect.location` and `upstream_host`, and of
//! header rules: `$name` / `${name}` variables and `$$` (docs/routing.md,
//! "Templates"; docs/headers.md, "Variables").

use regex::Regex;

/// A compiled template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone)]
enum Piece {
    Lit(String),
    Group(usize),
    Var(Var),
}

/// A named variable. Routes use the first seven; header rules all but
/// captures (configuration validation says which where).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    Host,
    Path,
    Query,
    RequestUri,
    Scheme,
    Method,
    Route,
    ClientIp,
    RemoteAddr,
    Upstream,
    UpstreamAddr,
    RequestId,
    AuthUser,
}

impl Var {
    fn from_name(name: &str) -> Option<Var> {
        Some(match name {
            "host" => Var::Host,
            "path" => Var::Path,
            "query" => Var::Query,
            "request_uri" => Var::RequestUri,
            "scheme" => Var::Scheme,
            "method" => Var::Method,
            "route" => Var::Route,
            "client_ip" => Var::ClientIp,
            "remote_addr" => Var::RemoteAddr,
            "upstream" => Var::Upstream,
            "upstream_addr" => Var::UpstreamAddr,
            "request_id" => Var::RequestId,
            "auth_user" => Var::AuthUser,
            _ => return None,
        })
    }
}

/// Where a template's values come from.
pub(crate) trait Source {
    /// Append the value of `var` to `out`.
    fn var(&self, var: Var, out: &mut String);
    /// Append capture group `n` of the route's `path_regex`, if it matched.
    fn group(&self, _n: usize, _out: &mut String) {}
}

/// The values a route's template may use.
pub(crate) struct Vars<'a> {
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) request_uri: &'a str,
    pub(crate) scheme: &'a str,
    pub(crate) method: &'a str,
    pub(crate) route: &'a str,
    /// Spans of the path regex's groups in `path` (index 0 is the match).
    pub(crate) groups: &'a [Option<(usize, usize)>],
}

impl Template {
    /// Compile `text`; groups refer to `regex` (the route's `path_regex`).
    pub(crate) fn compile(text: &str, regex: Option<&Regex>) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c != '$' {
                lit.push(c);
                continue;
            }
            let name: String = match chars.peek().map(|&(_, c)| c) {
                Some('$') => {
                    chars.next();
                    lit.push('$');
                    continue;
                }
                Some('{') => {
                    chars.next();
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, c)) => name.push(c),
                            None => return Err(format!("unclosed ${{ in {text:?}")),
                        }
                    }
                    name
                }
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    d.to_string()
                }
                Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                    let mut name = String::new();
                    while let Some(&(_, c)) = chars.peek() {
                        if !(c.is_ascii_alphanumeric() || c == '_') {
                            break;
                        }
                        name.push(c);
                        chars.next();
                    }
                    name
                }
                _ => return Err(format!("a lone $ in {text:?} (write $$ for a dollar sign)")),
            };
            let piece = match Var::from_name(&name) {
                Some(var) => Piece::Var(var),
                None => {
                    let other = name.as_str();
                    let index = match other.parse::<usize>() {
                        Ok(n) => Some(n),
                        Err(_) => {
                            regex.and_then(|r| r.capture_names().position(|n| n == Some(other)))
                        }
                    };
                    match index {
                        Some(n) if regex.is_some_and(|r| n < r.captures_len()) => Piece::Group(n),
                        _ => return Err(format!("unknown variable ${other}")),
                    }
                }
            };
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(piece);
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template { pieces })
    }

    /// Whether the template writes a literal `?` (then it sets the query).
    pub(crate) fn has_query(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Lit(s) if s.contains('?')))
    }

    /// The template's text when it has no variables.
    pub(crate) fn literal(&self) -> Option<&str> {
        match &self.pieces[..] {
            [] => Some(""),
            [Piece::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The template with the values of `src` filled in.
    pub(crate) fn expand(&self, src: &impl Source) -> String {
        let mut out = String::with_capacity(64);
        for piece in &self.pieces {
            match piece {
                Piece::Lit(s) => out.push_str(s),
                Piece::Group(n) => src.group(*n, &mut out),
                Piece::Var(v) => src.var(*v, &mut out),
            }
        }
        out
    }
}

impl Source for Vars<'_> {
    fn var(&self, var: Var, out: &mut String) {
        out.push_str(match var {
            Var::Host => self.host,
            Var::Path => self.path,
            Var::Query => self.query.unwrap_or(""),
            Var::RequestUri => self.request_uri,
            Var::Scheme => self.scheme,
            Var::Method => self.method,
            Var::Route => self.route,
            // Not route variables (configuration validation refuses them).
            _ => "",
        });
    }

    fn group(&self, n: usize, out: &mut String) {
        if let Some(Some((a, b))) = self.groups.get(n) {
            out.push_str(&self.path[*a..*b]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_variables_and_groups() {
        let re = Regex::new(r"^/users/(?P<id>[0-9]+)(/.*)?$").expect("regex");
        let path = "/users/42/posts";
        let mut locs = re.capture_locations();
        re.captures_read(&mut locs, path).expect("match");
        let groups: Vec<_> = (0..locs.len()).map(|i| locs.get(i)).collect();
        let vars = Vars {
            host: "example.com",
            path,
            query: Some("a=1"),
            request_uri: "/users/42/posts?a=1",
            scheme: "http",
            method: "GET",
            route: "users",
            groups: &groups,
        };
        let t = |s: &str| Template::compile(s, Some(&re)).map(|t| t.expand(&vars));
        assert_eq!(t("/u/$1${2}").as_deref(), Ok("/u/42/posts"));
        assert_eq!(t("/u/${id}/x$$").as_deref(), Ok("/u/42/x$"));
        assert_eq!(
            t("$scheme://$host$request_uri [$method $route $query]").as_deref(),
            Ok("http://example.com/users/42/posts?a=1 [GET users a=1]")
        );
        assert_eq!(t("$10").as_deref(), Ok("420"));
        assert!(t("$3").is_err());
        assert!(t("$nope").is_err());
        assert!(t("a$").is_err());
        assert!(t("${id").is_err());
        assert!(Template::compile("$1", None).is_err());
        assert!(Template::compile("/x?y=1", None).is_ok_and(|t| t.has_query()));
    }
}
