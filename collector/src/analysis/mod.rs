//! Layer 2: turns state into judgements — alert rules and their lifecycle ([`alerting`]),
//! per-member diagnoses ([`diagnosis`]) and the graded performance report ([`report`]).

pub mod alerting;
pub mod diagnosis;
pub mod report;
