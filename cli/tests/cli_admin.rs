//! The operator's view of the `mllp` binary: `serve --admin` (its probes answering, its
//! exposure rule, its settings in the config file), the message and reject log lines of
//! `serve`, `mllp top` driven in a real terminal (tmux) and read off the screen, and `mllp top`
//! stopped by a signal under `script`, its escape sequences read.
//!
//! Every server binds port 0 and is found through its `listening on` and `admin on` lines.

#[path = "../../tests/support/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_mllp");

/// Stands in for patient data: it must never appear in a log line or on the screen.
const SENTINEL: &str = "ZZSENTINELPHI";

/// A hang guard, not a synchronisation point.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test step hung")
}

fn hl7(control_id: &str) -> String {
    format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20261122120000||ADT^A01^ADT_A01|{control_id}|P|2.5\r\
         PID|1||PATID1234^^^HOSP^MR||{SENTINEL}^JOHN||19700101|M\r"
    )
}

/// A running `mllp serve`, its MLLP and admin addresses, and its output.
struct Serve {
    child: Child,
    mllp: SocketAddr,
    admin: Option<SocketAddr>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: tokio::task::JoinHandle<String>,
}

impl Serve {
    /// `mllp serve` on port 0, without a store, its stdout and stderr piped.
    fn spawn(cwd: &Path, args: &[&str]) -> Child {
        Command::new(BIN)
            .arg("serve")
            .args(["--bind", "127.0.0.1:0", "--no-inbox"])
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mllp serve")
    }

    async fn start(cwd: &Path, args: &[&str]) -> Serve {
        let mut child = Self::spawn(cwd, args);
        let (tx, mut stdout) = mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        let addr = |line: Option<String>, prefix: &str| -> SocketAddr {
            let line = line.unwrap_or_else(|| panic!("serve exited before `{prefix}`"));
            line.strip_prefix(prefix)
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("expected `{prefix}ADDR`, got {line:?}"))
        };
        let mllp = addr(within(stdout.recv()).await, "listening on ");
        let admin = if args.contains(&"--admin") || args.contains(&"--config") {
            Some(addr(within(stdout.recv()).await, "admin on "))
        } else {
            None
        };
        Serve {
            child,
            mllp,
            admin,
            stdout,
            stderr,
        }
    }

    /// `mllp serve` over TLS with `cert` and `key`, and the admin endpoint.
    async fn tls_with_admin(cwd: &Path, cert: &Path, key: &Path) -> Serve {
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        Self::start(
            cwd,
            &[
                "--tls-cert",
                &path(cert),
                "--tls-key",
                &path(key),
                "--admin",
                "127.0.0.1:0",
            ],
        )
        .await
    }

    /// SIGHUP.
    fn hangup(&self) {
        let pid = self.child.id().expect("running");
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// SIGTERM; the exit status and stderr.
    async fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("running");
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = within(self.child.wait()).await.unwrap();
        while within(self.stdout.recv()).await.is_some() {}
        (status, within(self.stderr).await.unwrap())
    }
}

/// Sends one framed payload and returns the raw reply frame's text.
async fn call(addr: SocketAddr, payload: &[u8]) -> String {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    let mut frame = vec![0x0b];
    frame.extend_from_slice(payload);
    frame.extend_from_slice(&[0x1c, 0x0d]);
    stream.write_all(&frame).await.unwrap();
    let mut reply = Vec::new();
    while !reply.ends_with(&[0x1c, 0x0d]) {
        let mut buf = [0u8; 4096];
        let n = within(stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed before the ACK");
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// `GET path`: the status code and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    within(stream.read_to_string(&mut text)).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

/// The value of the first sample of `name` in a Prometheus text body.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The served certificate's expiry is watched: one that expires within 30 days is warned about
/// at start, and `/metrics` carries its `notAfter`.
#[tokio::test]
async fn an_expiring_certificate_is_warned_about_and_its_expiry_exported() {
    let pki = pki::Pki::new();
    let day = 86_400;
    let soon = pki.ca.issue(
        pki.dir.path(),
        &pki::LeafSpec {
            valid_for: Some(Duration::from_secs(10 * day)),
            ..pki::LeafSpec::server("soon")
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::tls_with_admin(dir.path(), &soon.cert, &soon.key).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let (_, body) = get(serve.admin.unwrap(), "/metrics").await;
    let name = "mllp_tls_certificate_not_after_seconds";
    let not_after = sample(&body, name).unwrap_or_else(|| panic!("no {name} in\n{body}"));
    assert!(
        not_after > now + 9.0 * day as f64 && not_after <= now + 10.0 * day as f64,
        "{not_after} for a certificate that expires in ten days (now {now})"
    );
    let name = "mllp_tls_certificate_not_before_seconds";
    let not_before = sample(&body, name).unwrap_or_else(|| panic!("no {name} in\n{body}"));
    assert!(
        not_before <= now && not_before > now - 2.0 * day as f64,
        "{not_before} for a certificate issued just now (now {now})"
    );
    let (_, status) = get(serve.admin.unwrap(), "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let tls = &status["checks"][0];
    assert_eq!(tls["degraded"], true, "{status}");
    assert_eq!(status["ready"], true, "{status}");
    assert!(
        tls["detail"]
            .as_str()
            .unwrap()
            .starts_with("certificate expires in 9 day(s)"),
        "{status}"
    );
    let (status, stderr) = serve.stop().await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("tls certificate expires in 9 day(s)"),
        "{stderr}"
    );
}

/// `GET /status` until its body contains `text` (a reload runs on its own task after SIGHUP);
/// the body.
async fn status_when(admin: SocketAddr, text: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(admin, "/status").await;
        if body.contains(text) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/status never showed {text:?}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A SIGHUP reload that fails (a half-written certificate) leaves the listener on its previous
/// certificate, and says so where an operator looks: `/status` names the failure and the file,
/// `/metrics` has `mllp_tls_reload_failed 1`, and `/readyz` stays ready (the listener serves);
/// the next reload that succeeds clears both.
#[tokio::test]
async fn a_failed_certificate_reload_shows_on_status_and_metrics_until_one_succeeds() {
    let pki = pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let cert = pki.server.cert.to_str().unwrap().to_owned();
    let serve = Serve::tls_with_admin(dir.path(), &pki.server.cert, &pki.server.key).await;
    let admin = serve.admin.unwrap();
    let status = status_when(admin, "certificate valid until").await;
    assert!(!status.contains("reload"), "no reload yet: {status}");
    let (_, metrics) = get(admin, "/metrics").await;
    assert_eq!(
        sample(&metrics, "mllp_tls_reload_failed"),
        Some(0.0),
        "{metrics}"
    );

    let good = std::fs::read(&pki.server.cert).unwrap();
    std::fs::write(&pki.server.cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    serve.hangup();
    let status = status_when(
        admin,
        "failed, the previous certificate, key and client CAs",
    )
    .await;
    assert!(status.contains(&cert), "the file is named: {status}");
    let checks: serde_json::Value = serde_json::from_str(&status).unwrap();
    let tls = &checks["checks"][0];
    assert_eq!(
        (&tls["name"], &tls["healthy"], &tls["degraded"]),
        (&"tls".into(), &true.into(), &true.into()),
        "{status}"
    );
    let (_, metrics) = get(admin, "/metrics").await;
    assert_eq!(
        sample(&metrics, "mllp_tls_reload_failed"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".to_owned()));

    std::fs::write(&pki.server.cert, good).unwrap();
    serve.hangup();
    let status = status_when(admin, "; reloaded at").await;
    assert!(!status.contains("failed"), "{status}");
    assert!(status.contains(r#""degraded":false"#), "{status}");
    let (_, metrics) = get(admin, "/metrics").await;
    assert_eq!(
        sample(&metrics, "mllp_tls_reload_failed"),
        Some(0.0),
        "{metrics}"
    );
    let (exit, stderr) = serve.stop().await;
    assert!(exit.success(), "{stderr}");
    assert!(stderr.contains("tls reload failed"), "{stderr}");
}

async fn run(args: &[&str]) -> std::process::Output {
    within(
        Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
}

/// `serve --admin` prints where the endpoint listens and answers the probes; by default every
/// message gets an info line (MSH-9, MSH-10, ACK code, latency) and every reject a warn line
/// with its reason and offset, and neither carries patient data.
#[tokio::test]
async fn serve_admin_answers_probes_and_logs_messages_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--admin", "127.0.0.1:0"]).await;
    let admin = serve.admin.unwrap();
    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".to_owned()));
    assert!(
        call(serve.mllp, hl7("LOG-1").as_bytes())
            .await
            .contains("MSA|AA|LOG-1")
    );
    let not_hl7 = format!("HELLO {SENTINEL}");
    assert!(
        call(serve.mllp, not_hl7.as_bytes())
            .await
            .contains("MSA|AR")
    );
    // A message is counted right after its ACK is written, so the client may read the ACK
    // first: the counts are polled until both messages are in (a separate process has no event
    // to wait on).
    let status = within(async {
        loop {
            let (code, body) = get(admin, "/status").await;
            assert_eq!(code, 200);
            let status: serde_json::Value = serde_json::from_str(&body).unwrap();
            if status["messages"]["total"] == 2 {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(status["rejects"]["not_hl7"], 1);
    let (code, body) = get(admin, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("mllp_server_messages_total{hl7_ack_code=\"AA\""),
        "{body}"
    );
    // The allocator's gauges: what the heap holds in live allocations is part of what it keeps
    // resident.
    let gauge = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    };
    // Every series of mllp's meter names its version too (the allocator's gauges did not).
    for line in body
        .lines()
        .filter(|l| l.contains("otel_scope_name=\"mllp\""))
    {
        assert!(
            line.contains(&format!(
                "otel_scope_version=\"{}\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{line}"
        );
    }
    let allocated = gauge("mllp_allocator_allocated_bytes");
    let resident = gauge("mllp_allocator_resident_bytes");
    assert!(
        allocated > 0.0 && allocated <= resident,
        "{allocated} {resident}"
    );
    gauge("mllp_allocator_retained_bytes");

    let (exit, stderr) = serve.stop().await;
    assert!(exit.success(), "{stderr}");
    let message = stderr
        .lines()
        .find(|l| l.contains("mllp::messages"))
        .unwrap_or_else(|| panic!("no message line:\n{stderr}"));
    assert!(message.contains("INFO"), "{message}");
    assert!(message.contains("hl7.control_id=\"LOG-1\""), "{message}");
    assert!(message.contains("hl7.ack_code=\"AA\""), "{message}");
    assert!(message.contains("latency_ms="), "{message}");
    let reject = stderr
        .lines()
        .find(|l| l.contains("mllp::rejects"))
        .unwrap_or_else(|| panic!("no reject line:\n{stderr}"));
    assert!(reject.contains("WARN"), "{reject}");
    assert!(reject.contains("reject.reason=\"not_hl7\""), "{reject}");
    assert!(reject.contains("reject.offset=0"), "{reject}");
    assert!(
        !stderr.contains(SENTINEL),
        "patient data in the logs:\n{stderr}"
    );
}

/// `--log-messages=false` drops the per-message lines and keeps the reject lines; the
/// settings are keys of the config file too (`admin`, `log-messages`, `log-rejects`).
/// A stderr that stops taking writes (a pipe nobody reads) does not stop the server: every
/// message is still answered, the lines past the log buffer's limit are dropped and counted,
/// and the count is reported once stderr is read again.
#[tokio::test]
async fn a_stderr_nobody_reads_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // Its stderr is held open and not read until the load is over: the pipe fills after 64 KiB.
    let mut child = Serve::spawn(dir.path(), &[]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = within(stdout.next_line())
        .await
        .unwrap()
        .expect("a first line");
    let addr = line
        .strip_prefix("listening on ")
        .expect("listening on ADDR");
    // About 250 bytes of log per message: 20,000 messages are about 5 MiB, past the buffer's
    // 4 MiB limit.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(BIN)
            .args(["bench", "--to", addr, "-c", "8", "-n", "20000", "--json"])
            .output(),
    )
    .await
    .expect("the server stopped answering")
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["ok"], 20000, "{report}");
    // Now read stderr: the buffered lines, then the report of what was dropped.
    let pid = child.id().expect("running");
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut messages = 0;
    let dropped = within(async {
        loop {
            let line = err.next_line().await.unwrap().expect("stderr open");
            if line.contains("mllp::messages") {
                messages += 1;
            } else if line.contains("log lines dropped") {
                break line;
            }
        }
    })
    .await;
    assert!(dropped.contains("WARN"), "{dropped}");
    let count: u64 = dropped
        .split("dropped=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count: {dropped}"));
    // Lines logged after the drops stopped may come before the report: no exact sum.
    assert!(count > 0, "{dropped}");
    assert!(messages > 10_000, "{messages} lines kept");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    while within(err.next_line()).await.unwrap().is_some() {}
    assert!(within(child.wait()).await.unwrap().success());
}

#[tokio::test]
async fn log_and_admin_settings_come_from_flags_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, "admin = \"127.0.0.1:0\"\nlog-messages = false\n").unwrap();
    let serve = Serve::start(dir.path(), &["--config", config.to_str().unwrap()]).await;
    assert_eq!(get(serve.admin.unwrap(), "/readyz").await.0, 200);
    call(serve.mllp, hl7("QUIET-1").as_bytes()).await;
    call(serve.mllp, b"MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5\r").await;
    let (exit, stderr) = serve.stop().await;
    assert!(exit.success(), "{stderr}");
    assert!(!stderr.contains("mllp::messages"), "{stderr}");
    assert!(
        stderr.contains("reject.reason=\"missing_msh_field\""),
        "{stderr}"
    );
    assert!(stderr.contains("reject.field=\"MSH-10\""), "{stderr}");

    let quiet = Serve::start(dir.path(), &["--log-messages=false", "--log-rejects=false"]).await;
    call(quiet.mllp, b"NOT HL7").await;
    let (_, stderr) = quiet.stop().await;
    assert!(!stderr.contains("mllp::rejects"), "{stderr}");
}

/// With `[[listener]]` tables, the top level's `admin` serves one endpoint for every listener
/// (it was silently not started): `/status` lists each listener by its label (its `name` when
/// it has one), `/readyz` looks
/// at each store, and SIGTERM drains them all. `admin` inside a table, or a token without an
/// endpoint, is refused: each would do nothing.
#[tokio::test]
async fn admin_serves_every_listener_of_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("listeners.toml");
    std::fs::write(
        &config,
        "admin = \"127.0.0.1:0\"\nno-store = true\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"lab\"\nbind = \"127.0.0.1:0\"\ninbox = \"lab-inbox\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut listeners = Vec::new();
    let admin: SocketAddr = loop {
        let line = within(lines.next_line())
            .await
            .unwrap()
            .expect("serve exited before `admin on`");
        if let Some(rest) = line.strip_prefix("listening on ") {
            listeners.push(
                rest.split(' ')
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap(),
            );
        } else if let Some(addr) = line.strip_prefix("admin on ") {
            break addr.parse().unwrap();
        }
    };
    assert_eq!(listeners.len(), 2);
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    assert!(
        call(listeners[0], hl7("ADT-1").as_bytes())
            .await
            .contains("|AA|")
    );
    assert!(
        call(listeners[1], hl7("LAB-1").as_bytes())
            .await
            .contains("|AA|")
    );
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".to_owned()));
    let (code, status) = get(admin, "/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let labels: Vec<&str> = status["listeners"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"))
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        // The second table is named: its name is its label, wherever the table moves.
        ["[[listener]] 1 (bind 127.0.0.1:0)", "lab"],
        "{status}"
    );
    let checks = status["checks"].to_string();
    assert!(checks.contains("dir:lab-inbox"), "{status}");

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(within(child.wait()).await.unwrap().success());

    std::fs::write(
        &config,
        "[[listener]]\nbind = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin sets the whole process; put it at the top level"),
        "{stderr}"
    );

    let out = run(&[
        "serve",
        "--no-store",
        "--bind",
        "127.0.0.1:0",
        "--admin-token",
        "t",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("need --admin"), "{stderr}");
}

/// A non-loopback admin address is refused (exit 2, naming the flags to use) unless a token or
/// `--admin-public` says the exposure is meant.
#[tokio::test]
async fn non_loopback_admin_needs_a_token_or_admin_public() {
    let out = run(&[
        "serve",
        "--no-inbox",
        "--bind",
        "127.0.0.1:0",
        "--admin",
        "0.0.0.0:0",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--admin 0.0.0.0:0 is not a loopback address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--admin-token") && stderr.contains("--admin-public"),
        "{stderr}"
    );

    let out = run(&["serve", "--no-inbox", "--admin", "localhost:9575"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin"));

    let dir = tempfile::tempdir().unwrap();
    for extra in [&["--admin-token", "t0ken"][..], &["--admin-public"][..]] {
        let mut args = vec!["--admin", "0.0.0.0:0"];
        args.extend_from_slice(extra);
        let serve = Serve::start(dir.path(), &args).await;
        let (exit, stderr) = serve.stop().await;
        assert!(exit.success(), "{stderr}");
    }
}

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        Tmux {
            socket: format!("mllp-test-{name}-{}", std::process::id()),
        }
    }

    fn command(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed (.ci/run installs it)")
    }

    /// Starts `command` in a detached 120x32 session.
    fn start(&self, command: &str) {
        let out = self.command(&["new-session", "-d", "-x", "120", "-y", "32", command]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn screen(&self) -> Option<String> {
        let out = self.command(&["capture-pane", "-p"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until the screen shows every one of `texts`, and returns it.
    async fn wait_for(&self, texts: &[&str]) -> String {
        showing(texts, || self.screen()).await
    }

    /// Waits until the session has ended (its program exited).
    async fn wait_gone(&self) {
        within(async {
            while self.command(&["has-session"]).status.success() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]);
    }
}

/// `mllp top` in a real terminal: it shows the connection and its last message, the counts,
/// the rate and the store line, sorts on a key, quits on `q`; pointed at a closed port it says
/// the endpoint cannot be read. No patient data reaches the screen.
#[tokio::test]
async fn top_shows_the_server_live_in_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--admin", "127.0.0.1:0"]).await;
    let admin = serve.admin.unwrap();
    // A connection that stays open, with one message answered on it.
    let mut peer = within(TcpStream::connect(serve.mllp)).await.unwrap();
    let mut frame = vec![0x0b];
    frame.extend_from_slice(hl7("TOP-1").as_bytes());
    frame.extend_from_slice(&[0x1c, 0x0d]);
    peer.write_all(&frame).await.unwrap();
    let mut buf = [0u8; 4096];
    assert!(within(peer.read(&mut buf)).await.unwrap() > 0);

    let tmux = Tmux::new("top");
    tmux.start(&format!("{BIN} top --admin {admin}"));
    let screen = tmux
        .wait_for(&[
            "mllp top",
            "running",
            "ready",
            "ADT^A01",
            "messages 1",
            "AA 1",
            "MSGS▼",
        ])
        .await;
    assert!(screen.contains("connections 1 of max 1024"), "{screen}");
    assert!(screen.contains("no health checks"), "{screen}");
    assert!(screen.contains("msg/s"), "{screen}");
    assert!(!screen.contains(SENTINEL), "{screen}");
    assert!(tmux.command(&["send-keys", "1"]).status.success());
    tmux.wait_for(&["ID▼"]).await;
    assert!(tmux.command(&["send-keys", "q"]).status.success());
    tmux.wait_gone().await;

    let tmux = Tmux::new("down");
    tmux.start(&format!("{BIN} top --admin 127.0.0.1:1"));
    tmux.wait_for(&["cannot read http://127.0.0.1:1", "endpoint unreachable"])
        .await;
    assert!(tmux.command(&["send-keys", "q"]).status.success());
    tmux.wait_gone().await;

    drop(peer);
    let (exit, stderr) = serve.stop().await;
    assert!(exit.success(), "{stderr}");
}

/// A program run under `script`, in a pseudo-terminal of its own: everything it writes to the
/// terminal, escape sequences included, as `script` relays it.
struct Pty {
    child: Child,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Pty {
    /// Runs `command` with `sh -c` in a pseudo-terminal, in `cwd`.
    fn start(cwd: &Path, command: &str) -> Pty {
        let mut child = Command::new("script")
            .args(["-qec", command, "/dev/null"])
            .current_dir(cwd)
            .env("SHELL", "/bin/sh")
            .env("TERM", "xterm-256color")
            .env_remove("RUST_LOG")
            // A pipe held open: `script` relays its stdin to the terminal, and an EOF on it
            // would end the session.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("script is installed (util-linux)");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = output.clone();
        let mut out = child.stdout.take().unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            output,
            reader,
        }
    }

    fn output(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output, its escape sequences left out, shows every one of `texts`, and
    /// returns the visible text.
    async fn wait_for(&self, texts: &[&str]) -> String {
        showing(texts, || Some(visible(&self.output()))).await
    }

    /// Waits for the session to end; its exit status and the whole output.
    async fn wait(mut self) -> (std::process::ExitStatus, Vec<u8>) {
        drop(self.child.stdin.take());
        let status = within(self.child.wait()).await.unwrap();
        within(&mut self.reader).await.unwrap();
        (status, self.output())
    }
}

/// The text `read` gives once it shows every one of `texts`. A terminal (tmux's, or one under
/// `script`) has no event to wait on, so this polls it every 20 ms, under the hang guard.
async fn showing(texts: &[&str], read: impl Fn() -> Option<String>) -> String {
    within(async {
        loop {
            if let Some(shown) = read()
                && texts.iter().all(|t| shown.contains(t))
            {
                return shown;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// `bytes` without the CSI escape sequences (`ESC [ … final byte`) and carriage returns.
fn visible(bytes: &[u8]) -> String {
    let mut text = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b == 0x1b && rest.first() == Some(&b'[') {
            let end = rest[1..]
                .iter()
                .position(|c| (0x40..=0x7e).contains(c))
                .map_or(rest.len(), |i| i + 2);
            rest = &rest[end..];
        } else if b != b'\r' {
            text.push(b);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Where `needle` last occurs in `haystack`.
fn last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// The last 200 bytes of `output`, for a failure message.
fn tail(output: &[u8]) -> String {
    String::from_utf8_lossy(&output[output.len().saturating_sub(200)..]).into_owned()
}

/// `mllp top` stopped by a signal (`kill`, a closed SSH session, `kill -INT`) gives the
/// terminal back as it found it, as `q` does: the alternate screen left, the cursor shown,
/// raw mode off (the terminal's settings, `stty -g`, the same after as before), and exits 0.
/// Killed by the signal's default action instead, it left all three behind (exit 143, 129).
#[tokio::test]
async fn top_restores_the_terminal_when_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--admin", "127.0.0.1:0"]).await;
    let admin = serve.admin.unwrap();
    for signal in ["TERM", "HUP", "INT"] {
        // A background job of a shell without job control has its stdin redirected from
        // /dev/null unless told otherwise: `</dev/tty` gives it the terminal.
        let pty = Pty::start(
            dir.path(),
            &format!(
                "stty cols 120 rows 32; stty -g >before-{signal}; \
                 {BIN} top --admin {admin} </dev/tty & echo \"top pid $!.\"; \
                 wait $!; echo \"top exit $?.\"; stty -g >after-{signal}"
            ),
        );
        let shown = pty.wait_for(&["top pid "]).await;
        let pid = shown
            .split_once("top pid ")
            .and_then(|(_, rest)| rest.split_once('.'))
            .map(|(pid, _)| pid.to_owned())
            .unwrap_or_else(|| panic!("no pid in {shown:?}"));
        // Drawn, with what the endpoint answered: the terminal is in its raw, alternate state.
        pty.wait_for(&["mllp top", "running", "MSGS"]).await;
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
        let (status, output) = pty.wait().await;
        let enter = last(&output, b"\x1b[?1049h").expect("entered the alternate screen");
        let hide = last(&output, b"\x1b[?25l").expect("hid the cursor");
        assert!(
            last(&output, b"\x1b[?1049l").is_some_and(|leave| leave > enter),
            "SIG{signal}: the alternate screen was not left; the output ends {:?}",
            tail(&output)
        );
        assert!(
            last(&output, b"\x1b[?25h").is_some_and(|show| show > hide),
            "SIG{signal}: the cursor was not shown again; the output ends {:?}",
            tail(&output)
        );
        let settings = |name: &str| {
            std::fs::read_to_string(dir.path().join(format!("{name}-{signal}"))).unwrap()
        };
        assert_eq!(
            settings("after"),
            settings("before"),
            "SIG{signal}: the terminal's settings (raw mode) were not restored"
        );
        let shown = visible(&output);
        assert!(status.success(), "SIG{signal}: {status}, {shown}");
        assert!(shown.contains("top exit 0."), "SIG{signal}: {shown}");
    }
    let (exit, stderr) = serve.stop().await;
    assert!(exit.success(), "{stderr}");
}
