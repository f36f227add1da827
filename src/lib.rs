#![deny(clippy::all)]
//! sse-helper-native: a Server-Sent Events helper for Node with a Rust core.
//!
//! This crate is the Node-API binding around `sse-helper-core`, which holds
//! every decision. The binding converts values, holds napi references,
//! executes the core's effects on the JS thread and maps errors:
//!
//! - [`hub`]: the `#[napi]` class `NativeHub`.
//! - `state`: what one hub holds on the JS side, and the borrow rule.
//! - `args`: JS arguments as the core's (unchecked) option types.
//! - `error`: every JS error, the core's `CoreError` mapped in one place.
//! - `deliver`: executing a core `Dispatch` (the stream writes).
//! - `effects`: executing the core's effects (ending responses, events).
//! - `registration`: the steps of `register` that run JS, with rollback.
//! - `removal`: taking connections out (by key, by id, stale ones).
//! - `direct`: writing to one response the app names; broadcast filters.
//! - `entries`: `_clients` as the original's `Map` shows it.
//! - `stats`: `getStats()`'s native figures as JS objects.
//! - `setup`, `finalize`: a hub's JS-side state made, and let go of.
//! - `bus`: the Redis bus: starting it, and executing what it reports.
//! - `stream`: the stream transport's write path (`res.write`).
//! - `replays`: the JS values of replays a reconnect storm shares.
//! - `table`: every registered response at its slot, for `writeBatch`.
//! - `socket`: verifying and duplicating a connection's fd for the writer.
//! - `waiting`: bus requests as native promises, and keeping Node alive
//!   (ref'd thread-safe functions) only while JS awaits the hub's threads.
//! - `js`: the raw Node-API calls, each with its `// SAFETY:` note.

mod args;
mod bus;
mod deliver;
mod direct;
mod effects;
mod entries;
mod error;
mod finalize;
pub mod hub;
mod js;
mod names;
mod registration;
mod removal;
mod replays;
mod setup;
mod socket;
mod state;
mod stats;
mod stream;
mod table;
mod waiting;
