//! `signal::listen` catches SIGTERM from the moment it returns. Its own test binary: the test
//! sends SIGTERM to this process, whose handlers then stay installed for its lifetime.

mod support;

use support::within;

/// A SIGTERM that arrives after `listen()` but before its future is first polled (while the
/// server is still starting) completes the future when it is polled; it does not end the
/// process, which is the signal's default action and would end this test binary.
#[tokio::test]
async fn sigterm_before_the_first_poll_is_kept_for_the_listener() {
    let signal = mllp_actors::signal::listen().expect("install the handlers");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    within(signal).await;
}
