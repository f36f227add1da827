#![deny(clippy::all)]
//! sse-helper-native: a Server-Sent Events helper for Node with a Rust core.
//!
//! `frame`, `history`, `registry` and `writer` are the pure-Rust core (no napi types); `hub`,
//! `transport` and `js` are the Node-API binding around it.

pub mod backpressure;
pub mod frame;
pub mod history;
pub mod registry;
pub mod writer;

mod hub;
mod js;
mod transport;
