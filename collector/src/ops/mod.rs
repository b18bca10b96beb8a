//! Layer 3: acting on etcd — benchmarks ([`bench`]).

pub mod bench;
