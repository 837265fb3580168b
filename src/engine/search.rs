//! Finding conversations by what was said or who said it.
//!
//! A scan, newest activity first, over the conversations the list filters select: each is
//! matched on its contact (name, identities), labels, preview and messages. The scan stops
//! after [`SCAN`] conversations per call and hands back a cursor, so a search over a big
//! store is paged like any list and never holds a request for long.

use super::{Engine, EngineError};
use crate::model::Conversation;
use crate::store::{ConversationQuery, Page};

/// Conversations looked at per call.
const SCAN: usize = 2000;
/// Messages of one conversation looked at.
const MESSAGES: usize = 500;

impl Engine {
    /// Conversations matching `text` (case-insensitive, every word somewhere in the
    /// conversation), within `query`'s filters and page.
    pub async fn search(&self, query: &ConversationQuery, text: &str) -> Result<Page, EngineError> {
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        if words.is_empty() {
            return Err(EngineError::Invalid("the search text is empty".into()));
        }
        let mut found = Vec::new();
        let mut scanned = 0;
        let mut page = ConversationQuery {
            limit: 200,
            ..query.clone()
        };
        loop {
            let batch = self.store.list_conversations(&page).await?;
            for conv in batch.items {
                scanned += 1;
                let here = crate::store::Cursor {
                    updated_ms: conv.updated_at_ms,
                    id: conv.id,
                };
                if self.matches(&conv, &words).await? {
                    found.push(conv);
                }
                if found.len() >= query.limit || scanned >= SCAN {
                    // More may follow: continue after the last one looked at.
                    return Ok(Page {
                        items: found,
                        next: Some(here),
                    });
                }
            }
            match batch.next {
                Some(next) => page.after = Some(next),
                None => {
                    return Ok(Page {
                        items: found,
                        next: None,
                    });
                }
            }
        }
    }

    async fn matches(&self, conv: &Conversation, words: &[String]) -> Result<bool, EngineError> {
        let mut hay = String::new();
        hay.push_str(&conv.preview);
        if let Some(subject) = &conv.subject {
            hay.push(' ');
            hay.push_str(subject);
        }
        for label in &conv.labels {
            hay.push(' ');
            hay.push_str(label);
        }
        if let Some(contact) = self.contact(conv.contact).await? {
            if let Some(name) = &contact.name {
                hay.push(' ');
                hay.push_str(name);
            }
            for identity in &contact.identities {
                hay.push(' ');
                hay.push_str(&identity.user.0);
            }
        }
        let mut hay = hay.to_lowercase();
        if words.iter().all(|w| hay.contains(w.as_str())) {
            return Ok(true);
        }
        for m in self.store.messages(conv.id, 0, MESSAGES).await? {
            for part in m.subject.iter().chain([&m.text]) {
                hay.push(' ');
                hay.push_str(&part.to_lowercase());
            }
        }
        Ok(words.iter().all(|w| hay.contains(w.as_str())))
    }
}
