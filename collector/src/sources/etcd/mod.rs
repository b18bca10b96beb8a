//! The etcd v3 API side: connection settings ([`endpoint`]), connections ([`client`]), the per-cluster health loop ([`health`]) with
//! its member-list ([`members`]) and leader ([`leader`]) bookkeeping, latency [`probe`]s, and
//! certificate expiry ([`certs`]).

pub mod certs;
pub mod client;
pub mod endpoint;
pub mod health;
pub mod leader;
pub mod members;
pub mod probe;
