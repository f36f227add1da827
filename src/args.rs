//! JS arguments as the `#[napi]` methods take them, viewed as the core's
//! unchecked option types (the core checks them: `hub::options`), and the
//! panic guard for the closures the binding makes.

use napi::Result;
use napi_derive::napi;
use sse_helper_core::hub::options;

/// Options of one event, as JS passes them.
#[napi(object)]
pub struct EventOptions {
  pub event: Option<String>,
  pub id: Option<String>,
  pub retry: Option<f64>,
}

/// The core's view of optional event options.
pub fn event_options(options: Option<&EventOptions>) -> options::EventOptions<'_> {
  options.map_or_else(Default::default, |o| options::EventOptions {
    event: o.event.as_deref(),
    id: o.id.as_deref(),
    retry: o.retry,
  })
}

/// Runs `f`, turning a panic into a JS error instead of letting it unwind
/// into Node-API (which aborts the process). The `#[napi]` methods get the
/// same from `catch_unwind`; this is for the closures the binding makes.
pub fn guard_panics<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
  std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    .map_err(napi::bindgen_prelude::panic_to_error)
    .and_then(|r| r)
}

/// `configure()`'s options as JS passes them (already checked for
/// unknown keys and types by the JS surface).
#[napi(object)]
pub struct HubOptions {
  pub transport: Option<String>,
  pub max_buffered_bytes: Option<f64>,
  pub slow_client_policy: Option<String>,
  pub history_size: Option<f64>,
  /// Publishes kept per channel for replay.
  pub channel_history_size: Option<f64>,
  pub end_timeout_ms: Option<f64>,
  pub writer_threads: Option<f64>,
  pub max_clients: Option<f64>,
}

impl HubOptions {
  /// The core's view of them.
  pub fn view(&self) -> options::HubOptions<'_> {
    options::HubOptions {
      transport: self.transport.as_deref(),
      max_buffered_bytes: self.max_buffered_bytes,
      slow_client_policy: self.slow_client_policy.as_deref(),
      history_size: self.history_size,
      channel_history_size: self.channel_history_size,
      end_timeout_ms: self.end_timeout_ms,
      writer_threads: self.writer_threads,
      max_clients: self.max_clients,
    }
  }
}
