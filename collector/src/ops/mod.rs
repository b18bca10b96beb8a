//! Layer 3: acting on etcd — benchmarks ([`bench`](mod@bench)).

pub mod bench;
