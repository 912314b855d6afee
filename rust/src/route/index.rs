//! The route index: which routes a request could match, found without
//! walking the table. Routes are grouped by host (exact, wildcard suffix,
//! any); within a group, exact paths and prefixes sit in hash tables and
//! the rest (regular expressions, no path condition) in a list. A lookup
//! gathers the few candidates and keeps the earliest that matches, so the
//! answer is the first match in file order, as if the table were walked.

use std::collections::HashMap;

use super::PathCond;

#[derive(Default)]
struct Group {
    exact: HashMap<String, Vec<usize>>,
    prefixes: HashMap<String, Vec<usize>>,
    /// Lengths of the prefixes, ascending.
    prefix_lens: Vec<usize>,
    /// Routes whose path must be tested one by one, ascending.
    rest: Vec<usize>,
}

impl Group {
    fn add(&mut self, i: usize, path: &PathCond) {
        match path {
            PathCond::Exact(p) => self.exact.entry(p.clone()).or_default().push(i),
            PathCond::Prefix(p) => {
                self.prefixes.entry(p.clone()).or_default().push(i);
                if let Err(at) = self.prefix_lens.binary_search(&p.len()) {
                    self.prefix_lens.insert(at, p.len());
                }
            }
            PathCond::Any | PathCond::Regex(_) => self.rest.push(i),
        }
    }

    /// Lower `best` to the earliest route of this group that matches.
    fn find(&self, path: &str, best: &mut usize, matches: &impl Fn(usize) -> bool) {
        let mut try_list = |list: &[usize]| {
            for &i in list {
                if i >= *best {
                    break;
                }
                if matches(i) {
                    *best = i;
                    break;
                }
            }
        };
        if let Some(list) = self.exact.get(path) {
            try_list(list);
        }
        for &len in &self.prefix_lens {
            if len > path.len() {
                break;
            }
            if let Some(list) = path.get(..len).and_then(|p| self.prefixes.get(p)) {
                try_list(list);
            }
        }
        try_list(&self.rest);
    }
}

/// Routes grouped by host, then by path.
#[derive(Default)]
pub(super) struct Index {
    exact_hosts: HashMap<String, Group>,
    /// Keyed by the suffix with its dot: `.example.com` for `*.example.com`.
    wildcard_hosts: HashMap<String, Group>,
    any_host: Group,
}

impl Index {
    /// Index routes given as (hosts, path condition), in file order.
    pub(super) fn build<'r>(routes: impl Iterator<Item = (&'r [String], &'r PathCond)>) -> Self {
        let mut index = Index::default();
        for (i, (hosts, path)) in routes.enumerate() {
            if hosts.is_empty() {
                index.any_host.add(i, path);
            }
            for host in hosts {
                let group = match host.strip_prefix('*') {
                    Some(suffix) => index.wildcard_hosts.entry(suffix.to_owned()),
                    None => index.exact_hosts.entry(host.clone()),
                };
                group.or_default().add(i, path);
            }
        }
        index
    }

    /// The earliest route for `host` and `path` for which `matches` (the
    /// route's other conditions) holds.
    pub(super) fn find(
        &self,
        host: &str,
        path: &str,
        matches: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut best = usize::MAX;
        if let Some(g) = self.exact_hosts.get(host) {
            g.find(path, &mut best, &matches);
        }
        if !self.wildcard_hosts.is_empty() {
            for (at, _) in host.match_indices('.').filter(|&(at, _)| at > 0) {
                if let Some(g) = self.wildcard_hosts.get(&host[at..]) {
                    g.find(path, &mut best, &matches);
                }
            }
        }
        self.any_host.find(path, &mut best, &matches);
        (best != usize::MAX).then_some(best)
    }
}
