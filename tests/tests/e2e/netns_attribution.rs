//! Members in different network namespaces on one node: the real agent (eBPF) must attribute
//! the namespaced member's own peer connections to it by member name (not the shared host-end
//! address), and count its client connections in its own namespace, as `ss` inside it does.

use std::{collections::BTreeSet, process::Command, time::Duration};

use etcd_monitor_tests::{
    diagrig::{DiagRig, RigOptions},
    netfault, wait_for,
};

/// The member behind the veth pair.
const NAMESPACED: &str = "member2";

fn label(line: &str, name: &str) -> Option<String> {
    Some(
        line.split(&format!("{name}=\""))
            .nth(1)?
            .split('"')
            .next()?
            .to_string(),
    )
}

/// (member, peer) of every `metric` series.
fn pairs(text: &str, metric: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| Some((label(l, "member")?, label(l, "peer")?)))
        .collect()
}

/// The value of `metric{member="<member>"}`.
fn member_value(text: &str, metric: &str, member: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| label(l, "member").as_deref() == Some(member))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// ESTABLISHED sockets on `port` inside the namespace, by `ip netns exec NS ss -tnH`.
fn ss_established(ns: &str, port: u16) -> anyhow::Result<usize> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-tnH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}

#[test]
fn namespaced_member_connections_are_attributed_in_its_own_namespace() -> anyhow::Result<()> {
    let test = "namespaced_member_connections_are_attributed_in_its_own_namespace";
    if !etcd_monitor_tests::require_root(test, "eBPF and network namespaces")? {
        return Ok(());
    }
    let reason = netfault::tools_present().err().unwrap_or_default();
    if !etcd_monitor_tests::require(test, reason.is_empty(), &reason)? {
        return Ok(());
    }
    let rig = DiagRig::start(&RigOptions {
        tag: "nsattr".to_string(),
        netns_member: Some(2),
        ..RigOptions::default()
    })?;
    let ns = rig
        .netns
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no netns"))?;
    let others: Vec<String> = rig
        .cluster
        .members
        .iter()
        .map(|m| m.name.clone())
        .filter(|n| n != NAMESPACED)
        .collect();
    // Both directions of every pair with the namespaced member, named by member: the
    // connections it dialed itself are only in its namespace's socket table.
    let mut expected = BTreeSet::new();
    for o in &others {
        expected.insert((NAMESPACED.to_string(), o.clone()));
        expected.insert((o.clone(), NAMESPACED.to_string()));
    }
    let text = wait_for(
        "RTT series for every pair with member2",
        Duration::from_secs(90),
        || {
            let text = rig.agent.metrics().ok()?;
            expected
                .is_subset(&pairs(&text, "etcdmon_peer_rtt_seconds"))
                .then_some(text)
        },
    )
    .map_err(|e| {
        let got = rig
            .agent
            .metrics()
            .map(|t| pairs(&t, "etcdmon_peer_rtt_seconds"));
        anyhow::anyhow!("{e}: got {got:?}")
    })?;
    let names: BTreeSet<&str> = rig
        .cluster
        .members
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    for (member, peer) in pairs(&text, "etcdmon_peer_rtt_seconds") {
        assert!(
            names.contains(peer.as_str()),
            "open peer connection of {member} named by address: peer={peer}"
        );
    }

    // Client connections of the namespaced member (the collector's gRPC stream, at least),
    // read in its own namespace: the agent agrees with `ss` inside it.
    let member = rig
        .cluster
        .members
        .iter()
        .find(|m| m.name == NAMESPACED)
        .ok_or_else(|| anyhow::anyhow!("no {NAMESPACED}"))?;
    let port: u16 = member
        .client_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("client url {}", member.client_url))?;
    let mut last = String::new();
    let agreed = wait_for(
        "agent and ss agree on member2's connections",
        Duration::from_secs(90),
        || {
            let text = rig.agent.metrics().ok()?;
            let active = member_value(&text, "etcd_server_active_connections", NAMESPACED)?;
            let open = member_value(&text, "etcdmon_client_connections", NAMESPACED)?;
            let ss = ss_established(ns.name(), port).ok()? as f64;
            last = format!("active={active} client_connections={open} ss={ss}");
            (active > 0.0 && active == ss && open == ss).then_some(ss)
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}: last {last}"))?;
    eprintln!("NETNS {NAMESPACED}: {agreed} established client connections (agent = ss)");
    Ok(())
}
