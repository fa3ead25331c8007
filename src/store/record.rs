//! One received message with the metadata a store keeps beside it.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use mllp_actors::Lease;

use crate::app::Request;
use crate::hl7::Message;
use crate::store::digest;

/// A received message and its metadata: receive time, listener, peer, TLS identity, and the
/// MSH fields 3, 4, 5, 6, 9, 10, 11 and 12, raw (zero-copy slices of the payload). No other
/// field is ever copied out of the payload.
///
/// A record made from a request holds the request's [`Lease`] on the server's limits: a store
/// that keeps the record while it writes (a blocking write that goes on after a handler
/// timeout, a job waiting for a writer thread) keeps the request counted against
/// `max_in_flight`, `max_concurrent_handlers` and `max_buffered_bytes` until it drops the
/// record. Stores should drop records once the write has finished or been given up.
///
/// `Debug` prints the metadata but not the payload.
#[derive(Clone)]
pub struct Record {
    received_at: SystemTime,
    listener: SocketAddr,
    peer: SocketAddr,
    tls_identity: Option<String>,
    msh: [Bytes; 8],
    /// MSH-9.1 and MSH-9.2.
    code_event: [Bytes; 2],
    digest: [u8; 32],
    payload: Bytes,
    lease: Option<Lease>,
    /// MSH-18 says `8859/1`: [`Record::text`] decodes Latin-1.
    latin1: bool,
}

/// MSH field numbers kept, in the order of `Record::msh`.
const MSH_FIELDS: [usize; 8] = [3, 4, 5, 6, 9, 10, 11, 12];

impl Record {
    /// The record of `request`, received now.
    pub fn from_request(request: &Request) -> Self {
        let connection = request.connection();
        let mut record = Self::from_message(
            request.message(),
            SystemTime::now(),
            connection.local(),
            connection.peer(),
            connection.peer_identity().map(str::to_owned),
        );
        record.lease = request.lease().cloned();
        record
    }

    /// The record of `message`, with the metadata given.
    pub fn from_message(
        message: &Message,
        received_at: SystemTime,
        listener: SocketAddr,
        peer: SocketAddr,
        tls_identity: Option<String>,
    ) -> Self {
        let payload = message.as_bytes().clone();
        let msh = message.msh();
        let field = |n: usize| {
            msh.field(n)
                .map_or_else(Bytes::new, |v| payload.slice_ref(v.as_bytes()))
        };
        let msh_fields = MSH_FIELDS.map(field);
        let component = |n: usize| {
            msh.field(9)
                .and_then(|v| v.component(n))
                .map_or_else(Bytes::new, |v| payload.slice_ref(v.as_bytes()))
        };
        let code_event = [component(1), component(2)];
        let digest = digest::content_digest(message);
        let latin1 = message.is_latin1();
        Self {
            received_at,
            listener,
            peer,
            tls_identity,
            msh: msh_fields,
            code_event,
            digest,
            payload,
            lease: None,
            latin1,
        }
    }

    /// Raw bytes of this record (one of its MSH fields) as text, decoded per the message's
    /// MSH-18 as [`Message::decode_text`] does: Latin-1 for `8859/1`, UTF-8 otherwise (U+FFFD for
    /// bytes that do not decode). What a store writes where it keeps text.
    pub fn text<'a>(&self, bytes: &'a [u8]) -> Cow<'a, str> {
        if self.latin1 && !bytes.is_ascii() {
            Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())
        } else {
            String::from_utf8_lossy(bytes)
        }
    }

    /// When the message was received.
    pub fn received_at(&self) -> SystemTime {
        self.received_at
    }

    /// The local address it was received on.
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    /// The sender's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The verified client identity (mutual TLS), if any.
    pub fn tls_identity(&self) -> Option<&str> {
        self.tls_identity.as_deref()
    }

    /// MSH-3, sending application, raw.
    pub fn sending_application(&self) -> &[u8] {
        &self.msh[0]
    }

    /// MSH-4, sending facility, raw.
    pub fn sending_facility(&self) -> &[u8] {
        &self.msh[1]
    }

    /// MSH-5, receiving application, raw.
    pub fn receiving_application(&self) -> &[u8] {
        &self.msh[2]
    }

    /// MSH-6, receiving facility, raw.
    pub fn receiving_facility(&self) -> &[u8] {
        &self.msh[3]
    }

    /// MSH-9, message type, whole and raw (`ADT^A01^ADT_A01`).
    pub fn message_type(&self) -> &[u8] {
        &self.msh[4]
    }

    /// MSH-9.1, message code (`ADT`), raw.
    pub fn message_code(&self) -> &[u8] {
        &self.code_event[0]
    }

    /// MSH-9.2, trigger event (`A01`), raw.
    pub fn trigger_event(&self) -> &[u8] {
        &self.code_event[1]
    }

    /// MSH-10, message control id, raw.
    pub fn control_id(&self) -> &[u8] {
        &self.msh[5]
    }

    /// MSH-11, processing id, raw.
    pub fn processing_id(&self) -> &[u8] {
        &self.msh[6]
    }

    /// MSH-12, version id, raw.
    pub fn version(&self) -> &[u8] {
        &self.msh[7]
    }

    /// SHA-256 of the payload without MSH-7 (date/time of message, which some senders stamp
    /// anew on a resend): two messages with the same digest are the same message.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The payload, byte for byte as received.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The lease of the request this record was made from (see the type's docs).
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The key under which duplicates are looked for: MSH-3, MSH-4 and MSH-10, each
    /// length-prefixed so that no two different triples give the same key.
    pub fn dedup_key(&self) -> Vec<u8> {
        let parts = [
            self.sending_application(),
            self.sending_facility(),
            self.control_id(),
        ];
        let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
        for part in parts {
            key.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            key.extend_from_slice(part);
        }
        key
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        f.debug_struct("Record")
            .field("received_at", &self.received_at)
            .field("listener", &self.listener)
            .field("peer", &self.peer)
            .field("tls_identity", &self.tls_identity)
            .field("message_type", &text(self.message_type()))
            .field("control_id", &text(self.control_id()))
            .field("len", &self.payload.len())
            .finish_non_exhaustive()
    }
}
