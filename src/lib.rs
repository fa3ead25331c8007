//! `mllp`: an MLLP (HL7 v2 over TCP) server library.

pub mod ack;
pub mod frame;
pub mod hl7;
pub mod tls;
