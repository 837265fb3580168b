//! Counters and histograms for `GET /metrics` (Prometheus text format 0.0.4).
//!
//! The engine counts as things happen (messages in and out per channel, bot decisions,
//! escalation reasons, first responses); gauges (conversations per status, outbox depth,
//! channel health, store size) are read when scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const HTTP_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
/// First response by a person, in seconds: a minute to a day.
const RESPONSE_BUCKETS: [f64; 8] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 28800.0, 86400.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Counts {
    inbound: BTreeMap<String, u64>,
    duplicates: BTreeMap<String, u64>,
    outbound: BTreeMap<(String, &'static str), u64>,
    bot: BTreeMap<&'static str, u64>,
    escalations: BTreeMap<String, u64>,
    /// `(kind, "due_soon" | "breached")`.
    sla: BTreeMap<(&'static str, &'static str), u64>,
    http: BTreeMap<&'static str, Histogram>,
    first_response: Option<Histogram>,
    connections: u64,
    /// Connections closed by the listener: `evicted`, `refused`, `header_timeout`.
    connections_dropped: BTreeMap<&'static str, u64>,
    chat_streams: u64,
    /// Web chat event streams refused, by the limit reached: `session`, `address`.
    chat_streams_refused: BTreeMap<&'static str, u64>,
}

/// What the engine and the HTTP layer count.
#[derive(Debug, Default)]
pub struct Metrics(Mutex<Counts>);

/// Gauges read at scrape time.
pub struct Gauges {
    /// Conversations per status, in `Status` order.
    pub statuses: Vec<(&'static str, u64)>,
    pub outbox_conversations: u64,
    /// Customer messages waiting for the bot's decision.
    pub bot_backlog: u64,
    pub failed_deliveries: u64,
    pub store_bytes: u64,
    /// Free space where the store writes, and the reserve below which messages are refused.
    pub disk: crate::store::disk::DiskSpace,
    /// `(channel, ok, errors)`.
    pub channels: Vec<(String, bool, u64)>,
}

/// Counts one for `key`, allocating its name only the first time.
fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

/// One up or down.
fn gauge(v: &mut u64, up: bool) {
    *v = if up { *v + 1 } else { v.saturating_sub(1) };
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A customer message was stored (or recognised as a duplicate).
    pub fn inbound(&self, channel: &str, duplicate: bool) {
        self.with(|c| {
            let map = if duplicate {
                &mut c.duplicates
            } else {
                &mut c.inbound
            };
            bump(map, channel);
        });
    }

    /// A delivery attempt ended: `sent`, `retry`, `failed`.
    pub fn outbound(&self, channel: &str, result: &'static str) {
        self.with(|c| *c.outbound.entry((channel.to_owned(), result)).or_default() += 1);
    }

    /// The bot decided: `answer`, `clarify`, `escalate`; with the reason when it escalated.
    pub fn bot(&self, decision: &'static str, escalation: Option<&str>) {
        self.with(|c| {
            *c.bot.entry(decision).or_default() += 1;
            if let Some(r) = escalation {
                *c.escalations.entry(r.to_owned()).or_default() += 1;
            }
        });
    }

    /// A person answered for the first time since the hand-over, `waited` after it.
    pub fn first_response(&self, waited: Duration) {
        self.with(|c| {
            c.first_response
                .get_or_insert_with(|| Histogram::new(&RESPONSE_BUCKETS))
                .observe(waited.as_secs_f64())
        });
    }

    /// An SLA clock of `kind` came due soon or was missed (`event`).
    pub fn sla(&self, kind: &'static str, event: &'static str) {
        self.with(|c| *c.sla.entry((kind, event)).or_default() += 1);
    }

    /// An HTTP request finished with status class `class` (`2xx`, `4xx`...).
    pub fn http(&self, class: &'static str, took: Duration) {
        self.with(|c| {
            c.http
                .entry(class)
                .or_insert_with(|| Histogram::new(&HTTP_BUCKETS))
                .observe(took.as_secs_f64())
        });
    }

    /// An HTTP connection opened (`true`) or closed.
    pub fn connection_opened(&self, opened: bool) {
        self.with(|c| gauge(&mut c.connections, opened));
    }

    /// The listener closed a connection itself: `evicted` (to make room), `refused` (full),
    /// `header_timeout`.
    pub fn connection_dropped(&self, reason: &'static str) {
        self.with(|c| *c.connections_dropped.entry(reason).or_default() += 1);
    }

    /// A web chat event stream opened (`true`) or closed.
    pub fn chat_stream(&self, opened: bool) {
        self.with(|c| gauge(&mut c.chat_streams, opened));
    }

    /// A web chat event stream was refused at the `limit` (`session`, `address`).
    pub fn chat_stream_refused(&self, limit: &'static str) {
        self.with(|c| *c.chat_streams_refused.entry(limit).or_default() += 1);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self, g: &Gauges) -> String {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(4096);
        let per = |label: &str, v: &str| format!("{label}=\"{}\"", escape(v));
        family(
            &mut out,
            ("switchboard_inbound_messages_total", "counter"),
            "Customer messages stored, per channel.",
            c.inbound
                .iter()
                .map(|(ch, n)| (per("channel", ch), *n as f64)),
        );
        family(
            &mut out,
            ("switchboard_inbound_duplicates_total", "counter"),
            "Customer messages delivered again and stored once, per channel.",
            c.duplicates
                .iter()
                .map(|(ch, n)| (per("channel", ch), *n as f64)),
        );
        family(
            &mut out,
            ("switchboard_outbound_deliveries_total", "counter"),
            "Delivery attempts by outcome (sent, retry, failed), per channel.",
            c.outbound.iter().map(|((ch, result), n)| {
                (
                    format!("{},{}", per("channel", ch), per("result", result)),
                    *n as f64,
                )
            }),
        );
        family(
            &mut out,
            ("switchboard_bot_decisions_total", "counter"),
            "Bot decisions: answer, clarify, escalate.",
            c.bot.iter().map(|(d, n)| (per("decision", d), *n as f64)),
        );
        family(
            &mut out,
            ("switchboard_escalations_total", "counter"),
            "Hand-overs to people by reason.",
            c.escalations
                .iter()
                .map(|(r, n)| (per("reason", r), *n as f64)),
        );
        family(
            &mut out,
            ("switchboard_sla_events_total", "counter"),
            "SLA clocks that came due soon or were missed, by target.",
            c.sla.iter().map(|((kind, event), n)| {
                (
                    format!("{},{}", per("target", kind), per("event", event)),
                    *n as f64,
                )
            }),
        );
        let name = "switchboard_first_response_seconds";
        family(
            &mut out,
            (name, "histogram"),
            "From hand-over to the first reply by a person.",
            std::iter::empty(),
        );
        c.first_response
            .clone()
            .unwrap_or_else(|| Histogram::new(&RESPONSE_BUCKETS))
            .render(&mut out, name, "");
        let name = "switchboard_http_request_duration_seconds";
        family(
            &mut out,
            (name, "histogram"),
            "HTTP request latency by status class.",
            std::iter::empty(),
        );
        for (class, h) in &c.http {
            h.render(&mut out, name, &per("class", class));
        }
        let single = |v: u64| std::iter::once((String::new(), v as f64));
        family(
            &mut out,
            ("switchboard_http_connections", "gauge"),
            "Open HTTP connections.",
            single(c.connections),
        );
        family(
            &mut out,
            ("switchboard_http_connections_dropped_total", "counter"),
            "Connections the listener closed: evicted (idle, to make room), refused (full), \
             header_timeout.",
            c.connections_dropped
                .iter()
                .map(|(r, n)| (per("reason", r), *n as f64)),
        );
        family(
            &mut out,
            ("switchboard_chat_streams", "gauge"),
            "Open web chat event streams.",
            single(c.chat_streams),
        );
        family(
            &mut out,
            ("switchboard_chat_streams_refused_total", "counter"),
            "Web chat event streams refused, by the limit reached (session, address).",
            c.chat_streams_refused
                .iter()
                .map(|(l, n)| (per("limit", l), *n as f64)),
        );
        family(
            &mut out,
            ("switchboard_conversations", "gauge"),
            "Conversations by status (queued is the queue length).",
            g.statuses
                .iter()
                .map(|(s, n)| (per("status", s), *n as f64)),
        );
        family(
            &mut out,
            ("switchboard_outbox_conversations", "gauge"),
            "Conversations with replies waiting for delivery.",
            single(g.outbox_conversations),
        );
        family(
            &mut out,
            ("switchboard_bot_backlog", "gauge"),
            "Customer messages waiting for the bot's decision.",
            single(g.bot_backlog),
        );
        family(
            &mut out,
            ("switchboard_failed_deliveries", "gauge"),
            "Replies that failed for good and wait for an agent.",
            single(g.failed_deliveries),
        );
        family(
            &mut out,
            ("switchboard_store_bytes", "gauge"),
            "Size of the store on disk.",
            single(g.store_bytes),
        );
        if g.disk.free_bytes != u64::MAX {
            family(
                &mut out,
                ("switchboard_disk_free_bytes", "gauge"),
                "Free space on the store's filesystem.",
                single(g.disk.free_bytes),
            );
        }
        family(
            &mut out,
            ("switchboard_disk_reserve_bytes", "gauge"),
            "Below this much free space new messages are refused.",
            single(g.disk.reserve_bytes),
        );
        family(
            &mut out,
            ("switchboard_disk_low", "gauge"),
            "1 while new messages are refused for lack of disk space.",
            single(u64::from(g.disk.low())),
        );
        family(
            &mut out,
            ("switchboard_channel_up", "gauge"),
            "0 when the channel's last network call failed.",
            g.channels
                .iter()
                .map(|(ch, ok, _)| (per("channel", ch), f64::from(u8::from(*ok)))),
        );
        family(
            &mut out,
            ("switchboard_channel_errors_total", "counter"),
            "Failed network calls per channel.",
            g.channels
                .iter()
                .map(|(ch, _, e)| (per("channel", ch), *e as f64)),
        );
        out
    }
}

/// One metric family: its HELP and TYPE lines, then a sample per `(labels, value)`.
fn family(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    samples: impl Iterator<Item = (String, f64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}
