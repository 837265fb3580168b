//! A web hook request: the signature headers (first two lines) and the JSON body (the rest).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_webhook::{HookMessage, signature};

const SECRET: &[u8] = b"fuzz-secret";
const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let ts = parts.next().map(String::from_utf8_lossy);
    let sig = parts.next().map(String::from_utf8_lossy);
    let body = parts.next().unwrap_or_default();
    let verdict = signature::verify(SECRET, ts.as_deref(), sig.as_deref(), body, NOW, 300);
    // A forged request never passes: only our own signature of these exact bytes does.
    if verdict.is_ok() {
        let ts: i64 = ts.as_deref().unwrap().trim().parse().unwrap();
        assert_eq!(
            sig.as_deref().unwrap().trim(),
            signature::sign(SECRET, ts, body)
        );
    }
    // The signed pair itself always verifies.
    let good = signature::sign(SECRET, NOW, body);
    assert!(signature::verify(SECRET, Some(&NOW.to_string()), Some(&good), body, NOW, 300).is_ok());
    let _ = serde_json::from_slice::<HookMessage>(body);
});
