//! The rails around a run: every key lives under `/etcd-monitor-bench/<run-id>/`, a run refuses
//! to start when that prefix already holds keys, and the prefix is deleted afterwards whatever
//! happened (success, errors, Ctrl-C, shutdown).

use etcd_client::{DeleteOptions, GetOptions, KvClient};

use crate::model::time::now_ms;

/// Root of every benchmark prefix.
pub const PREFIX_ROOT: &str = "/etcd-monitor-bench/";

/// A fresh run id: start time (Unix ms, hex) and 32 bits of per-process randomness, so two
/// runs started in the same millisecond (several runner processes) still differ.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mix = crate::ops::bench::workload::splitmix64(
        u64::from(std::process::id()) << 32 ^ u64::from(nanos) ^ seq,
    );
    format!("{:x}-{:08x}", now_ms(), mix as u32)
}

/// The prefix of run `run_id`.
pub fn prefix(run_id: &str) -> String {
    format!("{PREFIX_ROOT}{run_id}/")
}

/// Keys under `prefix` (a count-only range: no values travel).
pub async fn count(kv: &mut KvClient, prefix: &str) -> Result<u64, etcd_client::Error> {
    let resp = kv
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    Ok(u64::try_from(resp.count()).unwrap_or(0))
}

/// Deletes every key under `prefix`; returns how many were deleted.
pub async fn delete(kv: &mut KvClient, prefix: &str) -> Result<u64, etcd_client::Error> {
    let resp = kv
        .delete(prefix, Some(DeleteOptions::new().with_prefix()))
        .await?;
    Ok(u64::try_from(resp.deleted()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_differ_and_prefixes_are_scoped() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        let p = prefix(&a);
        assert!(p.starts_with(PREFIX_ROOT) && p.ends_with('/'), "{p}");
        assert!(!a.contains('/'));
    }
}
