//! Inbound mail (any bytes an IMAP server hands over) → our message model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_email::mime;

fuzz_target!(|raw: &[u8]| {
    if let Some(mail) = mime::parse(raw) {
        // What the rest of the pipeline does with it.
        let _ = mime::strip_quotes(&mail.full_text);
        let _ = mime::clean_id(&mail.message_id);
        assert!(
            !mail.message_id.is_empty(),
            "a parsed mail always has an id"
        );
    }
});
