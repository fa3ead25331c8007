//! Drawing the model: a header line, the message rate sparkline with the counters beside it,
//! the health line, the connections table, and a footer with the keys (or, in red, why the
//! endpoint cannot be read). Every part fits itself to the area it gets, so any terminal
//! size draws (a tiny one shows less).

use std::time::{Duration, Instant};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, Wrap};

use super::model::{Column, Connection, Model};

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn uptime(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `2026-12-04T17:18:34.005Z` as `17:18:34`.
fn clock(rfc3339: &str) -> &str {
    rfc3339.get(11..19).unwrap_or(rfc3339)
}

fn ms(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| {
        if v >= 100.0 {
            format!("{v:.0} ms")
        } else {
            format!("{v:.2} ms")
        }
    })
}

/// Draws the whole screen.
pub(crate) fn render(frame: &mut Frame<'_>, model: &Model, now: Instant) {
    let [header, activity, health, table, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Length(health_lines(model)),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_header(frame, header, model);
    match &model.status {
        None => {
            let text = match &model.error {
                Some((reason, _)) => format!("cannot read {}: {reason}", model.endpoint),
                None => format!("reading {} ...", model.endpoint),
            };
            frame.render_widget(
                Paragraph::new(text)
                    .style(Style::new().fg(Color::Red))
                    .wrap(Wrap { trim: true })
                    .block(Block::new().borders(Borders::ALL).title("mllp")),
                activity.union(health).union(table),
            );
        }
        Some(_) => {
            render_activity(frame, activity, model);
            render_health(frame, health, model);
            render_table(frame, table, model);
        }
    }
    render_footer(frame, footer, model, now);
}

fn render_header(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let mut spans = vec![Span::styled(
        "mllp top ",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    spans.push(Span::raw(format!("{}  ", model.endpoint)));
    if let Some(status) = &model.status {
        let state_style = match status.state.as_str() {
            "running" => Style::new().fg(Color::Green),
            _ => Style::new().fg(Color::Yellow),
        };
        spans.push(Span::styled(status.state.clone(), state_style));
        spans.push(Span::raw("  "));
        spans.push(if status.ready {
            Span::styled("ready", Style::new().fg(Color::Green))
        } else {
            Span::styled("NOT READY", Style::new().fg(Color::Red))
        });
        let listeners: Vec<_> = status
            .listeners
            .iter()
            .map(|l| format!("{}{}", l.address, if l.tls { " (tls)" } else { "" }))
            .collect();
        spans.push(Span::raw(format!(
            "  mllp {}  up {}  v{}",
            listeners.join(", "),
            uptime(status.uptime_s),
            status.version
        )));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_activity(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let Some(status) = &model.status else { return };
    let [spark, numbers] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(area);
    let title = match model.rate() {
        Some(rate) => format!("msg/s {rate:.1}"),
        None => "msg/s -".to_owned(),
    };
    // The sparkline shows the newest samples that fit, right-aligned.
    let width = spark.width.saturating_sub(2) as usize;
    let data: Vec<u64> = model
        .rates
        .iter()
        .skip(model.rates.len().saturating_sub(width))
        .map(|r| r.round() as u64)
        .collect();
    frame.render_widget(
        Sparkline::default()
            .block(Block::new().borders(Borders::ALL).title(title))
            .data(&data)
            .style(Style::new().fg(Color::Cyan)),
        spark,
    );

    let acks: Vec<String> = status
        .messages
        .ack
        .iter()
        .filter(|(code, n)| **n > 0 || matches!(code.as_str(), "AA" | "AE" | "AR"))
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    let rejects: Vec<String> = status
        .rejects
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    let (p50, p99, window) = match model.recent {
        Some((p50, p99)) => (Some(p50), Some(p99), "last interval"),
        None => (status.latency_ms.p50, status.latency_ms.p99, "since start"),
    };
    let lines = vec![
        Line::from(format!(
            "messages {}   {}",
            status.messages.total,
            acks.join("  ")
        )),
        Line::from(format!(
            "latency p50 {}  p99 {}  ({window})",
            ms(p50),
            ms(p99)
        )),
        Line::from(if rejects.is_empty() {
            "rejects none".to_owned()
        } else {
            format!("rejects {}", rejects.join("  "))
        }),
    ];
    frame.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title("answers")),
        numbers,
    );
}

/// Lines the health panel takes: one per check (at least one), at most [`HEALTH_LINES`].
fn health_lines(model: &Model) -> u16 {
    let checks = model.status.as_ref().map_or(1, |s| s.checks.len().max(1));
    u16::try_from(checks).unwrap_or(u16::MAX).min(HEALTH_LINES)
}

/// The most lines the health panel takes; with more checks (or a window too short for them),
/// its last line says how many more there are.
const HEALTH_LINES: u16 = 6;

fn render_health(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let Some(status) = &model.status else { return };
    // Each check says what it is (`store: healthy (sqlite:mllp.db)`), on a line of its own,
    // failing and degraded ones first, so that a long detail never hides another check.
    let mut lines: Vec<Vec<Span<'_>>> = Vec::new();
    if status.checks.is_empty() {
        lines.push(vec![Span::styled(
            "no health checks",
            Style::new().fg(Color::DarkGray),
        )]);
    }
    let mut checks: Vec<_> = status.checks.iter().collect();
    checks.sort_by_key(|c| (c.healthy, !c.degraded));
    // A window too short for every line: the last one that fits says how many more there are
    // (sorted, so those are the least urgent).
    let fits = usize::from(area.height.clamp(1, HEALTH_LINES));
    let hidden = if checks.len() > fits {
        checks.split_off(fits - 1)
    } else {
        Vec::new()
    };
    for check in checks {
        let (word, color) = match (check.healthy, check.degraded) {
            (false, _) => ("FAILING", Color::Red),
            (true, true) => ("DEGRADED", Color::Yellow),
            (true, false) => ("healthy", Color::Green),
        };
        let span = Span::styled(
            format!("{}: {word} ({})", check.name, check.detail),
            Style::new().fg(color),
        );
        lines.push(vec![span]);
    }
    if !hidden.is_empty() {
        let urgent = hidden.iter().any(|c| !c.healthy || c.degraded);
        lines.push(vec![Span::styled(
            format!("+{} more check(s), in /status", hidden.len()),
            Style::new().fg(if urgent {
                Color::Yellow
            } else {
                Color::DarkGray
            }),
        )]);
    }
    if !status.ready
        && !status.not_ready.is_empty()
        && let Some(first) = lines.first_mut()
    {
        first.push(Span::styled(
            format!("  not ready: {}", status.not_ready.join(", ")),
            Style::new().fg(Color::Red),
        ));
    }
    let lines: Vec<Line<'_>> = lines.into_iter().map(Line::from).collect();
    frame.render_widget(Paragraph::new(lines), area);
}

fn cell(column: Column, c: &Connection) -> String {
    match column {
        Column::Id => c.id.to_string(),
        Column::Peer => match (&c.tls_identity, c.tls) {
            (Some(identity), _) => format!("{} ({identity})", c.peer),
            (None, true) => format!("{} (tls)", c.peer),
            (None, false) => c.peer.clone(),
        },
        Column::Since => clock(&c.since).to_owned(),
        Column::Messages => c.messages.to_string(),
        Column::InFlight => c.in_flight.to_string(),
        Column::BytesIn => bytes(c.bytes_in),
        Column::BytesOut => bytes(c.bytes_out),
        Column::LastType => c.last_message_type.clone().unwrap_or_default(),
        Column::LastAck => c.last_ack_code.clone().unwrap_or_default(),
        Column::LastAt => c
            .last_message_at
            .as_deref()
            .map(clock)
            .unwrap_or("")
            .to_owned(),
    }
}

fn render_table(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let Some(status) = &model.status else { return };
    let header = Row::new(Column::ALL.iter().map(|column| {
        let mut title = column.title().to_owned();
        let mut style = Style::new().add_modifier(Modifier::BOLD);
        if *column == model.sort {
            title.push(if model.descending { '▼' } else { '▲' });
            style = style.fg(Color::Yellow);
        }
        Cell::from(title).style(style)
    }));
    let rows = model.connections.iter().map(|c| {
        let ack_style = match c.last_ack_code.as_deref() {
            Some("AA" | "CA") | None => Style::new(),
            Some(_) => Style::new().fg(Color::Red),
        };
        Row::new(Column::ALL.iter().map(|column| {
            let cell = Cell::from(cell(*column, c));
            if *column == Column::LastAck {
                cell.style(ack_style)
            } else {
                cell
            }
        }))
    });
    let widths = [
        Constraint::Length(6),
        Constraint::Min(21),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(4),
        Constraint::Length(8),
    ];
    let title = format!(
        " connections {} of max {} ",
        status.connections.active, status.connections.max
    );
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::new().borders(Borders::ALL).title(title)),
        area,
    );
}

fn render_footer(frame: &mut Frame<'_>, area: Rect, model: &Model, now: Instant) {
    let line = match (&model.error, model.stale_for(now)) {
        (Some((reason, _)), Some(stale)) => Line::from(Span::styled(
            format!(
                "endpoint unreachable: {reason}; retrying every second{}",
                if model.status.is_some() {
                    format!(" (data {} old)", humantime::format_duration(round(stale)))
                } else {
                    String::new()
                }
            ),
            Style::new().fg(Color::White).bg(Color::Red),
        )),
        _ => Line::from(vec![
            Span::styled("q", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(" quit  "),
            Span::styled("s/←/→", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(" sort column  "),
            Span::styled("r", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(" reverse  "),
            Span::styled("1-9,0", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(" sort by column N"),
        ]),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::top::model::{
        Check, ConnectionCounts, Connections, LatencyView, Listener, Messages, Status,
    };

    fn status(total: u64) -> Status {
        Status {
            state: "running".into(),
            ready: true,
            not_ready: vec![],
            uptime_s: 3725.0,
            version: "0.1.0".into(),
            listeners: vec![Listener {
                address: "127.0.0.1:2575".into(),
                tls: false,
            }],
            connections: ConnectionCounts {
                active: 2,
                max: 1024,
            },
            messages: Messages {
                total,
                ack: BTreeMap::from([
                    ("AA".into(), total - 3),
                    ("AE".into(), 1),
                    ("AR".into(), 2),
                    ("CA".into(), 0),
                ]),
            },
            rejects: BTreeMap::from([("not_hl7".into(), 2), ("framing".into(), 0)]),
            latency_ms: LatencyView {
                p50: Some(0.4),
                p99: Some(3.1),
                buckets: vec![(0.5, total)],
            },
            checks: vec![Check {
                name: "store".into(),
                healthy: true,
                degraded: false,
                detail: "sqlite:mllp.db".into(),
            }],
        }
    }

    fn connection(id: u64, messages: u64, ack: &str) -> Connection {
        Connection {
            id,
            peer: format!("10.0.0.{id}:4000{id}"),
            since: "2026-12-04T17:00:00.000Z".into(),
            messages,
            bytes_in: messages * 1200,
            bytes_out: messages * 100,
            last_message_at: Some("2026-12-04T17:18:34.005Z".into()),
            last_message_type: Some("ADT^A01".into()),
            last_ack_code: Some(ack.into()),
            ..Connection::default()
        }
    }

    fn model() -> Model {
        let mut model = Model::new("http://127.0.0.1:9575".into());
        let t0 = Instant::now();
        let connections = Connections {
            connections: vec![connection(1, 5, "AA"), connection(2, 900, "AR")],
        };
        model.update(t0, Ok((status(1000), connections.clone())));
        model.update(t0 + Duration::from_secs(1), Ok((status(1250), connections)));
        model
    }

    fn screen(model: &Model, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| render(f, model, Instant::now())).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect()
    }

    /// The table has one row per connection, sorted by messages (most first) by default, and
    /// the counters, rate, percentiles and store health are on screen.
    #[test]
    fn renders_rows_counts_rate_and_health() {
        let lines = screen(&model(), 120, 24);
        let text = lines.join("\n");
        assert!(text.contains("running"), "{text}");
        assert!(text.contains("ready"), "{text}");
        assert!(text.contains("up 1h02m"), "{text}");
        assert!(text.contains("msg/s 250.0"), "{text}");
        assert!(
            text.contains("messages 1250   AA 1247  AE 1  AR 2"),
            "{text}"
        );
        assert!(text.contains("rejects not_hl7 2"), "{text}");
        assert!(text.contains("store: healthy (sqlite:mllp.db)"), "{text}");
        assert!(text.contains("connections 2 of max 1024"), "{text}");
        let rows: Vec<_> = lines.iter().filter(|l| l.contains("ADT^A01")).collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(
            rows[0].contains("10.0.0.2:40002") && rows[0].contains(" 900 "),
            "{text}"
        );
        assert!(rows[1].contains("10.0.0.1:40001"), "{text}");
        assert!(text.contains("MSGS▼"), "{text}");
    }

    /// The health line names each check once (`store: …`, not `store store: …`), says when
    /// one fails and why the server is not ready, and says when there is none.
    #[test]
    fn health_line_reads_naturally() {
        let health = |status: Status| {
            let mut model = Model::new("http://127.0.0.1:9575".into());
            model.update(Instant::now(), Ok((status, Connections::default())));
            // The line under the header and the 5-line activity panel.
            screen(&model, 120, 24)[6].trim_end().to_owned()
        };
        assert_eq!(health(status(1000)), "store: healthy (sqlite:mllp.db)",);

        let mut failing = status(1000);
        failing.checks[0].healthy = false;
        failing.ready = false;
        failing.not_ready = vec!["store: sqlite:mllp.db".into()];
        assert_eq!(
            health(failing),
            "store: FAILING (sqlite:mllp.db)  not ready: store: sqlite:mllp.db",
        );

        let mut none = status(1000);
        none.checks.clear();
        assert_eq!(health(none), "no health checks");
    }

    /// Each check gets a line of its own, failing and degraded ones first, so a long detail
    /// never hides another check; the table still follows them.
    #[test]
    fn each_check_gets_its_own_line_failing_and_degraded_first() {
        let mut status = status(1000);
        let long = "x".repeat(300);
        status.checks = vec![
            Check {
                name: "tls a".into(),
                healthy: true,
                degraded: false,
                detail: long.clone(),
            },
            Check {
                name: "tls b".into(),
                healthy: true,
                degraded: true,
                detail: "the reload at 2026-12-07T15:20:03Z failed".into(),
            },
            Check {
                name: "store".into(),
                healthy: false,
                degraded: false,
                detail: "sqlite:mllp.db: last commit failed".into(),
            },
        ];
        let mut model = Model::new("http://127.0.0.1:9575".into());
        model.update(Instant::now(), Ok((status, Connections::default())));
        let rows = screen(&model, 100, 24);
        assert!(
            rows[6].starts_with("store: FAILING (sqlite:mllp.db: last commit failed)"),
            "{rows:#?}"
        );
        assert!(
            rows[7].starts_with("tls b: DEGRADED (the reload at 2026-12-07T15:20:03Z failed)"),
            "{rows:#?}"
        );
        assert!(rows[8].starts_with("tls a: healthy (xxx"), "{rows:#?}");
        assert!(
            rows[9].contains("connections"),
            "the table follows: {rows:#?}"
        );
    }

    /// More checks than the panel's lines: the most urgent are shown, and the last line says
    /// how many more there are (in yellow when one of them needs attention).
    #[test]
    fn checks_past_the_panel_are_counted_not_dropped() {
        let mut status = status(1000);
        status.checks = (0..8)
            .map(|i| Check {
                name: format!("tls {i}"),
                healthy: true,
                degraded: i == 0,
                detail: "certificate valid until 2027-03-01T00:00:00Z".into(),
            })
            .collect();
        let mut model = Model::new("http://127.0.0.1:9575".into());
        model.update(Instant::now(), Ok((status, Connections::default())));
        let rows = screen(&model, 100, 30);
        assert!(rows[6].starts_with("tls 0: DEGRADED"), "{rows:#?}");
        assert!(rows[10].starts_with("tls 4: healthy"), "{rows:#?}");
        assert_eq!(
            rows[11].trim_end(),
            "+3 more check(s), in /status",
            "{rows:#?}"
        );
        assert!(
            rows[12].contains("connections"),
            "the table follows: {rows:#?}"
        );
    }

    /// Sorting by another column, and reversing, reorders the rows.
    #[test]
    fn sorting_reorders_rows() {
        let mut model = model();
        model.sort_by(Column::Id);
        let lines = screen(&model, 120, 24);
        let rows: Vec<_> = lines.iter().filter(|l| l.contains("ADT^A01")).collect();
        assert!(rows[0].contains("10.0.0.2"), "id descending first");
        model.reverse();
        let lines = screen(&model, 120, 24);
        let rows: Vec<_> = lines.iter().filter(|l| l.contains("ADT^A01")).collect();
        assert!(rows[0].contains("10.0.0.1"), "id ascending first");
        assert!(lines.join("\n").contains("ID▲"));
    }

    /// An endpoint that stops answering is said so in red, with the last data still shown; one
    /// never reached says so in place of the data.
    #[test]
    fn unreachable_endpoint_is_said_clearly() {
        let mut model = model();
        model.update(
            Instant::now(),
            Err("cannot connect: Connection refused".into()),
        );
        let text = screen(&model, 120, 24).join("\n");
        assert!(
            text.contains("endpoint unreachable: cannot connect: Connection refused"),
            "{text}"
        );
        assert!(text.contains("ADT^A01"), "the last data stays: {text}");

        let mut fresh = Model::new("http://127.0.0.1:1".into());
        fresh.update(
            Instant::now(),
            Err("cannot connect: Connection refused".into()),
        );
        let text = screen(&fresh, 80, 12).join("\n");
        assert!(text.contains("cannot read http://127.0.0.1:1"), "{text}");
    }

    /// Any size draws without panicking, down to a single cell: a resize never breaks the view.
    #[test]
    fn every_size_draws() {
        let model = model();
        for (w, h) in [(1, 1), (10, 3), (40, 8), (80, 24), (200, 60)] {
            screen(&model, w, h);
        }
    }
}
