//! Who answers when. Business hours ([`hours::BusinessHours`], the engine's `Availability`):
//! outside them the bot keeps serving and tells customers when a person will reply. Teams,
//! capacity and the choice of agent ([`assign`], pure), and the loop that applies them and
//! keeps presence honest ([`router`]).

pub mod assign;
pub mod hours;
pub mod router;
pub mod schedule;
pub mod sla;
