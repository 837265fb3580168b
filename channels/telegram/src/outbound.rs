//! Replies on their way to Telegram: rendered to the Bot API's HTML mode, split to its length
//! limit, paced to its flood limits, and failures classified for the outbox.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use switchboard_channel::{ChannelError, Outbound, TextFormat, markup};
use teloxide::ApiError;
use teloxide::RequestError;
use tokio::time::Instant;

/// Telegram's limit for one message text, counted in UTF-16 code units after entity parsing.
pub const MAX_TEXT_UNITS: usize = 4096;
/// Telegram's limit for a button's `callback_data`, in bytes.
pub const MAX_CALLBACK_DATA: usize = 64;

/// The reply as parts of at most [`MAX_TEXT_UNITS`], each rendered to Telegram HTML
/// (`parse_mode = "HTML"`): agent text is escaped and never interpreted; bot Markdown becomes
/// `<b> <i> <code> <a>`.
pub fn render_parts(outbound: &Outbound) -> Vec<String> {
    if outbound.text.trim().is_empty() {
        return vec![];
    }
    split(&outbound.text, MAX_TEXT_UNITS)
        .into_iter()
        .map(|part| match outbound.format {
            TextFormat::Plain => markup::escape_html(part),
            TextFormat::Markdown => markup::to_html(part, "\n"),
        })
        .collect()
}

pub use switchboard_channel::markup::split;

/// Paces sends to Telegram's flood limits: about one message a second per private chat,
/// twenty a minute per group, thirty a second for the whole bot. Each caller gets the next
/// free slot and sleeps until it, so bursts queue up instead of drawing 429s.
pub struct Pacer {
    global_interval: Duration,
    private_interval: Duration,
    group_interval: Duration,
    next: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    global: Option<Instant>,
    chats: HashMap<i64, Instant>,
}

impl Pacer {
    pub fn new(per_second: u32, private_interval: Duration, group_interval: Duration) -> Self {
        Pacer {
            global_interval: if per_second == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs(1) / per_second
            },
            private_interval,
            group_interval,
            next: Mutex::new(Slots::default()),
        }
    }

    /// Waits for this chat's next slot.
    pub async fn wait(&self, chat: i64) {
        // Telegram's group and channel ids are negative.
        let interval = if chat < 0 {
            self.group_interval
        } else {
            self.private_interval
        };
        let at = {
            let mut slots = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if slots.chats.len() > 10_000 {
                slots.chats.retain(|_, t| *t > now);
            }
            let chat_at = slots.chats.get(&chat).copied().unwrap_or(now).max(now);
            let at = slots.global.unwrap_or(now).max(chat_at);
            slots.global = Some(at + self.global_interval);
            slots.chats.insert(chat, at + interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// What a failed Bot API call means for the outbox.
pub fn classify(e: RequestError) -> ChannelError {
    match e {
        RequestError::RetryAfter(after) => ChannelError::Retryable {
            reason: format!("Telegram flood control: retry after {}", after.seconds()),
            after: Some(after.duration()),
        },
        RequestError::Api(api) => classify_api(api),
        RequestError::MigrateToChatId(id) => ChannelError::Unreachable(format!(
            "the group became the supergroup {id}; the customer must write there again"
        )),
        e @ (RequestError::Network(_) | RequestError::InvalidJson { .. } | RequestError::Io(_)) => {
            ChannelError::retryable(format!("Telegram: {e}"))
        }
    }
}

fn classify_api(api: ApiError) -> ChannelError {
    use ApiError::*;
    match api {
        BotBlocked
        | BotKicked
        | BotKickedFromSupergroup
        | BotKickedFromChannel
        | UserDeactivated
        | CantInitiateConversation
        | CantTalkWithBots
        | ChatNotFound => ChannelError::Unreachable(api.to_string()),
        InvalidToken => ChannelError::Permanent(format!("Telegram: {api} (check the token)")),
        Unknown(text) => {
            if text.starts_with("Forbidden") {
                ChannelError::Unreachable(text)
            } else if text.starts_with("Bad Request") {
                ChannelError::Permanent(text)
            } else {
                // "Internal Server Error", "Bad Gateway", "Too Many Requests" without a wait.
                ChannelError::retryable(format!("Telegram: {text}"))
            }
        }
        other => ChannelError::Permanent(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_channel::OutboundAuthor;

    fn outbound(text: &str, format: TextFormat) -> Outbound {
        Outbound {
            id: "o1".into(),
            author: OutboundAuthor::Bot,
            text: text.into(),
            buttons: vec![],
            in_reply_to: None,
            format,
            attachments: vec![],
        }
    }

    #[test]
    fn agent_text_is_escaped_and_bot_markdown_rendered() {
        let agent = outbound("<b>not bold</b> & **not either** 1 < 2", TextFormat::Plain);
        assert_eq!(
            render_parts(&agent),
            ["&lt;b&gt;not bold&lt;/b&gt; &amp; **not either** 1 &lt; 2"]
        );
        let bot = outbound(
            "**Returns** within _30 days_\n- keep `A<1>`",
            TextFormat::Markdown,
        );
        assert_eq!(
            render_parts(&bot),
            ["<b>Returns</b> within <i>30 days</i>\n• keep <code>A&lt;1&gt;</code>"]
        );
    }

    #[test]
    fn failures_map_to_what_the_outbox_should_do() {
        use teloxide::types::Seconds;
        assert!(matches!(
            classify(RequestError::RetryAfter(Seconds::from_seconds(7))),
            ChannelError::Retryable { after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify(RequestError::Api(ApiError::BotBlocked)),
            ChannelError::Unreachable(_)
        ));
        assert!(matches!(
            classify(RequestError::Api(ApiError::Unknown(
                "Forbidden: bot was blocked by the user in a new way".into()
            ))),
            ChannelError::Unreachable(_)
        ));
        assert!(matches!(
            classify(RequestError::Api(ApiError::Unknown(
                "Internal Server Error".into()
            ))),
            ChannelError::Retryable { after: None, .. }
        ));
        assert!(matches!(
            classify(RequestError::Api(ApiError::MessageTextIsEmpty)),
            ChannelError::Permanent(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_spaces_one_chat_and_caps_the_bot() {
        let pacer = Pacer::new(30, Duration::from_secs(1), Duration::from_secs(3));
        let start = Instant::now();
        for _ in 0..3 {
            pacer.wait(1).await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(2),
            "1 s apart in a chat"
        );
        let start = Instant::now();
        for chat in 100..130 {
            pacer.wait(chat).await;
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(960) && elapsed <= Duration::from_millis(1001),
            "30 chats take a second at 30/s: {elapsed:?}"
        );
        let start = Instant::now();
        pacer.wait(-5).await;
        pacer.wait(-5).await;
        assert!(start.elapsed() >= Duration::from_secs(3), "groups 20/min");
    }
}
