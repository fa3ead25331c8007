//! `mllp serve` as an operator runs it, against a bare tokio MLLP ACK server, in the same run.
//!
//! Run with: `cargo bench -p mllp-cli --bench serve -- [flags]` (`-- --help` lists them).
//!
//! Both servers are child processes pinned to CPU 0 (`taskset -c 0`); the load generator is the
//! real `mllp bench --json` (the binary cargo builds for this bench, `CARGO_BIN_EXE_mllp`) pinned
//! to CPU 1, and this process (which only orchestrates, scrapes and sinks) pins itself to CPU 1
//! too. Every measurement starts a fresh server, warms it up, loads it once and kills it; the
//! two sides alternate (bare then serve, then serve then bare, ...), `--runs` (3) times per
//! profile, and the medians are compared.
//!
//! - **serve** is `mllp serve --bind 127.0.0.1:0 --no-store` with its defaults otherwise (the
//!   per-message info log line is on by default; stderr goes to a file in a temporary
//!   directory, as a log file or a journal would take it). `--serve-arg=ARG` (repeatable) adds
//!   flags, e.g. `--serve-arg=--store=sqlite:/tmp/b.db` (`--no-store` is then left out).
//! - **bare** is this binary started again with `--bare-serve`: a tokio multi-thread runtime
//!   built exactly as `mllp`'s `main` builds it (so pinned to one CPU both get one worker), an
//!   accept loop, one task per connection that frames MLLP, takes MSH-10 with memchr and writes
//!   a fixed ACK carrying it as MSA-2, all ACKs of one read in one write. No parsing, no
//!   actors, no timers, no logging, no limits.
//!
//! Per profile and side it reports msg/s of every run, the median, p50/p99 latency (medians),
//! the server's CPU time per message (utime+stime of `/proc/PID/stat` around the run), how busy
//! the server's and the load generator's cores were, and the CPU that other processes took
//! meanwhile (`/proc/stat` less ours: a busy machine shows there). Besides serve/bare in msg/s
//! it prints bare/serve in CPU per message: when other processes share the server's core, the
//! throughput of both sides falls, while the CPU each spends on a message moves much less.
//!
//! `--hl7-floor` adds a third side to every profile: the bare server that also does the HL7
//! work every receiver must do, with `mllp`'s own parser and ACK builder (`Message::parse` of
//! each frame, `Ack::build` of an AA, written framed) and nothing else. floor/bare is what
//! parsing and acknowledging cost; serve/floor what `mllp serve` adds on top of them.
//!
//! `--budget` compares, at 16x1, `mllp serve` with everything off (`--log-messages=false`, no
//! admin, no export) against each observability feature on its own: the per-message log line,
//! the admin endpoint scraped (`GET /metrics`) every second, OTLP export of metrics only
//! (`--message-trace-ratio 0`), OTLP metrics and traces, and all of them at once. OTLP goes to a
//! sink in this process that answers every request 200 (an OTLP/HTTP collector that discards);
//! the metric export interval is 1 s (`OTEL_METRIC_EXPORT_INTERVAL=1000`). In the same rotation
//! it runs the bare server, the HL7 floor, and the floor writing serve's log line the cheapest
//! way (`floor+log`: from the connection's own buffer, every 64 KiB), so what the line costs
//! serve is seen beside what it costs any server.
//!
//! `--memory` opens `--idle` (2000) connections that each send one message and keep the
//! connection open, and reads VmRSS of each server (KiB per idle connection); closes them; then
//! twice a burst of `--burst` (10000) connections that each send one message and stay open until
//! all got their ACK, then all close: RSS before, peak (VmHWM, reset before the burst) and after
//! (polled until the server's descriptors are back and RSS is steady).
//!
//! On a shared machine, `--nice -20` (as root) runs this process and every child at the highest
//! priority, so that other processes' work (a compile) takes less of the two cores. Nice values
//! only weigh within one scheduling group: processes in other cgroups (containers, other
//! sessions) are not held back by it. The `other` column shows what they still took.
//!
//! Without `--bench` (as `cargo test --benches` runs it) it only does a quick smoke run.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

/// The `mllp` binary cargo built for this bench.
const MLLP: &str = env!("CARGO_BIN_EXE_mllp");
/// The servers' CPU.
const SERVER_CPU: usize = 0;
/// The load generator's (and this process's) CPU.
const CLIENT_CPU: usize = 1;
/// MLLP end block.
const END: &[u8] = b"\x1c\x0d";

const HELP: &str = "\
cargo bench -p mllp-cli --bench serve -- [FLAGS]

  --runs N            interleaved runs per side and profile (default 3); medians are reported
  --only P[,P...]     profiles to run: 1x1 16x1 64x1 oru8k 1x16 1mb (default: all)
  --no-profiles       run no profile (only --budget and/or --memory)
  --hl7-floor         a third side per profile: bare plus mllp's parse and ACK build
  --budget            16x1: serve with everything off vs log line, admin scraped, OTLP;
                      and the floor with and without the same log line
  --memory            RSS per idle connection, and around two bursts of connections
  --idle N            idle connections for --memory (default 2000)
  --burst N           connections per burst for --memory (default 10000)
  --secs S            target length of one measured run, seconds (default 2)
  --messages N        messages per measured run instead of --secs
  --serve-arg=ARG     one more argument for `mllp serve` (repeatable)
  --json              one JSON line per profile / budget / memory section instead of tables
  --no-pin            do not pin processes to CPUs (also when fewer than 2 CPUs)
  --nice N            run this process and its children at nice N (e.g. -20, needs root or
                      CAP_SYS_NICE): processes in the same cgroup then disturb less";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--bare-serve") {
        return bare::main(bare::Mode::Bare);
    }
    if args.iter().any(|a| a == "--bare-hl7-serve") {
        return bare::main(bare::Mode::Hl7);
    }
    if args.iter().any(|a| a == "--bare-hl7-log-serve") {
        return bare::main(bare::Mode::Hl7Log);
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let mut options = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    options.cpus = cpus;
    if options.pin && cpus < 2 {
        eprintln!("note: {cpus} CPU available: processes are not pinned");
        options.pin = false;
    }
    if options.pin {
        let mut set = rustix::thread::CpuSet::new();
        set.set(CLIENT_CPU);
        // Before the runtime exists: its threads inherit the mask.
        if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
            eprintln!("note: cannot pin this process to CPU {CLIENT_CPU}: {e}");
        }
    }
    if let Some(nice) = options.nice {
        // Before any thread or child exists: they inherit it.
        if let Err(e) = rustix::process::setpriority_process(None, nice) {
            eprintln!("error: --nice {nice}: {e}");
            return ExitCode::from(2);
        }
    }
    raise_open_files();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The soft open-file limit up to the hard one (10k connections are 10k descriptors on each
/// side); the children inherit it.
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

#[derive(Debug, Clone)]
struct Options {
    /// `--bench` was given (cargo bench); otherwise a smoke run.
    bench: bool,
    runs: usize,
    only: Option<Vec<String>>,
    no_profiles: bool,
    budget: bool,
    hl7_floor: bool,
    memory: bool,
    idle: usize,
    burst: usize,
    secs: f64,
    messages: Option<usize>,
    serve_args: Vec<String>,
    json: bool,
    pin: bool,
    /// CPUs available before this process pinned itself.
    cpus: usize,
    nice: Option<i32>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Options {
            bench: false,
            runs: 3,
            only: None,
            no_profiles: false,
            budget: false,
            hl7_floor: false,
            memory: false,
            idle: 2000,
            burst: 10_000,
            secs: 2.0,
            messages: None,
            serve_args: Vec::new(),
            json: false,
            pin: true,
            cpus: 1,
            nice: None,
        };
        let mut i = 0;
        while i < args.len() {
            let (name, inline) = match args[i].split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (args[i].clone(), None),
            };
            let mut value = || -> Result<String, String> {
                if let Some(v) = &inline {
                    return Ok(v.clone());
                }
                i += 1;
                args.get(i).cloned().ok_or(format!("{name} needs a value"))
            };
            let number = |v: String| -> Result<usize, String> {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("{name}: expected a positive number, got {v:?}"))
            };
            match name.as_str() {
                "--bench" => o.bench = true,
                "--runs" => o.runs = number(value()?)?,
                "--only" => {
                    let list: Vec<String> = value()?.split(',').map(str::to_owned).collect();
                    for p in &list {
                        if !PROFILES.iter().any(|k| k.name == p) {
                            return Err(format!("--only: no profile {p:?}"));
                        }
                    }
                    o.only = Some(list);
                }
                "--no-profiles" => o.no_profiles = true,
                "--budget" => o.budget = true,
                "--hl7-floor" => o.hl7_floor = true,
                "--memory" => o.memory = true,
                "--idle" => o.idle = number(value()?)?,
                "--burst" => o.burst = number(value()?)?,
                "--secs" => {
                    let v = value()?;
                    o.secs = v
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s > 0.0)
                        .ok_or(format!("--secs: expected seconds, got {v:?}"))?;
                }
                "--messages" => o.messages = Some(number(value()?)?),
                "--serve-arg" => o.serve_args.push(value()?),
                "--json" => o.json = true,
                "--no-pin" => o.pin = false,
                "--nice" => {
                    let v = value()?;
                    o.nice = Some(
                        v.parse()
                            .ok()
                            .filter(|n| (-20..=19).contains(n))
                            .ok_or(format!("--nice: expected -20 to 19, got {v:?}"))?,
                    );
                }
                other => return Err(format!("unknown flag {other}")),
            }
            i += 1;
        }
        Ok(o)
    }
}

/// What a profile sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// `mllp bench`'s built-in ADT^A01 (about 1.2 KB).
    Adt,
    /// A synthetic ORU^R01 of about 8 KB.
    Oru8k,
    /// A synthetic ORU^R01 of about 1 MiB (one base64 OBX-5).
    Mb1,
}

#[derive(Debug)]
struct Profile {
    name: &'static str,
    what: &'static str,
    connections: usize,
    pipeline: usize,
    payload: Payload,
    /// serve/bare at or above which the profile meets its goal.
    goal: f64,
    /// Flags serve needs for this load (besides its defaults).
    serve_args: &'static [&'static str],
    /// Messages of the warm-up before each measured run.
    warm: usize,
}

const PROFILES: &[Profile] = &[
    Profile {
        name: "1x1",
        what: "1 connection, closed loop, ADT",
        connections: 1,
        pipeline: 1,
        payload: Payload::Adt,
        goal: 0.9,
        serve_args: &[],
        warm: 1000,
    },
    Profile {
        name: "16x1",
        what: "16 connections, closed loop, ADT",
        connections: 16,
        pipeline: 1,
        payload: Payload::Adt,
        goal: 0.9,
        serve_args: &[],
        warm: 2000,
    },
    Profile {
        name: "64x1",
        what: "64 connections, closed loop, ADT",
        connections: 64,
        pipeline: 1,
        payload: Payload::Adt,
        goal: 0.9,
        serve_args: &[],
        warm: 4000,
    },
    Profile {
        name: "oru8k",
        what: "1 connection, closed loop, ORU 8 KB",
        connections: 1,
        pipeline: 1,
        payload: Payload::Oru8k,
        goal: 0.9,
        serve_args: &[],
        warm: 1000,
    },
    Profile {
        name: "1x16",
        what: "1 connection, 16 pipelined, ADT (serve --max-in-flight 16)",
        connections: 1,
        pipeline: 16,
        payload: Payload::Adt,
        goal: 0.8,
        serve_args: &["--max-in-flight", "16"],
        warm: 2000,
    },
    Profile {
        name: "1mb",
        what: "1 connection, closed loop, ORU 1 MiB",
        connections: 1,
        pipeline: 1,
        payload: Payload::Mb1,
        goal: 0.9,
        serve_args: &[],
        warm: 20,
    },
];

/// Shared state of one bench run.
struct Ctx {
    options: Options,
    dir: tempfile::TempDir,
    oru8k: PathBuf,
    mb1: PathBuf,
    tick: f64,
    sink: Option<otlp_sink::Sink>,
}

impl Ctx {
    fn message_file(&self, payload: Payload) -> Option<&Path> {
        match payload {
            Payload::Adt => None,
            Payload::Oru8k => Some(&self.oru8k),
            Payload::Mb1 => Some(&self.mb1),
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("mllp-serve-bench")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let oru8k = dir.path().join("oru8k.hl7");
    let mb1 = dir.path().join("oru1m.hl7");
    std::fs::write(&oru8k, messages::oru(8 * 1024)).map_err(|e| e.to_string())?;
    std::fs::write(&mb1, messages::oru(1024 * 1024)).map_err(|e| e.to_string())?;
    if options.pin {
        let ok = std::process::Command::new("taskset")
            .args(["-c", "0", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(
                "`taskset -c 0 true` failed (util-linux's taskset is needed to pin the \
                        servers; --no-pin runs without)"
                    .to_owned(),
            );
        }
    }
    let mut ctx = Ctx {
        options,
        dir,
        oru8k,
        mb1,
        tick: rustix::param::clock_ticks_per_second() as f64,
        sink: None,
    };
    header(&ctx);
    if !ctx.options.bench {
        // A smoke run: every moving part once, quickly (cargo test --benches).
        if !ctx.options.json {
            println!("smoke run (no --bench): a few messages, figures meaningless");
        }
        let profile = &PROFILES[0];
        let report = run_profile(&ctx, profile).await?;
        print_profile(&ctx, profile, &report);
        return Ok(());
    }
    if !ctx.options.no_profiles {
        for profile in PROFILES {
            if ctx
                .options
                .only
                .as_ref()
                .is_some_and(|only| !only.iter().any(|p| p == profile.name))
            {
                continue;
            }
            let report = run_profile(&ctx, profile).await?;
            print_profile(&ctx, profile, &report);
        }
    }
    if ctx.options.budget {
        ctx.sink = Some(otlp_sink::Sink::start().await?);
        budget::run(&ctx).await?;
    }
    if ctx.options.memory {
        memory::run(&ctx).await?;
    }
    if !ctx.options.json {
        println!("load average at the end: {}", load_average());
    }
    Ok(())
}

fn header(ctx: &Ctx) {
    if ctx.options.json {
        return;
    }
    let o = &ctx.options;
    println!(
        "mllp serve vs bare MLLP ACK server; {} CPUs, server{}, load generator{}; load average {}",
        o.cpus,
        if o.pin { " on CPU 0" } else { "" },
        if o.pin {
            " (mllp bench) on CPU 1"
        } else {
            " (mllp bench)"
        },
        load_average()
    );
    println!(
        "{} run(s) per side, {}{}; serve: mllp serve --no-store {}",
        if o.bench { o.runs } else { 1 },
        match o.messages {
            Some(n) => format!("{n} messages per run"),
            None => format!("about {} s per run", o.secs),
        },
        o.nice.map(|n| format!(", at nice {n}")).unwrap_or_default(),
        o.serve_args.join(" ")
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let v: Vec<&str> = s.split_whitespace().take(3).collect();
            (v.len() == 3).then(|| v.join(" "))
        })
        .unwrap_or_else(|| "?".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Servers

/// Which server a measurement runs.
#[derive(Debug, Clone)]
enum Kind {
    Bare,
    /// The bare server with `mllp`'s parse and ACK build (`--hl7-floor`).
    BareHl7,
    /// The floor writing serve's per-message log line too, the cheapest way (`--budget`).
    BareHl7Log,
    Serve {
        args: Vec<String>,
        env: Vec<(String, String)>,
        /// Wait for the `admin on` line too.
        admin: bool,
    },
}

impl Kind {
    /// `mllp serve` with the user's `--serve-arg`s and `extra`.
    fn serve(ctx: &Ctx, extra: &[&str]) -> Kind {
        let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        args.extend(ctx.options.serve_args.iter().cloned());
        Kind::Serve {
            args,
            env: Vec::new(),
            admin: false,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Kind::Bare => "bare",
            Kind::BareHl7 => "floor",
            Kind::BareHl7Log => "floor+log",
            Kind::Serve { .. } => "serve",
        }
    }
}

/// A running server child.
struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    stderr: PathBuf,
}

/// `program` under `taskset -c CPU` (taskset execs it: the child's pid is the program's).
fn pinned(ctx: &Ctx, cpu: usize, program: &str) -> Command {
    if ctx.options.pin {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(cpu.to_string()).arg(program);
        command
    } else {
        Command::new(program)
    }
}

static SERVERS_STARTED: AtomicU64 = AtomicU64::new(0);

async fn start(ctx: &Ctx, kind: &Kind) -> Result<Server, String> {
    let n = SERVERS_STARTED.fetch_add(1, Ordering::Relaxed);
    let stderr = ctx.dir.path().join(format!("server-{n}.stderr"));
    let stderr_file = std::fs::File::create(&stderr).map_err(|e| e.to_string())?;
    let (mut command, wants_admin) = match kind {
        Kind::Bare | Kind::BareHl7 | Kind::BareHl7Log => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut command = pinned(ctx, SERVER_CPU, &exe.to_string_lossy());
            command.arg(match kind {
                Kind::Bare => "--bare-serve",
                Kind::BareHl7 => "--bare-hl7-serve",
                _ => "--bare-hl7-log-serve",
            });
            (command, false)
        }
        Kind::Serve { args, env, admin } => {
            let mut command = pinned(ctx, SERVER_CPU, MLLP);
            command.args(["serve", "--bind", "127.0.0.1:0"]);
            let stores = args
                .iter()
                .any(|a| a.starts_with("--store") || a.starts_with("--inbox"));
            if !stores {
                command.arg("--no-store");
            }
            command.args(args);
            for var in [
                "RUST_LOG",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "OTEL_METRIC_EXPORT_INTERVAL",
            ] {
                command.env_remove(var);
            }
            for (k, v) in env {
                command.env(k, v);
            }
            (command, *admin)
        }
    };
    command
        .current_dir(ctx.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_file))
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", kind.label()))?;
    let pid = child.id().ok_or("server exited at once")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut addr = None;
    let mut admin = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while addr.is_none() || (wants_admin && admin.is_none()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => {
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
                return Err(format!(
                    "{} did not start (no `listening on` line); its stderr ends:\n{tail}",
                    kind.label()
                ));
            }
        };
        let parse = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse::<SocketAddr>().ok())
        };
        if let Some(a) = parse("listening on ") {
            addr = Some(a);
        }
        if let Some(a) = parse("admin on ") {
            admin = Some(a);
        }
    }
    // Whatever else it prints (the drain report) must not fill the pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        child,
        pid,
        addr: addr.expect("checked above"),
        admin,
        stderr,
    })
}

impl Server {
    /// SIGKILL (nothing is stored: no drain needed); returns the bytes it wrote on stderr.
    async fn stop(mut self) -> u64 {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let bytes = std::fs::metadata(&self.stderr).map_or(0, |m| m.len());
        let _ = std::fs::remove_file(&self.stderr);
        bytes
    }

    fn stderr_bytes(&self) -> u64 {
        std::fs::metadata(&self.stderr).map_or(0, |m| m.len())
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

mod procfs {
    /// utime+stime (field 14, 15) and cutime+cstime (16, 17) of `/proc/PID/stat`, in ticks.
    pub(crate) fn cpu(pid: &str) -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The name (field 2) may hold spaces: count from the closing parenthesis.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // `rest` starts at field 3.
        Some((f.get(11)? + f.get(12)?, f.get(13)? + f.get(14)?))
    }

    /// Busy ticks of all CPUs (`/proc/stat`: all but idle and iowait).
    pub(crate) fn busy() -> u64 {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return 0;
        };
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal (guest is inside user)
        let total: u64 = f.iter().take(8).sum();
        total - f.get(3).copied().unwrap_or(0) - f.get(4).copied().unwrap_or(0)
    }

    /// A `kB` line of `/proc/PID/status` (VmRSS, VmHWM), in KiB.
    pub(crate) fn status_kib(pid: u32, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// Open descriptors of `pid`.
    pub(crate) fn fds(pid: u32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
    }

    /// Threads of `pid`.
    pub(crate) fn threads(pid: u32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
    }

    /// Resets VmHWM to the current RSS (`clear_refs` 5); false when the kernel refused.
    pub(crate) fn reset_peak(pid: u32) -> bool {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Load: `mllp bench` pinned to the client CPU

/// One measured (or warm-up) load.
#[derive(Debug, Clone, Default)]
struct Sample {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    ok: u64,
    errors: u64,
    message_bytes: u64,
    /// Wall time of the `mllp bench` process, seconds.
    wall: f64,
    /// CPU seconds of the server, of the load generator, and of everything else on the machine
    /// (less this process) while it ran.
    server_cpu: f64,
    client_cpu: f64,
    other_cpu: f64,
}

impl Sample {
    fn server_us_per_msg(&self) -> f64 {
        self.server_cpu * 1e6 / self.ok.max(1) as f64
    }
}

async fn load(
    ctx: &Ctx,
    server: &Server,
    connections: usize,
    pipeline: usize,
    message: Option<&Path>,
    n: usize,
) -> Result<Sample, String> {
    let mut command = pinned(ctx, CLIENT_CPU, MLLP);
    command
        .arg("bench")
        .arg("--to")
        .arg(server.addr.to_string())
        .arg("--connections")
        .arg(connections.to_string())
        .arg("--pipeline")
        .arg(pipeline.to_string())
        .arg("--messages")
        .arg(n.to_string())
        .args(["--timeout", "120s", "--json"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(file) = message {
        command.arg("--message").arg(file);
    }
    let pid = server.pid.to_string();
    let server_before = procfs::cpu(&pid).ok_or("server is gone")?.0;
    let me_before = procfs::cpu("self").unwrap_or_default();
    let busy_before = procfs::busy();
    let started = Instant::now();
    let output = command
        .output()
        .await
        .map_err(|e| format!("cannot run mllp bench: {e}"))?;
    let wall = started.elapsed().as_secs_f64();
    let busy = procfs::busy() - busy_before;
    let me_after = procfs::cpu("self").unwrap_or_default();
    let server_after = procfs::cpu(&pid).ok_or("server died during the run")?.0;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            format!(
                "mllp bench printed no JSON (status {}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let number = |path: &[&str]| {
        path.iter()
            .try_fold(&json, |v, k| v.get(k))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let server_ticks = server_after - server_before;
    // The load generator was reaped by `output()`: its CPU is in our children's times.
    let client_ticks = me_after.1 - me_before.1;
    let own_ticks = me_after.0 - me_before.0;
    let other_ticks = busy.saturating_sub(server_ticks + client_ticks + own_ticks);
    let sample = Sample {
        rate: number(&["throughput_per_s"]),
        p50_us: number(&["latency_us", "p50"]),
        p99_us: number(&["latency_us", "p99"]),
        ok: number(&["ok"]) as u64,
        errors: number(&["errors"]) as u64,
        message_bytes: number(&["message_bytes"]) as u64,
        wall,
        server_cpu: server_ticks as f64 / ctx.tick,
        client_cpu: client_ticks as f64 / ctx.tick,
        other_cpu: other_ticks as f64 / ctx.tick,
    };
    if sample.errors > 0 {
        return Err(format!(
            "mllp bench against {} reported {} error(s): {}",
            server.addr,
            sample.errors,
            json.get("error_kinds")
                .map(ToString::to_string)
                .unwrap_or_default()
        ));
    }
    Ok(sample)
}

/// Messages per measured run: `--messages`, else `--secs` worth at the rate of `warm`.
fn run_length(ctx: &Ctx, warm: &Sample, at_least: usize) -> usize {
    if !ctx.options.bench {
        return at_least.min(200);
    }
    match ctx.options.messages {
        Some(n) => n,
        None => ((warm.rate * ctx.options.secs) as usize).max(at_least),
    }
}

/// Starts `kind`, warms it up with `warm` messages, measures `n`, stops it.
async fn measure(
    ctx: &Ctx,
    kind: &Kind,
    shape: (usize, usize, Option<&Path>),
    warm: usize,
    n: usize,
) -> Result<(Sample, u64), String> {
    let (connections, pipeline, message) = shape;
    let server = start(ctx, kind).await?;
    let result = async {
        load(ctx, &server, connections, pipeline, message, warm).await?;
        load(ctx, &server, connections, pipeline, message, n).await
    }
    .await;
    let stderr = server.stop().await;
    result.map(|s| (s, stderr))
}

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The medians of one side's runs.
#[derive(Debug, Clone)]
struct Side {
    runs: Vec<Sample>,
}

impl Side {
    fn rate(&self) -> f64 {
        median(self.runs.iter().map(|s| s.rate))
    }
    fn p50(&self) -> f64 {
        median(self.runs.iter().map(|s| s.p50_us))
    }
    fn p99(&self) -> f64 {
        median(self.runs.iter().map(|s| s.p99_us))
    }
    fn cpu_us(&self) -> f64 {
        median(self.runs.iter().map(Sample::server_us_per_msg))
    }
    fn server_core(&self) -> f64 {
        median(self.runs.iter().map(|s| s.server_cpu / s.wall))
    }
    fn client_core(&self) -> f64 {
        median(self.runs.iter().map(|s| s.client_cpu / s.wall))
    }
    fn other_max(&self) -> f64 {
        self.runs
            .iter()
            .map(|s| s.other_cpu / s.wall)
            .fold(0.0, f64::max)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "runs_msg_per_s": self.runs.iter().map(|s| s.rate.round()).collect::<Vec<_>>(),
            "median_msg_per_s": self.rate().round(),
            "p50_us": self.p50(),
            "p99_us": self.p99(),
            "server_cpu_us_per_msg": round2(self.cpu_us()),
            "server_core_busy": round2(self.server_core()),
            "client_core_busy": round2(self.client_core()),
            "other_cpu_max_cores": round2(self.other_max()),
        })
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

struct ProfileReport {
    messages: usize,
    message_bytes: u64,
    bare: Side,
    serve: Side,
    /// With `--hl7-floor`.
    floor: Option<Side>,
}

async fn run_profile(ctx: &Ctx, profile: &Profile) -> Result<ProfileReport, String> {
    let message = ctx.message_file(profile.payload);
    let shape = (profile.connections, profile.pipeline, message);
    let warm = if ctx.options.bench {
        profile.warm
    } else {
        profile.warm.min(50)
    };
    let bare = Kind::Bare;
    let serve = Kind::serve(ctx, profile.serve_args);
    // Calibration: the bare server's warm-up rate sets the run length of both sides.
    let calibration = {
        let server = start(ctx, &bare).await?;
        let sample = load(ctx, &server, shape.0, shape.1, shape.2, warm).await;
        server.stop().await;
        sample?
    };
    let n = run_length(ctx, &calibration, warm);
    let runs = if ctx.options.bench {
        ctx.options.runs
    } else {
        1
    };
    let mut kinds = vec![bare, serve];
    if ctx.options.hl7_floor {
        kinds.push(Kind::BareHl7);
    }
    let mut sides = vec![Vec::new(); kinds.len()];
    for run in 0..runs {
        // The order turns with each run (with two sides: bare first on even runs, serve first
        // on odd ones): a drift hits every side alike.
        for side in (0..kinds.len()).map(|i| (i + run) % kinds.len()) {
            let kind = &kinds[side];
            let (sample, _) = measure(ctx, kind, shape, warm, n).await?;
            if !ctx.options.json {
                eprint!(".");
                let _ = std::io::stderr().flush();
            }
            sides[side].push(sample);
        }
    }
    if !ctx.options.json {
        eprintln!();
    }
    let mut sides = sides.into_iter().map(|runs| Side { runs });
    let (Some(bare), Some(serve)) = (sides.next(), sides.next()) else {
        unreachable!("two sides at least");
    };
    Ok(ProfileReport {
        messages: n,
        message_bytes: calibration.message_bytes,
        bare,
        serve,
        floor: sides.next(),
    })
}

fn print_profile(ctx: &Ctx, profile: &Profile, r: &ProfileReport) {
    let ratio = r.serve.rate() / r.bare.rate();
    let met = ratio >= profile.goal;
    if ctx.options.json {
        let line = serde_json::json!({
            "section": "profile",
            "profile": profile.name,
            "what": profile.what,
            "connections": profile.connections,
            "pipeline": profile.pipeline,
            "message_bytes": r.message_bytes,
            "messages_per_run": r.messages,
            "serve_args": profile.serve_args.iter().map(|s| (*s).to_owned())
                .chain(ctx.options.serve_args.iter().cloned()).collect::<Vec<_>>(),
            "bare": r.bare.json(),
            "serve": r.serve.json(),
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "cpu_cost_ratio": (r.bare.cpu_us() / r.serve.cpu_us() * 1000.0).round() / 1000.0,
            "goal": profile.goal,
            "goal_met": met,
            "floor": r.floor.as_ref().map(Side::json),
            "floor_ratio": r.floor.as_ref().map(|f| (f.rate() / r.bare.rate() * 1000.0).round() / 1000.0),
            "serve_floor_ratio": r.floor.as_ref().map(|f| (r.serve.rate() / f.rate() * 1000.0).round() / 1000.0),
        });
        println!("{line}");
        return;
    }
    println!(
        "\n{} — {} ({} B), {} run(s) of {} messages per side",
        profile.name,
        profile.what,
        r.message_bytes,
        r.bare.runs.len(),
        r.messages
    );
    println!(
        "  {:<6} {:<28} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7} {:>6}",
        "side",
        "msg/s per run",
        "median",
        "p50 µs",
        "p99 µs",
        "µs/msg CPU",
        "server",
        "client",
        "other"
    );
    for (name, side) in [
        ("bare", Some(&r.bare)),
        ("serve", Some(&r.serve)),
        ("floor", r.floor.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, side)| Some((name, side?)))
    {
        let runs: Vec<String> = side.runs.iter().map(|s| format!("{:.0}", s.rate)).collect();
        println!(
            "  {:<6} {:<28} {:>9.0} {:>9.0} {:>9.0} {:>10.1} {:>6.0}% {:>6.0}% {:>5.0}%",
            name,
            runs.join(" "),
            side.rate(),
            side.p50(),
            side.p99(),
            side.cpu_us(),
            side.server_core() * 100.0,
            side.client_core() * 100.0,
            side.other_max() * 100.0,
        );
    }
    println!(
        "  serve/bare {ratio:.3} (goal ≥ {}: {}); CPU per message bare/serve {:.3}",
        profile.goal,
        if met { "met" } else { "MISSED" },
        r.bare.cpu_us() / r.serve.cpu_us()
    );
    if let Some(floor) = &r.floor {
        println!(
            "  floor/bare {:.3} (parse and ACK; CPU bare/floor {:.3}); serve/floor {:.3} (CPU floor/serve {:.3})",
            floor.rate() / r.bare.rate(),
            r.bare.cpu_us() / floor.cpu_us(),
            r.serve.rate() / floor.rate(),
            floor.cpu_us() / r.serve.cpu_us(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// --budget

mod budget {
    use super::*;

    struct Variant {
        name: &'static str,
        what: &'static str,
        log: bool,
        admin: bool,
        otlp: Option<Otlp>,
        /// Which server: serve, or (to tell what the line costs the cheapest server from what
        /// it costs serve) the bare server or the HL7 floor, with or without the line (`log`).
        server: Which,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Which {
        Serve,
        Bare,
        Floor,
    }

    #[derive(Clone, Copy)]
    enum Otlp {
        MetricsOnly,
        MetricsAndTraces,
    }

    const VARIANTS: &[Variant] = &[
        Variant {
            name: "off",
            what: "--log-messages=false, no admin, no export",
            log: false,
            admin: false,
            otlp: None,
            server: Which::Serve,
        },
        Variant {
            name: "log",
            what: "per-message info line on (serve's default)",
            log: true,
            admin: false,
            otlp: None,
            server: Which::Serve,
        },
        Variant {
            name: "admin",
            what: "--admin, GET /metrics every second",
            log: false,
            admin: true,
            otlp: None,
            server: Which::Serve,
        },
        Variant {
            name: "otlp-metrics",
            what: "--otlp-endpoint, --message-trace-ratio 0",
            log: false,
            admin: false,
            otlp: Some(Otlp::MetricsOnly),
            server: Which::Serve,
        },
        Variant {
            name: "otlp-traces",
            what: "--otlp-endpoint (metrics and message spans)",
            log: false,
            admin: false,
            otlp: Some(Otlp::MetricsAndTraces),
            server: Which::Serve,
        },
        Variant {
            name: "all",
            what: "log line, admin scraped, OTLP metrics and traces",
            log: true,
            admin: true,
            otlp: Some(Otlp::MetricsAndTraces),
            server: Which::Serve,
        },
        Variant {
            name: "bare",
            what: "the bare server (--hl7-floor's baseline); ratio to `off` below",
            log: false,
            admin: false,
            otlp: None,
            server: Which::Bare,
        },
        Variant {
            name: "floor",
            what: "the HL7 floor (bare server, parse and ACK), for the next row",
            log: false,
            admin: false,
            otlp: None,
            server: Which::Floor,
        },
        Variant {
            name: "floor+log",
            what: "the floor writing the same line from its own buffer; ratio to `floor`",
            log: true,
            admin: false,
            otlp: None,
            server: Which::Floor,
        },
    ];

    fn kind(ctx: &Ctx, v: &Variant) -> Kind {
        match (v.server, v.log) {
            (Which::Serve, _) => {}
            (Which::Bare, _) => return Kind::Bare,
            (Which::Floor, false) => return Kind::BareHl7,
            (Which::Floor, true) => return Kind::BareHl7Log,
        }
        let sink = ctx.sink.as_ref().expect("sink started").addr;
        let mut args: Vec<String> = Vec::new();
        if !v.log {
            args.push("--log-messages=false".to_owned());
        }
        if v.admin {
            args.extend(["--admin".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let mut env = Vec::new();
        if let Some(otlp) = v.otlp {
            args.extend(["--otlp-endpoint".to_owned(), format!("http://{sink}")]);
            if let Otlp::MetricsOnly = otlp {
                args.extend(["--message-trace-ratio".to_owned(), "0".to_owned()]);
            }
            env.push(("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "1000".to_owned()));
        }
        args.extend(ctx.options.serve_args.iter().cloned());
        Kind::Serve {
            args,
            env,
            admin: v.admin,
        }
    }

    #[derive(Default)]
    struct Tally {
        runs: Vec<Sample>,
        log_bytes: u64,
        messages: u64,
        scrapes: u64,
        scrape_bytes: u64,
        otlp_requests: u64,
        otlp_bytes: u64,
    }

    pub(super) async fn run(ctx: &Ctx) -> Result<(), String> {
        let shape = (16, 1, None);
        let warm = 2000;
        let calibration = {
            let server = start(ctx, &kind(ctx, &VARIANTS[0])).await?;
            let sample = load(ctx, &server, 16, 1, None, warm).await;
            server.stop().await;
            sample?
        };
        let n = run_length(ctx, &calibration, warm);
        let sink = ctx.sink.as_ref().expect("sink started");
        let mut tallies: Vec<Tally> = VARIANTS.iter().map(|_| Tally::default()).collect();
        for run in 0..ctx.options.runs {
            // A different variant leads each run.
            for k in 0..VARIANTS.len() {
                let i = (k + run) % VARIANTS.len();
                let v = &VARIANTS[i];
                let server = start(ctx, &kind(ctx, v)).await?;
                let (before_requests, before_bytes) = sink.totals();
                let result = async {
                    load(ctx, &server, shape.0, shape.1, shape.2, warm).await?;
                    let log_before = server.stderr_bytes();
                    let scraper = server.admin.map(scrape::every_second);
                    let sample = load(ctx, &server, shape.0, shape.1, shape.2, n).await;
                    let scraped = match scraper {
                        Some(task) => task.stop().await,
                        None => (0, 0),
                    };
                    let log = server.stderr_bytes() - log_before;
                    sample.map(|s| (s, log, scraped))
                }
                .await;
                server.stop().await;
                let (sample, log, scraped) = result?;
                let (after_requests, after_bytes) = sink.totals();
                let t = &mut tallies[i];
                t.messages += sample.ok;
                t.log_bytes += log;
                t.scrapes += scraped.0;
                t.scrape_bytes += scraped.1;
                t.otlp_requests += after_requests - before_requests;
                t.otlp_bytes += after_bytes - before_bytes;
                t.runs.push(sample);
                if !ctx.options.json {
                    eprint!(".");
                    let _ = std::io::stderr().flush();
                }
            }
        }
        if !ctx.options.json {
            eprintln!();
            println!(
                "\nbudget — 16 connections, closed loop, ADT; {} run(s) of {n} messages per variant; \
                 ratio to `off` (goal ≥ 0.97 each; the floor's rows to `floor`, no goal)",
                ctx.options.runs
            );
            println!(
                "  {:<13} {:<28} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9}  what",
                "variant",
                "msg/s per run",
                "median",
                "ratio",
                "µs/msg CPU",
                "CPU ratio",
                "log B/msg",
                "p99 µs"
            );
        }
        let off_side = Side {
            runs: tallies[0].runs.clone(),
        };
        let floor_at = VARIANTS
            .iter()
            .position(|v| v.server == Which::Floor && !v.log);
        let floor_side = Side {
            runs: floor_at
                .map(|i| tallies[i].runs.clone())
                .unwrap_or_default(),
        };
        for (v, t) in VARIANTS.iter().zip(&tallies) {
            let side = Side {
                runs: t.runs.clone(),
            };
            // serve's variants against serve with everything off; the floor's against itself.
            let (baseline, base) = match v.server {
                Which::Floor => ("floor", &floor_side),
                Which::Serve | Which::Bare => ("off", &off_side),
            };
            let (off, off_cpu) = (base.rate(), base.cpu_us());
            let ratio = side.rate() / off;
            let log_per_msg = t.log_bytes as f64 / t.messages.max(1) as f64;
            if ctx.options.json {
                let line = serde_json::json!({
                    "section": "budget",
                    "variant": v.name,
                    "what": v.what,
                    "messages_per_run": n,
                    "serve": side.json(),
                    "baseline": baseline,
                    "ratio_to_baseline": (ratio * 1000.0).round() / 1000.0,
                    "cpu_cost_ratio_to_baseline": (off_cpu / side.cpu_us() * 1000.0).round() / 1000.0,
                    "goal": (v.server == Which::Serve).then_some(0.97),
                    "goal_met": (v.server == Which::Serve)
                        .then_some(v.name == "off" || ratio >= 0.97),
                    "log_bytes_per_msg": round2(log_per_msg),
                    "admin_scrapes": t.scrapes,
                    "admin_scrape_bytes": t.scrape_bytes,
                    "otlp_requests": t.otlp_requests,
                    "otlp_bytes": t.otlp_bytes,
                });
                println!("{line}");
                continue;
            }
            let runs: Vec<String> = side.runs.iter().map(|s| format!("{:.0}", s.rate)).collect();
            let mut extra = String::new();
            if t.scrapes > 0 {
                extra.push_str(&format!(
                    "; {} scrapes of ~{} B",
                    t.scrapes,
                    t.scrape_bytes / t.scrapes
                ));
            }
            if t.otlp_requests > 0 {
                extra.push_str(&format!(
                    "; {} OTLP requests, {} KiB",
                    t.otlp_requests,
                    t.otlp_bytes / 1024
                ));
            }
            println!(
                "  {:<13} {:<28} {:>9.0} {:>7.3} {:>10.1} {:>9.3} {:>9.0} {:>9.0}  {}{}",
                v.name,
                runs.join(" "),
                side.rate(),
                ratio,
                side.cpu_us(),
                off_cpu / side.cpu_us(),
                log_per_msg,
                side.p99(),
                v.what,
                extra
            );
        }
        // The 16x1 profile's goal (serve/bare ≥ 0.9) with and without the line, and what the
        // line costs the cheapest server that writes it, all from this run.
        let rate = |name: &str| {
            VARIANTS.iter().position(|v| v.name == name).map(|i| {
                Side {
                    runs: tallies[i].runs.clone(),
                }
                .rate()
            })
        };
        if let (Some(off), Some(log), Some(bare), Some(floor), Some(floor_log)) = (
            rate("off"),
            rate("log"),
            rate("bare"),
            rate("floor"),
            rate("floor+log"),
        ) && !ctx.options.json
        {
            println!(
                "  serve/bare without the line {:.3}, with it {:.3} (goal ≥ 0.9); the line costs \
                 serve {:.3} and the floor {:.3}",
                off / bare,
                log / bare,
                log / off,
                floor_log / floor
            );
        }
        let other = tallies
            .iter()
            .flat_map(|t| &t.runs)
            .map(|s| s.other_cpu / s.wall)
            .fold(0.0, f64::max);
        if !ctx.options.json {
            println!(
                "  other processes took up to {:.0}% of a core during a run",
                other * 100.0
            );
        }
        Ok(())
    }
}

/// The admin scraper: `GET /metrics` every second over a plain TCP connection.
mod scrape {
    use super::*;

    pub(super) struct Scraper {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<(u64, u64)>,
    }

    impl Scraper {
        /// Stops scraping; (scrapes done, bytes read).
        pub(super) async fn stop(self) -> (u64, u64) {
            let _ = self.stop.send(());
            self.task.await.unwrap_or((0, 0))
        }
    }

    pub(super) fn every_second(admin: SocketAddr) -> Scraper {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (mut scrapes, mut bytes) = (0, 0);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        match get_metrics(admin).await {
                            Ok(n) => {
                                scrapes += 1;
                                bytes += n as u64;
                            }
                            Err(e) => eprintln!("admin scrape failed: {e}"),
                        }
                    }
                }
            }
            (scrapes, bytes)
        });
        Scraper { stop, task }
    }

    async fn get_metrics(admin: SocketAddr) -> std::io::Result<usize> {
        Ok(get_body(admin).await?.len())
    }

    /// The allocator's gauges (`mllp.allocator.*`) from `GET /metrics`.
    pub(super) async fn heap(admin: SocketAddr) -> Result<Heap, String> {
        let response = get_body(admin).await.map_err(|e| e.to_string())?;
        let body = String::from_utf8_lossy(&response);
        let gauge = |name: &str| -> Result<u64, String> {
            body.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v as u64 / 1024)
                .ok_or_else(|| format!("no {name} in the admin's /metrics"))
        };
        Ok(Heap {
            allocated_kib: gauge("mllp_allocator_allocated_bytes")?,
            active_kib: gauge("mllp_allocator_active_bytes")?,
            metadata_kib: gauge("mllp_allocator_metadata_bytes")?,
            resident_kib: gauge("mllp_allocator_resident_bytes")?,
        })
    }

    /// What serve's allocator reports, in KiB.
    #[derive(Debug, Default, Clone, Copy)]
    pub(super) struct Heap {
        /// In live allocations.
        pub(super) allocated_kib: u64,
        /// In pages handed out (allocations and their fragmentation).
        pub(super) active_kib: u64,
        /// The allocator's bookkeeping.
        pub(super) metadata_kib: u64,
        /// Resident: active, bookkeeping and freed pages not yet purged.
        pub(super) resident_kib: u64,
    }

    async fn get_body(admin: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(admin).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        if !response.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other(format!(
                "not 200: {}",
                String::from_utf8_lossy(&response[..response.len().min(80)])
            )));
        }
        Ok(response)
    }
}

/// An OTLP/HTTP collector that discards: reads each request (Content-Length or chunked body)
/// and answers `200` with an empty protobuf body, keeping the connection open.
mod otlp_sink {
    use super::*;

    pub(super) struct Sink {
        pub(super) addr: SocketAddr,
        requests: Arc<AtomicU64>,
        bytes: Arc<AtomicU64>,
    }

    impl Sink {
        pub(super) async fn start() -> Result<Sink, String> {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let requests = Arc::new(AtomicU64::new(0));
            let bytes = Arc::new(AtomicU64::new(0));
            let (r, b) = (requests.clone(), bytes.clone());
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(serve(socket, r.clone(), b.clone()));
                }
            });
            Ok(Sink {
                addr,
                requests,
                bytes,
            })
        }

        /// (requests, body bytes) so far.
        pub(super) fn totals(&self) -> (u64, u64) {
            (
                self.requests.load(Ordering::Relaxed),
                self.bytes.load(Ordering::Relaxed),
            )
        }
    }

    async fn serve(socket: TcpStream, requests: Arc<AtomicU64>, bytes: Arc<AtomicU64>) {
        let mut reader = BufReader::new(socket);
        loop {
            let mut length = 0usize;
            let mut chunked = false;
            let mut line = String::new();
            // Request line, then headers up to the empty line.
            let mut first = true;
            loop {
                line.clear();
                match reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let l = line.trim_end();
                if l.is_empty() && !first {
                    break;
                }
                first = false;
                if let Some((k, v)) = l.split_once(':') {
                    let k = k.trim().to_ascii_lowercase();
                    if k == "content-length" {
                        length = v.trim().parse().unwrap_or(0);
                    } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked")
                    {
                        chunked = true;
                    }
                }
            }
            let body = if chunked {
                let mut total = 0;
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let size =
                        usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                            .unwrap_or(0);
                    // The chunk and its CRLF (the last chunk: just the CRLF).
                    let mut chunk = vec![0; size + 2];
                    if reader.read_exact(&mut chunk).await.is_err() {
                        return;
                    }
                    total += size;
                    if size == 0 {
                        break;
                    }
                }
                total
            } else {
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).await.is_err() {
                    return;
                }
                length
            };
            requests.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(body as u64, Ordering::Relaxed);
            let response = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
            if reader.get_mut().write_all(response).await.is_err() {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// --memory

mod memory {
    use super::*;

    /// Connections being opened at once (connect + one message); the rest wait their turn.
    const OPENING: usize = 256;

    #[derive(Debug, Default, Clone)]
    struct Burst {
        pre_kib: u64,
        peak_kib: u64,
        post_kib: u64,
        settle: Duration,
        open_secs: f64,
    }

    #[derive(Debug, Default)]
    struct Report {
        threads: usize,
        start_kib: u64,
        idle_kib: u64,
        idle_per_conn_kib: f64,
        after_idle_kib: u64,
        bursts: Vec<Burst>,
        /// RSS after [`QUIET`] with no connection, once the bursts closed: what the allocator
        /// gave back once its purge (jemalloc's decay, in serve) had time to run.
        quiet_kib: u64,
        /// serve's heap (allocator gauges on its admin endpoint) at rest and after the quiet.
        heap: Option<(scrape::Heap, scrape::Heap)>,
    }

    /// The sides measured, in order.
    const SIDES: [&str; 3] = ["bare", "serve", "serve --admin"];

    /// How long the server is left alone after the bursts before `quiet_kib` is read.
    const QUIET: Duration = Duration::from_secs(30);

    pub(super) async fn run(ctx: &Ctx) -> Result<(), String> {
        let idle = ctx.options.idle;
        let mut burst = ctx.options.burst;
        // Each side holds one descriptor per connection, plus some of its own.
        let limit = open_file_limit() as usize;
        if burst.max(idle) + 200 > limit {
            burst = limit.saturating_sub(200);
            eprintln!("note: open-file limit {limit}: burst reduced to {burst} connections");
        }
        let max_connections = (burst.max(idle) + 64).to_string();
        let serve = Kind::serve(ctx, &["--max-connections", &max_connections]);
        // The same with the admin endpoint, whose allocator gauges tell memory still in use from
        // pages the allocator keeps. A side of its own: the endpoint keeps a little per
        // connection (the last message), which the default server does not.
        let mut with_admin = Kind::serve(
            ctx,
            &[
                "--max-connections",
                &max_connections,
                "--admin",
                "127.0.0.1:0",
            ],
        );
        if let Kind::Serve { admin, .. } = &mut with_admin {
            *admin = true;
        }
        let sides = [Kind::Bare, serve, with_admin];
        let mut reports = Vec::new();
        for kind in &sides {
            reports.push(measure_side(ctx, kind, idle, burst).await?);
        }
        print(ctx, idle, burst, &max_connections, &reports);
        Ok(())
    }

    async fn measure_side(
        ctx: &Ctx,
        kind: &Kind,
        idle: usize,
        burst: usize,
    ) -> Result<Report, String> {
        let server = start(ctx, kind).await?;
        let pid = server.pid;
        let addr = server.addr;
        let result = async {
            // Warm: the runtime and allocator have served some messages.
            load(ctx, &server, 4, 1, None, 400).await?;
            let fds = procfs::fds(pid);
            let mut report = Report {
                threads: procfs::threads(pid),
                start_kib: settle(pid, fds).await.0,
                ..Report::default()
            };
            let start_heap = match server.admin {
                Some(admin) => Some(scrape::heap(admin).await?),
                None => None,
            };
            let conns = open(addr, idle).await?;
            report.idle_kib = settle(pid, fds + idle).await.0;
            report.idle_per_conn_kib =
                (report.idle_kib as f64 - report.start_kib as f64) / idle as f64;
            drop(conns);
            report.after_idle_kib = settle(pid, fds).await.0;
            for _ in 0..2 {
                let pre_kib = settle(pid, fds).await.0;
                let hwm_reset = procfs::reset_peak(pid);
                let started = Instant::now();
                let peak = PeakSampler::start(pid);
                let conns = open(addr, burst).await?;
                let open_secs = started.elapsed().as_secs_f64();
                let sampled = peak.stop().await;
                let hwm = if hwm_reset {
                    procfs::status_kib(pid, "VmHWM").unwrap_or(0)
                } else {
                    0
                };
                drop(conns);
                let (post_kib, settle_time) = settle(pid, fds).await;
                report.bursts.push(Burst {
                    pre_kib,
                    peak_kib: sampled.max(hwm),
                    post_kib,
                    settle: settle_time,
                    open_secs,
                });
            }
            tokio::time::sleep(QUIET).await;
            report.quiet_kib = procfs::status_kib(pid, "VmRSS").unwrap_or(0);
            if let (Some(admin), Some(start)) = (server.admin, start_heap) {
                report.heap = Some((start, scrape::heap(admin).await?));
            }
            Ok::<_, String>(report)
        }
        .await;
        server.stop().await;
        result
    }

    /// Polls VmRSS every 100 ms until the server holds at most `fds` descriptors and RSS is
    /// steady (five readings within 1%), at most 20 s; (RSS KiB, time it took).
    async fn settle(pid: u32, fds: usize) -> (u64, Duration) {
        let started = Instant::now();
        let mut last: Vec<u64> = Vec::new();
        loop {
            let rss = procfs::status_kib(pid, "VmRSS").unwrap_or(0);
            last.push(rss);
            if last.len() > 5 {
                last.remove(0);
            }
            let steady = last.len() == 5 && {
                let (lo, hi) = (last.iter().min().unwrap(), last.iter().max().unwrap());
                (hi - lo) * 100 <= *hi
            };
            if (steady && procfs::fds(pid) <= fds) || started.elapsed() > Duration::from_secs(20) {
                return (rss, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Samples VmRSS every 10 ms.
    struct PeakSampler {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<u64>,
    }

    impl PeakSampler {
        fn start(pid: u32) -> Self {
            let (stop, mut stopped) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(async move {
                let mut peak = 0;
                loop {
                    peak = peak.max(procfs::status_kib(pid, "VmRSS").unwrap_or(0));
                    tokio::select! {
                        _ = &mut stopped => return peak,
                        () = tokio::time::sleep(Duration::from_millis(10)) => {}
                    }
                }
            });
            Self { stop, task }
        }

        async fn stop(self) -> u64 {
            let _ = self.stop.send(());
            self.task.await.unwrap_or(0)
        }
    }

    /// `count` connections, each having sent one message and read its ACK, all open.
    async fn open(addr: SocketAddr, count: usize) -> Result<Vec<TcpStream>, String> {
        let opening = Arc::new(Semaphore::new(OPENING));
        let mut tasks = Vec::with_capacity(count);
        for i in 0..count {
            let permit = opening.clone().acquire_owned().await.expect("not closed");
            tasks.push(tokio::spawn(async move {
                let result = one(addr, i).await;
                drop(permit);
                result
            }));
        }
        let mut conns = Vec::with_capacity(count);
        for task in tasks {
            conns.push(
                task.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("connection: {e}"))?,
            );
        }
        Ok(conns)
    }

    async fn one(addr: SocketAddr, i: usize) -> std::io::Result<TcpStream> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let message = messages::framed_adt(&format!("M{i}"));
        stream.write_all(&message).await?;
        let mut reply = Vec::with_capacity(256);
        while memchr::memmem::find(&reply, END).is_none() {
            if stream.read_buf(&mut reply).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        if memchr::memmem::find(&reply, b"MSA|AA|").is_none() {
            return Err(std::io::Error::other(format!(
                "not AA: {}",
                String::from_utf8_lossy(&reply)
            )));
        }
        Ok(stream)
    }

    fn print(ctx: &Ctx, idle: usize, burst: usize, max_connections: &str, reports: &[Report]) {
        if ctx.options.json {
            for (side, r) in SIDES.iter().zip(reports) {
                let bursts: Vec<serde_json::Value> = r
                    .bursts
                    .iter()
                    .map(|b| {
                        serde_json::json!({
                            "pre_kib": b.pre_kib,
                            "peak_kib": b.peak_kib,
                            "post_kib": b.post_kib,
                            "post_over_pre": round2(b.post_kib as f64 / b.pre_kib as f64),
                            "settle_s": round2(b.settle.as_secs_f64()),
                            "open_s": round2(b.open_secs),
                        })
                    })
                    .collect();
                let line = serde_json::json!({
                    "section": "memory",
                    "side": side,
                    "threads": r.threads,
                    "idle_connections": idle,
                    "burst_connections": burst,
                    "start_kib": r.start_kib,
                    "quiet_kib": r.quiet_kib,
                    "idle_kib": r.idle_kib,
                    "idle_kib_per_connection": round2(r.idle_per_conn_kib),
                    "after_idle_closed_kib": r.after_idle_kib,
                    "bursts": bursts,
                    "heap": r.heap.map(|(start, quiet)| {
                        let kib = |h: scrape::Heap| serde_json::json!({
                            "allocated_kib": h.allocated_kib,
                            "active_kib": h.active_kib,
                            "metadata_kib": h.metadata_kib,
                            "resident_kib": h.resident_kib,
                        });
                        serde_json::json!({ "start": kib(start), "quiet": kib(quiet) })
                    }),
                });
                println!("{line}");
            }
            return;
        }
        println!(
            "\nmemory — {idle} idle connections (one message each), then 2 bursts of {burst} \
             connections (one message each, all open, then all closed); serve with \
             --max-connections {max_connections}"
        );
        for (side, r) in SIDES.iter().zip(reports) {
            println!(
                "  {side:<5} {} threads; RSS {} KiB at rest, {} KiB with {idle} idle: {:.1} KiB per \
                 idle connection; {} KiB once they closed",
                r.threads, r.start_kib, r.idle_kib, r.idle_per_conn_kib, r.after_idle_kib
            );
            for (n, b) in r.bursts.iter().enumerate() {
                println!(
                    "        burst {}: RSS {} KiB before, {} KiB peak, {} KiB after ({:.2}× before; \
                     settled in {:.1} s; {} connections opened in {:.1} s)",
                    n + 1,
                    b.pre_kib,
                    b.peak_kib,
                    b.post_kib,
                    b.post_kib as f64 / b.pre_kib as f64,
                    b.settle.as_secs_f64(),
                    burst,
                    b.open_secs
                );
            }
            println!(
                "        {} KiB after {} s with no connection ({:.2}× at rest)",
                r.quiet_kib,
                QUIET.as_secs(),
                r.quiet_kib as f64 / r.start_kib as f64
            );
            if let Some((start, quiet)) = r.heap {
                for (when, h) in [("at rest", start), ("after the quiet", quiet)] {
                    println!(
                        "        heap {when}: {} KiB allocated, {} KiB in active pages, {} KiB \
                         bookkeeping, {} KiB resident",
                        h.allocated_kib, h.active_kib, h.metadata_kib, h.resident_kib
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

mod messages {
    /// A synthetic ORU^R01 of at least `size` bytes, segments ending in CR: OBX segments of
    /// numeric results up to 64 KiB, one base64 OBX-5 (ED) beyond.
    pub(crate) fn oru(size: usize) -> Vec<u8> {
        let mut m = String::from(
            "MSH|^~\\&|LAB|SYNTH_HOSP|RECEIVER|RECV_FAC|20260102030405||ORU^R01^ORU_R01|ORU000001|P|2.5.1\r\
             PID|1||MRN0000001^^^SYNTH_HOSP^MR||TESTPATIENT^ALEX^Q||19800101|U\r\
             OBR|1|ORD0001|FIL0001|24331-1^Lipid panel^LN|||20260102030000\r",
        );
        if size <= 64 * 1024 {
            let mut n = 1;
            while m.len() < size {
                m.push_str(&format!(
                    "OBX|{n}|NM|2093-3^Cholesterol^LN||{}|mg/dL^milligram per deciliter^UCUM|125-200|N|||F|||20260102030100\r",
                    150 + n % 50
                ));
                n += 1;
            }
        } else {
            m.push_str("OBX|1|ED|PDF^Report^L||^AP^PDF^Base64^");
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut i = 0usize;
            while m.len() < size {
                m.push(char::from(alphabet[i % 64]));
                i = i.wrapping_mul(31).wrapping_add(7);
            }
            m.push_str("||||||F\r");
        }
        m.into_bytes()
    }

    /// An ADT^A01 of about 1.1 KB with MSH-10 `control_id`, in its MLLP frame.
    pub(crate) fn framed_adt(control_id: &str) -> Vec<u8> {
        format!(
            "\x0bMSH|^~\\&|MLLPBENCH|SYNTH_HOSP|RECEIVER|RECV_FAC|20260102030405||ADT^A01^ADT_A01|{control_id}|P|2.5.1\r\
             EVN|A01|20260102030405|||OPER123^SYNTHETIC^OPERATOR^^^^^^SYNTH_HOSP^L^^^EI\r\
             PID|1||MRN0000001^^^SYNTH_HOSP^MR~SYN000000001^^^SSA^SS||TESTPATIENT^ALEX^Q^^^^L||19800101|U|||100 EXAMPLE STREET^APT 1^SAMPLETOWN^ST^00000^XXA^H||^PRN^PH^^1^555^0100000|^WPN^PH^^1^555^0100001\r\
             PD1|||SYNTHETIC CLINIC^^10001|DOC0001^PRIMARY^PAT^^^DR^^^SYNTH_HOSP\r\
             NK1|1|TESTRELATIVE^SAM^^^^^L|SPO^Spouse^HL70063|100 EXAMPLE STREET^APT 1^SAMPLETOWN^ST^00000^XXA^H\r\
             PV1|1|I|WARD1^ROOM101^BED1^SYNTH_HOSP^^^^BUILDING1^FLOOR1|E^Emergency^HL70007|||DOC0002^ATTENDING^ANN^^^DR^^^SYNTH_HOSP||MED|||7\r\
             OBX|1|NM|8867-4^Heart rate^LN||72|/min^per minute^UCUM|60-100|N|||F\r\
             AL1|1|DA|70618^Penicillin^RXNORM|MO|RASH|20200101\r\
             DG1|1||R07.9^Chest pain, unspecified^I10|||A\r\x1c\r"
        )
        .into_bytes()
    }
}

// ---------------------------------------------------------------------------------------------
// The bare baseline (this binary with --bare-serve) and the HL7 floor (--bare-hl7-serve)

mod bare {
    use mllp::ack::{Ack, AckCode, AckOptions};
    use mllp::hl7::Message;

    use super::*;

    /// Fixed ACK around MSA-2.
    const ACK_HEAD: &[u8] =
        b"\x0bMSH|^~\\&|BARE|BARE|BENCH|BENCH|20260101000000||ACK^A01^ACK|BARE1|P|2.5\rMSA|AA|";
    const ACK_TAIL: &[u8] = b"\r\x1c\r";

    /// What the bare server does per message.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Mode {
        /// MSH-10 taken with memchr, a fixed ACK.
        Bare,
        /// The HL7 floor: `mllp`'s parse and ACK build.
        Hl7,
        /// The floor writing serve's per-message log line too, the cheapest way a server can:
        /// formatted into the connection's own buffer (no lock, no thread) and written to
        /// stderr from the connection's task once [`LOG_BATCH`] has gathered.
        Hl7Log,
    }

    /// Log bytes a connection gathers before it writes them (serve's writer thread wakes at
    /// the same mark).
    const LOG_BATCH: usize = 64 * 1024;

    /// Runs the bare server in `mode`: prints `listening on ADDR` and serves until killed.
    pub(super) fn main(mode: Mode) -> ExitCode {
        // Built as `mllp`'s main builds its runtime: pinned to one CPU, both get one worker.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            println!("listening on {}", listener.local_addr().expect("address"));
            let _ = std::io::stdout().flush();
            let mut id = 0u64;
            loop {
                match listener.accept().await {
                    Ok((socket, peer)) => {
                        id += 1;
                        tokio::spawn(connection(socket, mode, id, peer.ip().to_string()));
                    }
                    // EMFILE and the like: try again shortly.
                    Err(_) => tokio::task::yield_now().await,
                }
            }
        })
    }

    async fn connection(mut socket: TcpStream, mode: Mode, id: u64, peer: String) {
        let _ = socket.set_nodelay(true);
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut out: Vec<u8> = Vec::with_capacity(256);
        let mut log: Vec<u8> = Vec::new();
        // The prefix of `buf` known to hold no end block (a large frame is searched once).
        let mut searched: usize = 0;
        loop {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(buf.len().max(8 * 1024));
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let read = std::time::Instant::now();
            loop {
                let from = searched.saturating_sub(END.len() - 1);
                let Some(at) = memchr::memmem::find(&buf[from..], END) else {
                    searched = buf.len();
                    break;
                };
                let end = from + at;
                let Some(start) = memchr::memchr(0x0b, &buf[..end]) else {
                    return;
                };
                if mode == Mode::Bare {
                    out.extend_from_slice(ACK_HEAD);
                    out.extend_from_slice(msh10(&buf[start + 1..end]));
                    out.extend_from_slice(ACK_TAIL);
                    buf.advance(end + END.len());
                } else {
                    // As the server's framer hands it over: the frame split off, not copied.
                    let frame = buf.split_to(end + END.len()).freeze();
                    let ack = match Message::parse(frame.slice(start + 1..end)) {
                        Ok(message) => {
                            let ack =
                                Ack::build(&message, AckCode::AA, &[], &AckOptions::default());
                            if mode == Mode::Hl7Log {
                                line(&mut log, id, &peer, &message, read.elapsed());
                            }
                            ack
                        }
                        Err(e) => Ack::reject_unparseable(
                            &frame[start + 1..end],
                            &e.to_diagnostic(),
                            &AckOptions::default(),
                        ),
                    };
                    out.push(0x0b);
                    out.extend_from_slice(ack.as_bytes());
                    out.extend_from_slice(END);
                }
                searched = 0;
            }
            if !out.is_empty() {
                if socket.write_all(&out).await.is_err() {
                    break;
                }
                out.clear();
            }
            if log.len() >= LOG_BATCH {
                let _ = std::io::stderr().write_all(&log);
                log.clear();
            }
        }
        let _ = std::io::stderr().write_all(&log);
    }

    /// serve's per-message line, the same bytes: `2026-12-07T14:36:33.307085Z  INFO
    /// mllp::messages: message connection.id=… network.peer.address="…" hl7.message_type="ADT"
    /// hl7.trigger_event="A01" hl7.control_id="…" hl7.ack_code="AA" latency_ms=0.031`.
    fn line(log: &mut Vec<u8>, id: u64, peer: &str, message: &Message, latency: Duration) {
        timestamp(log, std::time::SystemTime::now());
        log.extend_from_slice(b"  INFO mllp::messages: message connection.id=");
        log.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        let fields = [
            ("network.peer.address", Some(peer)),
            ("hl7.message_type", message.message_code()),
            ("hl7.trigger_event", message.trigger_event()),
            ("hl7.control_id", message.control_id()),
            ("hl7.ack_code", Some("AA")),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                log.push(b' ');
                log.extend_from_slice(name.as_bytes());
                log.extend_from_slice(b"=\"");
                log.extend_from_slice(value.as_bytes());
                log.push(b'"');
            }
        }
        let micros = latency.as_micros() as u64;
        log.extend_from_slice(b" latency_ms=");
        log.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
        let frac = micros % 1000;
        log.extend_from_slice(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
            b'\n',
        ]);
    }

    /// RFC 3339 UTC with microseconds, as `tracing-subscriber`'s default timer (and serve's
    /// line) writes it.
    fn timestamp(log: &mut Vec<u8>, now: std::time::SystemTime) {
        let _ = write!(log, "{}", humantime::format_rfc3339_micros(now));
    }

    /// MSH-10 of `payload`: between the 9th and 10th field separator of the first segment.
    fn msh10(payload: &[u8]) -> &[u8] {
        let msh = &payload[..memchr::memchr(b'\r', payload).unwrap_or(payload.len())];
        if msh.len() < 4 || !msh.starts_with(b"MSH") {
            return b"";
        }
        let mut separators = memchr::memchr_iter(msh[3], msh);
        let Some(from) = separators.nth(8) else {
            return b"";
        };
        let to = separators.next().unwrap_or(msh.len());
        &msh[from + 1..to]
    }
}
