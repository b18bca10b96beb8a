//! The generic webhook: the alert as JSON, optionally signed with HMAC-SHA256 over the exact
//! body (`X-Etcdmon-Signature: sha256=<hex>`), so receivers can check it came from us.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::rfc3339;
use crate::analysis::alerting::lifecycle::Alert;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Etcdmon-Signature";

/// `{"version": "1", "status": "firing|resolved", "alert": {...}, "sent_at": "..."}`.
pub fn payload(alert: &Alert) -> serde_json::Value {
    json!({
        "version": "1",
        "status": alert.state.as_str(),
        "alert": alert,
        "starts_at": rfc3339(alert.fired_at_ms.unwrap_or(alert.active_since_ms)),
        "ends_at": alert.resolved_at_ms.map(rfc3339),
        "sent_at": rfc3339(crate::model::time::now_ms()),
    })
}

/// `sha256=<hex of HMAC-SHA256(key, body)>`.
pub fn sign(key: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
