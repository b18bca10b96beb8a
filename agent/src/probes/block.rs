//! `block:block_rq_issue`, `block:block_rq_complete`, `block:block_bio_queue`: device service
//! time under the members' data dirs and who else issues I/O there. Optional.

use super::{Probe, ProbeGroup};

const fn block(name: &'static str) -> Probe {
    Probe {
        program: name,
        category: "block",
        name,
        required: false,
        group: ProbeGroup::Block,
    }
}

/// The block probes.
pub const PROBES: &[Probe] = &[
    block("block_rq_issue"),
    block("block_rq_complete"),
    block("block_bio_queue"),
];
