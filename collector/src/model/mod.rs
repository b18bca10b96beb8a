//! Layer 0: the collector's data and pure helpers. No I/O, no tasks; every other layer may use it.

pub mod cluster;
pub mod config;
pub mod exposition;
pub mod series;
pub mod sync;
pub mod telemetry;
pub mod time;
pub mod window;
