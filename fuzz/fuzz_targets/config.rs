//! The config file: any text gives a config or problems with lines, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, "fuzz.toml") {
        assert!(
            !e.problems.is_empty(),
            "an error names at least one problem"
        );
        let _ = e.to_string();
    }
});
