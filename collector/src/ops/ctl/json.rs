//! etcdctl 3.4's `-w json` shapes: protobuf JSON with the Go field names, zero values
//! omitted, keys and values base64, IDs as decimal numbers.

use serde_json::{Map, Value, json};

/// Standard base64 with padding (what Go's encoding/json does to `[]byte`).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Inserts `key: value` unless the value is a JSON zero (0, false, "", null, []).
pub fn put_nonzero(map: &mut Map<String, Value>, key: &str, value: Value) {
    let zero = match &value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    };
    if !zero {
        map.insert(key.to_string(), value);
    }
}

/// `ResponseHeader`.
pub fn header(h: Option<&etcd_client::ResponseHeader>) -> Value {
    let mut m = Map::new();
    if let Some(h) = h {
        put_nonzero(&mut m, "cluster_id", json!(h.cluster_id()));
        put_nonzero(&mut m, "member_id", json!(h.member_id()));
        put_nonzero(&mut m, "revision", json!(h.revision()));
        put_nonzero(&mut m, "raft_term", json!(h.raft_term()));
    }
    Value::Object(m)
}

/// The header's fields inlined at the top level, as etcdctl prints lease responses.
pub fn flat_header(h: Option<&etcd_client::ResponseHeader>) -> Map<String, Value> {
    match header(h) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `mvccpb.KeyValue`.
pub fn kv(kv: &etcd_client::KeyValue) -> Value {
    let mut m = Map::new();
    put_nonzero(&mut m, "key", json!(base64(kv.key())));
    put_nonzero(&mut m, "create_revision", json!(kv.create_revision()));
    put_nonzero(&mut m, "mod_revision", json!(kv.mod_revision()));
    put_nonzero(&mut m, "version", json!(kv.version()));
    put_nonzero(&mut m, "value", json!(base64(kv.value())));
    put_nonzero(&mut m, "lease", json!(kv.lease()));
    Value::Object(m)
}

/// `etcdserverpb.Member`.
pub fn member(m: &etcd_client::Member) -> Value {
    let mut o = Map::new();
    put_nonzero(&mut o, "ID", json!(m.id()));
    put_nonzero(&mut o, "name", json!(m.name()));
    put_nonzero(&mut o, "peerURLs", json!(m.peer_urls()));
    put_nonzero(&mut o, "clientURLs", json!(m.client_urls()));
    put_nonzero(&mut o, "isLearner", json!(m.is_learner()));
    Value::Object(o)
}

/// `RangeResponse`.
pub fn get(r: &etcd_client::GetResponse) -> Value {
    let mut o = Map::new();
    o.insert("header".to_string(), header(r.header()));
    put_nonzero(
        &mut o,
        "kvs",
        Value::Array(r.kvs().iter().map(kv).collect()),
    );
    put_nonzero(&mut o, "more", json!(r.more()));
    put_nonzero(&mut o, "count", json!(r.count()));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"1"), "MQ==");
        assert_eq!(base64(&[0xff, 0xfe, 0x00, 0x10]), "//4AEA==");
    }
}
