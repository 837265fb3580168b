//! Who answers when, as pure policy: business hours ([`hours::BusinessHours`], an
//! [`Availability`](crate::model::availability::Availability)): outside them the bot keeps
//! serving and tells customers when a person will reply; teams, capacity and the choice of
//! agent ([`assign`]); per-team schedules ([`schedule`]); SLA clocks ([`sla`]). Nothing here
//! changes state: the engine's router loop (`engine/router.rs`) applies it.

pub mod assign;
pub mod hours;
pub mod schedule;
pub mod sla;
