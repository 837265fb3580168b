//! HMAC-SHA256 request signing, shared by inbound web hooks and outbound callbacks.
//!
//! The signed string is `"{timestamp}.{body}"`; the header carries `v1=<hex digest>`. A
//! timestamp outside the replay window is refused even with a valid digest, so a captured
//! request cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header with the unix time (seconds) the sender signed at.
pub const TIMESTAMP_HEADER: &str = "x-switchboard-timestamp";
/// Header with `v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` signed at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("v1={}", hex::encode(digest))
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("timestamp outside the {0}-second window")]
    Stale(u64),
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a request's signature headers against `body`, in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
    window_secs: u64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed(TIMESTAMP_HEADER))?;
    if now_unix.abs_diff(ts) > window_secs {
        return Err(SignatureError::Stale(window_secs));
    }
    let given = signature
        .trim()
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Malformed(SIGNATURE_HEADER))?;
    let expected = mac(secret, timestamp.trim(), body).finalize().into_bytes();
    if expected.as_slice().ct_eq(&given).into() {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn round_trip() {
        let sig = sign(b"k", NOW, b"{}");
        assert_eq!(
            verify(b"k", Some(&NOW.to_string()), Some(&sig), b"{}", NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn rejects_wrong_key_body_and_time() {
        let sig = sign(b"k", NOW, b"{}");
        let ts = NOW.to_string();
        assert_eq!(
            verify(b"x", Some(&ts), Some(&sig), b"{}", NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", Some(&ts), Some(&sig), b"{ }", NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", Some(&ts), Some(&sig), b"{}", NOW + 301, 300),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify(b"k", Some(&ts), Some(&sig), b"{}", NOW - 301, 300),
            Err(SignatureError::Stale(300))
        );
        // The timestamp is part of what is signed: moving it breaks the signature.
        let moved = (NOW + 1).to_string();
        assert_eq!(
            verify(b"k", Some(&moved), Some(&sig), b"{}", NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rejects_missing_and_malformed_headers() {
        let ts = NOW.to_string();
        assert_eq!(
            verify(b"k", None, Some("v1=00"), b"", NOW, 300),
            Err(SignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            verify(b"k", Some(&ts), None, b"", NOW, 300),
            Err(SignatureError::Missing(SIGNATURE_HEADER))
        );
        assert_eq!(
            verify(b"k", Some("soon"), Some("v1=00"), b"", NOW, 300),
            Err(SignatureError::Malformed(TIMESTAMP_HEADER))
        );
        assert_eq!(
            verify(b"k", Some(&ts), Some("sha256=00"), b"", NOW, 300),
            Err(SignatureError::Malformed(SIGNATURE_HEADER))
        );
        assert_eq!(
            verify(b"k", Some(&ts), Some("v1=zz"), b"", NOW, 300),
            Err(SignatureError::Malformed(SIGNATURE_HEADER))
        );
    }
}
