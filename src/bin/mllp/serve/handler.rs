//! The message route of `mllp serve`: store the message (unless `--no-store`), then accept it.

use std::sync::Arc;

use mllp::app::{Request, Router};
use mllp::store::{Store, StoreLayer};

/// One route for every message type that accepts; with a store, [`StoreLayer`] in front of it
/// stores each message first (AE when it cannot), and acknowledges a duplicate resend without
/// storing it again.
///
/// The route only sees messages that parsed and carry MSH-9 and MSH-10; everything else was
/// already answered AR by the library and is never stored.
pub(super) fn router(store: Option<Arc<dyn Store>>) -> Router {
    let router = Router::new().route("*", |req: Request| async move {
        if req.extensions().get::<mllp::store::Stored>().is_none() {
            let msg = req.message();
            // MSH fields only, under the telemetry contract's keys: MSH-9.1, MSH-9.2, MSH-10.
            tracing::debug!(
                hl7.message_type = msg.message_code().unwrap_or_default(),
                hl7.trigger_event = msg.trigger_event().unwrap_or_default(),
                hl7.control_id = msg.control_id().unwrap_or_default(),
                "message accepted (not stored)"
            );
        }
    });
    match store {
        Some(store) => router.layer(StoreLayer::shared(store)),
        None => router,
    }
}
