//! What the agent and the collector both need from their process, written once: the shutdown
//! signal, the retry backoff and the lock helpers ([`sync`]). A leaf crate: it depends on no
//! other etcd-monitor crate, so either binary can use it without a new dependency between them.

use std::time::Duration;

pub mod sync;

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what Kubernetes sends), and logs that the process
/// is shutting down. A signal that cannot be listened for never fires, so a failure to install
/// one handler does not stop the process at start-up.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("Shutting down.");
}

/// Exponential backoff: the first delay is `initial`, each failure doubles it up to `max`, a
/// success starts again from `initial`. With jitter, each delay is drawn uniformly within
/// ±`jitter` of the nominal one, so many clients that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    next: Duration,
}

impl Backoff {
    /// Doubling from `initial` up to `max` (`max` below `initial` counts as `initial`), no jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            jitter: 0.0,
            next: initial,
        }
    }

    /// The same with each delay spread by ±`ratio` (clamped to 0..=1; 0.2 is ±20 %).
    pub fn with_jitter(mut self, ratio: f64) -> Self {
        self.jitter = if ratio.is_finite() {
            ratio.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The delay before the next attempt; doubles the one after it.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        if self.jitter == 0.0 {
            return nominal;
        }
        let factor = rand::random_range(1.0 - self.jitter..=1.0 + self.jitter);
        nominal.mul_f64(factor)
    }

    /// The nominal delay of attempt `attempt` (0-based) without changing this backoff: what
    /// `next_delay` returns after `attempt` failures, before jitter.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// After a success: the next delay is `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000].map(|n| n * MS));
        b.reset();
        assert_eq!(b.next_delay(), 100 * MS);
        assert_eq!(b.nominal(0), 100 * MS);
        assert_eq!(b.nominal(3), 800 * MS);
        assert_eq!(b.nominal(40), 1000 * MS);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let mut b = Backoff::new(100 * MS, 10_000 * MS).with_jitter(0.2);
        for nominal in [100, 200, 400, 800, 1600] {
            let d = b.next_delay();
            assert!(
                d >= nominal * 8 / 10 * MS && d <= nominal * 12 / 10 * MS,
                "{d:?} for {nominal} ms"
            );
        }
    }

    #[test]
    fn a_cap_below_the_start_is_the_start() {
        let mut b = Backoff::new(250 * MS, 10 * MS);
        assert_eq!(b.next_delay(), 250 * MS);
        assert_eq!(b.next_delay(), 250 * MS);
    }
}
