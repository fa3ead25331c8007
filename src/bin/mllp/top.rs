//! `mllp top`: a live terminal view of a running `mllp serve`, read from its admin endpoint
//! (`--admin`): connections (sortable), the message rate, answers by ACK code, latency
//! percentiles, rejects and store health, refreshed every second.
//!
//! `client` reads the endpoint, `model` keeps what was read and the sort, `view` draws it.

mod client;
mod model;
mod view;

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

/// Runs the view until `q`.
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
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => return exit::fail_text(exit::FAILURE, &format!("cannot use the terminal: {e}")),
    };
    let result = watch(&mut terminal, endpoint, interval).await;
    ratatui::restore();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::fail_text(exit::FAILURE, &format!("terminal error: {e}")),
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
