//! Switchboard: a customer-service daemon.
//!
//! # Layout
//! - [`model`]: pure types and the conversation state machine (no I/O).
//! - [`store`]: the narrow `Store` trait and its sled implementation (one writer, atomic
//!   batches, group commit, in-memory index and caches).
//! - [`engine`]: turns inbound messages and agent actions into state changes; runs the bot
//!   workers and the outbox. Knows channels only through the `Channel` trait.
//! - [`bot`]: the `Responder` seam, the knowledge base and the responder of this build.
//! - [`inbox`]: the agent HTTP API (axum): thin handlers, auth extractors, SSE, OpenAPI.
//! - [`routing`]: business hours (when people work, when they open next).
//! - [`config`]: the typed configuration file.
//! - [`app`]: wiring and lifecycle ([`notify`]: systemd readiness and watchdog). `main.rs` is only the command line.
//! - [`bench`]: the load generators behind `switchboard bench`.
//!
//! Connectors live in their own crates under `channels/` and depend only on
//! `switchboard-channel`.

pub mod admin;
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
