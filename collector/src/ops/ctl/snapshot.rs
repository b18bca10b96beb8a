//! `snapshot save`: stream a member's backend to a file, then verify and describe it.
//!
//! etcd's Snapshot stream is the bbolt database followed by the SHA-256 of those bytes (32
//! bytes); `etcdctl snapshot restore` refuses a file whose trailer does not match (unless
//! `--skip-hash-check`). We check the same trailer after writing, check the bbolt magic of the
//! first meta page, and write `FILE.meta.json` beside the file with the revision, the member,
//! the size and the SHA-256 of the whole file, so a later copy can be checked with
//! `sha256sum`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::conn::any_client;
use crate::model::config::ClusterConfig;

/// bbolt's magic number, in the meta page at offset 16 (after the 16-byte page header).
const BOLT_MAGIC: u32 = 0xED0C_DAED;

/// Why a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// etcd failed or could not be reached.
    #[error("{0}")]
    Etcd(String),
    /// Writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not verify.
    #[error("{path}: verification failed: {reason}")]
    Verify {
        /// The file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
}

/// `FILE.meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The file the metadata describes (its name only).
    pub file: String,
    /// Revision of the member just before the snapshot stream opened (the snapshot holds at
    /// least this revision).
    pub revision: i64,
    /// Member that sent it, hex.
    pub member_id: String,
    /// Endpoint it was read from.
    pub endpoint: String,
    /// etcd version of that member.
    pub etcd_version: String,
    /// Bytes in the file (database + 32-byte SHA-256 trailer).
    pub size: u64,
    /// SHA-256 of the whole file, hex (what `sha256sum FILE` prints).
    pub sha256: String,
    /// The trailer etcd appended (SHA-256 of the database bytes), hex; verified.
    pub db_sha256: String,
    /// Milliseconds since the epoch when written.
    pub created_unix_ms: u64,
}

/// The sidecar path of `file`: `FILE.meta.json`.
pub fn meta_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".meta.json");
    PathBuf::from(s)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Streams a snapshot from the first answering endpoint into `file` (through `FILE.part`,
/// renamed only after the trailer verifies), writes `FILE.meta.json` and verifies both.
pub async fn save(
    config: &ClusterConfig,
    file: &Path,
    timeout: Duration,
) -> Result<SnapshotMeta, SnapshotError> {
    let (endpoint, mut client) = any_client(config, timeout)
        .await
        .map_err(|e| SnapshotError::Etcd(e.to_string()))?;
    let status = client
        .status()
        .await
        .map_err(|e| SnapshotError::Etcd(format!("{endpoint}: {e}")))?;
    let mut stream = client
        .snapshot()
        .await
        .map_err(|e| SnapshotError::Etcd(format!("{endpoint}: {e}")))?;
    let part = {
        let mut s = file.as_os_str().to_owned();
        s.push(".part");
        PathBuf::from(s)
    };
    let mut out = std::fs::File::create(&part).map_err(io(&part))?;
    // etcd 3.4 does not fill the Snapshot stream's header: the revision is the member's just
    // before the stream opened (the snapshot holds at least that revision).
    let revision = status.header().map_or(0, |h| h.revision());
    let member_id = status.header().map_or(0, |h| h.member_id());
    let mut whole = Sha256::new();
    let mut size = 0u64;
    loop {
        let msg = tokio::time::timeout(timeout, stream.message())
            .await
            .map_err(|_| {
                SnapshotError::Etcd(format!("{endpoint}: snapshot stalled for {timeout:?}"))
            })?
            .map_err(|e| SnapshotError::Etcd(format!("{endpoint}: {e}")))?;
        let Some(msg) = msg else { break };
        out.write_all(msg.blob()).map_err(io(&part))?;
        whole.update(msg.blob());
        size += msg.blob().len() as u64;
    }
    out.sync_all().map_err(io(&part))?;
    drop(out);
    let db_sha256 = verify_file(&part)?;
    std::fs::rename(&part, file).map_err(io(file))?;
    let meta = SnapshotMeta {
        file: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        revision,
        member_id: format!("{member_id:x}"),
        endpoint,
        etcd_version: status.version().to_string(),
        size,
        sha256: hex::encode(whole.finalize()),
        db_sha256,
        created_unix_ms: crate::model::time::now_ms(),
    };
    let meta_file = meta_path(file);
    let text = serde_json::to_string_pretty(&meta).map_err(|e| SnapshotError::Io {
        path: meta_file.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&meta_file, text + "\n").map_err(io(&meta_file))?;
    verify(file)?;
    Ok(meta)
}

/// Checks the etcd trailer (SHA-256 of the database) and the bbolt magic; returns the trailer
/// as hex.
pub fn verify_file(path: &Path) -> Result<String, SnapshotError> {
    let data = std::fs::read(path).map_err(io(path))?;
    let fail = |reason: String| SnapshotError::Verify {
        path: path.to_path_buf(),
        reason,
    };
    if data.len() < 4096 + 32 {
        return Err(fail(format!(
            "{} bytes is too small for a snapshot",
            data.len()
        )));
    }
    let (db, trailer) = data.split_at(data.len() - 32);
    let computed = Sha256::digest(db);
    if computed.as_slice() != trailer {
        return Err(fail(format!(
            "the SHA-256 trailer {} does not match the database's {}",
            hex::encode(trailer),
            hex::encode(computed)
        )));
    }
    let magic = u32::from_le_bytes([db[16], db[17], db[18], db[19]]);
    if magic != BOLT_MAGIC {
        return Err(fail(format!("not a bbolt database (magic {magic:#x})")));
    }
    Ok(hex::encode(trailer))
}

/// Verifies `file` against its trailer and against `FILE.meta.json` (size and SHA-256).
pub fn verify(file: &Path) -> Result<SnapshotMeta, SnapshotError> {
    let db_sha = verify_file(file)?;
    let meta_file = meta_path(file);
    let text = std::fs::read_to_string(&meta_file).map_err(io(&meta_file))?;
    let meta: SnapshotMeta = serde_json::from_str(&text).map_err(|e| SnapshotError::Verify {
        path: meta_file.clone(),
        reason: e.to_string(),
    })?;
    let data = std::fs::read(file).map_err(io(file))?;
    let sha = hex::encode(Sha256::digest(&data));
    if sha != meta.sha256 || data.len() as u64 != meta.size || db_sha != meta.db_sha256 {
        return Err(SnapshotError::Verify {
            path: file.to_path_buf(),
            reason: format!(
                "file ({} B, sha256 {sha}) differs from {} ({} B, sha256 {})",
                data.len(),
                meta_file.display(),
                meta.size,
                meta.sha256
            ),
        });
    }
    Ok(meta)
}
