#![deny(clippy::all)]
//! sse-helper-native: a Server-Sent Events helper for Node with a Rust core.
//!
//! This crate is the Node-API binding around `sse-helper-core`, which holds
//! every decision. The binding converts values, holds napi references,
//! executes the core's effects on the JS thread and maps errors:
//!
//! - [`hub`]: the `#[napi]` class `NativeHub`.
//! - `state`: what one hub holds on the JS side, and the borrow rule.
//! - `args`: turning JS arguments into core types, bad input into TypeErrors.
//! - `effects`: executing the core's effects (ending responses, events).
//! - `registration`: the steps of `register` that run JS, with rollback.
//! - `bus`: the Redis bus: starting it, broadcasts as stream entries, and
//!   what it reports.
//! - `stream`: the stream transport's write path (`res.write`).
//! - `socket`: verifying and duplicating a connection's fd for the writer.
//! - `js`: the raw Node-API calls, each with its `// SAFETY:` note.

mod args;
mod bus;
mod effects;
pub mod hub;
mod js;
mod registration;
mod socket;
mod state;
mod stream;
