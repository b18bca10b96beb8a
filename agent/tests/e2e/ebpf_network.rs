//! The network side: peer traffic between members is attributed to the right member pairs,
//! with kernel RTT and bytes; client connection churn is counted per member.

use crate::common;

use std::{collections::BTreeSet, time::Duration};

use etcd_monitor_tests::{http::prom_sum, wait_for};

fn label_pairs(text: &str, metric: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let member = l.split("member=\"").nth(1)?.split('"').next()?.to_string();
            let peer = l.split("peer=\"").nth(1)?.split('"').next()?.to_string();
            Some((member, peer))
        })
        .collect()
}

#[test]
fn peer_traffic_is_attributed_to_member_pairs() -> anyhow::Result<()> {
    if !common::require_root("peer_traffic_is_attributed_to_member_pairs")? {
        return Ok(());
    }
    let (cluster, agent) = common::cluster_with_agent()?;

    // Every put is a new HTTP connection to one member's client port (the JSON gateway).
    cluster.put_many("/net-e2e/", 600, 128)?;

    let names: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    let mut expected = BTreeSet::new();
    for a in &names {
        for b in &names {
            if a != b {
                expected.insert((a.clone(), b.clone()));
            }
        }
    }
    let text = wait_for("RTT for every member pair", Duration::from_secs(20), || {
        let text = agent.metrics().ok()?;
        (label_pairs(&text, "etcdmon_peer_rtt_seconds") == expected).then_some(text)
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: got {:?}",
            agent
                .metrics()
                .map(|t| label_pairs(&t, "etcdmon_peer_rtt_seconds"))
        )
    })?;

    // Every member pair carries traffic. A connection that closed before both of its ends were
    // seen is named by address only (never by an ephemeral port) and carries next to nothing.
    let all_peers = label_pairs(&text, "etcdmon_peer_bytes_total");
    assert!(
        expected.is_subset(&all_peers),
        "peer byte series {all_peers:?}"
    );
    let mut named = 0.0;
    let mut total = 0.0;
    for (member, peer) in &all_peers {
        let b = prom_sum(
            &text,
            "etcdmon_peer_bytes_total",
            &[("member", member), ("peer", peer)],
        )
        .unwrap_or(0.0);
        total += b;
        if expected.contains(&(member.clone(), peer.clone())) {
            named += b;
        } else {
            assert!(
                !peer.contains(':'),
                "unresolved peer label {peer} carries a port"
            );
        }
    }
    assert!(
        named >= 0.95 * total,
        "only {named} of {total} peer bytes attributed to member pairs"
    );
    let leader = cluster
        .leader_index()
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let leader = names[leader].as_str();
    for (member, peer) in &expected {
        let sent = prom_sum(
            &text,
            "etcdmon_peer_bytes_total",
            &[("member", member), ("peer", peer), ("direction", "sent")],
        )
        .unwrap_or(0.0);
        let received = prom_sum(
            &text,
            "etcdmon_peer_bytes_total",
            &[
                ("member", member),
                ("peer", peer),
                ("direction", "received"),
            ],
        )
        .unwrap_or(0.0);
        let rtt = prom_sum(
            &text,
            "etcdmon_peer_rtt_seconds",
            &[("member", member), ("peer", peer)],
        )
        .unwrap_or(0.0);
        eprintln!(
            "{member} -> {peer}: sent {sent} B, received {received} B, srtt {:.0} us",
            rtt * 1e6
        );
        // Raft traffic flows between the leader and each follower; two followers may
        // exchange nothing in a short window (their connection exists, as the RTT shows).
        let with_leader = leader == member.as_str() || leader == peer.as_str();
        assert!(
            !with_leader || sent + received > 0.0,
            "{member}->{peer} (one of them the leader) moved no bytes"
        );
        assert!(
            rtt > 0.0 && rtt < 0.1,
            "{member}->{peer}: loopback RTT {rtt}s"
        );
        assert!(
            prom_sum(
                &text,
                "etcdmon_peer_retransmits_total",
                &[("member", member), ("peer", peer)]
            )
            .is_some()
        );
    }
    // The leader sends the log: to each follower it sends more than it gets back.
    for follower in names.iter().filter(|n| n.as_str() != leader) {
        let out = prom_sum(
            &text,
            "etcdmon_peer_bytes_total",
            &[
                ("member", leader),
                ("peer", follower),
                ("direction", "sent"),
            ],
        )
        .unwrap_or(0.0);
        let back = prom_sum(
            &text,
            "etcdmon_peer_bytes_total",
            &[
                ("member", follower),
                ("peer", leader),
                ("direction", "sent"),
            ],
        )
        .unwrap_or(0.0);
        assert!(
            out > back,
            "leader {leader} sent {out} B to {follower}, which sent {back} B back"
        );
    }
    let opened: f64 = names
        .iter()
        .filter_map(|m| {
            prom_sum(
                &text,
                "etcdmon_client_connections_opened_total",
                &[("member", m)],
            )
        })
        .sum();
    let closed: f64 = names
        .iter()
        .filter_map(|m| {
            prom_sum(
                &text,
                "etcdmon_client_connections_closed_total",
                &[("member", m)],
            )
        })
        .sum();
    eprintln!("client connections: opened {opened}, closed {closed}");
    // Each of the 600 HTTP puts opened and closed one client connection. A connection that
    // closes within microseconds of its handshake can skip the traced ESTABLISHED transition
    // on the server side, so allow 2 %.
    assert!(
        (588.0..=610.0).contains(&opened),
        "600 puts opened {opened} client connections"
    );
    assert!(
        (588.0..=610.0).contains(&closed),
        "600 puts closed {closed} client connections"
    );
    Ok(())
}

#[test]
fn peer_receives_match_peer_sends() -> anyhow::Result<()> {
    if !common::require_root("peer_receives_match_peer_sends")? {
        return Ok(());
    }
    let (cluster, agent) = common::cluster_with_agent()?;
    cluster.put_many("/recv-e2e/", 400, 512)?;
    let names: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    let syscall = |text: &str, member: &str, peer: &str, direction: &str| {
        prom_sum(
            text,
            "etcdmon_peer_syscall_bytes_total",
            &[("member", member), ("peer", peer), ("direction", direction)],
        )
        .unwrap_or(0.0)
    };
    // Let the heartbeats of a quiet cluster settle what was in flight, then compare one
    // snapshot: what A's reads took from B is what B's writes gave to A.
    std::thread::sleep(Duration::from_secs(2));
    let text = wait_for(
        "syscall bytes for every pair",
        Duration::from_secs(20),
        || {
            let text = agent.metrics().ok()?;
            names
                .iter()
                .flat_map(|a| names.iter().map(move |b| (a, b)))
                .filter(|(a, b)| a != b)
                .all(|(a, b)| syscall(&text, a, b, "received") > 0.0)
                .then_some(text)
        },
    )?;
    let mut total_received = 0.0;
    for a in &names {
        for b in names.iter().filter(|b| *b != a) {
            let received = syscall(&text, a, b, "received");
            let sent = syscall(&text, b, a, "sent");
            eprintln!("{a} received {received} B from {b}; {b} sent {sent} B to {a}");
            total_received += received;
            // Both ends are read in the same scrape; heartbeats in flight between the two
            // readings are a few hundred bytes.
            assert!(
                (received - sent).abs() <= 0.02 * sent.max(received) + 4096.0,
                "{a} received {received} B from {b}, which sent {sent} B"
            );
        }
    }
    // 400 puts of 512 B travel from the leader to both followers: at least that much.
    assert!(
        total_received > 2.0 * 400.0 * 512.0,
        "peer receives total {total_received} B"
    );
    // Receives are counted on sockets only: never under a file class.
    for line in text.lines() {
        if line.starts_with("etcdmon_received_bytes_total{") {
            assert!(
                line.contains("file=\"socket_peer\"")
                    || line.contains("file=\"socket_client\"")
                    || line.contains("file=\"socket\"")
                    || line.contains("file=\"unknown\""),
                "receive counted on a non-socket: {line}"
            );
        }
    }
    let client: f64 = names
        .iter()
        .filter_map(|m| {
            prom_sum(
                &text,
                "etcdmon_received_bytes_total",
                &[("member", m), ("file", "socket_client")],
            )
        })
        .sum();
    // Each put's HTTP request body carries its 512-byte value (base64) to a client port.
    assert!(
        client > 400.0 * 512.0,
        "client sockets received {client} B for 400 puts"
    );
    let peer_class: f64 = names
        .iter()
        .filter_map(|m| {
            prom_sum(
                &text,
                "etcdmon_received_bytes_total",
                &[("member", m), ("file", "socket_peer")],
            )
        })
        .sum();
    assert!(
        peer_class >= total_received * 0.99,
        "per-class peer receives {peer_class} B below the per-pair sum {total_received} B"
    );
    Ok(())
}
