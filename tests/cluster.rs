//! Process-level cluster tests: agents plus one OpenIPMI `ipmi_sim` BMC per host (real
//! ipmitool, real RMCP+) whose chassis control kills that host's agent on power off. The volume
//! lives on the FUSE fault injector so a storage-wide freeze can be injected.

#[path = "support/bmc.rs"]
mod bmc;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/faultfs.rs"]
mod faultfs;
#[path = "support/script.rs"]
mod script;

use bmc::SimBmc;
use cluster::*;
use faultfs::{Fault, FaultFs};
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret-Pw_42";

struct Bed {
    fs: FaultFs,
    volume: PathBuf,
    hosts: Vec<Host>,
    bmcs: Vec<SimBmc>,
    /// Last: removed after the agents, BMCs and mounts that use it have stopped.
    _tmp: tempfile::TempDir,
}

struct Options {
    n: u32,
    /// Per host: the password its BMC accepts (the others use PASSWORD in their config).
    wrong_password_for: Option<u32>,
    hooks_dir: Option<PathBuf>,
}

impl Bed {
    fn new(o: Options) -> Bed {
        let tmp = tempfile::tempdir().unwrap();
        let backing = tmp.path().join("backing");
        std::fs::create_dir_all(&backing).unwrap();
        let fs = FaultFs::mount(&backing, &tmp.path().join("mnt")).expect("mount faultfs");
        let volume = fs.mountpoint().join("v.vol");
        init_volume(&volume, &[]);
        let base = tmp.path().to_path_buf();
        let mut bmcs = Vec::new();
        let mut configs = Vec::new();
        for id in 1..=o.n {
            let dir = base.join(format!("bmc{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            let accepted =
                if o.wrong_password_for == Some(id) { "other-password" } else { PASSWORD };
            let pid_file = base.join(format!("host{id}/agent.pid"));
            std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
            let bmc = SimBmc::start(&dir, bmc::free_udp_port(), "admin", accepted, &pid_file)
                .expect("start ipmi_sim");
            let password_file = base.join(format!("bmc{id}.pw"));
            std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
            std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
                .unwrap();
            configs.push(BmcConfig { port: bmc.port(), password_file });
            bmcs.push(bmc);
        }
        let hosts = (1..=o.n)
            .map(|id| {
                let peers = (1..=o.n)
                    .filter(|&p| p != id)
                    .map(|p| (p, Some(&configs[p as usize - 1])))
                    .collect();
                Host::new(
                    &base,
                    &HostSpec {
                        id,
                        volumes: vec![volume.clone()],
                        peers,
                        hooks_dir: o.hooks_dir.clone(),
                        eligible: true,
                    },
                )
            })
            .collect();
        Bed { _tmp: tmp, fs, volume, hosts, bmcs }
    }

    fn start_all(&mut self) {
        for h in &mut self.hosts {
            h.start();
        }
        for h in &self.hosts {
            h.wait_armed();
        }
        // Every host has seen every other host make progress.
        assert!(wait_until(Duration::from_secs(5), || {
            let v = dump(&self.volume);
            self.hosts.iter().all(|h| host_record(&v, h.id).is_some_and(|(_, s)| s == "active"))
        }));
    }

    fn host(&self, id: u32) -> &Host {
        &self.hosts[id as usize - 1]
    }

    fn fenced(&self, id: u32) -> Option<String> {
        match verdict(&self.volume, id) {
            Some((v, m)) if v == "fenced" => Some(m),
            _ => None,
        }
    }

    /// Kills host `id` like a power loss of the agent (kill -9); the BMC stays up.
    fn kill(&self, id: u32) -> Instant {
        self.host(id).signal(Signal::SIGKILL);
        Instant::now()
    }
}

fn check(h: &Host, target: u32) -> (Option<i32>, String) {
    let out = h.cli(&["check", &target.to_string()]);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn ready(test: &str) -> bool {
    require_root(test) && bmc::require_tools(test)
}

#[test]
fn killed_host_is_fenced_through_its_bmc_and_every_survivor_says_fenced() {
    if !ready("killed_host_is_fenced_through_its_bmc_and_every_survivor_says_fenced") {
        return;
    }
    let mut bed = Bed::new(Options { n: 3, wrong_password_for: None, hooks_dir: None });
    bed.start_all();
    let killed = bed.kill(3);
    assert!(
        wait_until(Duration::from_secs(20), || bed.fenced(3).is_some()),
        "host 3 not fenced:\n{}",
        bed.host(1).log_text()
    );
    let took = killed.elapsed();
    println!(
        "kill -9 -> fenced (ipmi): {:.1} s (suspect_after 3 s, interval 1 s)",
        took.as_secs_f64()
    );
    assert_eq!(bed.fenced(3).as_deref(), Some("ipmi"));
    assert!(!bed.bmcs[2].power_is_on(), "the BMC must report the chassis off");
    for survivor in [1, 2] {
        // The survivors' daemons need one interval to mirror the coordinator's table.
        assert!(wait_until(Duration::from_secs(3), || check(bed.host(survivor), 3).1 == "FENCED"));
        assert_eq!(check(bed.host(survivor), 3), (Some(4), "FENCED".to_string()));
        let out = bed.host(survivor).cli(&["check", "3", "--cloudstack"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "=====> DEAD <======");
        assert_eq!(check(bed.host(survivor), 1 + (survivor % 2)).0, Some(0));
    }
    let ev = bed.host(1).events_about("fenced", 3);
    assert_eq!(ev.len(), 1, "{}", bed.host(1).events_text());
    assert_eq!(ev[0]["method"], "ipmi");
}

#[test]
fn coordinator_death_hands_over_and_verdicts_survive() {
    if !ready("coordinator_death_hands_over_and_verdicts_survive") {
        return;
    }
    let mut bed = Bed::new(Options { n: 3, wrong_password_for: None, hooks_dir: None });
    bed.start_all();
    bed.kill(3);
    assert!(wait_until(Duration::from_secs(20), || bed.fenced(3).is_some()));
    let killed = bed.kill(1);
    assert!(
        wait_until(Duration::from_secs(25), || bed.fenced(1).is_some()),
        "the new coordinator did not fence host 1:\n{}",
        bed.host(2).log_text()
    );
    println!("coordinator kill -> fenced by host 2: {:.1} s", killed.elapsed().as_secs_f64());
    assert_eq!(
        bed.fenced(3).as_deref(),
        Some("ipmi"),
        "host 3's verdict was lost in the hand-over"
    );
    let status = hbfence(&["status", "--volume", bed.volume.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["coordinator"], 2);
    assert_eq!(check(bed.host(2), 1), (Some(4), "FENCED".to_string()));
    assert_eq!(check(bed.host(2), 3), (Some(4), "FENCED".to_string()));
}

#[test]
fn two_deaths_at_once_one_dead_bmc_does_not_delay_the_other() {
    if !ready("two_deaths_at_once_one_dead_bmc_does_not_delay_the_other") {
        return;
    }
    let mut bed = Bed::new(Options { n: 4, wrong_password_for: None, hooks_dir: None });
    bed.start_all();
    bed.bmcs[3].stop();
    let killed = bed.kill(3);
    bed.kill(4);
    assert!(wait_until(Duration::from_secs(20), || bed.fenced(3).is_some()));
    let took = killed.elapsed();
    println!("two dead, one BMC down: host 3 fenced in {:.1} s", took.as_secs_f64());
    // A single failure takes suspect_after (3 s) + detection jitter + ~0.1 s of ipmitool; a
    // serialized fencing would wait for host 4's BMC (3 s command timeout, 5 s confirm) first.
    assert!(took < Duration::from_secs(8), "host 3 was delayed by host 4's dead BMC: {took:?}");
    assert_eq!(bed.fenced(4), None, "host 4 cannot be fenced through its BMC yet");
}

#[test]
fn dead_bmc_with_watchdog_is_fenced_by_the_watchdog_bound_never_earlier() {
    if !ready("dead_bmc_with_watchdog_is_fenced_by_the_watchdog_bound_never_earlier") {
        return;
    }
    let mut bed = Bed::new(Options { n: 3, wrong_password_for: None, hooks_dir: None });
    bed.start_all();
    bed.bmcs[2].stop();
    // The last write host 3 made happened before this instant.
    let killed = bed.kill(3);
    assert!(
        wait_until(Duration::from_secs(12), || !bed
            .host(1)
            .events_about("fence_failed", 3)
            .is_empty()),
        "no fence_failed"
    );
    assert!(
        bed.fenced(3).is_none() || killed.elapsed() >= DEAD_AFTER,
        "fenced before the watchdog bound"
    );
    assert!(
        wait_until(Duration::from_secs(25), || bed.fenced(3).is_some()),
        "never fenced by the watchdog bound"
    );
    let took = killed.elapsed();
    println!(
        "BMC down: kill -9 -> fenced (watchdog) {:.1} s, dead_after {} s",
        took.as_secs_f64(),
        DEAD_AFTER.as_secs()
    );
    assert_eq!(bed.fenced(3).as_deref(), Some("watchdog"));
    // S1 counts dead_after from the first read that showed the victim's last record. That
    // record was written before the kill, at most one interval (1 s) before it, so the verdict
    // may come up to one interval less than dead_after after the kill, never earlier.
    let bound = DEAD_AFTER - Duration::from_secs(1);
    assert!(
        took >= bound,
        "declared fenced {took:?} after death, before dead_after - interval {bound:?}"
    );
    // The exact bound, from the victim's last record as the observer saw it, is checked at
    // every step by tests/simulation.rs and measured by bench/time_to_fenced.rs.
}

#[test]
fn dead_bmc_without_watchdog_is_never_fenced() {
    if !ready("dead_bmc_without_watchdog_is_never_fenced") {
        return;
    }
    let mut bed = Bed::new(Options { n: 2, wrong_password_for: None, hooks_dir: None });
    bed.start_all();
    // Host 2 stops; its last records are replaced by records of a host without a watchdog
    // (an agent that never armed one), then it goes silent.
    bed.bmcs[1].stop();
    bed.kill(2);
    write_unarmed_records(&bed.volume, 2);
    std::thread::sleep(DEAD_AFTER + Duration::from_secs(4));
    assert_eq!(
        bed.fenced(2),
        None,
        "a host without an armed watchdog was declared fenced without its BMC"
    );
    let failed = bed.host(1).events_about("fence_failed", 2);
    assert!(!failed.is_empty(), "no fence_failed event");
    assert_eq!(verdict(&bed.volume, 2).map(|v| v.0).as_deref(), Some("fence-failed"));
}

/// Writes a few advancing heartbeat records for `id` without WATCHDOG_ARMED, as an agent
/// without a watchdog would.
fn write_unarmed_records(volume: &Path, id: u32) {
    use hbfence::core::format::{self, Decoded, HostState};
    use hbfence::volume::{Access, AlignedBuf, Volume};
    let vol = Volume::open(volume, Access::ReadWrite).unwrap();
    let header = vol.read_header().unwrap();
    let mut buf = AlignedBuf::new(1).unwrap();
    vol.read_blocks(header.geometry().heartbeat_block(id), &mut buf).unwrap();
    let Decoded::Heartbeat(mut hb) = format::decode(buf.block(0)) else {
        panic!("no record for host {id}")
    };
    hb.incarnation += 1;
    hb.caps &= !format::caps::WATCHDOG_ARMED;
    hb.watchdog_timeout_s = 0;
    hb.state = HostState::Active;
    for _ in 0..3 {
        hb.seq += 1;
        buf.block_mut(0).copy_from_slice(&format::encode_heartbeat(&hb).unwrap());
        vol.write_block(header.geometry().heartbeat_block(id), &buf, 0).unwrap();
        std::thread::sleep(Duration::from_millis(1000));
    }
}

#[test]
fn wrong_bmc_password_fails_loudly_and_never_leaks() {
    if !ready("wrong_bmc_password_fails_loudly_and_never_leaks") {
        return;
    }
    let mut bed = Bed::new(Options { n: 3, wrong_password_for: Some(3), hooks_dir: None });
    bed.start_all();
    let watcher = std::thread::spawn(|| {
        // Scan every process's argv while fencing runs.
        let mut seen = Vec::new();
        let end = Instant::now() + Duration::from_secs(12);
        while Instant::now() < end {
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                    let text = String::from_utf8_lossy(&cmd).replace('\0', " ");
                    if text.contains("ipmitool") {
                        seen.push(text);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    });
    bed.kill(3);
    assert!(
        wait_until(Duration::from_secs(15), || !bed
            .host(1)
            .events_about("fence_failed", 3)
            .is_empty()),
        "no fence_failed"
    );
    let ev = &bed.host(1).events_about("fence_failed", 3)[0];
    let detail = ev["detail"].as_str().unwrap();
    assert!(
        detail.contains("RMCP+") || detail.contains("session"),
        "the BMC's answer is missing: {detail}"
    );
    let argvs = watcher.join().unwrap();
    assert!(!argvs.is_empty(), "no ipmitool process was observed");
    for a in &argvs {
        assert!(!a.contains(PASSWORD), "password in argv: {a}");
        assert!(a.contains("-E"), "ipmitool must read the password from the environment: {a}");
    }
    for h in &bed.hosts {
        assert!(!h.log_text().contains(PASSWORD), "password in the log of host {}", h.id);
        assert!(!h.events_text().contains(PASSWORD), "password in the events of host {}", h.id);
    }
    assert_ne!(bed.fenced(3).as_deref(), Some("ipmi"));
}

#[test]
fn storage_wide_freeze_shorter_than_lease_fences_nobody() {
    if !ready("storage_wide_freeze_shorter_than_lease_fences_nobody") {
        return;
    }
    let mut bed = Bed::new(Options { n: 3, wrong_password_for: None, hooks_dir: None });
    bed.start_all();
    bed.fs.set_fault("v.vol", Fault::Freeze);
    std::thread::sleep(LEASE - Duration::from_millis(1500));
    bed.fs.clear_fault("v.vol");
    std::thread::sleep(Duration::from_secs(8));
    for h in &bed.hosts {
        assert_eq!(h.sysrq_letters(), "", "host {} self-fenced:\n{}", h.id, h.log_text());
        for peer in 1..=3 {
            assert!(
                h.events_about("fence_started", peer).is_empty(),
                "host {} started fencing {peer} after a blip:\n{}",
                h.id,
                h.events_text()
            );
        }
    }
    assert!(bed.bmcs.iter().all(|b| b.power_is_on()), "a BMC powered a host off");
}

#[test]
fn clean_stop_is_not_fenced_and_fence_command_makes_a_host_self_fence() {
    if !ready("clean_stop_is_not_fenced_and_fence_command_makes_a_host_self_fence") {
        return;
    }
    let hooks = tempfile::tempdir().unwrap();
    let hook_out = hooks.path().join("seen");
    let hook = hooks.path().join("10-record");
    script::write_executable(&hook, &format!("#!/bin/sh\necho \"$HBFENCE_EVENT $HBFENCE_HOST $HBFENCE_HOST_NAME $HBFENCE_METHOD\" >> {}\n", hook_out.display())).unwrap();
    let mut bed = Bed::new(Options {
        n: 3,
        wrong_password_for: None,
        hooks_dir: Some(hooks.path().to_path_buf()),
    });
    // Host 3's BMC is down, so only the fence request (poison pill) can fence it.
    bed.bmcs[2].stop();
    bed.start_all();
    bed.host(2).signal(Signal::SIGTERM);
    assert!(bed.hosts[1].wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()));
    // Host 3 is fenced by request: it acknowledges and resets itself (sysrq file).
    let started = Instant::now();
    let out = bed.host(1).cli(&["fence", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fence failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("acknowledged"), "{text}");
    assert!(bed.host(3).sysrq_letters().contains('b'), "host 3 did not self-fence");
    println!("hbfence fence 3: {:.1} s to FENCED\n{text}", started.elapsed().as_secs_f64());
    assert_eq!(bed.fenced(3).as_deref(), Some("request"));
    std::thread::sleep(DEAD_AFTER);
    assert_eq!(bed.fenced(2), None, "a host that left cleanly was fenced");
    assert!(bed.host(1).events_about("fence_started", 2).is_empty());
    assert_eq!(check(bed.host(1), 2).1, "LEFT");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&hook_out)
            .unwrap_or_default()
            .contains("fenced 3 host3 request")),
        "hook output: {}",
        std::fs::read_to_string(&hook_out).unwrap_or_default()
    );
}

/// Issue 10 item 13: a healthy coordinator that stops (SIGSTOP) for a while, again and again,
/// with its writes landing less than suspect_after apart, is never suspected and never powered
/// off. The pauses are as long as the 2 s watchdog double allows without firing (last pet up to
/// 0.5 s before the stop): each leaves a gap of about 2.4 s between landings (suspect_after 3 s).
#[test]
fn a_coordinator_paused_shorter_than_suspect_after_is_never_fenced() {
    if !ready("a_coordinator_paused_shorter_than_suspect_after_is_never_fenced") {
        return;
    }
    let mut bed = Bed::new(Options { n: 3, wrong_password_for: None, hooks_dir: None });
    bed.start_all();
    for _ in 0..8 {
        bed.host(1).signal(Signal::SIGSTOP);
        std::thread::sleep(Duration::from_millis(1400));
        bed.host(1).signal(Signal::SIGCONT);
        std::thread::sleep(Duration::from_millis(1300));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(bed.host(1).watchdog.fired().is_none(), "the pause fired the watchdog double");
    for observer in [2, 3] {
        let h = bed.host(observer);
        for kind in ["host_suspect", "fence_started", "fenced"] {
            assert!(
                h.events_about(kind, 1).is_empty(),
                "host {observer}: {kind} about a healthy paused coordinator:\n{}",
                h.events_text()
            );
        }
    }
    assert!(bed.bmcs[0].power_is_on(), "the paused coordinator was powered off");
}
