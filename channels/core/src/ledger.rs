//! Two small durable records a connector keeps in its [`ChannelState`] when its network needs
//! them: long button payloads behind a short hash ([`ButtonPayloads`]), and the parts of a
//! reply already sent ([`SentParts`]).

use sha2::{Digest, Sha256};

use crate::{ChannelError, ChannelState, StateError};

/// Key prefix of kept button payloads.
const BUTTON_PREFIX: &str = "btn/";
/// Marks button data that stands for a kept payload.
const HASHED: &str = "h:";

/// Button data as a network carries it. A payload that fits the network's limit on a
/// button's data (Telegram's `callback_data`: 64 bytes; Discord's `custom_id`: 100) travels
/// as it is; a longer one as `h:` and a hash, the payload kept under `btn/<hash>` until the
/// customer presses the button, however late.
pub struct ButtonPayloads<'a> {
    state: &'a dyn ChannelState,
    max: usize,
}

impl<'a> ButtonPayloads<'a> {
    /// For a network whose button data holds at most `max` bytes (at least 34).
    pub fn new(state: &'a dyn ChannelState, max: usize) -> Self {
        ButtonPayloads { state, max }
    }

    /// The data to put on a button for `payload`. A payload that cannot be kept is logged:
    /// the button is sent anyway, and pressing it is ignored.
    pub async fn data(&self, payload: &str) -> String {
        if payload.len() <= self.max && !payload.starts_with(HASHED) {
            return payload.to_owned();
        }
        let hash = &hex::encode(Sha256::digest(payload.as_bytes()))[..32];
        let key = format!("{BUTTON_PREFIX}{hash}");
        if let Err(e) = self
            .state
            .put_all(&[(key.as_bytes(), payload.as_bytes())])
            .await
        {
            tracing::warn!(error = %e, "cannot keep a button payload");
        }
        format!("{HASHED}{hash}")
    }

    /// The payload a pressed button's `data` stands for; `None` for a hash this channel does
    /// not hold.
    pub async fn payload(&self, data: &str) -> Result<Option<String>, StateError> {
        let Some(hash) = data.strip_prefix(HASHED) else {
            return Ok(Some(data.to_owned()));
        };
        let Some(value) = self
            .state
            .get(format!("{BUTTON_PREFIX}{hash}").as_bytes())
            .await?
        else {
            return Ok(None);
        };
        // Kept as the bytes of the payload; Discord kept them as a JSON string before this
        // was shared, and buttons of that time may still be pressed.
        if value.first() == Some(&b'"')
            && let Ok(s) = serde_json::from_slice::<String>(&value)
        {
            return Ok(Some(s));
        }
        Ok(String::from_utf8(value).ok())
    }
}

/// The parts of a reply of several parts (a long text split, files) already sent, with the
/// network's id of each: a retry after a crash or a lost response sends only the rest.
/// Connectors record a part only when the reply has more than one (the outbox records a
/// whole reply once it is sent).
pub struct SentParts<'a> {
    state: &'a dyn ChannelState,
    /// The connector's key prefix (each has kept its own since before this was shared).
    prefix: &'static str,
}

impl<'a> SentParts<'a> {
    pub fn new(state: &'a dyn ChannelState, prefix: &'static str) -> Self {
        SentParts { state, prefix }
    }

    fn key(&self, outbound: &str, part: usize) -> String {
        format!("{}{outbound}/{part}", self.prefix)
    }

    /// The network's id of part `part` of reply `outbound`, if it was sent.
    pub async fn get(&self, outbound: &str, part: usize) -> Option<String> {
        let value = self
            .state
            .get(self.key(outbound, part).as_bytes())
            .await
            .ok()??;
        String::from_utf8(value).ok()
    }

    /// Records part `part` as sent under the network's `id`, durably before it returns, so
    /// that no later try sends it again.
    pub async fn record(&self, outbound: &str, part: usize, id: &str) -> Result<(), ChannelError> {
        let key = self.key(outbound, part);
        let retry = |e: StateError| ChannelError::retryable(e.to_string());
        self.state
            .put_all(&[(key.as_bytes(), id.as_bytes())])
            .await
            .map_err(retry)?;
        self.state.sync().await.map_err(retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::MemoryState;

    #[tokio::test]
    async fn short_payloads_travel_as_they_are_long_ones_as_a_kept_hash() {
        let state = MemoryState::default();
        let buttons = ButtonPayloads::new(&state, 64);
        assert_eq!(buttons.data("refund").await, "refund");
        assert_eq!(
            buttons.payload("refund").await.unwrap().as_deref(),
            Some("refund")
        );
        let long = "我想问一下退款大概多久可以到账，已经等了一个星期了".repeat(2);
        for payload in [long.as_str(), "h:looks-like-a-hash"] {
            let data = buttons.data(payload).await;
            assert!(data.starts_with("h:") && data.len() <= 64, "{data}");
            assert_eq!(
                buttons.payload(&data).await.unwrap().as_deref(),
                Some(payload)
            );
        }
        assert_eq!(buttons.payload("h:0123").await.unwrap(), None);
        // As Discord kept them before: a JSON string.
        let hash = "ab".repeat(16);
        let key = format!("btn/{hash}");
        state
            .put_all(&[(key.as_bytes(), br#""old \"one\"""#.as_slice())])
            .await
            .unwrap();
        assert_eq!(
            buttons
                .payload(&format!("h:{hash}"))
                .await
                .unwrap()
                .as_deref(),
            Some(r#"old "one""#)
        );
    }

    #[tokio::test]
    async fn sent_parts_are_remembered_per_reply_and_part() {
        let state = MemoryState::default();
        let sent = SentParts::new(&state, "out/");
        assert_eq!(sent.get("sb-1-2", 0).await, None);
        sent.record("sb-1-2", 0, "1001").await.unwrap();
        sent.record("sb-1-2", 2, "1003").await.unwrap();
        assert_eq!(sent.get("sb-1-2", 0).await.as_deref(), Some("1001"));
        assert_eq!(sent.get("sb-1-2", 1).await, None);
        assert_eq!(sent.get("sb-1-2", 2).await.as_deref(), Some("1003"));
        assert_eq!(sent.get("sb-1-20", 0).await, None);
        assert_eq!(SentParts::new(&state, "sent/").get("sb-1-2", 0).await, None);
        assert_eq!(
            state.get(b"out/sb-1-2/2").await.unwrap().as_deref(),
            Some(&b"1003"[..])
        );
    }
}
