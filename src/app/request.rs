//! The request context a handler and its middleware see.

use crate::ack::Diagnostic;
use crate::app::Extensions;
use crate::hl7::Message;
use mllp_actors::ConnectionInfo;

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
    extensions: Extensions,
}

impl Request {
    /// A request for `message` received on `connection`.
    pub fn new(message: Message, connection: ConnectionInfo) -> Self {
        Self {
            message,
            connection,
            diagnostics: Vec::new(),
            extensions: Extensions::new(),
        }
    }

    /// The parsed message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The connection: id, peer address, TLS and the verified client identity when present.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.connection
    }

    /// Diagnostics attached so far. Those the parser plugins attached are sent in the ACK
    /// (warnings as ERR segments with severity W on an accepted message; an error refuses the
    /// message).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Attaches a diagnostic. The ACK carries what parser plugins attach here; middleware and
    /// handlers run later and put theirs on the [`Response`](crate::app::Response) instead
    /// ([`Response::with_diagnostic`](crate::app::Response::with_diagnostic)): one attached to
    /// the request after the plugins is visible to later stages but not sent.
    pub fn add_diagnostic(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
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
