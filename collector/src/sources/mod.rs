//! Layer 1: what reads the world — etcd's v3 API and probes, members' /metrics, agents' pushes.

pub mod etcd;
pub mod ha;
pub mod ingest;
pub mod scrape;
