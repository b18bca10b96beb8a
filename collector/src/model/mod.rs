//! Layer 0: data and pure helpers, no I/O and no tasks.

pub mod exposition;
