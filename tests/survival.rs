//! Process-level tests of outage survival (issue 13, part 2): three real agents with the peer
//! channel on 127.0.0.1, a volume initialised with members 1-3 and the survival switch on, and
//! one `ipmi_sim` BMC per host whose power-off kills that host's agent, so that a wrong
//! power-off shows. The volume lives on the FUSE fault injector:
//! - one mount shared by every host: a freeze is a cluster-wide storage outage;
//! - or one mount per host over the same backing directory: a freeze of one mount is that host
//!   losing its storage alone.
//!
//! The peer channel of host 3 can run through relays the test owns (its peers' configs name a
//! relay as host 3's address, host 3's config names relays as theirs): cutting them is a
//! partition of host 3's UDP, both ways, without touching anything outside this test (only
//! 127.0.0.1 is ever sent to). Every wait is a bounded loop on a condition.

#[path = "support/bmc.rs"]
mod bmc;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/faultfs.rs"]
mod faultfs;
#[path = "support/peers.rs"]
mod peers;
#[path = "support/script.rs"]
mod script;

use bmc::SimBmc;
use cluster::*;
use faultfs::{Fault, FaultFs};
use hbfence::core::format::{self, Decoded};
use peers::{
    all_reachable, channel_peer, enable_network, keygen, listen_addrs, status_file, Relay,
};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret-Pw_42";
/// Challenge period: at most half the 1 s interval, or permits are too rare for their lifetime.
const CHALLENGE_MS: u64 = 250;
const VOLUME: &str = "v.vol";

#[derive(PartialEq)]
enum Storage {
    /// One FUSE mount for all hosts.
    Shared,
    /// One FUSE mount per host, all over the same backing directory.
    PerHost,
}

struct Bed {
    /// Shared: one mount; PerHost: host i's mount at i - 1.
    mounts: Vec<FaultFs>,
    hosts: Vec<Host>,
    bmcs: Vec<SimBmc>,
    /// Host 3's channel relays (empty unless asked for).
    relays: Vec<Relay>,
    /// Last: removed after the agents, BMCs and mounts that use it have stopped.
    _tmp: tempfile::TempDir,
}

impl Bed {
    fn new(storage: Storage, relay_host3: bool) -> Bed {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let backing = base.join("backing");
        std::fs::create_dir_all(&backing).unwrap();
        let n_mounts = if storage == Storage::Shared { 1 } else { 3 };
        let mounts: Vec<FaultFs> = (1..=n_mounts)
            .map(|i| {
                FaultFs::mount(&backing, &base.join(format!("mnt{i}"))).expect("mount faultfs")
            })
            .collect();
        init_volume(
            &mounts[0].mountpoint().join(VOLUME),
            &["--members", "1-3", "--outage-survival", "on"],
        );
        let (bmcs, configs) =
            bmc::start_for_hosts(&base, 3, "admin", PASSWORD, |port, password_file| BmcConfig {
                port,
                password_file,
            })
            .expect("start ipmi_sim");
        let key = keygen(&base);
        let listen = listen_addrs(3);
        // relays[0]: to host 3 (for hosts 1 and 2); relays[p]: from host 3 to host p.
        let relays: Vec<Relay> = if relay_host3 {
            vec![Relay::start(listen[2]), Relay::start(listen[0]), Relay::start(listen[1])]
        } else {
            Vec::new()
        };
        let hosts = (1..=3u32)
            .map(|id| {
                let mount = &mounts[(id as usize - 1).min(mounts.len() - 1)];
                let host = Host::new(
                    &base,
                    &HostSpec {
                        id,
                        volumes: vec![mount.mountpoint().join(VOLUME)],
                        peers: (1..=3)
                            .filter(|&p| p != id)
                            .map(|p| (p, Some(&configs[p as usize - 1])))
                            .collect(),
                        hooks_dir: None,
                        eligible: true,
                    },
                );
                enable_network(&host, listen[id as usize - 1], &key, CHALLENGE_MS, |p| {
                    match (relays.is_empty(), id, p) {
                        (true, _, _) => listen[p as usize - 1],
                        (false, 3, p) => relays[p as usize].addr,
                        (false, _, 3) => relays[0].addr,
                        (false, _, p) => listen[p as usize - 1],
                    }
                });
                host
            })
            .collect();
        Bed { _tmp: tmp, mounts, hosts, bmcs, relays }
    }

    fn host(&self, id: u32) -> &Host {
        &self.hosts[id as usize - 1]
    }

    /// The volume as host 1 sees it (never frozen alone).
    fn volume(&self) -> PathBuf {
        self.mounts[0].mountpoint().join(VOLUME)
    }

    /// Starts every agent and waits until each is active on the volume, reaches every peer on
    /// the channel and knows the survival switch is on.
    fn start_all(&mut self) {
        for h in &mut self.hosts {
            h.start();
        }
        let volume = self.volume();
        self.wait(Duration::from_secs(20), "every host active, reachable, survival on", |b| {
            let v = dump(&volume);
            b.hosts.iter().all(|h| {
                host_record(&v, h.id).is_some_and(|(_, s)| s == "active")
                    && status_file(h)["outage_survival"] == true
                    && status_file(h)["lease_valid"] == true
            }) && all_reachable(&b.hosts)
        });
    }

    fn wait(&self, limit: Duration, what: &str, mut cond: impl FnMut(&Bed) -> bool) {
        assert!(wait_until(limit, || cond(self)), "{what}\n{}", self.logs());
    }

    fn logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| {
                format!("--- host {} log\n{}--- events\n{}", h.id, h.log_text(), h.events_text())
            })
            .collect()
    }

    /// Sequence numbers of every host's record on the volume.
    fn seqs(&self) -> Vec<u64> {
        let v = dump(&self.volume());
        (1..=3).map(|id| host_record(&v, id).map_or(0, |r| r.0)).collect()
    }

    /// The agents of `ids` still run (none exited or was killed).
    fn assert_running(&mut self, ids: &[u32]) {
        for &id in ids {
            let exited = self.hosts[id as usize - 1].exited();
            assert!(exited.is_none(), "host {id} exited: {exited:?}\n{}", self.logs());
        }
    }

    fn self_fenced(&self, id: u32) -> bool {
        let h = self.host(id);
        h.sysrq_letters().contains('b') || h.watchdog.fired().is_some()
    }

    /// Host `id` neither self-fenced nor was fenced, nor was anybody told to fence it.
    fn assert_untouched(&self, id: u32) {
        let h = self.host(id);
        assert_eq!(h.sysrq_letters(), "", "host {id} self-fenced\n{}", self.logs());
        assert!(h.watchdog.fired().is_none(), "host {id}'s watchdog fired\n{}", self.logs());
        assert!(self.bmcs[id as usize - 1].power_is_on(), "host {id} powered off\n{}", self.logs());
        assert_ne!(verdict(&self.volume(), id).map(|v| v.0).as_deref(), Some("fenced"));
        for o in &self.hosts {
            for kind in ["fence_started", "fenced", "fence_deferred"] {
                assert!(
                    o.events_about(kind, id).is_empty(),
                    "host {}: {kind} about host {id}\n{}",
                    o.id,
                    self.logs()
                );
            }
        }
    }
}

fn ready(test: &str) -> bool {
    require_root(test) && bmc::require_tools(test)
}

fn events_of(h: &Host, kind: &str) -> Vec<Value> {
    h.events_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == kind)
        .collect()
}

#[test]
fn a_cluster_wide_freeze_of_four_leases_reboots_nobody_and_fences_nobody() {
    if !ready("a_cluster_wide_freeze_of_four_leases_reboots_nobody_and_fences_nobody") {
        return;
    }
    let mut bed = Bed::new(Storage::Shared, false);
    bed.start_all();
    let show = bed.host(2).cli(&["outage-survival", "show"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("outage-survival on") && text.contains("can carry its permits"),
        "{text}"
    );
    // Switched off and on again while the agents run (members epoch 1 -> 3): permits are
    // stated for the epoch followed now (they carried the one at start, and none counted).
    let volume = bed.volume();
    for switch in ["off", "on"] {
        let out = hbfence(&["outage-survival", switch, "--volume", volume.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    bed.wait(Duration::from_secs(10), "every host follows members epoch 3", |b| {
        b.hosts.iter().all(|h| {
            let s = status_file(h);
            s["members_epoch"] == 3 && s["outage_survival"] == true
        })
    });
    // (Read before the freeze: a dump would hang on the frozen volume.)
    let before = bed.seqs();
    bed.mounts[0].set_fault(VOLUME, Fault::Freeze);
    let frozen_at = Instant::now();
    // Throughout the freeze nobody self-fences; every host's lease runs out and it survives on
    // its peers' permits.
    while frozen_at.elapsed() < 4 * LEASE {
        for h in &bed.hosts {
            assert!(
                !bed.self_fenced(h.id),
                "host {} self-fenced during the outage\n{}",
                h.id,
                bed.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for h in &bed.hosts {
        assert_eq!(events_of(h, "survival_started").len(), 1, "host {}\n{}", h.id, bed.logs());
        let s = status_file(h);
        assert_eq!(s["lease_valid"], false, "host {}: {s}", h.id);
        assert!(s["surviving_ms"].as_u64().is_some_and(|ms| ms > 0), "host {}: {s}", h.id);
    }
    bed.mounts[0].clear_fault(VOLUME);
    // Storage back: every host ends its survival with a renewed lease.
    bed.wait(Duration::from_secs(15), "every host ends its survival with a renewed lease", |b| {
        b.hosts.iter().all(|h| {
            events_of(h, "survival_ended").len() == 1 && status_file(h)["lease_valid"] == true
        })
    });
    // And keeps writing, long enough (suspect_after + lease) that a late suspicion would show.
    // (The sequence numbers of the cycles during the outage land in a jump when it ends.)
    let back = bed.seqs();
    let records = LEASE.as_secs() + 3;
    bed.wait(Duration::from_secs(2 * records), "every host keeps writing after the outage", |b| {
        let now = b.seqs();
        (0..3).all(|i| now[i] >= back[i] + records)
    });
    assert!((0..3).all(|i| back[i] > before[i]), "{before:?} -> {back:?}");
    for h in &bed.hosts {
        bed.assert_untouched(h.id);
        assert!(status_file(h)["surviving_ms"].is_null(), "host {}", h.id);
    }
    bed.assert_running(&[1, 2, 3]);
    println!("outage of {:.0} s survived by every host", (4 * LEASE).as_secs_f64());
}

#[test]
fn a_host_that_loses_its_storage_alone_self_fences_and_is_fenced() {
    if !ready("a_host_that_loses_its_storage_alone_self_fences_and_is_fenced") {
        return;
    }
    let mut bed = Bed::new(Storage::PerHost, false);
    bed.start_all();
    bed.mounts[2].set_fault(VOLUME, Fault::Freeze);
    let frozen_at = Instant::now();
    // Its last write started before the freeze, so its lease ends within lease_timeout of it;
    // its peers hold valid leases and grant no permit. (2 s for polling and scheduling.)
    bed.wait(LEASE + Duration::from_secs(2), "host 3 self-fences within its lease", |b| {
        b.self_fenced(3)
    });
    let took = frozen_at.elapsed();
    assert!(
        events_of(bed.host(3), "survival_started").is_empty(),
        "host 3 survived on permits of hosts with valid leases\n{}",
        bed.logs()
    );
    let volume = bed.volume();
    bed.wait(Duration::from_secs(20), "the coordinator declares host 3 fenced", |b| {
        verdict(&volume, 3).is_some_and(|v| v.0 == "fenced")
            && !b.host(1).events_about("fenced", 3).is_empty()
    });
    println!(
        "host 3's storage frozen alone: self-fenced after {:.1} s, fenced ({:?})",
        took.as_secs_f64(),
        verdict(&volume, 3)
    );
    for id in [1, 2] {
        bed.assert_untouched(id);
        assert!(events_of(bed.host(id), "survival_started").is_empty(), "host {id}");
    }
    bed.assert_running(&[1, 2]);
    bed.mounts[2].clear_fault(VOLUME);
}

#[test]
fn a_host_cut_off_the_peer_channel_with_storage_fine_is_not_fenced() {
    if !ready("a_host_cut_off_the_peer_channel_with_storage_fine_is_not_fenced") {
        return;
    }
    let mut bed = Bed::new(Storage::Shared, true);
    bed.start_all();
    let before = bed.seqs();
    for r in &bed.relays {
        r.set_cut(true);
    }
    bed.wait(Duration::from_secs(5), "peer_unreachable about host 3, and host 3 about both", |b| {
        [1, 2].iter().all(|&o| {
            !b.host(o).events_about("peer_unreachable", 3).is_empty()
                && !b.host(3).events_about("peer_unreachable", o).is_empty()
        })
    });
    for o in [1, 2] {
        assert_eq!(channel_peer(bed.host(o), 3)["reachable"], false);
    }
    let status = bed.host(1).cli(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&status.stdout).expect("status --json");
    let row = v["hosts"].as_array().and_then(|a| a.iter().find(|r| r["id"] == 3)).cloned();
    assert_eq!(
        row.as_ref().map(|r| r["network"]["reachable"].clone()),
        Some(Value::Bool(false)),
        "{v}"
    );
    // Partitioned for longer than dead_after: host 3 keeps writing, nobody suspects or fences
    // it, nobody self-fences.
    let cut_for = DEAD_AFTER.as_secs() + 1;
    bed.wait(DEAD_AFTER + Duration::from_secs(10), "host 3 writes on while cut off", |b| {
        b.seqs()[2] >= before[2] + cut_for
    });
    for h in &bed.hosts {
        bed.assert_untouched(h.id);
        assert!(h.events_about("host_suspect", 3).is_empty(), "host {}", h.id);
    }
    bed.assert_running(&[1, 2, 3]);
    for r in &bed.relays {
        r.set_cut(false);
    }
    bed.wait(Duration::from_secs(5), "host 3 reachable again", |b| all_reachable(&b.hosts));
    for o in [1, 2] {
        assert_eq!(bed.host(o).events_about("peer_unreachable", 3).len(), 1);
        assert_eq!(bed.host(o).events_about("peer_reachable", 3).len(), 1);
    }
}

/// Host 1 of members 1-3 on `volume`, with no [network] section.
fn host_1_without_channel(dir: &std::path::Path, volume: &std::path::Path) -> Host {
    Host::new(
        dir,
        &HostSpec {
            id: 1,
            volumes: vec![volume.to_path_buf()],
            peers: vec![(2, None), (3, None)],
            hooks_dir: None,
            eligible: true,
        },
    )
}

#[test]
fn survival_on_without_a_peer_channel_is_a_warning_at_start_in_status_and_in_show() {
    if !require_root(
        "survival_on_without_a_peer_channel_is_a_warning_at_start_in_status_and_in_show",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    let fs = FaultFs::mount(&backing, &tmp.path().join("mnt")).expect("mount faultfs");
    let volume = fs.mountpoint().join(VOLUME);
    init_volume(&volume, &["--members", "1-3", "--outage-survival", "on"]);
    let mut host = host_1_without_channel(tmp.path(), &volume);
    let show = host.cli(&["outage-survival", "show"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{text}{}", String::from_utf8_lossy(&show.stderr));
    assert!(text.contains("WARNING") && text.contains("no [network] section"), "{text}");
    host.start();
    let said = "this host (id 1) has no [network] section";
    assert!(
        wait_until(Duration::from_secs(10), || status_file(&host)["survival_warning"]
            .as_str()
            .is_some_and(|w| w.contains(said))),
        "status.json: {}\n{}",
        status_file(&host),
        host.log_text()
    );
    assert!(host.log_text().contains(said), "{}", host.log_text());
    let status = host.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("WARNING: outage survival is on"), "{text}");
    // Switched off in the header: the agent adopts it and the warning goes.
    let off = hbfence(&["outage-survival", "off", "--volume", volume.to_str().unwrap()]);
    assert!(off.status.success(), "{}", String::from_utf8_lossy(&off.stderr));
    assert!(
        wait_until(Duration::from_secs(10), || status_file(&host)["survival_warning"].is_null()),
        "{}",
        host.log_text()
    );
    assert!(host.exited().is_none(), "{}", host.log_text());
}

/// The one-read cycle (issue 12) needs `lease_timeout >= 3.5*interval + watchdog_timeout` for
/// outage survival only: `init` and `outage-survival on` refuse survival under a timing that
/// breaks it (and accept the timing without survival); a header an older version wrote with
/// survival on under such a timing makes the agent refuse to start (an older agent beside it
/// would survive on permits that this one, ignoring survival, would not wait for), saying
/// what to do; switched off, the agent starts.
#[test]
fn survival_under_a_timing_that_breaks_its_rule_is_refused_by_init_the_switch_and_the_agent() {
    if !require_root(
        "survival_under_a_timing_that_breaks_its_rule_is_refused_by_init_the_switch_and_the_agent",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join(VOLUME);
    let path = volume.to_str().unwrap();
    let mut init = vec!["init", "--volume", path, "--max-hosts", "8", "--members", "1-3"];
    // Accepted by every rule of `validate` (lease >= 2*interval + io + watchdog), 0.5 s short
    // of survival's.
    init.extend_from_slice(&[
        "--interval",
        "1",
        "--io-timeout",
        "1",
        "--lease-timeout",
        "5",
        "--watchdog-timeout",
        "2",
        "--suspect-after",
        "3",
    ]);
    let rule = "lease_timeout >= 3.5*interval + watchdog_timeout";
    let refused = hbfence(&[init.as_slice(), &["--outage-survival", "on"]].concat());
    let text = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success(), "init accepted survival: {text}");
    assert!(text.contains(rule) && text.contains("--lease-timeout 6 or more"), "{text}");
    let plain = hbfence(&init);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let on = hbfence(&["outage-survival", "on", "--volume", path]);
    let text = String::from_utf8_lossy(&on.stderr).to_string();
    assert!(!on.status.success(), "the switch accepted survival: {text}");
    assert!(text.contains(rule) && text.contains("keep survival off"), "{text}");
    // Survival on as an older version could switch it: the header block rewritten.
    let mut block = std::fs::read(&volume).unwrap();
    let Decoded::Header(mut header) = format::decode(&block[..4096]) else {
        panic!("no header in {path}")
    };
    assert!(!header.outage_survival);
    header.outage_survival = true;
    block[..4096].copy_from_slice(&format::encode_header(&header));
    std::fs::write(&volume, &block).unwrap();
    let mut host = host_1_without_channel(tmp.path(), &volume);
    host.start();
    let exit = host.wait_exit(Duration::from_secs(20)).expect("the agent refuses to start");
    assert_eq!(exit.code(), Some(78), "{}", host.log_text());
    let log = host.log_text();
    assert!(log.contains(rule) && log.contains("hbfence outage-survival off"), "{log}");
    assert!(status_file(&host).is_null(), "it ran: {}", status_file(&host));
    let off = hbfence(&["outage-survival", "off", "--volume", path]);
    assert!(off.status.success(), "{}", String::from_utf8_lossy(&off.stderr));
    host.start();
    assert!(
        wait_until(Duration::from_secs(20), || status_file(&host)["phase"] == "running"),
        "status.json: {}\n{}",
        status_file(&host),
        host.log_text()
    );
    assert!(host.exited().is_none(), "{}", host.log_text());
}
