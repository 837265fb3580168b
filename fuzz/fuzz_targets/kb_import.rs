//! Knowledge-base import lines (JSON Lines, as `switchboard kb import` and the API take them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::bot::kb::Entry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let entries: Vec<Entry> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let _ = switchboard::bot::live::check(&entries);
});
