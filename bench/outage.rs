//! Benchmark (issue 13): a cluster-wide storage outage at the default timing (`hbfence init`
//! without timing flags: interval 5 s, lease 30 s, watchdog 10 s), with outage survival off
//! versus on, both in one run.
//!
//! Two 3-host clusters side by side, at the same time: each has its own volume (members 1-3,
//! `--outage-survival off` or `on`) on its own FUSE fault-injector mount, the peer channel on
//! 127.0.0.1 (default challenge period, half the interval) and real `hbfence run` agents with
//! the harness's FIFO watchdog double and sysrq test file (never the machine's). Once every
//! agent runs with a lease and reaches its peers, both volumes are frozen at the same instant
//! (every read and write blocks) for `--outage-secs` (default 120), then released. A host
//! counts as reset when its agent wrote `b` to its sysrq file or its watchdog double fired
//! (the double fires 2 s after the last pet, earlier than a 10 s hardware watchdog would: a
//! reset is counted, never missed). After the outage the bench waits for the survivors to renew
//! their leases and reads the volumes for verdicts (there must be none: nobody could fence).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench outage [-- --outage-secs N]`
//! Needs root and /dev/fuse (prints why and exits otherwise).

#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "common.rs"]
mod common;
#[path = "../tests/support/faultfs.rs"]
mod faultfs;
#[path = "../tests/support/peers.rs"]
mod peers;
use common::{command_line, now_utc, source_state};

use cluster::{dump, host_record, verdict, wait_until, Host, HostSpec};
use faultfs::{Fault, FaultFs};
use peers::{all_reachable, enable_network, keygen, listen_addrs, status_file};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const VOLUME: &str = "hb.vol";
/// The default challenge period for the default 5 s interval.
const CHALLENGE_MS: u64 = 2500;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("outage: {msg}");
    std::process::exit(1)
}

struct Side {
    survival: bool,
    fs: FaultFs,
    volume: PathBuf,
    hosts: Vec<Host>,
    /// Per host: when the bench first saw it reset, after the freeze.
    reset_at: Vec<Option<Instant>>,
}

impl Side {
    fn build(base: &Path, survival: bool) -> Side {
        let dir = base.join(if survival { "survival-on" } else { "survival-off" });
        let backing = dir.join("backing");
        fs::create_dir_all(&backing).unwrap();
        let fs = FaultFs::mount(&backing, &dir.join("mnt")).unwrap_or_else(|e| fail(e));
        let volume = fs.mountpoint().join(VOLUME);
        let switch = if survival { "on" } else { "off" };
        let out = cluster::hbfence(&[
            "init",
            "--volume",
            volume.to_str().unwrap(),
            "--max-hosts",
            "8",
            "--members",
            "1-3",
            "--outage-survival",
            switch,
        ]);
        if !out.status.success() {
            fail(format!("init: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let key = keygen(&dir);
        let listen = listen_addrs(3);
        let hosts = (1..=3u32)
            .map(|id| {
                let host = Host::new(
                    &dir,
                    &HostSpec {
                        id,
                        volumes: vec![volume.clone()],
                        peers: (1..=3).filter(|&p| p != id).map(|p| (p, None)).collect(),
                        hooks_dir: None,
                        eligible: true,
                    },
                );
                enable_network(&host, listen[id as usize - 1], &key, CHALLENGE_MS, |p| {
                    listen[p as usize - 1]
                });
                host
            })
            .collect();
        Side { survival, fs, volume, hosts, reset_at: vec![None; 3] }
    }

    fn name(&self) -> &'static str {
        if self.survival {
            "survival on"
        } else {
            "survival off"
        }
    }

    fn ready(&self) -> bool {
        let v = dump(&self.volume);
        self.hosts.iter().all(|h| {
            host_record(&v, h.id).is_some_and(|(_, s)| s == "active")
                && status_file(h)["lease_valid"] == true
                && status_file(h)["outage_survival"] == self.survival
        }) && all_reachable(&self.hosts)
    }

    fn note_resets(&mut self) {
        for (h, at) in self.hosts.iter().zip(self.reset_at.iter_mut()) {
            if at.is_none() {
                if let Some(fired) = h.watchdog.fired() {
                    *at = Some(fired);
                } else if h.sysrq_letters().contains('b') {
                    *at = Some(Instant::now());
                }
            }
        }
    }

    fn events(&self, kind: &str) -> usize {
        self.hosts
            .iter()
            .map(|h| h.events_text().matches(&format!("\"event\":\"{kind}\"")).count())
            .sum()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let outage_secs: u64 = args
        .iter()
        .position(|a| a == "--outage-secs")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| fail("--outage-secs needs a number")))
        .unwrap_or(120);
    let root = nix::unistd::Uid::effective().is_root();
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("outage: skipped: needs root and /dev/fuse");
        std::process::exit(if std::env::var("CI").as_deref() == Ok("true") { 1 } else { 0 });
    }
    let started = Instant::now();
    let base = PathBuf::from(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("/var/tmp"));
    fs::create_dir_all(&base).unwrap_or_else(|e| fail(format!("{}: {e}", base.display())));
    let tmp = tempfile::tempdir_in(&base).unwrap_or_else(|e| fail(e));
    let mut sides = vec![Side::build(tmp.path(), false), Side::build(tmp.path(), true)];
    for s in &mut sides {
        for h in &mut s.hosts {
            h.start();
        }
    }
    eprintln!("outage: 2 clusters of 3 agents started; waiting until every agent holds a lease and reaches its peers");
    if !wait_until(Duration::from_secs(90), || sides.iter().all(Side::ready)) {
        for s in &sides {
            for h in &s.hosts {
                eprintln!("--- {} host {}:\n{}", s.name(), h.id, h.log_text());
            }
        }
        fail("the clusters did not get ready within 90 s");
    }
    let seqs_before: Vec<Vec<u64>> = sides
        .iter()
        .map(|s| {
            let v = dump(&s.volume);
            (1..=3).map(|id| host_record(&v, id).map_or(0, |r| r.0)).collect()
        })
        .collect();
    eprintln!("outage: freezing both volumes for {outage_secs} s");
    for s in &sides {
        s.fs.set_fault(VOLUME, Fault::Freeze);
    }
    let frozen_at = Instant::now();
    let outage = Duration::from_secs(outage_secs);
    let mut surviving_seen = [0usize; 2];
    while frozen_at.elapsed() < outage {
        for (i, s) in sides.iter_mut().enumerate() {
            s.note_resets();
            let now = s.hosts.iter().filter(|h| status_file(h)["surviving_ms"].is_u64()).count();
            surviving_seen[i] = surviving_seen[i].max(now);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for s in &sides {
        s.fs.clear_fault(VOLUME);
    }
    let thawed_at = Instant::now();
    eprintln!(
        "outage: volumes released; waiting for the hosts that did not reset to renew their lease"
    );
    let renewed = |s: &Side, i: usize| {
        s.reset_at[i].is_none() && status_file(&s.hosts[i])["lease_valid"] == true
    };
    let all_back = wait_until(Duration::from_secs(60), || {
        sides.iter_mut().for_each(Side::note_resets);
        sides.iter().all(|s| (0..3).all(|i| s.reset_at[i].is_some() || renewed(s, i)))
    });
    let back_after = thawed_at.elapsed();
    // Two more intervals: a verdict or a late reset after the outage would show.
    std::thread::sleep(Duration::from_secs(10));
    sides.iter_mut().for_each(Side::note_resets);

    println!();
    println!(
        "hbfence cluster-wide storage outage, {} (2 cores): two 3-host clusters side by side, default timing (interval 5 s, lease 30 s, watchdog 10 s), peer channel on 127.0.0.1, members 1-3",
        now_utc()
    );
    println!("both volumes (FUSE fault injector) frozen at the same instant for {outage_secs} s, then released");
    println!();
    println!("| cluster | hosts reset | first / last reset after freeze s | max surviving at once | survival_started / ended | renewed lease after | verdicts fenced | fence_started |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut problems = vec![];
    for (i, s) in sides.iter().enumerate() {
        let resets: Vec<f64> = s
            .reset_at
            .iter()
            .flatten()
            .map(|t| t.saturating_duration_since(frozen_at).as_secs_f64())
            .collect();
        let first_last = if resets.is_empty() {
            "-".to_string()
        } else {
            let min = resets.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = resets.iter().cloned().fold(0.0, f64::max);
            format!("{min:.1} / {max:.1}")
        };
        let renewed_n = (0..3).filter(|&h| renewed(s, h)).count();
        let fenced =
            (1..=3).filter(|&id| verdict(&s.volume, id).is_some_and(|v| v.0 == "fenced")).count();
        let fence_started = s.events("fence_started");
        println!(
            "| {} | {} of 3 | {} | {} | {} / {} | {} of 3 | {} | {} |",
            s.name(),
            resets.len(),
            first_last,
            surviving_seen[i],
            s.events("survival_started"),
            s.events("survival_ended"),
            renewed_n,
            fenced,
            fence_started
        );
        let expected = if s.survival { 0 } else { 3 };
        if resets.len() != expected {
            problems.push(format!(
                "{}: {} of 3 reset, expected {expected}",
                s.name(),
                resets.len()
            ));
        }
        if fenced > 0 {
            problems.push(format!("{}: {fenced} host(s) declared fenced", s.name()));
        }
        if s.survival {
            let v = dump(&s.volume);
            for id in 1..=3u32 {
                let seq = host_record(&v, id).map_or(0, |r| r.0);
                if seq <= seqs_before[i][id as usize - 1] {
                    problems
                        .push(format!("{}: host {id} wrote nothing after the outage", s.name()));
                }
            }
        }
    }
    println!();
    println!(
        "survivors renewed their lease {:.1} s after the release{}",
        back_after.as_secs_f64(),
        if all_back { "" } else { " (NOT all within 60 s)" }
    );
    if problems.is_empty() {
        println!("checks: survival off: every host reset; survival on: none reset, every host renewed its lease and wrote on; no verdict anywhere");
    } else {
        for p in &problems {
            println!("PROBLEM: {p}");
        }
    }
    println!();
    println!("source: {}", source_state());
    println!("command: {}", command_line("outage"));
    println!("total run time: {:.1} s", started.elapsed().as_secs_f64());
}
