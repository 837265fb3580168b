//! Who answers when: business hours (this module's first part). Outside the hours the bot
//! keeps serving and tells customers when a person will reply ([`hours::BusinessHours`] is the
//! engine's `Availability`).

pub mod hours;
