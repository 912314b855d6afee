//! Routes: which pool, or which local response, serves a request.
//!
//! Routes are tried in the order they appear in the configuration and the
//! first match wins. A `path_prefix` is a plain string prefix of the path as
//! received (so `/api` matches `/api`, `/api/v1` and `/apix`, as in nginx).

use std::sync::Arc;

use crate::response::LocalResponse;
use crate::upstream::Upstream;

/// What a matching route does.
pub(crate) enum Action {
    /// Forward to this pool.
    Forward(Arc<Upstream>),
    /// Answer with this response.
    Respond(LocalResponse),
}

/// One compiled route.
pub(crate) struct Route {
    pub(crate) path_prefix: String,
    pub(crate) action: Action,
}

/// Routes in match order.
#[derive(Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub(crate) fn new(routes: Vec<Route>) -> Self {
        RouteTable { routes }
    }

    /// The first route matching `path`.
    pub(crate) fn find(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| path.starts_with(&r.path_prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn respond(prefix: &str, body: &str) -> Route {
        Route {
            path_prefix: prefix.to_owned(),
            action: Action::Respond(LocalResponse::new(StatusCode::OK, vec![], body.as_bytes())),
        }
    }

    #[test]
    fn first_matching_route_wins() {
        let table = RouteTable::new(vec![
            respond("/api/", "api"),
            respond("/a", "a"),
            respond("/", "root"),
        ]);
        let body = |path: &str| match table.find(path).map(|r| &r.action) {
            Some(Action::Respond(r)) => String::from_utf8(r.body().to_vec()).expect("utf8"),
            _ => "none".to_owned(),
        };
        assert_eq!(body("/api/users"), "api");
        assert_eq!(body("/apix"), "a");
        assert_eq!(body("/other"), "root");
        let empty = RouteTable::default();
        assert!(empty.find("/").is_none());
    }
}
