//! `mllp-actors`: a protocol-agnostic, OTP-style connection supervisor on ractor and tokio.

pub mod event;
pub mod protocol;
pub mod transport;

pub use event::{CloseReason, Event, Observer};
pub use protocol::{ConnectionInfo, Failure, Protocol};
pub use transport::{Established, PlainTcp, Transport};
