//! A Bot API update (JSON, as getUpdates or a web hook delivers it) → what the channel does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_telegram::inbound::{self, GroupPolicy, Me};
use teloxide::types::Update;

fuzz_target!(|data: &[u8]| {
    let Ok(update) = serde_json::from_slice::<Update>(data) else {
        return;
    };
    let me = Me {
        id: 42,
        username: "support_bot".into(),
    };
    for policy in [GroupPolicy::Mentions, GroupPolicy::All, GroupPolicy::Off] {
        for topics in [false, true] {
            let _ = inbound::action(&update, &me, policy, topics);
        }
    }
});
