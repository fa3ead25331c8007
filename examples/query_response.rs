//! Query/response: a QBP^Q22 (find candidates) is answered with an RSP^K22 built by the
//! handler, instead of the automatic ACK. Other messages are acknowledged as usual.
//!
//! Run with: `cargo run --example query_response`
//! Then query it: `cargo run -- send --to 127.0.0.1:2575 tests/fixtures/partner/qbp_q22.hl7`
//! (`send` prints the RSP's MSA-1, `AA`.)

use mllp::Server;
use mllp::ack::{AckCode, AckOptions, Reply};
use mllp::app::{Request, Router};

/// A made-up patient index: (family name, MRN, given name).
const PATIENTS: &[(&str, &str, &str)] = &[
    ("TESTPATIENT", "MRN0001", "ALEX"),
    ("TESTPATIENT", "MRN0002", "SAM"),
    ("EXAMPLE", "MRN0003", "JO"),
];

/// QPD-3 holds `@PID.5.1^NAME` pairs (repeating); this index looks up the family name only.
fn family_name(req: &Request) -> Option<String> {
    let qpd3 = req.message().get("QPD-3").ok()??;
    qpd3.repetitions()
        .find(|r| r.component(1).is_some_and(|c| c.as_bytes() == b"@PID.5.1"))
        .and_then(|r| r.component(2))
        .and_then(|c| c.to_str().map(str::to_owned))
}

/// QBP^Q22: MSA, QAK (the query tag, OK or NF), the QPD echoed, then one PID per candidate.
async fn find_candidates(req: Request) -> Reply {
    let query = req.message();
    let tag = query
        .get("QPD-2")
        .ok()
        .flatten()
        .and_then(|v| v.to_str())
        .unwrap_or_default()
        .to_owned();
    let name = family_name(&req).unwrap_or_default();
    let found: Vec<_> = PATIENTS.iter().filter(|(n, ..)| *n == name).collect();
    let status = if found.is_empty() { "NF" } else { "OK" };
    let mut reply = Reply::builder(query, "RSP^K22^RSP_K21", &AckOptions::default())
        .msa(AckCode::AA)
        .segment("QAK", [tag.as_str(), status]);
    if let Some(qpd) = query.segment("QPD") {
        reply = reply.raw_segment(qpd.as_bytes());
    }
    for (i, (family, mrn, given)) in found.iter().enumerate() {
        let set_id = (i + 1).to_string();
        let id = format!("{mrn}^^^HOSP^MR");
        let name = format!("{family}^{given}");
        reply = reply.segment("PID", [set_id.as_str(), "", &id, "", &name]);
    }
    reply.build()
}

#[tokio::main]
async fn main() -> Result<(), mllp::Error> {
    let router = Router::new()
        .route("QBP^Q22", find_candidates)
        .route("*", |_req: Request| async {});
    // SIGTERM/SIGINT handlers before the address is announced: a signal from then on drains.
    let shutdown = mllp::shutdown_signal();
    // 127.0.0.1:2575, or MLLP_ADDR (tests/examples.rs runs this example on a free port).
    let addr = std::env::var("MLLP_ADDR").unwrap_or_else(|_| "127.0.0.1:2575".to_owned());
    let server = Server::builder().router(router).bind(addr).await?;
    println!("listening on {}", server.local_addr());
    server.serve_with_shutdown(shutdown).await?;
    Ok(())
}
