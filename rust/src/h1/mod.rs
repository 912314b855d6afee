//! HTTP/1.x wire format: strict head parsing, body decoding, and encoding.
//! Shared by the downstream server and the upstream client.

pub mod decode;
pub mod encode;
pub mod parse;
pub(crate) mod reader;
