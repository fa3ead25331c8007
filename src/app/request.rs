//! The request context a handler and its middleware see.

use std::sync::{Arc, OnceLock};

use crate::ack::Diagnostic;
use crate::app::Extensions;
use crate::hl7::Message;
use mllp_actors::{ConnectionInfo, Lease};

/// One inbound message with everything known about it: the parsed [`Message`], the diagnostics
/// that parser plugins attached, the connection it came on, and typed per-message data that
/// middleware and plugins set for the handler.
///
/// `Debug` prints no field contents: HL7 carries patient data.
#[derive(Debug)]
pub struct Request {
    message: Message,
    connection: ConnectionInfo,
    diagnostics: Vec<Diagnostic>,
    /// How many of `diagnostics` the runtime already carries to the ACK (the parser plugins');
    /// the handler stage adds the rest (attached by middleware) to its response.
    carried: usize,
    extensions: Extensions,
    lease: Option<Lease>,
    store_id: Option<StoreIdSlot>,
    /// The server's meter, when it was given one (`ServerBuilder::meter`).
    meter: Option<opentelemetry::metrics::Meter>,
}

/// Where a message's store id goes, shared with the runtime's view of the message so that the
/// message log can name it.
pub(crate) type StoreIdSlot = Arc<OnceLock<Box<str>>>;

impl Request {
    /// A request for `message` received on `connection`.
    pub fn new(message: Message, connection: ConnectionInfo) -> Self {
        Self {
            message,
            connection,
            diagnostics: Vec::new(),
            carried: 0,
            extensions: Extensions::new(),
            lease: None,
            store_id: None,
            meter: None,
        }
    }

    /// Gives the request the slot its store id goes to (when the message log is on).
    pub(crate) fn with_store_id_slot(mut self, slot: Option<StoreIdSlot>) -> Self {
        self.store_id = slot;
        self
    }

    /// Records the id under which the message was stored (a row id, a file name), for the
    /// message log line's `store.id` field
    /// ([`ServerBuilder::log_messages`](crate::ServerBuilder::log_messages)). The first id
    /// recorded wins; without the message log it is not kept. Never put message content in it.
    pub fn set_store_id(&self, id: impl Into<Box<str>>) {
        if let Some(slot) = &self.store_id {
            let _ = slot.set(id.into());
        }
    }

    /// The request with the server's meter (the server sets it when it was given one).
    pub(crate) fn with_meter(mut self, meter: Option<opentelemetry::metrics::Meter>) -> Self {
        self.meter = meter;
        self
    }

    /// The meter of the server this request came to, when it was given one
    /// ([`ServerBuilder::meter`](crate::ServerBuilder::meter)); `None` means the global meter
    /// provider.
    pub(crate) fn server_meter(&self) -> Option<&opentelemetry::metrics::Meter> {
        self.meter.as_ref()
    }

    /// The request with the runtime's [`Lease`] on the server's limits (the server sets it).
    pub(crate) fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The request's hold on the server's limits: its place in `max_in_flight`, its
    /// `max_concurrent_handlers` permit and its share of `max_buffered_bytes`. Give a clone to
    /// work that may outlive the handler (a blocking write, a job for another thread): the
    /// request keeps counting against the limits until the last clone is dropped, even after a
    /// handler timeout. [`Record::from_request`](crate::store::Record::from_request) takes one,
    /// so a store holds it for as long as it holds the record. `None` for a request built
    /// outside a server.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The parsed message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The connection: id, peer address, TLS and the verified client identity when present.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.connection
    }

    /// Diagnostics attached so far, by parser plugins and middleware. They are sent in the ACK
    /// (warnings as ERR segments with severity W on an accepted message; an error attached by
    /// a parser plugin refuses the message).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Attaches a diagnostic, sent in the ACK once the request reaches its handler. A middleware
    /// that answers without calling the handler puts its diagnostics on its own
    /// [`Response`](crate::app::Response) instead.
    pub fn add_diagnostic(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// Marks every diagnostic attached so far as carried to the ACK by the runtime (after the
    /// parser plugins).
    pub(crate) fn mark_diagnostics_carried(&mut self) {
        self.carried = self.diagnostics.len();
    }

    /// Whether diagnostics were attached since [`Request::mark_diagnostics_carried`].
    pub(crate) fn has_uncarried_diagnostics(&self) -> bool {
        self.diagnostics.len() > self.carried
    }

    /// The diagnostics attached since [`Request::mark_diagnostics_carried`] (by middleware),
    /// which the handler stage adds to its response.
    pub(crate) fn uncarried_diagnostics(&self) -> Vec<Diagnostic> {
        self.diagnostics
            .get(self.carried..)
            .map_or_else(Vec::new, <[Diagnostic]>::to_vec)
    }

    /// Typed per-message data.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Typed per-message data, for middleware and plugins that set it.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// Takes the message out of the request.
    pub fn into_message(self) -> Message {
        self.message
    }
}
