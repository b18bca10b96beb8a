//! Which request the i-th operation of a run is: its kind (put, range, txn-put), its key, and
//! the bytes of the value. Pure functions of the spec and the index, so any client can issue
//! any index and a mixed run has exactly the asked-for share of reads.

use etcd_client::{GetOptions, KvClient, Txn, TxnOp};

use crate::{
    ops::bench::spec::BenchSpec, ops::bench::spec::BenchmarkType, ops::bench::spec::Consistency,
    ops::bench::spec::KeyOrder,
};

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Put one key.
    Put,
    /// Range over one key.
    Get,
    /// A transaction with one put.
    TxnPut,
}

impl OpKind {
    /// Whether the operation writes.
    pub fn writes(self) -> bool {
        !matches!(self, OpKind::Get)
    }
}

/// SplitMix64: a fast, well-mixed hash of `x` (random key order, value bytes).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The operations of one run.
#[derive(Debug, Clone)]
pub struct Workload {
    kind: BenchmarkType,
    prefix: String,
    key_size: usize,
    key_space: u64,
    order: KeyOrder,
    seed: u64,
    write_share: f64,
    serializable: bool,
    value: Vec<u8>,
}

impl Workload {
    /// The workload of `spec` under `prefix` (which ends in `/`), seeded by `seed`.
    pub fn new(spec: &BenchSpec, prefix: &str, seed: u64) -> Self {
        let value = (0..spec.value_size)
            .map(|i| b'a' + (splitmix64(seed ^ i as u64) % 26) as u8)
            .collect();
        Self {
            kind: spec.kind,
            prefix: prefix.to_string(),
            key_size: spec.key_size,
            key_space: spec.key_space,
            order: spec.key_order,
            seed,
            write_share: 1.0 - spec.read_ratio,
            serializable: spec.consistency == Consistency::Serializable,
            value,
        }
    }

    /// The kind of operation `i`. In a mixed run operation `i` writes exactly when
    /// `floor((i + 1) · w) > floor(i · w)` for the write share `w`, so every prefix of the run
    /// has the asked-for share of writes (to within one operation).
    pub fn kind(&self, i: u64) -> OpKind {
        match self.kind {
            BenchmarkType::Write => OpKind::Put,
            BenchmarkType::Read => OpKind::Get,
            BenchmarkType::TxnPut => OpKind::TxnPut,
            BenchmarkType::Mixed => {
                let w = self.write_share;
                if ((i + 1) as f64 * w).floor() > (i as f64 * w).floor() {
                    OpKind::Put
                } else {
                    OpKind::Get
                }
            }
        }
    }

    /// Index in the key space of operation `i`.
    pub fn key_index(&self, i: u64) -> u64 {
        match self.order {
            KeyOrder::Sequential => i % self.key_space,
            KeyOrder::Random => splitmix64(self.seed ^ splitmix64(i)) % self.key_space,
        }
    }

    /// The key of operation `i`: the prefix, then the key index zero-padded to `key_size`.
    pub fn key(&self, i: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + self.key_size);
        key.extend_from_slice(self.prefix.as_bytes());
        key.extend_from_slice(
            format!("{:0width$}", self.key_index(i), width = self.key_size).as_bytes(),
        );
        key
    }

    /// Issues operation `i` on `kv`.
    pub async fn execute(&self, kv: &mut KvClient, i: u64) -> Result<OpKind, etcd_client::Error> {
        let kind = self.kind(i);
        let key = self.key(i);
        match kind {
            OpKind::Put => {
                kv.put(key, self.value.clone(), None).await?;
            }
            OpKind::Get => {
                let options = self
                    .serializable
                    .then(|| GetOptions::new().with_serializable());
                kv.get(key, options).await?;
            }
            OpKind::TxnPut => {
                kv.txn(Txn::new().and_then([TxnOp::put(key, self.value.clone(), None)]))
                    .await?;
            }
        }
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::bench::spec::digits;
    use crate::{ops::bench::spec::DEFAULT_MAX_OPS, ops::bench::spec::RawSpec};

    fn spec(body: &str) -> BenchSpec {
        let raw: RawSpec = serde_json::from_str(body).unwrap();
        raw.validate(&|f: &str| f.to_string(), DEFAULT_MAX_OPS)
            .unwrap()
    }

    #[test]
    fn mixed_has_the_asked_share_of_writes() {
        let w = Workload::new(&spec(r#"{"type":"mixed"}"#), "/p/", 1);
        let writes = (0..1000).filter(|i| w.kind(*i).writes()).count();
        assert_eq!(writes, 300);
        let w = Workload::new(&spec(r#"{"type":"mixed","read_ratio":0.5}"#), "/p/", 1);
        let writes = (0..10).filter(|i| w.kind(*i).writes()).count();
        assert_eq!(writes, 5);
    }

    #[test]
    fn keys_are_padded_and_stay_in_the_key_space() {
        let w = Workload::new(&spec(r#"{"key_space":1000,"key_size":6}"#), "/p/", 1);
        assert_eq!(w.key(7), b"/p/000007".to_vec());
        assert_eq!(w.key(1007), b"/p/000007".to_vec());
        let r = Workload::new(&spec(r#"{"key_space":50,"key_order":"random"}"#), "/p/", 9);
        let distinct: std::collections::HashSet<u64> = (0..5000).map(|i| r.key_index(i)).collect();
        assert_eq!(distinct.len(), 50);
        assert_eq!(digits(0), 1);
        assert_eq!(digits(99_999), 5);
    }
}
