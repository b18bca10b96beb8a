//! Process-wide counters of every retry, loss and resume the patterns go through, so that an
//! embedding binary can export them as metrics (e.g. as `etcdmon_patterns_*` counters).

use std::sync::atomic::{AtomicU64, Ordering};

static KEEPALIVE_FAILURES: AtomicU64 = AtomicU64::new(0);
static SESSIONS_LOST: AtomicU64 = AtomicU64::new(0);
static WATCH_RESUMES: AtomicU64 = AtomicU64::new(0);
static LEADERSHIP_LOST: AtomicU64 = AtomicU64::new(0);
static CLEANUP_FAILURES: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lease keep-alive attempts that failed or timed out (each is retried until the deadline).
    pub keepalive_failures: u64,
    /// Sessions that ended because their lease expired or its local deadline passed.
    pub sessions_lost: u64,
    /// Watches re-established after a stream error, from the last revision seen.
    pub watch_resumes: u64,
    /// Leadership terms that ended other than by `resign`.
    pub leadership_lost: u64,
    /// Best-effort deletes (guard drop, cancelled acquisition) that failed; the lease frees them.
    pub cleanup_failures: u64,
}

/// Reads the counters.
pub fn snapshot() -> Stats {
    Stats {
        keepalive_failures: KEEPALIVE_FAILURES.load(Ordering::Relaxed),
        sessions_lost: SESSIONS_LOST.load(Ordering::Relaxed),
        watch_resumes: WATCH_RESUMES.load(Ordering::Relaxed),
        leadership_lost: LEADERSHIP_LOST.load(Ordering::Relaxed),
        cleanup_failures: CLEANUP_FAILURES.load(Ordering::Relaxed),
    }
}

pub(crate) fn keepalive_failure() {
    KEEPALIVE_FAILURES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn session_lost() {
    SESSIONS_LOST.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn watch_resume() {
    WATCH_RESUMES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn leadership_lost() {
    LEADERSHIP_LOST.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn cleanup_failure() {
    CLEANUP_FAILURES.fetch_add(1, Ordering::Relaxed);
}
