//! The message route of `mllp serve`: store the message (unless `--no-inbox`), then accept it.

use mllp::app::{HandlerError, Request, Router};
use mllp::inbox::Inbox;

use crate::exit;

/// One route for every message type: store (unless `--no-inbox`), then accept.
///
/// The handler only sees messages that parsed and carry MSH-9 and MSH-10; everything else was
/// already answered AR by the library and is never stored.
pub(super) fn router(inbox: Option<Inbox>) -> Router {
    Router::new().route("*", move |req: Request| {
        let inbox = inbox.clone();
        async move {
            let msg = req.message();
            // MSH fields only, under the telemetry contract's keys: MSH-9.1, MSH-9.2, MSH-10.
            let control_id = msg.control_id().unwrap_or_default();
            let message_type = msg.message_code().unwrap_or_default();
            let trigger_event = msg.trigger_event().unwrap_or_default();
            let Some(inbox) = inbox else {
                tracing::debug!(
                    hl7.message_type = message_type,
                    hl7.trigger_event = trigger_event,
                    hl7.control_id = control_id,
                    "message accepted (not stored)"
                );
                return Ok(());
            };
            // Awaited before returning: the AA is only built once the file and its directory
            // entry are on disk. If the handler times out, the store may still finish, but no
            // AA is sent, and the sender's resend is kept too (at-least-once).
            match inbox
                .store_bytes(msg.as_bytes().clone(), Some(control_id.as_bytes()))
                .await
            {
                Ok(path) => {
                    // The inbox file is the message's store id in the message log line.
                    req.set_store_id(path.file_name().unwrap_or_default().to_string_lossy());
                    tracing::debug!(
                        hl7.message_type = message_type,
                        hl7.trigger_event = trigger_event,
                        hl7.control_id = control_id,
                        file = %path.file_name().unwrap_or_default().to_string_lossy(),
                        "message stored"
                    );
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(
                        hl7.message_type = message_type,
                        hl7.trigger_event = trigger_event,
                        hl7.control_id = control_id,
                        error = %exit::chain(&e),
                        "message could not be stored; answering AE"
                    );
                    Err(HandlerError::internal("message could not be stored"))
                }
            }
        }
    })
}
