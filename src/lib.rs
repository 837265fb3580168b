//! Switchboard: a customer-service daemon.
//!
//! # Layout
//! - [`model`]: pure types, the conversation state machine, and the vocabulary every layer
//!   shares (a text's language, `Localized` texts, the `Availability` seam). No I/O.
//! - [`store`]: the `Store` contract (async, backend-neutral), `store::open` (the one place
//!   a backend is opened), its sled implementation (one writer, atomic batches, group commit,
//!   in-memory index and caches), an in-memory one, and the contract suite both pass.
//! - [`routing`]: pure policy for who answers when: business hours, teams and the choice of
//!   agent, per-team schedules, SLA clocks.
//! - [`bot`]: the `Responder` seam, the knowledge base and the responder of this build.
//! - [`engine`]: turns inbound messages and agent actions into state changes; runs the bot
//!   workers, the outbox and the router loop. Knows channels only through the `Channel` trait.
//! - [`inbox`]: the agent HTTP API (axum): thin handlers, auth extractors, SSE, OpenAPI.
//! - [`listener`]: the HTTP/1.1 accept loop (timeouts, the connection cap).
//! - [`metrics`]: counters and the Prometheus text.
//! - [`admin`]: whole-installation operations (backup, export/import, forget a customer).
//! - [`config`]: the span-aware loader of the configuration file; each section's type lives
//!   beside its code (`[bot]` in `bot::config`, `[store]` in `store::config`, ...).
//! - [`app`]: wiring and lifecycle ([`notify`]: systemd readiness and watchdog).
//! - [`admin_cli`], [`kb_cli`], [`bench`]: the commands behind `switchboard agent|export|...`,
//!   `switchboard kb ...` and `switchboard bench ...`. `main.rs` is only the command line.
//!
//! Layers depend downwards only: model ← store, routing ← bot ← engine ← inbox ← app ← the
//! commands.
//!
//! Connectors live in their own crates under `channels/` and depend only on
//! `switchboard-channel`.

pub mod admin;
pub mod admin_cli;
pub mod app;
pub mod bench;
pub mod bot;
pub mod config;
pub mod engine;
pub mod inbox;
pub mod kb_cli;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod routing;
pub mod store;
