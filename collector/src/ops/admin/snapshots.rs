//! Snapshots taken over REST: kept in `<data-dir>/snapshots/`, bounded by count and by total
//! size (the newest is always kept; older ones are deleted, and counted, once a new one
//! verifies), listed and opened by name only — a name is checked against what the directory
//! holds, so a request can never reach a path outside it.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::Serialize;
use utoipa::ToSchema;

use crate::ops::ctl::snapshot::meta_path;

/// Default `--admin-max-snapshots`.
pub const DEFAULT_MAX_SNAPSHOTS: usize = 3;
/// Default `--admin-snapshot-max-size-mb` (total of the kept files).
pub const DEFAULT_MAX_SNAPSHOT_MB: u64 = 4096;

/// One kept snapshot.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnapshotFile {
    /// File name (what the download route takes).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Modification time, Unix ms.
    pub modified_ms: u64,
    /// `GET` this to download it (admin role).
    pub download_url: String,
}

/// The snapshot directory and its bounds.
#[derive(Debug, Default)]
pub struct SnapshotDir {
    dir: PathBuf,
    max_count: usize,
    max_bytes: u64,
    pruned: AtomicU64,
}

fn valid_name(name: &str) -> bool {
    name.starts_with("snapshot-")
        && name.ends_with(".db")
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.contains("..")
}

/// A cluster name as it may appear in a file name.
fn file_safe(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl SnapshotDir {
    /// `<data_dir>/snapshots`, keeping at most `max_count` files and `max_bytes` in total.
    pub fn new(data_dir: &Path, max_count: usize, max_bytes: u64) -> Self {
        Self {
            dir: data_dir.join("snapshots"),
            max_count: max_count.max(1),
            max_bytes,
            pruned: AtomicU64::new(0),
        }
    }

    /// The largest total the kept snapshots may reach, bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where job `job_id`'s snapshot of `cluster` goes (the directory is created).
    pub fn path_for(&self, cluster: &str, job_id: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        Ok(self.dir.join(format!(
            "snapshot-{}-{}.db",
            file_safe(cluster),
            file_safe(job_id)
        )))
    }

    /// The kept snapshots, newest first.
    pub fn list(&self) -> Vec<SnapshotFile> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<SnapshotFile> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let meta = e.metadata().ok()?;
                (valid_name(&name) && meta.is_file()).then(|| SnapshotFile {
                    download_url: format!("/api/v1/admin/snapshots/{name}"),
                    size: meta.len(),
                    modified_ms: meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_millis() as u64),
                    name,
                })
            })
            .collect();
        files.sort_by(|a, b| b.modified_ms.cmp(&a.modified_ms).then(b.name.cmp(&a.name)));
        files
    }

    /// The path of the kept snapshot `name`, if the directory holds it.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        if !valid_name(name) {
            return None;
        }
        self.list()
            .into_iter()
            .find(|f| f.name == name)
            .map(|f| self.dir.join(f.name))
    }

    /// Deletes the oldest snapshots beyond the count or size bound, always keeping `keep`
    /// (the one just written); returns how many it deleted.
    pub fn prune(&self, keep: &str) -> u64 {
        let mut total = 0u64;
        let mut removed = 0u64;
        for (i, f) in self.list().into_iter().enumerate() {
            total += f.size;
            let over = i >= self.max_count || total > self.max_bytes;
            if over && f.name != keep {
                let path = self.dir.join(&f.name);
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        removed += 1;
                        let _ = std::fs::remove_file(meta_path(&path));
                        tracing::info!(file = %path.display(), "Old snapshot deleted (bound reached).");
                    }
                    Err(error) => {
                        tracing::warn!(file = %path.display(), %error, "Cannot delete an old snapshot.");
                    }
                }
                total -= f.size;
            }
        }
        self.pruned.fetch_add(removed, Ordering::Relaxed);
        removed
    }

    /// Snapshots deleted by the bounds so far.
    pub fn pruned(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_the_bounds_keep_the_newest() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let snaps = SnapshotDir::new(dir.path(), 2, 1_000_000);
        for name in [
            "../x.db",
            "snapshot-a/../../b.db",
            "history.db",
            "snapshot-.part",
        ] {
            assert!(snaps.find(name).is_none(), "{name}");
        }
        let mut paths = Vec::new();
        for i in 0..3 {
            let p = snaps.path_for("my cluster", &format!("job{i}"))?;
            std::fs::write(&p, vec![0u8; 10])?;
            // Distinct modification times order them.
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            std::fs::File::options()
                .write(true)
                .open(&p)?
                .set_modified(t)?;
            paths.push(p);
        }
        assert!(
            paths[0]
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snapshot-my_cluster-")
        );
        assert_eq!(snaps.prune("snapshot-my_cluster-job2.db"), 1);
        let names: Vec<String> = snaps.list().into_iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            ["snapshot-my_cluster-job2.db", "snapshot-my_cluster-job1.db"]
        );
        assert!(snaps.find("snapshot-my_cluster-job1.db").is_some());
        let tiny = SnapshotDir::new(dir.path(), 5, 15);
        assert_eq!(tiny.prune("snapshot-my_cluster-job2.db"), 1);
        assert_eq!(tiny.list().len(), 1);
        assert_eq!(tiny.pruned(), 1);
        Ok(())
    }
}
