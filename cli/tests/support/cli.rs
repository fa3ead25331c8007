//! Running the `mllp` binary in tests: `mllp serve` as a child found through its `listening on`
//! line, one-shot commands, and the synthetic messages they exchange. Included with `#[path]`
//! by the CLI test files (each test file is its own crate).
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_mllp");

/// Stands in for patient data in every test message: it must never appear in a log line.
pub const SENTINEL: &str = "ZZSENTINELPHI";

/// A hang guard, not a synchronisation point.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .expect("test step hung")
}

/// A synthetic ADT^A01 with the given MSH-10 and PID-5 family name, segments ending in CR.
pub fn hl7(control_id: &str, family_name: &[u8]) -> Vec<u8> {
    hl7_with(control_id, family_name, "")
}

/// Like [`hl7`], with extra MSH fields after MSH-12 (e.g. `|||AL|NE` for enhanced mode).
pub fn hl7_with(control_id: &str, family_name: &[u8], msh_tail: &str) -> Vec<u8> {
    let mut m = format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20261122120000||ADT^A01^ADT_A01|{control_id}|P|2.5{msh_tail}\r\
         EVN|A01|20261122120000\r\
         PID|1||PATID1234^^^HOSP^MR||"
    )
    .into_bytes();
    m.extend_from_slice(family_name);
    m.extend_from_slice(format!("^{SENTINEL}||19700101|M\r").as_bytes());
    m
}

/// MSH-10 of a stored message.
pub fn msh10(message: &[u8]) -> String {
    let msh = message.split(|&b| b == b'\r').next().unwrap_or_default();
    let field = msh.split(|&b| b == b'|').nth(9).unwrap_or_default();
    String::from_utf8_lossy(field).into_owned()
}

/// The inbox's files by MSH-10 (several per id when repeated); fails on anything that is not a
/// regular file or is a leftover temporary file.
pub fn stored(inbox: &Path) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut by_id: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for entry in std::fs::read_dir(inbox).expect("inbox exists") {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(entry.file_type().unwrap().is_file(), "{name} is not a file");
        assert!(!name.starts_with('.'), "leftover temporary file {name}");
        assert!(name.ends_with(".hl7"), "unexpected file {name}");
        let content = std::fs::read(entry.path()).unwrap();
        by_id.entry(msh10(&content)).or_default().push(content);
    }
    by_id
}

/// [`stored`] once the inbox holds `n` messages. For messages the sender did not wait for
/// (MSH-15 `NE`): nothing acknowledges them, so the only observable end is the file itself.
/// Polls the directory (every 10 ms, at most 10 s) and fails with the count it saw.
pub async fn stored_when(inbox: &Path, n: usize) -> BTreeMap<String, Vec<Vec<u8>>> {
    let complete = |inbox: &Path| {
        std::fs::read_dir(inbox)
            .expect("inbox exists")
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                !name.starts_with('.') && name.ends_with(".hl7")
            })
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = complete(inbox);
        if seen >= n {
            return stored(inbox);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the inbox holds {seen} messages, expected {n}: {:?}",
            stored(inbox)
                .into_iter()
                .map(|(id, copies)| (id, copies.len()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A running `mllp serve` child.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_done: tokio::task::JoinHandle<()>,
}

impl Serve {
    /// Starts `mllp serve` in `cwd` storing into `cwd/inbox`; returns it and the inbox path.
    pub async fn with_inbox(cwd: &Path) -> (Serve, std::path::PathBuf) {
        let inbox = cwd.join("inbox");
        let serve = Self::start(cwd, &["--inbox", &path_str(&inbox)]).await;
        (serve, inbox)
    }

    /// Sends SIGTERM, waits for the exit and asserts it was a clean drain (status 0).
    pub async fn stop_cleanly(self) {
        let (status, stdout, stderr) = self.stop().await;
        assert!(
            status.success(),
            "serve did not exit cleanly: {stdout}{stderr}"
        );
    }

    /// Starts `mllp serve --bind 127.0.0.1:0 ARGS` in `cwd` and waits for its `listening on`.
    pub async fn start(cwd: &Path, args: &[&str]) -> Serve {
        Self::start_with_env(cwd, args, &[]).await
    }

    pub async fn start_with_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn mllp serve");

        let (tx, mut stdout) = mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        let stderr_done = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let line = within(stdout.recv()).await.unwrap_or_else(|| {
            panic!(
                "mllp serve exited before listening; stderr:\n{}",
                stderr.lock().unwrap()
            )
        });
        let addr = line
            .split_once("listening on ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in first stdout line {line:?}"));
        Serve {
            child,
            addr,
            stdout,
            stderr,
            stderr_done,
        }
    }

    pub fn to(&self) -> String {
        self.addr.to_string()
    }

    /// Waits (polling what it wrote so far, at most 10 s) until stderr holds `text`.
    #[allow(dead_code)]
    pub async fn stderr_shows(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.stderr.lock().unwrap().contains(text) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stderr never showed {text:?}:\n{}",
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGHUP.
    pub fn hangup(&self) {
        let pid = self.child.id().expect("child still running");
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("child still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// SIGTERM, then the exit status, the rest of stdout and all of stderr.
    pub async fn stop(mut self) -> (ExitStatus, String, String) {
        self.terminate();
        let status = within(self.child.wait()).await.expect("wait for serve");
        let mut out = String::new();
        while let Some(line) = within(self.stdout.recv()).await {
            out.push_str(&line);
            out.push('\n');
        }
        within(&mut self.stderr_done).await.unwrap();
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }
}

/// Runs the binary to completion.
pub async fn mllp(args: &[&str]) -> Output {
    mllp_in(Path::new("."), None, args).await
}

/// Runs the binary to completion in `dir`, with `RUST_LOG` set to `rust_log` (unset for
/// `None`).
pub async fn mllp_in(dir: &Path, rust_log: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(dir);
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    within(command.stdin(Stdio::null()).kill_on_drop(true).output())
        .await
        .expect("run mllp")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `content` to `dir/name` and returns the path as a string.
pub fn write(dir: &Path, name: &str, content: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_string_lossy().into_owned()
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
