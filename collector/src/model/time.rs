//! Time helpers with no state: the wall clock in Unix milliseconds, etcd ids as hex, and the
//! one duration parser every flag, config field and REST parameter uses.

use std::time::Duration;

/// Parses a humantime duration (`30s`, `500ms`, `1m30s`) that is not zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be greater than zero"));
    }
    Ok(d)
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An etcd member or cluster id as etcdctl prints it (lower-case hex), since JSON numbers lose
/// precision above 2^53.
pub fn hex_id(id: u64) -> String {
    format!("{id:x}")
}
