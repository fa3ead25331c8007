//! `mllp::shutdown_signal()` listens from the moment it is called. Its own test binary: the
//! test sends SIGTERM to this process, whose handlers then stay installed for its lifetime.

mod support;

use support::{sigterm, within};

/// A SIGTERM that arrives after `shutdown_signal()` is called but before its future is first
/// polled (as while `serve_with_shutdown` is still starting the server) completes the future
/// when it is polled; it does not end the process (the default action, which would end this
/// test binary).
#[tokio::test]
async fn sigterm_before_the_first_poll_completes_the_signal_future() {
    let signal = mllp::shutdown_signal();
    sigterm(std::process::id());
    within(signal).await;
}
