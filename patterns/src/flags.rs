//! `FeatureFlags`: on/off switches and percentage rollouts by a stable hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    config::Config,
    error::{Error, Result},
};

/// One flag as stored (JSON) at `<prefix>/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// The master switch: `false` turns the feature off for everyone.
    pub enabled: bool,
    /// Share of subjects that get the feature while enabled, 0–100.
    #[serde(default = "full")]
    pub percentage: u8,
}

fn full() -> u8 {
    100
}

impl Flag {
    /// Whether `subject` gets the feature `name` under this flag.
    pub fn allows(&self, name: &str, subject: &str) -> bool {
        self.enabled && rollout_bucket(name, subject) < u32::from(self.percentage.min(100)) * 100
    }
}

/// The subject's rollout bucket for a flag, in `0..10000` (hundredths of a percent).
///
/// **Stable by construction:** the first 8 bytes, big-endian, of
/// `SHA-256(flag_name || 0x00 || subject_id)`, modulo 10000. It depends on nothing but the two
/// strings — not on the process, the platform, the Rust version or this crate's version — so every
/// replica and every release puts a subject in the same bucket, and raising a rollout from 10 % to
/// 20 % only adds subjects. The flag name is part of the input so that different flags roll out to
/// different subjects. (std's `DefaultHasher` would not do: its output may change between Rust
/// releases.)
pub fn rollout_bucket(flag: &str, subject: &str) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(flag.as_bytes());
    hasher.update([0u8]);
    hasher.update(subject.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 10_000) as u32
}

/// Feature flags stored under a prefix through [`Config`].
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> etcd_monitor_patterns::Result<()> {
/// use etcd_monitor_patterns::{Flag, FeatureFlags};
/// let flags = FeatureFlags::new(client, "/flags");
/// flags.set("new-ui", Flag { enabled: true, percentage: 25 }).await?;
/// if flags.is_enabled("new-ui", "user-42").await? {
///     println!("user-42 is in the 25 %");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FeatureFlags {
    config: Config,
}

impl FeatureFlags {
    /// Flags under `prefix`.
    pub fn new(client: etcd_client::Client, prefix: &str) -> Self {
        Self {
            config: Config::new(client, prefix),
        }
    }

    /// The flag's definition, `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Flag>> {
        self.config.get(name).await
    }

    /// Creates or replaces a flag. Rejects a percentage above 100.
    pub async fn set(&self, name: &str, flag: Flag) -> Result<i64> {
        if flag.percentage > 100 {
            return Err(Error::InvalidArgument {
                field: "percentage",
                reason: format!("{} is above 100", flag.percentage),
            });
        }
        self.config.set(name, &flag).await
    }

    /// Whether `subject` gets feature `name` now; a missing flag is off.
    pub async fn is_enabled(&self, name: &str, subject: &str) -> Result<bool> {
        Ok(self
            .get(name)
            .await?
            .is_some_and(|flag| flag.allows(name, subject)))
    }

    /// The underlying [`Config`], e.g. to watch flag changes.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_pinned() {
        // Pinned values (computed independently: Python's hashlib, same definition). A change
        // here would move subjects between rollout groups in a running fleet.
        assert_eq!(rollout_bucket("new-ui", "user-1"), 3951);
        assert_eq!(rollout_bucket("new-ui", "user-2"), 909);
        assert_eq!(rollout_bucket("other", "user-1"), 9913);
    }

    #[test]
    fn rollout_share_is_close_to_percentage_and_monotonic() {
        let at = |p: u8| {
            let flag = Flag {
                enabled: true,
                percentage: p,
            };
            (0..10_000)
                .filter(|i| flag.allows("rollout", &format!("subject-{i}")))
                .count()
        };
        let ten = at(10);
        let twenty = at(20);
        assert!((800..1200).contains(&ten), "10 % gave {ten}");
        assert!((1800..2200).contains(&twenty), "20 % gave {twenty}");
        // Raising the percentage only adds subjects.
        for i in 0..10_000 {
            let s = format!("subject-{i}");
            let f10 = Flag {
                enabled: true,
                percentage: 10,
            };
            let f20 = Flag {
                enabled: true,
                percentage: 20,
            };
            assert!(!f10.allows("rollout", &s) || f20.allows("rollout", &s));
        }
        assert_eq!(at(0), 0);
        assert_eq!(at(100), 10_000);
        let off = Flag {
            enabled: false,
            percentage: 100,
        };
        assert!(!off.allows("rollout", "subject-1"));
    }
}
