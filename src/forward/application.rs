//! Application acknowledgments (MSH-16, HL7 v2.5 §2.9.3): the outcome of the handler sent back
//! to the sender as a message of its own, after the accept acknowledgment.

use std::fmt;
use std::sync::Arc;

use super::Forwarder;
use crate::ack::{Ack, AckOptions, accept_ack_wanted};
use crate::app::{Next, Request, Response};
use crate::hl7::Message;

type Route = dyn Fn(&Message) -> Option<Forwarder> + Send + Sync;

/// Middleware that sends application acknowledgments: when a message's MSH-16 (application
/// acknowledgment type) asks for one given the handler's outcome (`AL` always, `ER` on
/// failure, `SU` on success, `NE` never), an ACK of the message (AA/AE/AR with the
/// response's diagnostics, MSA-2 = its MSH-10, a new MSH-10, written by [`Ack::build`]) is sent
/// to the sender's endpoint through a [`Forwarder`], in a task of its own, after the handler
/// returned; the answer on the connection is unchanged (the accept ACK per MSH-15).
///
/// Supported: MSH-16 `AL`/`ER`/`SU`/`NE` in enhanced mode, one endpoint for every sender or one
/// chosen per message (by MSH-3/MSH-4, say), the application ACK's own reply awaited and
/// checked as any sent message's (a failure is logged as a warning with the control id). Not
/// supported: deferred processing (the application ACK is built from the handler's outcome, not
/// sent later by your code), retries beyond the forwarder's client settings, and sending on the
/// inbound connection (§2.9.3 asks for the sender's own receiver).
///
/// ```no_run
/// use mllp::app::{Request, Router, from_fn};
/// use mllp::forward::{ApplicationAcks, Forwarder};
///
/// let acks = ApplicationAcks::to(Forwarder::new("lab.example:2576"));
/// let router = Router::new()
///     .route("ORU^R01", |_req: Request| async {})
///     .layer(from_fn(move |req, next| {
///         let acks = acks.clone();
///         async move { acks.respond(req, next).await }
///     }));
/// # let _ = router;
/// ```
#[derive(Clone)]
pub struct ApplicationAcks {
    route: Arc<Route>,
    options: AckOptions,
}

impl fmt::Debug for ApplicationAcks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplicationAcks")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ApplicationAcks {
    /// Every application ACK goes to `endpoint`.
    pub fn to(endpoint: Forwarder) -> Self {
        Self::routed(move |_| Some(endpoint.clone()))
    }

    /// Each application ACK goes where `route` says for the message (`None`: not sent, a warning
    /// logged).
    pub fn routed(route: impl Fn(&Message) -> Option<Forwarder> + Send + Sync + 'static) -> Self {
        Self {
            route: Arc::new(route),
            options: AckOptions::default(),
        }
    }

    /// How the application ACKs are written. Default is [`AckOptions::default`].
    #[must_use]
    pub fn ack_options(mut self, options: AckOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs the rest of the pipeline, then sends the application ACK its outcome calls for.
    pub async fn respond(&self, request: Request, next: Next) -> Response {
        let message = request.message().clone();
        let response = next.run(request).await;
        if let Some(ack) = self.application_ack(&message, &response) {
            let control_id =
                crate::hl7::logged_control_id(message.control_id().unwrap_or_default())
                    .into_owned();
            match (self.route)(&message) {
                Some(endpoint) => {
                    tokio::spawn(async move {
                        if let Err(error) = endpoint.send(ack.into_bytes()).await {
                            tracing::warn!(
                                hl7.control_id = control_id,
                                downstream = %endpoint.addr(),
                                error = %error,
                                "application acknowledgment not delivered"
                            );
                        }
                    });
                }
                None => tracing::warn!(
                    hl7.control_id = control_id,
                    "application acknowledgment asked for, but no endpoint for this sender"
                ),
            }
        }
        response
    }

    /// The application ACK `response` calls for under `message`'s MSH-16, if any.
    pub fn application_ack(&self, message: &Message, response: &Response) -> Option<Ack> {
        let wanted = accept_ack_wanted(message.application_ack_type(), response.is_accepted());
        wanted.then(|| {
            Ack::build(
                message,
                response.status().ack_code(false),
                response.diagnostics(),
                &self.options,
            )
        })
    }
}
