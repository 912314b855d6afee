//! rproxy's engine: the sockets, parsing and forwarding under a
//! plugin-driven reverse proxy.
//!
//! Read in this order:
//!
//! * [`config`] — what Python hands over after validating `proxy.toml`;
//! * [`engine`] — runtime, listeners, start and stop;
//! * [`server`] — accept loops and downstream connections (HTTP/1.1, h2c);
//! * [`h1`] — the HTTP/1.x wire format, strict by design;
//! * [`proxy`] — the request path: checks, routing, forwarding;
//! * [`route`] — the built-in router: conditions, rewrites, the index;
//! * [`upstream`] — pools, pooled connections, response bodies;
//! * [`headers`] — hop-by-hop hygiene and forwarding fields;
//! * [`body`] — streaming request and response bodies;
//! * [`error`] — the typed error every failure becomes.
//!
//! The `python` feature adds the `rproxy._engine` extension module.

pub mod body;
pub mod cache;
pub mod config;
pub mod engine;
pub mod error;
pub mod h1;
pub mod headers;
pub mod hooks;
pub mod net;
pub mod policy;
pub mod proxy;
pub mod request_id;
mod response;
pub mod route;
pub mod server;
mod timer;
pub mod upstream;

#[cfg(feature = "python")]
mod python;

/// The extension module allocates with mimalloc: under proxy load glibc's
/// malloc kept trimming and regrowing its heap (brk), which showed as
/// several percent of a worker's time in profiles.
#[cfg(feature = "python")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use config::EngineConfig;
pub use engine::{Engine, RunningEngine};
pub use error::{Error, ErrorKind, ErrorSource};
