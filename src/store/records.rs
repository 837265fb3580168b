//! The store's content as a stream of typed records: what `switchboard export` writes (one
//! JSON object per line) and `switchboard import` reads back.
//!
//! Records are the model types themselves plus the mappings the store keeps beside them
//! (identities, threads, network message ids, queues), so an import rebuilds the same store,
//! indexes included. Secrets stay out: the install's token key, agents' token hashes and the
//! inbox's sign-in sessions are never exported (an imported agent needs a new token).

use serde::{Deserialize, Serialize};
use switchboard_channel::{ChannelId, ExternalMessageId, ExternalThread, ExternalUser};

use crate::model::{
    Agent, Contact, ContactId, Conversation, ConversationId, Event, Message, Note, OutboxItem,
};

/// Bytes in a record: text when they are UTF-8, base64 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bytes {
    Text(String),
    Base64 { base64: String },
}

impl Bytes {
    pub fn new(bytes: &[u8]) -> Bytes {
        use base64::Engine;
        match std::str::from_utf8(bytes) {
            Ok(s) => Bytes::Text(s.to_owned()),
            Err(_) => Bytes::Base64 {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }

    pub fn to_vec(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        match self {
            Bytes::Text(s) => Ok(s.as_bytes().to_vec()),
            Bytes::Base64 { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(|e| format!("bad base64: {e}")),
        }
    }
}

/// Where a private key-value space belongs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpaceOwner {
    /// A channel instance's state (offsets, web chat transcripts).
    Channel,
    /// A part of the daemon (the live knowledge base, canned responses).
    Daemon,
}

/// One record of the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// First line of an export: what wrote it.
    Header {
        format: String,
        version: u32,
        schema: u32,
        exported_at_ms: i64,
        /// Every id the source store handed out is below this.
        next_id: u64,
    },
    /// An agent, without its token hash.
    Agent {
        record: Agent,
    },
    Contact {
        record: Contact,
    },
    Identity {
        channel: ChannelId,
        user: ExternalUser,
        contact: ContactId,
    },
    Conversation {
        record: Conversation,
    },
    Thread {
        channel: ChannelId,
        thread: ExternalThread,
        conversation: ConversationId,
    },
    Message {
        record: Message,
    },
    /// The dedupe key of a message that came from (or went to) the network.
    ExternalId {
        channel: ChannelId,
        id: ExternalMessageId,
        conversation: ConversationId,
        seq: u64,
    },
    Note {
        record: Note,
    },
    Event {
        record: Event,
    },
    Outbox {
        record: OutboxItem,
    },
    /// A customer message the bot has still to look at.
    BotQueue {
        conversation: ConversationId,
        seq: u64,
    },
    /// An outbound message whose delivery failed for good.
    Failed {
        conversation: ConversationId,
        seq: u64,
    },
    /// A pair of a private key-value space.
    State {
        owner: SpaceOwner,
        space: String,
        key: Bytes,
        value: Bytes,
    },
    /// A setting of the daemon's own.
    Meta {
        key: String,
        value: Bytes,
    },
}

/// The `format` of the header line.
pub const FORMAT: &str = "switchboard-export";
/// Version of the export format (not of the store's schema).
pub const FORMAT_VERSION: u32 = 1;

/// Daemon spaces that hold secrets and are never exported.
pub const SECRET_SPACES: &[&str] = &["sessions"];
/// Meta keys that hold secrets or describe the store itself, never exported.
pub const PRIVATE_META: &[&str] = &[
    "token_key",
    "schema_version",
    "id_floor",
    "id_reserved",
    "compact_pending",
];

impl Record {
    /// The `kind` tag, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Header { .. } => "header",
            Record::Agent { .. } => "agent",
            Record::Contact { .. } => "contact",
            Record::Identity { .. } => "identity",
            Record::Conversation { .. } => "conversation",
            Record::Thread { .. } => "thread",
            Record::Message { .. } => "message",
            Record::ExternalId { .. } => "external_id",
            Record::Note { .. } => "note",
            Record::Event { .. } => "event",
            Record::Outbox { .. } => "outbox",
            Record::BotQueue { .. } => "bot_queue",
            Record::Failed { .. } => "failed",
            Record::State { .. } => "state",
            Record::Meta { .. } => "meta",
        }
    }

    /// The largest id the record holds, so that ids handed out after an import never collide.
    pub fn max_id(&self) -> u64 {
        match self {
            Record::Agent { record } => record.id.0,
            Record::Contact { record } => record.id.0,
            Record::Conversation { record } => record.id.0,
            Record::Note { record } => record.id.0.max(record.conversation.0),
            Record::Event { record } => record.id.0,
            _ => 0,
        }
    }
}

/// What an import writes, read from its records: one change (records and indexes), the pairs
/// of private spaces and the meta values beside it, and the floor every later id must clear.
#[derive(Debug, Default)]
pub struct Restored {
    pub change: crate::store::Change,
    /// `(owner, space, key, value)`.
    pub spaces: Vec<(SpaceOwner, String, Vec<u8>, Vec<u8>)>,
    /// Meta values (secrets and the store's own keys left out).
    pub meta: Vec<(String, Vec<u8>)>,
    /// Every id the exporting store handed out is below this.
    pub floor: u64,
}

/// Splits exported records into what a backend writes (see [`Restored`]). Agents get a token
/// that matches no token (tokens are not exported: until rotated, the agent has none).
pub fn restored(records: Vec<Record>) -> Result<Restored, crate::store::StoreError> {
    use crate::store::ConversationWrite;
    let bad = |detail: String| crate::store::StoreError::Corrupt {
        tree: "import",
        detail,
    };
    let mut out = Restored::default();
    let c = &mut out.change;
    for r in records {
        out.floor = out.floor.max(r.max_id());
        match r {
            Record::Header { next_id, .. } => out.floor = out.floor.max(next_id),
            Record::Agent { mut record } => {
                record.token_hash = format!("imported:{}", hex::encode(rand::random::<[u8; 16]>()));
                c.agents.push(record);
            }
            Record::Contact { record } => c.contacts.push(record),
            Record::Identity {
                channel,
                user,
                contact,
            } => c.new_identities.push((channel, user, contact)),
            Record::Conversation { record } => {
                c.conversations.push(ConversationWrite::restored(record))
            }
            Record::Thread {
                channel,
                thread,
                conversation,
            } => c.new_threads.push((channel, thread, conversation)),
            Record::Message { record } => c.messages.push(record),
            Record::ExternalId {
                channel,
                id,
                conversation,
                seq,
            } => c.new_external_ids.push((channel, id, conversation, seq)),
            Record::Note { record } => c.notes.push(record),
            Record::Event { record } => c.events.push(record),
            Record::Outbox { record } => c.outbox_put.push(record),
            Record::BotQueue { conversation, seq } => c.bot_queue_put.push((conversation, seq)),
            Record::Failed { conversation, seq } => c.failed_put.push((conversation, seq)),
            Record::State {
                owner,
                space,
                key,
                value,
            } => out.spaces.push((
                owner,
                space,
                key.to_vec().map_err(bad)?,
                value.to_vec().map_err(bad)?,
            )),
            Record::Meta { key, value } => {
                if !PRIVATE_META.contains(&key.as_str()) {
                    out.meta.push((key, value.to_vec().map_err(bad)?));
                }
            }
        }
    }
    Ok(out)
}
