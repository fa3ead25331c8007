//! `mllp top`: a live terminal view of a running `mllp serve`, read from its admin endpoint
//! (`--admin`): connections (sortable), the message rate, answers by ACK code, latency
//! percentiles, rejects and store health, refreshed every second.
//!
//! `client` reads the endpoint, `model` keeps what was read and the sort, `view` draws it.

mod client;
mod model;
mod view;

use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures_util::StreamExt;

use crate::config;
use crate::exit;
use client::Endpoint;
use model::{Column, Model};

/// Watch a running `mllp serve` live: connections, msg/s, ACK codes, latency, store health.
///
/// Reads the admin endpoint of `mllp serve --admin ADDR` every second. Keys: `q` (or Esc,
/// Ctrl-C) quits; `s` or the arrow keys move the sort column, `r` reverses it, `1`-`9` and `0`
/// sort by that column. Works in any terminal, over SSH too (forward the admin port, or run it
/// on the server's host).
#[derive(Debug, clap::Args)]
#[command(after_long_help = TOP_HELP)]
pub(crate) struct TopArgs {
    /// The admin endpoint, HOST:PORT or http://HOST:PORT [default: 127.0.0.1:9575]
    #[arg(long, value_name = "URL")]
    admin: Option<String>,

    /// The admin token (`--admin-token` of `mllp serve`); the MLLP_ADMIN_TOKEN variable works
    /// too
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,

    /// How often to refresh [default: 1s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    interval: Option<Duration>,
}

const TOP_HELP: &str = "\
Keys: q (or Esc, Ctrl-C) quits; s or the arrow keys move the sort column, r reverses it, 1-9 and
0 sort by that column.
SIGTERM, SIGHUP (the terminal closing) and SIGINT quit like q: the terminal is restored first.
Exit status:
  0  quit by a key or a signal
  1  the terminal cannot be used, or restored (as after a hang-up that took it away)
  2  invalid flags
Examples:
  mllp top --admin 127.0.0.1:9575
  MLLP_ADMIN_TOKEN=secret mllp top --admin http://10.0.0.5:9575 --interval 2s";

/// Runs the view until `q` or a signal, then restores the terminal.
pub(crate) async fn run(args: TopArgs) -> ExitCode {
    let token = args
        .token
        .or_else(|| std::env::var("MLLP_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let interval = args.interval.unwrap_or(Duration::from_secs(1));
    let url = args
        .admin
        .unwrap_or_else(|| mllp::admin::DEFAULT_ADMIN_ADDR.to_owned());
    let endpoint = match Endpoint::parse(&url, token, interval.max(Duration::from_secs(2))) {
        Ok(endpoint) => endpoint,
        Err(text) => return exit::fail_text(exit::USAGE, &format!("invalid --admin: {text}")),
    };
    // Registered before the terminal changes: from then on a signal no longer kills the
    // process by its default action, so it cannot leave the terminal raw, on the alternate
    // screen, with the cursor hidden.
    let mut signals = match Signals::register() {
        Ok(signals) => signals,
        Err(e) => return exit::fail_text(exit::FAILURE, &format!("cannot handle signals: {e}")),
    };
    // Installs ratatui's panic hook too, which leaves raw mode and the alternate screen before
    // the panic's message; the cursor comes back when the unwinding drops `terminal`.
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => return exit::fail_text(exit::FAILURE, &format!("cannot use the terminal: {e}")),
    };
    // The signal cancels `watch` wherever it waits (for a key, or for an endpoint that is slow
    // to answer); it awaits nothing while it draws.
    let result = tokio::select! {
        result = watch(&mut terminal, endpoint, interval) => result,
        () = signals.recv() => Ok(()),
    };
    let restored = restore(terminal);
    match result.and(restored) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::fail_text(exit::FAILURE, &format!("terminal error: {e}")),
    }
}

/// Gives the terminal back as it was: cursor shown, main screen, raw mode off. That is
/// `ratatui::restore` and the cursor, which ratatui leaves to `Terminal`'s drop; errors are
/// returned rather than printed with `eprintln!`, which panics once the terminal is gone
/// (after a hang-up every write to it fails).
fn restore(mut terminal: ratatui::DefaultTerminal) -> io::Result<()> {
    let cursor = terminal.show_cursor();
    if cursor.is_err() {
        // Its drop would try again and print the failure with `eprintln!`: nothing to free
        // that the exit does not.
        std::mem::forget(terminal);
    }
    let screen = ratatui::try_restore();
    cursor.and(screen)
}

/// SIGTERM, SIGHUP and SIGINT (Ctrl-C in raw mode is a key, not a signal: `kill -INT`), each
/// of which quits like `q`.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Completes on the first of them.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn refresh(
    endpoint: &Endpoint,
    connections: &str,
) -> Result<(model::Status, model::Connections), String> {
    let status = endpoint.get_json("/status").await?;
    let connections = endpoint.get_json(connections).await?;
    Ok((status, connections))
}

/// What a key asks for.
enum Action {
    Quit,
    Redraw,
    Nothing,
}

fn on_key(model: &mut Model, code: KeyCode, modifiers: KeyModifiers) -> Action {
    match code {
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
        KeyCode::Char('s') | KeyCode::Right | KeyCode::Tab => {
            model.next_sort(true);
            Action::Redraw
        }
        KeyCode::Left | KeyCode::BackTab => {
            model.next_sort(false);
            Action::Redraw
        }
        KeyCode::Char('r') => {
            model.reverse();
            Action::Redraw
        }
        KeyCode::Char(digit @ '0'..='9') => {
            let index = (digit as usize - '0' as usize + 9) % 10;
            if let Some(column) = Column::ALL.get(index) {
                model.sort_by(*column);
            }
            Action::Redraw
        }
        _ => Action::Nothing,
    }
}

async fn watch(
    terminal: &mut ratatui::DefaultTerminal,
    endpoint: Endpoint,
    interval: Duration,
) -> std::io::Result<()> {
    let mut model = Model::new(endpoint.url());
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        terminal.draw(|frame| view::render(frame, &model, Instant::now()))?;
        tokio::select! {
            _ = tick.tick() => {
                let answer = refresh(&endpoint, &model.connections_path()).await;
                model.update(Instant::now(), answer);
            }
            event = events.next() => match event {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => {
                    match on_key(&mut model, key.code, key.modifiers) {
                        Action::Quit => return Ok(()),
                        Action::Redraw | Action::Nothing => {}
                    }
                }
                // A resize redraws at the new size on the next turn (ratatui resizes its
                // buffers on `draw`); other events change nothing.
                Some(Ok(_)) => {}
            },
        }
    }
}
