//! Issue 12: what an agent reads per cycle follows the hosts that exist, not the volume's
//! max_hosts, and a host that joins with an id nobody configured is still seen by every agent
//! within the stated bound (`core::readplan::JOIN_CYCLES`). Real agents on a plain volume file
//! (no FUSE, no root needed); the bytes come from /proc/PID/io.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::*;
use hbfence::core::readplan::JOIN_CYCLES;
use std::path::Path;
use std::time::{Duration, Instant};

const MAX_HOSTS: u32 = 255;
const BLOCK: u64 = 4096;

/// `rchar` of /proc/PID/io: every byte the process read through read(2)/pread(2), whatever
/// the file system (`read_bytes` counts only what reached a block device, 0 on tmpfs). In
/// the steady state the daemon reads nothing but its volume.
fn rchar(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    text.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/PID/io")
}

fn status(h: &Host) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(h.dir.join("run/status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn seq(h: &Host) -> u64 {
    status(h).and_then(|s| s["seq"].as_u64()).unwrap_or(0)
}

fn sees_alive(h: &Host, peer: u32) -> bool {
    status(h).is_some_and(|s| {
        s["peers"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["id"] == peer && p["status"] == "alive"))
    })
}

fn host(base: &Path, id: u32, volume: &Path, peers: &[u32]) -> Host {
    Host::new(
        base,
        &HostSpec {
            id,
            volumes: vec![volume.to_path_buf()],
            peers: peers.iter().filter(|&&p| p != id).map(|&p| (p, None)).collect(),
            hooks_dir: None,
            eligible: true,
        },
    )
}

/// Bytes each agent read during `window`: (host id, bytes, acts as coordinator).
fn bytes_read(hosts: &[Host], window: Duration) -> Vec<(u32, u64, bool)> {
    let before: Vec<u64> = hosts.iter().map(|h| rchar(h.pid())).collect();
    std::thread::sleep(window);
    hosts
        .iter()
        .zip(before)
        .map(|(h, r0)| {
            let coordinator = status(h).is_some_and(|s| s["coordinator"] == h.id);
            (h.id, rchar(h.pid()) - r0, coordinator)
        })
        .collect()
}

/// Hosts 1 to 3 on `volume`, each configured with `peers`, started and seeing each other alive.
fn start_hosts_1_to_3(dir: &Path, volume: &Path, peers: &[u32]) -> Vec<Host> {
    let mut hosts: Vec<Host> = (1..=3).map(|id| host(dir, id, volume, peers)).collect();
    for h in &mut hosts {
        h.start();
    }
    let settled = wait_until(Duration::from_secs(20), || {
        hosts.iter().all(|h| (1..=3).all(|p| p == h.id || sees_alive(h, p)))
    });
    assert!(settled, "the 3 agents never saw each other:\n{}", hosts[0].log_text());
    hosts
}

#[test]
fn reads_follow_the_hosts_that_exist_and_a_newcomer_with_any_id_is_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("v.vol");
    init_volume_for(&volume, &MAX_HOSTS.to_string(), &[]);
    let members = [1, 2, 3];
    let hosts = start_hosts_1_to_3(tmp.path(), &volume, &members);

    // Header + 3 heartbeats + own mailbox and the scan window (the own block among the
    // heartbeats is the write's read-back and the twin check); the coordinator no more (it
    // reads a peer's mailbox only while it has business with it). A status file write or a
    // log line is no read; the volume is all.
    let exist = members.len() as u64;
    let scan = u64::from((MAX_HOSTS - members.len() as u32).div_ceil(JOIN_CYCLES));
    let bound = BLOCK * (exist + 2 + scan);
    // Cycles start every interval on the agent's clock: a window of 8 intervals holds at
    // most 9 cycles' reads, whatever its phase.
    let interval = Duration::from_secs(1);
    let window = interval * 8;
    let cycles = 9;
    let measured = bytes_read(&hosts, window);
    for &(id, bytes, coordinator) in &measured {
        eprintln!("host {id}: {bytes} bytes in 8 intervals (coordinator {coordinator})");
        assert!(
            bytes <= cycles * bound,
            "host {id} read {bytes} bytes in 8 intervals, bound {} per cycle (max_hosts {MAX_HOSTS}, {exist} hosts)",
            bound
        );
    }
    // Reading everything (the behaviour before, kept as a benchmark knob) is what this
    // counter would show otherwise: 1 + 2·255 blocks per cycle.
    let everything = BLOCK * (1 + 2 * u64::from(MAX_HOSTS));
    assert!(measured.iter().all(|m| m.1 * 20 < everything * 8), "{measured:?}");

    // A host with an id nobody configured joins: every agent reads its slot within
    // JOIN_CYCLES cycles of its first write (+ one cycle for the read and one for the status
    // file, at most one interval old).
    let mut newcomer = host(tmp.path(), 250, &volume, &members);
    newcomer.start();
    let written =
        wait_until(Duration::from_secs(15), || host_record(&dump(&volume), 250).is_some());
    assert!(written, "host 250 never wrote:\n{}", newcomer.log_text());
    let first_write = Instant::now();
    let limit = interval * (JOIN_CYCLES + 2) + Duration::from_millis(500);
    let seen = wait_until(limit, || hosts.iter().all(|h| sees_alive(h, 250)));
    let took = first_write.elapsed();
    assert!(
        seen,
        "not every agent saw host 250 within {limit:?}: {:?}",
        hosts.iter().map(|h| (h.id, sees_alive(h, 250))).collect::<Vec<_>>()
    );
    eprintln!("host 250 seen by every agent {:.1} s after its first write", took.as_secs_f64());
    // Once seen it is read every cycle: it stays alive for everyone (no suspicion).
    std::thread::sleep(interval * 4);
    for h in &hosts {
        assert!(sees_alive(h, 250), "host {} lost host 250", h.id);
        assert!(h.events_about("host_suspect", 250).is_empty(), "host {} suspected 250", h.id);
    }
}

/// With an explicit membership (`init --members`) an agent reads the header, the members'
/// heartbeats and its own mailbox every cycle, and nothing else: E + 2 blocks for E members on
/// a volume of any max_hosts, issue 12's goal (the own block among them is the write's
/// read-back and the twin check; before, one more read of it before each write made E + 3).
/// The coordinator reads the same while no peer is suspect, fenced or has a verdict
/// (`Agent::peer_mailboxes`).
#[test]
fn an_explicit_membership_reads_the_members_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("v.vol");
    init_volume_for(&volume, &MAX_HOSTS.to_string(), &["--members", "1-3"]);
    let members = [1, 2, 3];
    let hosts = start_hosts_1_to_3(tmp.path(), &volume, &members);
    let e = members.len() as u64;
    let per_cycle = BLOCK * (e + 2);
    // A window of 16 intervals holds at most 17 cycles' reads, whatever its phase, and at
    // least 15 whole ones: long enough that E + 3 blocks per cycle (15 · 6 > 17 · 5) fails.
    let intervals = 16;
    let measured = bytes_read(&hosts, Duration::from_secs(intervals));
    for &(id, bytes, coordinator) in &measured {
        eprintln!("host {id}: {bytes} bytes in {intervals} intervals (coordinator {coordinator})");
        assert!(
            bytes <= (intervals + 1) * per_cycle,
            "host {id} read {bytes} bytes in {intervals} intervals: more than {per_cycle} per cycle",
        );
        assert!(bytes >= (intervals - 1) * per_cycle, "host {id} read too little: {bytes}");
    }
    assert!(measured.iter().any(|m| m.2), "no coordinator among {measured:?}");
    // The open membership's scan would read ceil(252 / 32) = 8 blocks more per cycle.
    let scan = BLOCK * u64::from((MAX_HOSTS - 3).div_ceil(JOIN_CYCLES));
    assert!(measured.iter().all(|m| m.1 < (intervals - 1) * (per_cycle + scan)), "{measured:?}");
}

/// `hbfence members` while agents run: an open membership becomes a list only if every running
/// host is in it; a running member is not removed without --force; a host that is not a member
/// does not start (78) and says what to run; a member added is adopted by every agent within
/// one interval of the header write, and read from then on.
#[test]
fn members_change_while_the_agents_run() {
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("v.vol");
    init_volume_for(&volume, "16", &[]);
    let vol = volume.to_str().unwrap();
    let mut hosts = start_hosts_1_to_3(tmp.path(), &volume, &[1, 2, 3, 4]);
    let epoch = |h: &Host| status(h).and_then(|s| s["members_epoch"].as_u64());
    assert!(hosts.iter().all(|h| epoch(h) == Some(0)));

    // Host 3 runs: a list without it is refused, naming it.
    let out = hbfence(&["members", "add", "1-2", "--volume", vol]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("host(s) 3 write their heartbeat") && err.contains("nothing was written"));
    assert_eq!(dump(&volume)["header"]["members_epoch"], 0);

    // With every running host: written, and every agent adopts it within one interval.
    let out = hbfence(&["members", "add", "1-3", "--volume", vol]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = Instant::now();
    let adopted = wait_until(Duration::from_secs(3), || {
        hosts.iter().all(|h| !h.events_about("membership_changed", h.id).is_empty())
    });
    let took = written.elapsed();
    assert!(adopted, "not adopted:\n{}", hosts[0].log_text());
    // One interval until the next cycle reads block 0 (plus the event's way to the log).
    assert!(took < Duration::from_millis(1500), "adopted after {took:?}");
    let changed = &hosts[0].events_about("membership_changed", 1)[0];
    assert_eq!(changed["detail"], "open (epoch 0) -> 1-3 (epoch 1)");
    let dumped = dump(&volume);
    assert_eq!(dumped["header"]["members"], serde_json::json!([1, 2, 3]));
    let listed = hbfence(&["members", "list", "--volume", vol]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("members 1-3 (epoch 1)"));

    // A running member is not removed.
    let out = hbfence(&["members", "remove", "3", "--volume", vol]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force removes them anyway"));
    // Stopped cleanly, it is.
    hosts[2].signal(nix::sys::signal::Signal::SIGTERM);
    assert!(hosts[2].wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let out = hbfence(&["members", "remove", "3", "--volume", vol]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Not a member: does not start, and says what to run.
    let mut third = host(tmp.path(), 4, &volume, &[1, 2, 3, 4]);
    third.start();
    let exit = third.wait_exit(Duration::from_secs(10)).expect("a non-member started");
    assert_eq!(exit.code(), Some(78), "{}", third.log_text());
    assert!(third.log_text().contains("hbfence members add 4"), "{}", third.log_text());

    // Added, it starts, and every agent reads it: alive within two intervals of its first
    // write (one cycle to read it, the status file at most one interval old).
    let out = hbfence(&["members", "add", "4", "--volume", vol]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_until(Duration::from_secs(3), || {
        hosts[..2].iter().all(|h| epoch(h) == Some(3))
    }));
    // The header names the memberships it replaced, newest first.
    let earlier = &dump(&volume)["header"]["earlier_memberships"];
    let epochs: Vec<u64> =
        earlier.as_array().unwrap().iter().map(|m| m["members_epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [2, 1, 0], "{earlier}");
    assert_eq!(earlier[0]["members"], serde_json::json!([1, 2]));
    third.start();
    let wrote = wait_until(Duration::from_secs(15), || host_record(&dump(&volume), 4).is_some());
    assert!(wrote, "host 4 never wrote:\n{}", third.log_text());
    let first_write = Instant::now();
    let seen =
        wait_until(Duration::from_millis(2500), || hosts[..2].iter().all(|h| sees_alive(h, 4)));
    assert!(seen, "host 4 not seen within 2.5 s of its first write");
    eprintln!(
        "host 4 seen by every agent {:.1} s after its first write",
        first_write.elapsed().as_secs_f64()
    );
    for h in &hosts[..2] {
        assert!(h.sysrq_letters().is_empty() && h.events_about("host_suspect", 4).is_empty());
    }
}

#[test]
fn the_baseline_knob_reads_every_block() {
    // The read-everything behaviour of bench/scale.rs's baseline: shows that the counter of
    // the first test sees the volume's reads (it would fail there without the read plan).
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("v.vol");
    init_volume_for(&volume, &MAX_HOSTS.to_string(), &[]);
    let mut h = host(tmp.path(), 1, &volume, &[1]);
    h.start_with(true, &[("HBFENCE_BENCH_READ_ALL", std::ffi::OsStr::new("1"))]);
    assert!(wait_until(Duration::from_secs(15), || seq(&h) > 2), "{}", h.log_text());
    // 4 intervals hold at least 3 whole cycles.
    let measured = bytes_read(std::slice::from_ref(&h), Duration::from_secs(4));
    let everything = BLOCK * (1 + 2 * u64::from(MAX_HOSTS));
    assert!(measured[0].1 >= 3 * everything, "{measured:?}, expected at least 3 × {everything}");
}
