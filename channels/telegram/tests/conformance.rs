//! The channel conformance kit against the fake Bot API, through teloxide.

use std::sync::Arc;

use switchboard_channel::conformance::{self, Failure, Harness};
use switchboard_channel::{Channel, ChannelContext, ExternalThread};
use switchboard_telegram::fake::{FakeTelegram, Fault};
use switchboard_telegram::{TelegramChannel, TelegramConfig};

const TOKEN: &str = "777:conformance";

struct Telegram(FakeTelegram);

/// What a customer sees of Telegram HTML: the text without tags, entities decoded.
fn visible(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[async_trait::async_trait]
impl Harness for Telegram {
    async fn connector(&self, ctx: ChannelContext) -> Arc<dyn Channel> {
        let config: TelegramConfig = toml::from_str(&format!(
            "token = \"{TOKEN}\"\napi_url = \"{}\"\npoll_timeout_secs = 1\nprivate_interval_ms = 0",
            self.0.url()
        ))
        .unwrap();
        Arc::new(TelegramChannel::build(config, ctx).unwrap())
    }

    async fn customer_says(&self, user: u32, message: u32, text: &str) -> ExternalThread {
        self.0
            .private_message(user.into(), "Kit", message.into(), text);
        ExternalThread(user.to_string())
    }

    async fn received(&self, thread: &ExternalThread) -> Vec<String> {
        self.0
            .sent()
            .into_iter()
            .filter(|s| s.chat_id.to_string() == thread.0)
            .filter_map(|s| s.text.map(|t| visible(&t)))
            .collect()
    }

    async fn fail_next_send(&self, failure: Failure) {
        let fault = match failure {
            Failure::Temporary => Fault::Reset,
            Failure::RateLimited(s) => Fault::RetryAfter(s),
            Failure::Blocked => Fault::Blocked,
        };
        self.0.fault("sendMessage", fault);
    }
}

#[tokio::test]
async fn telegram_meets_the_channel_contract() {
    let harness = Telegram(FakeTelegram::start(TOKEN).await);
    conformance::run(&harness).await;
}
