//! Benchmark: time from host death (kill -9 of the agent) to `fenced` visible on the volume.
//!
//! Four configurations: BMC path (ipmi_sim up) and watchdog-only path (its BMC stopped first),
//! each at the default timing (`hbfence init` without timing flags: interval 5 s, suspect_after
//! 15 s, dead_after 55 s) and at 1 s timing (`--interval 1 --io-timeout 2 --lease-timeout 6
//! --watchdog-timeout 2 --suspect-after 3`: suspect_after 3 s, dead_after 11 s).
//!
//! Each configuration runs its trials concurrently: N independent 3-host clusters (own volume
//! file with --max-hosts 8, own 3 `ipmi_sim` BMCs on free UDP ports, agents with the harness's
//! FIFO watchdog doubles and sysrq test files). Once every cluster is running with host 1 as
//! coordinator, host 3 of each cluster is killed with SIGKILL at a random offset within one
//! interval, and the bench polls every volume (O_DIRECT, library API) every 100 ms for the
//! verdict about host 3. It also reads the coordinator's JSON event log (`host_suspect`,
//! `fence_started`, `fenced` carry the agent's CLOCK_MONOTONIC, the same clock as the bench's)
//! and checks the safety bounds: the watchdog path must never decide earlier than dead_after
//! after the start of the victim's last write (S1), the BMC path must leave the chassis off.
//!
//! A fifth configuration, `bmc-5s-net`, is `bmc-5s` with the peer channel (issue 13) on
//! 127.0.0.1 and outage survival on (members 1-3): before the power-off the coordinator asks
//! whether the suspect claims a valid lease on the channel (a dead one is silent). It runs first,
//! right before `bmc-5s`, so the two compare within one run.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench time_to_fenced
//!       [-- --trials N] [--only bmc-5s-net,bmc-5s,bmc-1s,wd-5s,wd-1s]`
//! Needs root, ipmi_sim and ipmitool (prints why and exits otherwise).

#[path = "../tests/support/bmc.rs"]
mod bmc;
#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "common.rs"]
mod common;
#[path = "../tests/support/peers.rs"]
mod peers;
#[path = "../tests/support/script.rs"]
mod script;
use common::{command_line, now_utc, source_state};

use bmc::SimBmc;
use cluster::{BmcConfig, Host, HostSpec};
use hbfence::core::format::{caps, Header, HostState, VerdictKind};
use hbfence::core::view::current_verdict;
use hbfence::volume::{Access, Volume};
use nix::sys::signal::Signal;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret-Pw_42";
const VICTIM: u32 = 3;
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path_ {
    Bmc,
    Watchdog,
}

struct Cfg {
    key: &'static str,
    path: Path_,
    init: &'static [&'static str],
    interval_ms: u64,
    suspect_ms: u64,
    dead_after_ms: u64,
    /// The peer channel on 127.0.0.1 with outage survival on (members 1-3): the partial-blip
    /// rule asks the channel before every power-off.
    network: bool,
}

const CONFIGS: &[Cfg] = &[
    Cfg {
        key: "bmc-5s-net",
        path: Path_::Bmc,
        init: &[],
        interval_ms: 5000,
        suspect_ms: 15000,
        dead_after_ms: 55000,
        network: true,
    },
    Cfg {
        key: "bmc-5s",
        path: Path_::Bmc,
        init: &[],
        interval_ms: 5000,
        suspect_ms: 15000,
        dead_after_ms: 55000,
        network: false,
    },
    Cfg {
        key: "bmc-1s",
        path: Path_::Bmc,
        init: cluster::INIT_ARGS,
        interval_ms: 1000,
        suspect_ms: 3000,
        dead_after_ms: 11000,
        network: false,
    },
    Cfg {
        key: "wd-5s",
        path: Path_::Watchdog,
        init: &[],
        interval_ms: 5000,
        suspect_ms: 15000,
        dead_after_ms: 55000,
        network: false,
    },
    Cfg {
        key: "wd-1s",
        path: Path_::Watchdog,
        init: cluster::INIT_ARGS,
        interval_ms: 1000,
        suspect_ms: 3000,
        dead_after_ms: 11000,
        network: false,
    },
];

fn path_name(cfg: &Cfg) -> &'static str {
    match (cfg.path, cfg.network) {
        (Path_::Bmc, false) => "BMC",
        (Path_::Bmc, true) => "BMC+chan",
        (Path_::Watchdog, _) => "watchdog",
    }
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("time_to_fenced: {msg}");
    std::process::exit(1)
}

fn preflight() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root (agents open their runtime dirs, ipmi_sim); run as root".into());
    }
    if let Some(why) = bmc::tools_missing() {
        return Err(why);
    }
    Ok(())
}

fn mono_ms_f() -> f64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    ts.tv_sec() as f64 * 1000.0 + ts.tv_nsec() as f64 / 1e6
}

#[derive(Default, Clone, Debug)]
struct Trial {
    /// Bench CLOCK_MONOTONIC (ms) right after kill(2) returned.
    killed_ms: Option<f64>,
    /// First poll that showed `fenced` (ms, bench clock).
    visible_ms: Option<f64>,
    method: String,
    /// The victim's last record: mono_ms at the start of its last cycle (agent clock = ours).
    last_write_ms: Option<u64>,
    suspect_ms: Option<u64>,
    fence_started_ms: Option<u64>,
    fenced_event_ms: Option<u64>,
    fence_failed: usize,
    storage_events: usize,
    reporter: Option<u64>,
    bmc_power_on: Option<bool>,
    cli_verdict: Option<(String, String)>,
    excluded: Option<String>,
}

struct ClusterBed {
    idx: usize,
    volume: PathBuf,
    vol: Volume,
    header: Header,
    hosts: Vec<Host>,
    bmcs: Vec<SimBmc>,
    trial: Trial,
}

fn build_cluster(cfg: &Cfg, base: &Path, idx: usize) -> Result<ClusterBed, String> {
    let dir = base.join(format!("c{idx:02}"));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let volume = dir.join("hb.vol");
    let mut args = vec!["init", "--volume", volume.to_str().unwrap(), "--max-hosts", "8"];
    args.extend_from_slice(cfg.init);
    if cfg.network {
        args.extend_from_slice(&["--members", "1-3", "--outage-survival", "on"]);
    }
    let out = cluster::hbfence(&args);
    if !out.status.success() {
        return Err(format!("init: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let (bmcs, configs) =
        bmc::start_for_hosts(&dir, 3, "admin", PASSWORD, |port, password_file| BmcConfig {
            port,
            password_file,
        })
        .map_err(|e| format!("ipmi_sim: {e}"))?;
    let hosts = (1..=3u32)
        .map(|id| {
            let peers = (1..=3u32)
                .filter(|&p| p != id)
                .map(|p| (p, Some(&configs[p as usize - 1])))
                .collect();
            Host::new(
                &dir,
                &HostSpec {
                    id,
                    volumes: vec![volume.clone()],
                    peers,
                    hooks_dir: None,
                    eligible: true,
                },
            )
        })
        .collect::<Vec<Host>>();
    if cfg.network {
        let key = peers::keygen(&dir);
        let listen = peers::listen_addrs(3);
        for h in &hosts {
            // The default challenge period: half the interval.
            peers::enable_network(h, listen[h.id as usize - 1], &key, cfg.interval_ms / 2, |p| {
                listen[p as usize - 1]
            });
        }
    }
    let vol = Volume::open(&volume, Access::ReadOnly).map_err(|e| e.to_string())?;
    let header = vol.read_header().map_err(|e| e.to_string())?;
    Ok(ClusterBed { idx, volume, vol, header, hosts, bmcs, trial: Trial::default() })
}

/// All three hosts active with an armed watchdog, host 1 the acting coordinator, everyone
/// believing in host 1.
fn ready(c: &ClusterBed) -> Option<u64> {
    let view = c.vol.read_view(&c.header).ok()?;
    let mut victim_seq = 0;
    for id in 1..=3 {
        let r = view.record(id)?;
        if r.state != HostState::Active || r.caps & caps::WATCHDOG_ARMED == 0 || r.coordinator != 1
        {
            return None;
        }
        if id == 1 && r.caps & caps::COORDINATOR == 0 {
            return None;
        }
        if id == VICTIM {
            victim_seq = r.seq;
        }
    }
    Some(victim_seq)
}

fn events(h: &Host) -> Vec<serde_json::Value> {
    h.events_text().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn collect(c: &mut ClusterBed) {
    let t = &mut c.trial;
    if let Ok(view) = c.vol.read_view(&c.header) {
        t.last_write_ms = view.record(VICTIM).map(|r| r.mono_ms);
    }
    for h in c.hosts.iter().take(2) {
        for e in events(h) {
            let about_victim = e["host"] == VICTIM;
            let at = e["mono_ms"].as_u64();
            match e["event"].as_str().unwrap_or("") {
                "host_suspect" if about_victim => {
                    t.suspect_ms = min_opt(t.suspect_ms, at);
                }
                "fence_started" if about_victim => {
                    t.fence_started_ms = min_opt(t.fence_started_ms, at);
                }
                "fenced"
                    if about_victim
                        && at.is_some()
                        && (t.fenced_event_ms.is_none() || at < t.fenced_event_ms) =>
                {
                    t.fenced_event_ms = at;
                    t.reporter = e["reporter"].as_u64();
                }
                "fence_failed" if about_victim => t.fence_failed += 1,
                "storage_degraded" | "storage_lost" => t.storage_events += 1,
                _ => {}
            }
        }
    }
    t.bmc_power_on = Some(c.bmcs[VICTIM as usize - 1].power_is_on());
    t.cli_verdict = cluster::verdict(&c.volume, VICTIM);
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

struct Outcome {
    key: &'static str,
    trials: Vec<Trial>,
    setup_s: f64,
    wall_s: f64,
}

fn run_config(cfg: &Cfg, base: &Path, n: usize) -> Outcome {
    let t_start = Instant::now();
    let cbase = base.join(cfg.key);
    fs::create_dir_all(&cbase).unwrap();
    eprintln!("[{}] building {n} clusters (3 agents + 3 ipmi_sim each)...", cfg.key);
    let built: Vec<Result<ClusterBed, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                s.spawn({
                    let cbase = &cbase;
                    move || build_cluster(cfg, cbase, i + 1)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("panicked".into()))).collect()
    });
    let errors: Vec<String> = built
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.as_ref().err().map(|e| format!("cluster {}: {e}", i + 1)))
        .collect();
    if !errors.is_empty() {
        // Stop the BMCs of the clusters that did start before giving up.
        drop(built);
        fail(format!("[{}] setup failed:\n{}", cfg.key, errors.join("\n")));
    }
    let mut clusters: Vec<ClusterBed> = built.into_iter().flatten().collect();
    for c in &mut clusters {
        for h in &mut c.hosts {
            h.start();
        }
    }
    eprintln!(
        "[{}] agents started; waiting until every cluster runs with host 1 as coordinator",
        cfg.key
    );
    let limit = Duration::from_millis(cfg.interval_ms * 8 + 20_000);
    let mut first_seq: Vec<Option<u64>> = vec![None; clusters.len()];
    let ok = cluster::wait_until(limit, || {
        let mut all = true;
        for (i, c) in clusters.iter().enumerate() {
            match ready(c) {
                // Host 3 must have written 3 more records after readiness, so the coordinator
                // has seen it alive for a while.
                Some(seq) => {
                    let f = *first_seq[i].get_or_insert(seq);
                    if seq < f + 3 {
                        all = false;
                    }
                }
                None => all = false,
            }
        }
        all
    });
    if !ok {
        let bad: Vec<String> = clusters
            .iter()
            .filter(|c| ready(c).is_none())
            .map(|c| format!("c{:02}: host 1 log tail: {}", c.idx, tail(&c.hosts[0].log_text(), 3)))
            .collect();
        eprintln!(
            "[{}] WARNING: {} cluster(s) not ready after {limit:?}, excluded:\n{}",
            cfg.key,
            bad.len(),
            bad.join("\n")
        );
        for c in &mut clusters {
            if ready(c).is_none() {
                c.trial.excluded = Some("not ready".into());
            }
        }
    }
    let setup_s = t_start.elapsed().as_secs_f64();
    if cfg.path == Path_::Watchdog {
        for c in &mut clusters {
            c.bmcs[VICTIM as usize - 1].stop();
        }
        eprintln!("[{}] stopped every victim's BMC", cfg.key);
    }
    // Random kill offsets within one interval.
    let t0 = mono_ms_f() + 200.0;
    let mut plan: Vec<(f64, usize)> = (0..clusters.len())
        .filter(|&i| clusters[i].trial.excluded.is_none())
        .map(|i| {
            let frac = (hbfence::sys::random_u64() % 1_000_000) as f64 / 1_000_000.0;
            (t0 + frac * cfg.interval_ms as f64, i)
        })
        .collect();
    plan.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let mut next_kill = 0;
    let give_up = Duration::from_millis(cfg.dead_after_ms + cfg.interval_ms * 2 + 60_000);
    eprintln!(
        "[{}] killing host {VICTIM} of each cluster at random offsets within {} ms; polling verdicts (give up after {give_up:?})",
        cfg.key, cfg.interval_ms
    );
    let polling_start = Instant::now();
    let mut last_poll = Instant::now() - POLL;
    loop {
        let now = mono_ms_f();
        while next_kill < plan.len() && plan[next_kill].0 <= now {
            let c = &mut clusters[plan[next_kill].1];
            // The dead host's watchdog double must not SIGKILL a recycled pid later.
            *c.hosts[VICTIM as usize - 1].watchdog.kill_pid.lock().unwrap() = None;
            c.hosts[VICTIM as usize - 1].signal(Signal::SIGKILL);
            c.trial.killed_ms = Some(mono_ms_f());
            next_kill += 1;
        }
        if last_poll.elapsed() >= POLL {
            last_poll = Instant::now();
            for c in clusters.iter_mut() {
                if c.trial.killed_ms.is_none() || c.trial.visible_ms.is_some() {
                    continue;
                }
                if let Ok(view) = c.vol.read_view(&c.header) {
                    if let Some(v) = current_verdict(&view, VICTIM) {
                        if v.kind == VerdictKind::Fenced {
                            c.trial.visible_ms = Some(mono_ms_f());
                            c.trial.method = v.method.as_str().to_string();
                        }
                    }
                }
            }
        }
        let pending = clusters
            .iter()
            .filter(|c| c.trial.excluded.is_none() && c.trial.visible_ms.is_none())
            .count();
        if pending == 0 || polling_start.elapsed() > give_up {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for c in &mut clusters {
        collect(c);
    }
    let trials = clusters.iter().map(|c| c.trial.clone()).collect();
    // Dump the logs of clusters whose victim was never fenced, for the report.
    for c in &clusters {
        if c.trial.excluded.is_none() && c.trial.visible_ms.is_none() {
            eprintln!(
                "[{}] c{:02}: host {VICTIM} NOT fenced; host 1 events:\n{}",
                cfg.key,
                c.idx,
                tail(&c.hosts[0].events_text(), 8)
            );
        }
    }
    eprintln!("[{}] tearing down", cfg.key);
    drop(clusters);
    Outcome { key: cfg.key, trials, setup_s, wall_s: t_start.elapsed().as_secs_f64() }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn stats(mut v: Vec<f64>) -> Option<(f64, f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some((v[0], p(0.5), p(0.9), v[v.len() - 1]))
}

fn fmt_s(x: Option<(f64, f64, f64, f64)>) -> String {
    match x {
        Some((min, p50, _p90, max)) => {
            format!("{:>6.1} / {:>6.1} / {:>6.1}", min / 1000.0, p50 / 1000.0, max / 1000.0)
        }
        None => format!("{:>22}", "-"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let n: usize = arg("--trials")
        .map(|v| v.parse().unwrap_or_else(|_| fail("--trials needs a number")))
        .unwrap_or(20);
    let only: Option<Vec<String>> =
        arg("--only").map(|v| v.split(',').map(str::to_string).collect());
    if let Err(why) = preflight() {
        eprintln!("time_to_fenced: skipped: {why}");
        std::process::exit(if std::env::var("CI").as_deref() == Ok("true") { 1 } else { 0 });
    }
    let started = Instant::now();
    let base = PathBuf::from(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("/var/tmp"));
    fs::create_dir_all(&base).unwrap_or_else(|e| fail(format!("{}: {e}", base.display())));
    let tmp = tempfile::tempdir_in(&base).unwrap_or_else(|e| fail(e));

    let mut outcomes = vec![];
    for cfg in CONFIGS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|k| k == cfg.key)) {
            continue;
        }
        outcomes.push((cfg, run_config(cfg, tmp.path(), n)));
    }

    println!();
    println!(
        "hbfence time to fenced, {} (2 cores); {n} trials per configuration, run concurrently as {n} independent 3-host clusters",
        now_utc()
    );
    println!("victim: host {VICTIM} (not the coordinator), SIGKILL at a random offset within one interval; BMC: ipmi_sim on 127.0.0.1 via ipmitool lanplus -C 3");
    println!("kill -> decision: the coordinator's `fenced` event (its CLOCK_MONOTONIC); kill -> visible: first 100 ms volume poll showing verdict fenced");
    println!();
    println!(
        "| {:<6} | {:<9} | {:>8} | {:>6} | {:>22} | {:>22} | {:>22} | {:>22} | {:<8} |",
        "config",
        "path",
        "interval",
        "fenced",
        "kill->suspect s",
        "kill->decision s",
        "decision->visible s",
        "kill->VISIBLE s",
        "method"
    );
    println!(
        "| {:<6} | {:<9} | {:>8} | {:>6} | {:>22} | {:>22} | {:>22} | {:>22} | {:<8} |",
        "",
        "",
        "",
        "",
        "min / p50 / max",
        "min / p50 / max",
        "min / p50 / max",
        "min / p50 / max",
        ""
    );
    println!("|--------|-----------|----------|--------|------------------------|------------------------|------------------------|------------------------|----------|");
    let mut problems = vec![];
    let mut summary = vec![];
    for (cfg, o) in &outcomes {
        let used: Vec<&Trial> = o.trials.iter().filter(|t| t.excluded.is_none()).collect();
        let fenced: Vec<&Trial> = used.iter().copied().filter(|t| t.visible_ms.is_some()).collect();
        let d = |f: &dyn Fn(&Trial) -> Option<f64>| -> Vec<f64> {
            used.iter().filter_map(|t| f(t)).collect()
        };
        let suspect = d(&|t| Some(t.suspect_ms? as f64 - t.killed_ms?));
        let decision = d(&|t| Some(t.fenced_event_ms? as f64 - t.killed_ms?));
        let publish = d(&|t| Some(t.visible_ms? - t.fenced_event_ms? as f64));
        let visible = d(&|t| Some(t.visible_ms? - t.killed_ms?));
        let mut methods: Vec<String> = fenced.iter().map(|t| t.method.clone()).collect();
        methods.sort();
        methods.dedup();
        println!(
            "| {:<6} | {:<9} | {:>7}s | {:>3}/{:<2} | {} | {} | {} | {} | {:<8} |",
            cfg.key,
            path_name(cfg),
            cfg.interval_ms / 1000,
            fenced.len(),
            used.len(),
            fmt_s(stats(suspect)),
            fmt_s(stats(decision)),
            fmt_s(stats(publish)),
            fmt_s(stats(visible.clone())),
            methods.join(",")
        );
        summary.push((cfg, stats(visible), fenced.len(), used.len()));
        // Safety and consistency checks.
        for (i, t) in o.trials.iter().enumerate() {
            let c = i + 1;
            if let Some(why) = &t.excluded {
                problems.push(format!("{} c{c:02}: excluded ({why})", cfg.key));
                continue;
            }
            if t.visible_ms.is_none() {
                problems.push(format!("{} c{c:02}: NOT fenced within the time limit", cfg.key));
                continue;
            }
            let want = if cfg.path == Path_::Bmc { "ipmi" } else { "watchdog" };
            if t.method != want {
                problems
                    .push(format!("{} c{c:02}: method {} (expected {want})", cfg.key, t.method));
            }
            if cfg.path == Path_::Bmc && t.bmc_power_on != Some(false) {
                problems.push(format!(
                    "{} c{c:02}: fenced via BMC but the chassis is still on (S8)",
                    cfg.key
                ));
            }
            if let (Some(dec), Some(last)) = (t.fenced_event_ms, t.last_write_ms) {
                if cfg.path == Path_::Watchdog && dec < last + cfg.dead_after_ms {
                    problems.push(format!(
                        "{} c{c:02}: S1 VIOLATION: declared fenced {} ms after the start of the victim's last write, dead_after is {} ms",
                        cfg.key,
                        dec - last,
                        cfg.dead_after_ms
                    ));
                }
            }
            match &t.cli_verdict {
                Some((v, m)) if v == "fenced" && *m == t.method => {}
                other => problems.push(format!(
                    "{} c{c:02}: `hbfence status --volume --json` says {other:?}, the library read said fenced/{}",
                    cfg.key, t.method
                )),
            }
        }
    }
    println!();
    println!("Per-configuration detail:");
    println!(
        "| {:<6} | {:>26} | {:>30} | {:>13} | {:>13} | {:>9} | {:>8} |",
        "config",
        "kill offset after last write",
        "decision - last write start s",
        "fence_failed",
        "storage evts",
        "setup s",
        "total s"
    );
    println!(
        "| {:<6} | {:>26} | {:>30} | {:>13} | {:>13} | {:>9} | {:>8} |",
        "", "min / p50 / max s", "min (bound)", "sum", "sum", "", ""
    );
    println!("|--------|----------------------------|--------------------------------|---------------|---------------|-----------|----------|");
    for (cfg, o) in &outcomes {
        let used: Vec<&Trial> = o.trials.iter().filter(|t| t.excluded.is_none()).collect();
        let offset: Vec<f64> =
            used.iter().filter_map(|t| Some(t.killed_ms? - t.last_write_ms? as f64)).collect();
        let margin = used
            .iter()
            .filter_map(|t| Some(t.fenced_event_ms?.checked_sub(t.last_write_ms?)? as f64))
            .fold(f64::INFINITY, f64::min);
        let bound = if cfg.path == Path_::Watchdog {
            format!("{:.1} (>= {:.0})", margin / 1000.0, cfg.dead_after_ms as f64 / 1000.0)
        } else {
            format!("{:.1} (suspect {:.0})", margin / 1000.0, cfg.suspect_ms as f64 / 1000.0)
        };
        println!(
            "| {:<6} | {} | {:>30} | {:>13} | {:>13} | {:>9.1} | {:>8.1} |",
            cfg.key,
            fmt_s(stats(offset)),
            bound,
            used.iter().map(|t| t.fence_failed).sum::<usize>(),
            used.iter().map(|t| t.storage_events).sum::<usize>(),
            o.setup_s,
            o.wall_s
        );
        let _ = o.key;
    }
    println!();
    println!("Beside the anchors (time from power loss to \"VMs may be restarted\", documented defaults):");
    println!("| {:<62} | {:>24} |", "system", "time");
    println!("|{}|{}|", "-".repeat(64), "-".repeat(26));
    for (name, t) in [
        ("Apache CloudStack Host HA (KVM)", "~10-13 min"),
        ("Proxmox VE HA", "~2-3 min"),
        ("sanlock delta leases (io_timeout 10 s)", "140 s"),
        ("ClusterLabs SBD (after the fence request)", "10 s"),
        ("hbfence goal, defaults, BMC up", "<= 20 s"),
        ("hbfence goal, defaults, watchdog only", "<= 60 s"),
    ] {
        println!("| {name:<62} | {t:>24} |");
    }
    for (cfg, st, f, u) in &summary {
        let what = format!(
            "hbfence measured: {} path, interval {} s ({f}/{u} fenced)",
            path_name(cfg),
            cfg.interval_ms / 1000
        );
        let t = st.map_or("-".to_string(), |(_, p50, _, max)| {
            format!("p50 {:.1} s, max {:.1} s", p50 / 1000.0, max / 1000.0)
        });
        println!("| {what:<62} | {t:>24} |");
    }
    println!();
    if problems.is_empty() {
        println!("checks: every victim fenced with the expected method; BMC path chassis off; watchdog path never before dead_after (S1); CLI status agrees");
    } else {
        for p in &problems {
            println!("PROBLEM: {p}");
        }
    }
    println!();
    println!("source: {}", source_state());
    println!("command: {}", command_line("time_to_fenced"));
    println!("total run time: {:.1} s", started.elapsed().as_secs_f64());
}
