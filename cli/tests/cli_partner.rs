//! `mllp serve` for partners beyond the happy path: the lenient-partner switches, as flags and
//! as config keys, against a raw MLLP client on a loopback port.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::*;

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// A raw MLLP connection: writes frames and reads the replies, nothing checked.
struct Raw(Framed<TcpStream, MllpCodec>);

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw(Framed::new(
            within(TcpStream::connect(addr)).await.unwrap(),
            MllpCodec::new(),
        ))
    }

    /// Sends `payload` and returns the reply, parsed.
    async fn exchange(&mut self, payload: impl Into<Bytes>) -> Message {
        within(self.0.send(payload.into())).await.unwrap();
        let reply = within(self.0.next()).await.expect("a reply").unwrap();
        Message::parse(reply).expect("the reply is HL7")
    }
}

fn field(m: &Message, path: &str) -> String {
    m.get(path)
        .unwrap()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// A message with the given MSH-10, version, processing id and MSH tail, segments ending in
/// `eol`.
fn message(id: &str, version: &str, processing: &str, tail: &str, eol: &str) -> String {
    format!(
        "MSH|^~\\&|LAB|HOSP|EHR|WARD|20260101||ORU^R01^ORU_R01|{id}|{processing}|{version}{tail}{eol}\
         PID|1||P1{eol}OBX|1|TX|X||text{eol}"
    )
}

/// Every switch at once, from flags or from the config file: LF and CRLF segments are
/// accepted, MSH-15 `NE` still gets an AA, the ACK names the configured sending application and
/// facility, and other versions and processing ids are refused with AR 203 and 202.
#[tokio::test]
async fn lenient_switches_apply_from_flags_and_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "partner.toml",
        br#"
lenient-line-endings = true
original-mode = true
ack-sending-application = "MLLPRX"
ack-sending-facility = "HOSP^1.2.3^ISO"
allow-version = ["2.5", "2.5.1"]
allow-processing-id = ["P"]
"#,
    );
    let flags = [
        "--no-store",
        "--lenient-line-endings",
        "--original-mode",
        "--ack-sending-application",
        "MLLPRX",
        "--ack-sending-facility",
        "HOSP^1.2.3^ISO",
        "--allow-version",
        "2.5",
        "--allow-version",
        "2.5.1",
        "--allow-processing-id",
        "P",
    ];
    for args in [&flags[..], &["--no-store", "--config", &config]] {
        let serve = Serve::start(dir.path(), args).await;
        let mut raw = Raw::connect(serve.addr).await;

        let ack = raw.exchange(message("LF-1", "2.5", "P", "", "\n")).await;
        assert_eq!(field(&ack, "MSA-1"), "AA", "{args:?}");
        assert_eq!(field(&ack, "MSA-2"), "LF-1");
        assert_eq!(field(&ack, "MSH-3"), "MLLPRX");
        assert_eq!(field(&ack, "MSH-4"), "HOSP^1.2.3^ISO");
        let ack = raw
            .exchange(message("CRLF-1", "2.5.1", "P", "", "\r\n"))
            .await;
        assert_eq!(field(&ack, "MSA-1"), "AA");

        let ack = raw
            .exchange(message("NE-1", "2.5", "P", "|||NE|NE", "\r"))
            .await;
        assert_eq!(field(&ack, "MSA-1"), "AA", "original mode whatever MSH-15");
        assert_eq!(field(&ack, "MSA-2"), "NE-1");

        let ack = raw.exchange(message("V23-1", "2.3", "P", "", "\r")).await;
        assert_eq!(field(&ack, "MSA-1"), "AR");
        assert!(
            field(&ack, "ERR-1").contains("203"),
            "{}",
            field(&ack, "ERR-1")
        );
        let ack = raw.exchange(message("T-1", "2.5", "T", "", "\r")).await;
        assert_eq!(field(&ack, "MSA-1"), "AR");
        assert_eq!(field(&ack, "ERR-3.1"), "202");
        serve.stop_cleanly().await;
    }
}

/// Without the switches the wire rules hold: LF segments are refused (AR 100), MSH-15 `AL`
/// gets an enhanced-mode CA, and the ACK's MSH-3/4 are the message's MSH-5/6.
#[tokio::test]
async fn strict_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--no-store"]).await;
    let mut raw = Raw::connect(serve.addr).await;
    let ack = raw.exchange(message("LF-1", "2.5", "P", "", "\n")).await;
    assert_eq!(field(&ack, "MSA-1"), "AR");
    assert_eq!(field(&ack, "ERR-3.1"), "100");
    let ack = raw
        .exchange(message("AL-1", "2.3", "T", "|||AL|NE", "\r"))
        .await;
    assert_eq!(field(&ack, "MSA-1"), "CA");
    assert_eq!(field(&ack, "MSH-3"), "EHR");
    assert_eq!(field(&ack, "MSH-4"), "WARD");
    serve.stop_cleanly().await;
}

/// An empty allow-list in the file is refused (exit 2) naming the key.
#[tokio::test]
async fn an_empty_allow_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "bad.toml", b"allow-version = []\n");
    let out = mllp_in(
        dir.path(),
        None,
        &["serve", "--no-store", "--config", &config],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("allow-version"),
        "{}",
        text(&out.stderr)
    );
}

fn partner_fixture(name: &str) -> Bytes {
    let path = format!(
        "{}/../tests/fixtures/partner/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    Bytes::from(std::fs::read(path).unwrap())
}

/// `--charsets` and `--charset-errors reject` (or the keys): a set off the list gets AR 103,
/// mislabelled text AR 102, a message in a listed set and valid in it AA.
#[tokio::test]
async fn charset_check_from_flags_and_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "charsets.toml",
        b"charsets = [\"UNICODE UTF-8\", \"8859/1\"]\ncharset-errors = \"reject\"\n",
    );
    let flags = [
        "--no-store",
        "--charsets",
        "UNICODE UTF-8",
        "--charsets",
        "8859/1",
        "--charset-errors",
        "reject",
    ];
    for args in [&flags[..], &["--no-store", "--config", &config]] {
        let serve = Serve::start(dir.path(), args).await;
        let mut raw = Raw::connect(serve.addr).await;
        let ack = raw.exchange(partner_fixture("utf8.hl7")).await;
        assert_eq!(field(&ack, "MSA-1"), "AA", "{args:?}");
        let ack = raw
            .exchange(partner_fixture("utf8_labelled_latin1.hl7"))
            .await;
        assert_eq!(field(&ack, "MSA-1"), "AR");
        assert_eq!(field(&ack, "ERR-3.1"), "102");
        let ack = raw.exchange(message("ASCII-1", "2.5", "P", "", "\r")).await;
        assert_eq!(field(&ack, "MSA-1"), "AR", "no MSH-18 is ASCII, not listed");
        assert_eq!(field(&ack, "ERR-3.1"), "103");
        serve.stop_cleanly().await;
    }
    let bad = write(dir.path(), "bad.toml", b"charset-errors = \"maybe\"\n");
    let out = mllp_in(dir.path(), None, &["serve", "--no-store", "--config", &bad]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("charset-errors"),
        "{}",
        text(&out.stderr)
    );
}

/// `--forward`: server A stores each message, forwards it to server B and answers with B's
/// code; with B gone, A answers AE 207 and still has the message stored (store first).
#[tokio::test]
async fn forward_stores_first_then_relays_the_downstream_ack() {
    let dir = tempfile::tempdir().unwrap();
    let b = Serve::start(dir.path(), &["--no-store", "--allow-version", "2.5"]).await;
    let inbox = dir.path().join("a-inbox");
    let a = Serve::start(
        dir.path(),
        &[
            "--inbox",
            &path_str(&inbox),
            "--forward",
            &b.to(),
            "--forward-timeout",
            "5s",
        ],
    )
    .await;
    let mut raw = Raw::connect(a.addr).await;
    let ack = raw.exchange(message("FWD-1", "2.5", "P", "", "\r")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    assert_eq!(field(&ack, "MSA-2"), "FWD-1");
    let ack = raw.exchange(message("FWD-2", "2.3", "P", "", "\r")).await;
    assert_eq!(field(&ack, "MSA-1"), "AR", "B's refusal relayed");
    assert_eq!(field(&ack, "MSA-2"), "FWD-2");
    assert!(
        field(&ack, "ERR-1").contains("203"),
        "{}",
        field(&ack, "ERR-1")
    );
    b.stop_cleanly().await;
    let ack = raw.exchange(message("FWD-3", "2.5", "P", "", "\r")).await;
    assert_eq!(field(&ack, "MSA-1"), "AE");
    assert_eq!(field(&ack, "ERR-3.1"), "207");
    a.stop_cleanly().await;
    let stored = stored(&inbox);
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        ["FWD-1", "FWD-2", "FWD-3"],
        "every message stored before it was forwarded"
    );
}

/// Starts `mllp serve ARGS` (no `--bind`: the config's `[[listener]]` tables bind) and returns
/// the child and the address of each listener, from its `listening on` line, in order.
async fn serve_listeners(
    cwd: &std::path::Path,
    args: &[&str],
    count: usize,
) -> (tokio::process::Child, Vec<SocketAddr>) {
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(BIN)
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addrs = Vec::new();
    while addrs.len() < count {
        let line = within(lines.next_line())
            .await
            .unwrap()
            .expect("a listening line");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        addrs.push(addr);
    }
    // Keep reading, so the drain report never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addrs)
}

/// Two `[[listener]]` tables, two policies in one process: the first strict and without a
/// store (the top level's `no-store`), the second lenient, limited to v2.5 and storing into
/// its own directory (its `inbox` replaces the top level's store). SIGTERM drains both and
/// exits 0.
#[tokio::test]
async fn listener_tables_run_several_listeners_with_their_own_policies() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "listeners.toml",
        br#"
max-connections = 8
no-store = true

[[listener]]
bind = "127.0.0.1:0"

[[listener]]
bind = "127.0.0.1:0"
inbox = "lab-inbox"
lenient-line-endings = true
allow-version = ["2.5"]
ack-sending-application = "LABRX"
"#,
    );
    let (mut child, addrs) = serve_listeners(dir.path(), &["--config", &config], 2).await;
    let mut strict = Raw::connect(addrs[0]).await;
    let mut lab = Raw::connect(addrs[1]).await;

    let ack = strict.exchange(message("S-LF", "2.5", "P", "", "\n")).await;
    assert_eq!(field(&ack, "MSA-1"), "AR", "the first listener is strict");
    let ack = strict.exchange(message("S-23", "2.3", "P", "", "\r")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA", "and takes any version");

    let ack = lab.exchange(message("L-LF", "2.5", "P", "", "\n")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA", "the second is lenient");
    assert_eq!(field(&ack, "MSH-3"), "LABRX");
    let ack = lab.exchange(message("L-23", "2.3", "P", "", "\r")).await;
    assert_eq!(field(&ack, "MSA-1"), "AR");

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = within(child.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let stored = stored(&dir.path().join("lab-inbox"));
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["L-LF"]);
}

/// A bad listener table refuses to start (exit 2) naming the table and the key; so does a
/// `--bind` beside the tables.
#[tokio::test]
async fn a_bad_listener_table_is_refused_naming_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content, expected) in [
        (
            "zero.toml",
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[listener]]\nbind = \"127.0.0.1:0\"\nmax-connections = 0\n",
            &["[[listener]] 2", "max-connections"][..],
        ),
        (
            "typo.toml",
            "[[listener]]\nbind = \"127.0.0.1:0\"\nallow-peers = [\"10.0.0.0/8\"]\n",
            &["[[listener]] 1", "allow-peers"],
        ),
        (
            "global.toml",
            "[[listener]]\nbind = \"127.0.0.1:0\"\nlog-format = \"json\"\n",
            &["[[listener]] 1", "log-format"],
        ),
        (
            "nobind.toml",
            "[[listener]]\nmax-connections = 4\n",
            &["[[listener]] 1", "bind"],
        ),
        (
            "samename.toml",
            "[[listener]]\nname = \"lab\"\nbind = \"127.0.0.1:0\"\n\
             [[listener]]\nname = \"lab\"\nbind = \"127.0.0.1:0\"\n",
            &["[[listener]] 2", "\"lab\" is already another listener's"],
        ),
        (
            "badname.toml",
            "[[listener]]\nname = \"lab one\"\nbind = \"127.0.0.1:0\"\n",
            &["[[listener]] 1", "letters, digits"],
        ),
        (
            "topname.toml",
            "name = \"lab\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n",
            &["name names one [[listener]] table"],
        ),
    ] {
        let config = write(dir.path(), name, content.as_bytes());
        let out = mllp_in(
            dir.path(),
            None,
            &["serve", "--no-store", "--config", &config],
        )
        .await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        for word in expected {
            assert!(stderr.contains(word), "{name}: {stderr}");
        }
    }
    let config = write(
        dir.path(),
        "ok.toml",
        b"[[listener]]\nbind = \"127.0.0.1:0\"\n",
    );
    let out = mllp_in(
        dir.path(),
        None,
        &[
            "serve",
            "--no-store",
            "--bind",
            "127.0.0.1:0",
            "--config",
            &config,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("[[listener]]"),
        "{}",
        text(&out.stderr)
    );
}
