//! Layer 2: turns state into judgements — alert rules and their lifecycle ([`alerting`]) and
//! per-member diagnoses ([`diagnosis`]).

pub mod alerting;
pub mod diagnosis;
