//! The one resuming prefix watch under [`crate::Config`]'s and [`crate::Registry`]'s watchers:
//! the stream is (re)opened at the revision the caller has not seen yet, a canceled or broken
//! stream is closed and reported, and the caller decides what a compaction means for it.

use std::time::Duration;

use etcd_client::{WatchOptions, WatchResponse, WatchStream};

use crate::{
    error::{Error, EtcdContext, Result},
    queue::Etcd,
};

/// A watch of every key under `prefix` that can be re-opened from any revision.
#[derive(Debug)]
pub(crate) struct ResumingWatch {
    client: Etcd,
    prefix: String,
    /// The operation named in errors, e.g. `watch config`.
    op: &'static str,
    /// Ask etcd for progress notifications (answers without events while idle).
    progress_notify: bool,
    stream: Option<WatchStream>,
}

impl ResumingWatch {
    pub(crate) fn new(
        client: Etcd,
        prefix: String,
        op: &'static str,
        progress_notify: bool,
    ) -> Self {
        Self {
            client,
            prefix,
            op,
            progress_notify,
            stream: None,
        }
    }

    /// The watched prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The next answer of the stream, opening it at revision `from` when none is open. A
    /// stream that ends or that etcd cancels is closed: [`Error::Compacted`] when `from` was
    /// compacted away, else [`Error::Etcd`]; the caller resumes with its next `from`.
    pub(crate) async fn message(&mut self, from: i64) -> Result<WatchResponse> {
        if self.stream.is_none() {
            let mut options = WatchOptions::new().with_prefix().with_start_revision(from);
            if self.progress_notify {
                options = options.with_progress_notify();
            }
            let stream = self
                .client
                .watch_client()
                .watch(self.prefix.as_str(), Some(options))
                .await
                .op(self.op)?;
            self.stream = Some(stream);
        }
        let op = self.op;
        let stream = self.stream.as_mut().ok_or_else(|| Error::Etcd {
            op,
            source: etcd_client::Error::WatchError("no stream".to_string()),
        })?;
        let resp = stream
            .message()
            .await
            .op(self.op)?
            .ok_or_else(|| Error::Etcd {
                op: self.op,
                source: etcd_client::Error::WatchError("stream ended".to_string()),
            })?;
        if resp.canceled() {
            self.stream = None;
            if resp.compact_revision() > 0 {
                return Err(Error::Compacted {
                    prefix: self.prefix.clone(),
                    wanted: from,
                    compact_revision: resp.compact_revision(),
                });
            }
            return Err(Error::Etcd {
                op: self.op,
                source: etcd_client::Error::WatchError(resp.cancel_reason().to_string()),
            });
        }
        Ok(resp)
    }

    /// After an error: counts the resume (`watch_resumes`), drops the stream and waits `pause`
    /// before the next [`ResumingWatch::message`] re-opens it.
    pub(crate) async fn interrupted(&mut self, pause: Duration) {
        crate::stats::watch_resume();
        self.stream = None;
        tokio::time::sleep(pause).await;
    }
}
