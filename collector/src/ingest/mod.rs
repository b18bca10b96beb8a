//! The collector's gRPC side: agents push batches (`AgentIngest.Push`), any consumer
//! subscribes to the joined event stream (`EventStream.Subscribe`).
//!
//! `server` holds the tonic services (TLS, bearer token, health, reflection); `registry` keeps
//! each agent's sequence bookkeeping (gaps counted exactly) and its latest status; `join`
//! matches an agent's process identities to MemberList entries and derives the per-member
//! kernel view; `fanout` delivers events to subscribers, each behind its own bounded buffer;
//! `watch` turns etcd watch responses on configured prefixes into events on the same stream.

pub mod fanout;
pub mod join;
pub mod registry;
pub mod server;
pub mod watch;

pub use fanout::Fanout;
pub use registry::AgentRegistry;
