//! Process-level tests of the peer channel (issue 13, part 1): three real agents on one volume
//! (FUSE fault injector, as the other process tests) talking over 127.0.0.1. The path from host 1
//! to host 2 runs through a relay the test owns (host 1's config names the relay as host 2's
//! address), so the test sees genuine challenges and answers, forwards them once, and then
//! replays and alters them. Only 127.0.0.1 is ever sent to; every loop is bounded.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/faultfs.rs"]
mod faultfs;
#[path = "support/peers.rs"]
mod peers;

use cluster::*;
use faultfs::FaultFs;
use hbfence::core::agent::Claim;
use hbfence::net::wire::{self, Body, Key, Message};
use nix::sys::signal::Signal;
use peers::{channel_peer, enable_network, keygen, listen_addrs, status_file, Relay};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Challenge period of the test agents: a peer is unreachable after 3 periods without answer.
const CHALLENGE_MS: u64 = 250;

struct Bed {
    _fs: FaultFs,
    hosts: Vec<Host>,
    listen: Vec<SocketAddr>,
    relay: Relay,
    /// Last: removed after the agents, BMCs and mounts that use it have stopped.
    _tmp: tempfile::TempDir,
}

impl Bed {
    fn new() -> Bed {
        let tmp = tempfile::tempdir().unwrap();
        let backing = tmp.path().join("backing");
        std::fs::create_dir_all(&backing).unwrap();
        let fs = FaultFs::mount(&backing, &tmp.path().join("mnt")).expect("mount faultfs");
        let volume = fs.mountpoint().join("v.vol");
        init_volume(&volume, &[]);
        let key = keygen(tmp.path());
        let listen = listen_addrs(3);
        let relay = Relay::start(listen[1]);
        let hosts = (1..=3u32)
            .map(|id| {
                let peers: Vec<u32> = (1..=3).filter(|&p| p != id).collect();
                let host = Host::new(
                    tmp.path(),
                    &HostSpec {
                        id,
                        volumes: vec![volume.clone()],
                        peers: peers.iter().map(|&p| (p, None)).collect(),
                        hooks_dir: None,
                        eligible: true,
                    },
                );
                enable_network(&host, listen[id as usize - 1], &key, CHALLENGE_MS, |p| {
                    if id == 1 && p == 2 {
                        relay.addr
                    } else {
                        listen[p as usize - 1]
                    }
                });
                host
            })
            .collect();
        Bed { _tmp: tmp, _fs: fs, hosts, listen, relay }
    }

    fn host(&self, id: u32) -> &Host {
        &self.hosts[id as usize - 1]
    }

    fn status(&self, id: u32) -> Value {
        status_file(self.host(id))
    }

    fn channel_peer(&self, observer: u32, peer: u32) -> Value {
        channel_peer(self.host(observer), peer)
    }

    fn counter(&self, id: u32, name: &str) -> u64 {
        let n = &self.status(id)["network"];
        n[name].as_u64().or_else(|| n["dropped"][name].as_u64()).unwrap_or(0)
    }

    fn all_reachable(&self) -> bool {
        peers::all_reachable(&self.hosts)
    }

    fn send(&self, to: u32, datagram: &[u8]) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(datagram, self.listen[to as usize - 1]).unwrap();
    }
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool, log: impl Fn() -> String) {
    assert!(wait_until(limit, &mut cond), "{what}\n{}", log());
}

#[test]
fn agents_authenticate_each_other_ignore_forgeries_and_replays_and_see_a_stopped_peer() {
    if !require_root("agents_authenticate_each_other_ignore_forgeries_and_replays") {
        return;
    }
    let mut bed = Bed::new();
    for h in &mut bed.hosts {
        h.start();
    }
    let logs = |bed: &Bed| {
        bed.hosts.iter().map(|h| format!("--- host {}\n{}", h.id, h.log_text())).collect::<String>()
    };
    wait_for(
        Duration::from_secs(20),
        "every agent reaches every peer on the peer channel",
        || bed.all_reachable(),
        || logs(&bed),
    );
    // `status --json` shows it per host row, with the age of the last answer (once every host
    // wrote its first heartbeat: the rows come from the volume).
    let status = || {
        let out = bed.host(1).cli(&["status", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let row = |v: &Value, id: u32| {
        v["hosts"].as_array().and_then(|a| a.iter().find(|r| r["id"] == id).cloned())
    };
    wait_for(
        Duration::from_secs(10),
        "status lists every host, its peers holding a lease",
        || {
            let v = status();
            row(&v, 1).is_some()
                && [2, 3]
                    .iter()
                    .all(|&id| row(&v, id).is_some_and(|r| r["network"]["claim"] == "lease-valid"))
        },
        || logs(&bed),
    );
    let v = status();
    for peer in [2, 3] {
        let row = row(&v, peer).unwrap();
        assert_eq!(row["network"]["reachable"], true, "{row}");
        assert!(row["network"]["answer_age_ms"].as_u64().unwrap() < 5_000, "{row}");
        assert_eq!(row["network"]["claim"], "lease-valid", "{row}");
    }
    // Round trips (challenge sent to answer received, through the answering core), printed
    // for the record: the freshness budget of what the channel will carry.
    let mut rtts: Vec<u64> = Vec::new();
    for _ in 0..10 {
        for o in 1..=3 {
            for p in (1..=3).filter(|&p| p != o) {
                rtts.extend(bed.channel_peer(o, p)["round_trip_ms"].as_u64());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    rtts.sort_unstable();
    assert!(!rtts.is_empty());
    eprintln!(
        "peer channel round trip over 127.0.0.1 (ms): median {} max {} of {} samples",
        rtts[rtts.len() / 2],
        rtts[rtts.len() - 1],
        rtts.len()
    );
    let table = bed.host(1).cli(&["status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("NETWORK") && text.contains("reachable ("), "{text}");

    // Genuine traffic of host 1 to host 2 passed the relay: challenges and answers.
    let challenge = bed.relay.latest(1).expect("a challenge of host 1 to host 2 captured");
    let answer = bed.relay.latest(2).expect("an answer of host 1 to host 2 captured");
    // Host 2 answers host 1 at host 1's configured address, never at the relay (the source
    // of what it received): nothing from host 2 ever reaches the relay.
    assert!(
        bed.relay.captured.lock().unwrap().iter().all(|d| d[24..28] == 1u32.to_le_bytes()),
        "a datagram not sent by host 1 reached the relay (reflection)"
    );

    let before = |bed: &Bed, name: &str| bed.counter(2, name);
    let (replayed0, repeated0, bad_mac0, cluster0, trunc0, unknown0) = (
        before(&bed, "replayed"),
        before(&bed, "repeated_challenge"),
        before(&bed, "auth_failures"),
        before(&bed, "wrong_cluster"),
        before(&bed, "truncated"),
        before(&bed, "unknown_nonce"),
    );
    let events_before: Vec<usize> = bed.hosts.iter().map(|h| h.events_text().len()).collect();

    // Replays of captured genuine datagrams, straight to host 2.
    for _ in 0..3 {
        bed.send(2, &answer);
        bed.send(2, &challenge);
    }
    // Forgeries: a flipped bit, a datagram under another key, another cluster, a cut one, and
    // an answer to a challenge host 2 never sent, under another key.
    let mut flipped = challenge.clone();
    flipped[60] ^= 0x01;
    bed.send(2, &flipped);
    let mut cluster = [0u8; 16];
    cluster.copy_from_slice(&challenge[8..24]);
    let forged = |cluster: [u8; 16], key: &Key, body: Body| {
        wire::encode(
            &Message {
                cluster,
                sender: 1,
                receiver: 2,
                sender_boot: [0; 16],
                sender_incarnation: 1,
                nonce: [0x42; 16],
                body,
            },
            key,
        )
    };
    let wrong_key = Key::new([0x77; 32]);
    bed.send(2, &forged(cluster, &wrong_key, Body::Challenge));
    bed.send(2, &forged(cluster, &wrong_key, Body::Answer(Claim::LeaseExpired, 0, 0)));
    bed.send(2, &forged([0xee; 16], &wrong_key, Body::Challenge));
    bed.send(2, &challenge[..40]);

    wait_for(
        Duration::from_secs(5),
        "host 2 counts every replay and forgery",
        || {
            before(&bed, "replayed") >= replayed0 + 3
                && before(&bed, "repeated_challenge") >= repeated0 + 3
                && before(&bed, "auth_failures") >= bad_mac0 + 3
                && before(&bed, "wrong_cluster") > cluster0
                && before(&bed, "truncated") > trunc0
        },
        || format!("{}\n{}", bed.status(2)["network"], logs(&bed)),
    );
    // A replayed answer is never taken for a new one (its nonce was used up), nor is a forged
    // one for an unknown nonce: they fail on the MAC first.
    assert_eq!(before(&bed, "unknown_nonce"), unknown0, "{}", bed.status(2)["network"]);
    // Nothing else changed: every peer still reachable, no event anywhere.
    std::thread::sleep(Duration::from_millis(4 * CHALLENGE_MS));
    assert!(bed.all_reachable(), "{}", logs(&bed));
    // (Start-up news of a host that wrote its first heartbeats late is not about the channel.)
    let startup = ["cluster_seen", "host_up", "coordinator_changed"];
    for (h, len) in bed.hosts.iter().zip(&events_before) {
        let new: Vec<Value> = h.events_text()[*len..]
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| !startup.iter().any(|k| e["event"] == *k))
            .collect();
        assert!(new.is_empty(), "host {} got events from forged traffic: {new:?}", h.id);
    }
    // Drops are logged, rate-limited (one line per reason here, not one per datagram).
    let log2 = bed.host(2).log_text();
    assert_eq!(log2.matches("its challenge was answered already (a replay)").count(), 1, "{log2}");
    assert!(log2.contains("authentication failed"), "{log2}");

    // The first answers at start were no events (start-up noise).
    for h in &bed.hosts {
        assert!(!h.events_text().contains("peer_reachable"), "host {}: {}", h.id, h.events_text());
    }
    // A stopped agent stops answering: its peers report it unreachable, then reachable again.
    let stopped_at = Instant::now();
    bed.host(3).signal(Signal::SIGSTOP);
    wait_for(
        Duration::from_secs(2),
        "hosts 1 and 2 report host 3 unreachable",
        || [1, 2].iter().all(|&o| !bed.host(o).events_about("peer_unreachable", 3).is_empty()),
        || logs(&bed),
    );
    // Well within the watchdog period (its double kills the agent when it fires) and the lease.
    let stopped_for = stopped_at.elapsed();
    bed.host(3).signal(Signal::SIGCONT);
    assert!(stopped_for < Duration::from_millis(1_500), "stopped for {stopped_for:?}");
    // Each report is followed by its recovery. A resumed agent on a loaded machine may miss
    // one more challenge window while it catches up (CI, 2026-12-06: a second
    // `peer_unreachable` 34 ms after an answer), so the counts are compared, not fixed.
    let recovered = |o: u32| {
        let up = bed.host(o).events_about("peer_reachable", 3).len();
        up >= 1 && up == bed.host(o).events_about("peer_unreachable", 3).len()
    };
    wait_for(
        Duration::from_secs(3),
        "hosts 1 and 2 report host 3 reachable again",
        || [1, 2].into_iter().all(recovered),
        || logs(&bed),
    );
    for o in [1, 2] {
        // No event about the hosts that kept answering.
        let other = if o == 1 { 2 } else { 1 };
        assert!(bed.host(o).events_about("peer_unreachable", other).is_empty());
    }
    assert!(bed.host(3).watchdog.fired().is_none(), "host 3's watchdog fired while stopped");
    assert!(bed.host(3).sysrq_letters().is_empty());
    wait_for(Duration::from_secs(3), "all reachable again", || bed.all_reachable(), || logs(&bed));
}

#[test]
fn a_taken_listen_port_stops_the_agent_before_it_arms() {
    if !require_root("a_taken_listen_port_stops_the_agent_before_it_arms") {
        return;
    }
    let mut bed = Bed::new();
    let _taken = UdpSocket::bind(bed.listen[0]).expect("take host 1's port");
    let h = &mut bed.hosts[0];
    h.start();
    let status = h.wait_exit(Duration::from_secs(10)).expect("the agent exits");
    assert_eq!(status.code(), Some(69), "{}", h.log_text());
    assert!(h.log_text().contains("cannot bind"), "{}", h.log_text());
    assert_eq!(h.watchdog.keepalives(), 0, "never armed");
}

#[test]
fn a_key_readable_by_others_or_of_the_wrong_size_is_refused() {
    if !require_root("a_key_readable_by_others_or_of_the_wrong_size_is_refused") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let bed = Bed::new();
    let h = bed.host(1);
    let text = std::fs::read_to_string(&h.config).unwrap();
    let key: PathBuf = text
        .lines()
        .find_map(|l| l.strip_prefix("key_file = \""))
        .map(|k| PathBuf::from(k.trim_end_matches('"')))
        .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = h.cli(&["run", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("key_file") && err.contains("chmod 0600"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, b"short").unwrap();
    let out = h.cli(&["run", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("5 bytes") && err.contains("exactly 32"), "{err}");
    let out = hbfence(&["keygen", "--output", key.to_str().unwrap()]);
    assert!(!out.status.success(), "keygen must not overwrite without --force");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = hbfence(&["keygen", "--output", key.to_str().unwrap(), "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = h.cli(&["run", "--check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
