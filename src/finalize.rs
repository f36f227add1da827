//! What happens when JS lets go of a `NativeHub`.

use napi::bindgen_prelude::*;
use napi::Env;

use sse_helper_core::hub::Shutdown;

use crate::args::guard_panics;
use crate::effects;
use crate::hub::NativeHub;

impl ObjectFinalize for NativeHub {
  /// Runs during garbage collection, where no JS may run: it only lets go.
  /// Socket connections still registered are ended through the writer
  /// (which flushes what it holds first); their responses are ended from
  /// the writer's callback, a normal JS turn. Stream connections stay until
  /// their `close` event, which still cleans up. Once nothing is left the
  /// hub releases its references and the writer thread exits by itself;
  /// nothing here joins a thread.
  fn finalize(self, env: Env) -> Result<()> {
    guard_panics(|| {
      // Never borrowed here in practice (finalizers run outside any call
      // into the hub); if it were, the hub stays alive as it is rather
      // than panic.
      let Ok(mut s) = self.state.try_borrow_mut() else {
        return Ok(());
      };
      let effects = s.core.shutdown(Shutdown::Orphan);
      drop(s);
      effects::execute_without_js(&self.state, env.raw(), effects);
      Ok(())
    })
  }
}
