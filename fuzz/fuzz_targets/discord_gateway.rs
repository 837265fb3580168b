//! A Discord gateway payload (what the WebSocket delivers) as serenity parses it, and the
//! message text through our rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serenity::model::event::{Event, GatewayEvent};
use switchboard_discord::render;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<GatewayEvent>(data) else {
        return;
    };
    if let GatewayEvent::Dispatch(_, Event::MessageCreate(m)) = event {
        let escaped = render::escape(&m.message.content);
        assert!(escaped.len() >= m.message.content.len());
        // Any text as a reply id: the nonce stays within Discord's 25 characters.
        assert!(render::nonce(&m.message.content, usize::MAX).len() <= 25);
    }
});
