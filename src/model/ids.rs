//! Numeric ids of Switchboard's own records. Allocated by the store, never reused.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            pub fn to_be_bytes(self) -> [u8; 8] {
                self.0.to_be_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    };
}

numeric_id!(
    /// A conversation.
    ConversationId
);
numeric_id!(
    /// A contact (customer).
    ContactId
);
numeric_id!(
    /// An agent (a person working the inbox).
    AgentId
);
numeric_id!(
    /// An event in the append-only log, and its position there (ids rise in commit order);
    /// also the SSE `id`.
    EventId
);
numeric_id!(
    /// A private note.
    NoteId
);

impl EventId {
    /// The id of an event not yet committed: the store gives it its id in the commit, in
    /// commit order, so that ids are positions in the log.
    pub const UNASSIGNED: EventId = EventId(0);
}
