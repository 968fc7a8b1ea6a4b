//! Benchmark (issue 12): N agents on one volume, what each costs, and a rack loss.
//!
//! For every interval given (1 s: the tests' timing; 5 s: the defaults) and every read mode
//! (`members`: `init --members 1-N`, the read plan reads the members only; `open`: open
//! membership, the read plan's scan finds the hosts; `read-all`: every block every cycle, the
//! behaviour before issue 12, through the benchmark knob `HBFENCE_BENCH_READ_ALL=1`), N agents
//! (ids 1..=N, nobody configured as anyone's peer) start on one `--max-hosts 255` volume file in /dev/shm (`--loop`: also on a 4K-sector
//! loop device with direct I/O). Measured per agent, from /proc: bytes read per interval
//! (`rchar` of /proc/PID/io over the window divided by the intervals in it), CPU
//! (run time of every thread, /proc/PID/task/*/schedstat, as CPU-seconds per hour), VmRSS; and for the run: the
//! time until every agent's status file shows every other agent alive, `host_suspect` events
//! (every agent's event log) and self-fences (sysrq test files, or the watchdog double fired).
//!
//! `--rack-loss K` (default 20, 0: none): after the first planned run at 1 s, a second run of
//! N agents in which hosts N−K+1..=N each have an `ipmi_sim` BMC (configured on the eligible
//! hosts 1..=3) is killed at once (SIGKILL); reported: every victim `fenced` (coordinator's
//! event log), the spread between the first and the last verdict, and `host_suspect` events
//! about hosts that were not killed (must be 0).
//!
//! `--small-cpu SECS` (default 120, 0: none): a 3-agent cluster at the default timing, in
//! every mode; with `HBFENCE_BEFORE_BIN=PATH` (an hbfence binary of an earlier commit) the same
//! cluster also runs with that binary, on a volume that binary initialised, in each of
//! `--before-modes` (default `open`: binaries before format 3 know no member list). These
//! clusters all run at the same time, measured over the same window, so the machine's load
//! falls on every one of them alike.
//!
//! Every row also gives the main thread's wake-ups per second (its context switches over the
//! window, /proc/PID/task/PID/status), the cost the pet cadence and the deadlines decide.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench scale -- [--agents N]
//!       [--secs S] [--intervals 1,5] [--modes members,open,read-all] [--loop]
//!       [--no-tmpfs] [--rack-loss K] [--no-mlock] [--small-cpu SECS] [--before-modes LIST]`
//! The agents run with `lock_memory = true` (mlockall, as in production) unless `--no-mlock`.
//! `HBFENCE_BENCH_KEEP=1` keeps each run's directory (agents' logs and event logs) in /dev/shm.

#[path = "../tests/support/bmc.rs"]
mod bmc;
#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "common.rs"]
mod common;
#[path = "../tests/support/script.rs"]
mod script;
use common::{command_line, now_utc, source_state};

use cluster::{BmcConfig, Host, HostSpec};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret-Pw_42";
const MAX_HOSTS: u32 = 255;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Members,
    Open,
    ReadAll,
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "members" => Mode::Members,
            "open" => Mode::Open,
            "read-all" => Mode::ReadAll,
            other => panic!("--modes: unknown mode {other} (members, open, read-all)"),
        }
    }
    fn label(self, agents: u32) -> String {
        match self {
            Mode::Members => format!("planned, members 1-{agents}"),
            Mode::Open => "planned, open membership".to_string(),
            Mode::ReadAll => "read-all (baseline)".to_string(),
        }
    }
}

struct Args {
    agents: u32,
    secs: u64,
    intervals: Vec<u64>,
    modes: Vec<Mode>,
    use_tmpfs: bool,
    use_loop: bool,
    rack_loss: u32,
    mlock: bool,
    small_cpu: u64,
    before_modes: Vec<Mode>,
}

fn args() -> Args {
    let mut a = Args {
        agents: 250,
        secs: 600,
        intervals: vec![1, 5],
        modes: vec![Mode::Members, Mode::Open, Mode::ReadAll],
        use_tmpfs: true,
        use_loop: false,
        rack_loss: 20,
        mlock: true,
        small_cpu: 120,
        before_modes: vec![Mode::Open],
    };
    let mut it = std::env::args().skip(1).filter(|x| x != "--bench");
    while let Some(x) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{x} needs a value"));
        match x.as_str() {
            "--agents" => a.agents = val().parse().expect("--agents N"),
            "--secs" => a.secs = val().parse().expect("--secs S"),
            "--intervals" => {
                a.intervals =
                    val().split(',').map(|s| s.parse().expect("--intervals 1,5")).collect()
            }
            "--modes" => a.modes = val().split(',').map(Mode::parse).collect(),
            "--loop" => a.use_loop = true,
            "--no-tmpfs" => a.use_tmpfs = false,
            "--rack-loss" => a.rack_loss = val().parse().expect("--rack-loss K"),
            "--no-mlock" => a.mlock = false,
            "--small-cpu" => a.small_cpu = val().parse().expect("--small-cpu SECS"),
            "--before-modes" => a.before_modes = val().split(',').map(Mode::parse).collect(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(a.agents >= 2 && a.agents <= MAX_HOSTS, "--agents 2..=255");
    a
}

/// The watchdog period of the volume `init_args(interval)` makes, for the watchdog doubles.
fn watchdog_period(interval: u64) -> Duration {
    if interval == 1 {
        cluster::WATCHDOG
    } else {
        Duration::from_millis(hbfence::core::timing::Timing::default().watchdog_timeout_ms)
    }
}

fn init_args(interval: u64) -> Vec<&'static str> {
    if interval == 1 {
        cluster::INIT_ARGS.to_vec()
    } else {
        vec![]
    }
}

/// A volume file on tmpfs, or a 4K-sector loop device over a file (detached on drop).
struct Vol {
    path: PathBuf,
    loop_dev: Option<String>,
}

impl Drop for Vol {
    fn drop(&mut self) {
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

/// `members`: `init --members 1-N`; `bin`: init with that binary (an earlier commit's).
fn make_volume(
    dir: &Path,
    kind: &str,
    interval: u64,
    members: Option<u32>,
    bin: Option<&Path>,
) -> Vol {
    let file = dir.join("v.vol");
    let list = members.map(|n| format!("1-{n}"));
    let init = |path: &Path| {
        let mut a = vec!["init", "--volume", path.to_str().unwrap(), "--max-hosts", "255"];
        a.extend(init_args(interval));
        if kind == "loop" {
            a.push("--force");
        }
        if let Some(list) = &list {
            a.extend(["--members", list.as_str()]);
        }
        let out = match bin {
            Some(bin) => Command::new(bin).args(&a).output().expect("run the before binary"),
            None => cluster::hbfence(&a),
        };
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
    };
    if kind == "tmpfs" {
        init(&file);
        return Vol { path: file, loop_dev: None };
    }
    // Exactly what a volume of MAX_HOSTS slots needs (heartbeats, mailboxes, verdict pages,
    // VM lists), as `init` checks it.
    let blocks = hbfence::core::format::Geometry { max_hosts: MAX_HOSTS }.total_blocks();
    std::fs::File::create(&file).unwrap().set_len(blocks * 4096).unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show", "--direct-io=on", "--sector-size", "4096"])
        .arg(&file)
        .output()
        .expect("losetup");
    assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    init(Path::new(&dev));
    Vol { path: PathBuf::from(&dev), loop_dev: Some(dev) }
}

fn proc_field(pid: i32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// CPU time of every thread of the process, in ns (/proc/PID/task/*/schedstat: run time),
/// finer than the 10 ms ticks of utime + stime.
fn cpu_ns(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// Context switches of the main thread (voluntary and not): its wake-ups.
fn main_thread_switches(pid: i32) -> u64 {
    let file = format!("task/{pid}/status");
    proc_field(pid, &file, "voluntary_ctxt_switches:")
        + proc_field(pid, &file, "nonvoluntary_ctxt_switches:")
}

/// Resident KiB of one process by what backs it (/proc/PID/smaps): each file mapped (the
/// binary, libc, ld.so, ...), `[heap]`, `[stack]`, and the other anonymous memory (thread
/// stacks, buffers), largest first.
fn rss_breakdown(pid: i32) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    let mut current = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            // A mapping's header: range perms offset dev inode [path].
            let path = words.nth(4).unwrap_or("");
            current = if path.is_empty() { "anonymous".into() } else { path.to_string() };
        } else if first == "Rss:" {
            *by.entry(current.clone()).or_default() +=
                words.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|(_, kib)| *kib > 0).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

fn status(h: &Host) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(h.dir.join("run/status.json")).ok()?).ok()
}

fn alive_peers(h: &Host) -> BTreeSet<u32> {
    status(h)
        .and_then(|s| {
            s["peers"].as_array().map(|ps| {
                ps.iter()
                    .filter(|p| p["status"] == "alive")
                    .filter_map(|p| p["id"].as_u64().map(|i| i as u32))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn events(h: &Host, kind: &str) -> Vec<serde_json::Value> {
    h.events_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == kind)
        .collect()
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn new_hosts(
    base: &Path,
    n: u32,
    interval: u64,
    vol: &Path,
    mlock: bool,
    bmcs: &[(u32, BmcConfig)],
) -> Vec<Host> {
    (1..=n)
        .map(|id| {
            let eligible = id <= 3;
            let peers =
                if eligible { bmcs.iter().map(|(p, b)| (*p, Some(b))).collect() } else { vec![] };
            let h = Host::new(
                base,
                &HostSpec {
                    id,
                    volumes: vec![vol.to_path_buf()],
                    peers,
                    hooks_dir: None,
                    eligible,
                },
            );
            h.watchdog.set_timeout(watchdog_period(interval));
            if mlock {
                let text = std::fs::read_to_string(&h.config).unwrap();
                std::fs::write(
                    &h.config,
                    text.replace("lock_memory = false", "lock_memory = true"),
                )
                .unwrap();
            }
            h
        })
        .collect()
}

fn start(hosts: &mut [Host], read_all: bool, bin: Option<&Path>) {
    for h in hosts.iter_mut() {
        let knob = if read_all { "1" } else { "0" };
        match bin {
            None => h.start_with(true, &[("HBFENCE_BENCH_READ_ALL", std::ffi::OsStr::new(knob))]),
            Some(bin) => {
                let log = std::fs::File::create(&h.log).unwrap();
                let child = Command::new(bin)
                    .args(["run", "--foreground", "--config", h.config.to_str().unwrap()])
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("start the before binary");
                std::fs::write(&h.pid_file, child.id().to_string()).unwrap();
                *h.watchdog.kill_pid.lock().unwrap() = Some(child.id());
                h.child = Some(child);
            }
        }
    }
}

/// Seconds until every agent shows every other alive (None: not within `limit`).
fn all_seen(hosts: &[Host], started: Instant, limit: Duration) -> Option<f64> {
    let n = hosts.len();
    let mut done = vec![false; n];
    while started.elapsed() < limit {
        for (i, h) in hosts.iter().enumerate() {
            if !done[i] {
                done[i] = alive_peers(h).len() >= n - 1;
            }
        }
        if done.iter().all(|d| *d) {
            return Some(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

struct Row {
    label: String,
    seen_s: Option<f64>,
    bytes: (f64, f64, f64),
    cpu_h: (f64, f64, f64),
    wakes_s: (f64, f64, f64),
    rss_kib: (f64, f64, f64),
    /// Where the first agent's resident memory is (`rss_breakdown`).
    rss_parts: Vec<(String, u64)>,
    suspects: usize,
    self_fences: usize,
}

/// One cluster of a measurement: its agents, how they run, what the row is called.
struct Group {
    label: String,
    hosts: Vec<Host>,
    read_all: bool,
    bin: Option<PathBuf>,
}

/// Starts every group at once, waits until each group's agents see each other, measures all
/// of them over one window of `secs`, then kills them.
fn measure(groups: &mut [Group], interval: u64, secs: u64) -> Vec<Row> {
    let started = Instant::now();
    for g in groups.iter_mut() {
        start(&mut g.hosts, g.read_all, g.bin.as_deref());
    }
    let limit = Duration::from_secs(60 + (u64::from(cluster_join_cycles()) + 4) * interval);
    let seen: Vec<Option<f64>> =
        groups.iter().map(|g| all_seen(&g.hosts, started, limit)).collect();
    let sample = |h: &Host| {
        let pid = h.pid();
        (proc_field(pid, "io", "rchar:"), cpu_ns(pid), main_thread_switches(pid))
    };
    let before: Vec<Vec<(u64, u64, u64)>> =
        groups.iter().map(|g| g.hosts.iter().map(sample).collect()).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let window = t0.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for ((g, before), seen_s) in groups.iter_mut().zip(before).zip(seen) {
        let (mut bytes, mut cpu, mut wakes, mut rss) = (vec![], vec![], vec![], vec![]);
        for (h, (r0, c0, w0)) in g.hosts.iter().zip(before) {
            let (r1, c1, w1) = sample(h);
            // Per interval of the window (the agents' cycles come once per interval).
            let intervals = window / interval as f64;
            bytes.push(r1.saturating_sub(r0) as f64 / intervals);
            cpu.push(c1.saturating_sub(c0) as f64 / 1e9 * 3600.0 / window);
            wakes.push(w1.saturating_sub(w0) as f64 / window);
            rss.push(proc_field(h.pid(), "status", "VmRSS:") as f64);
        }
        let suspects = g.hosts.iter().map(|h| events(h, "host_suspect").len()).sum();
        // A reset by the watchdog double (it kills the agent) counts too.
        let self_fences = g
            .hosts
            .iter()
            .filter(|h| !h.sysrq_letters().is_empty() || h.watchdog.fired().is_some())
            .count();
        let rss_parts = g.hosts.first().map(|h| rss_breakdown(h.pid())).unwrap_or_default();
        for h in g.hosts.iter_mut() {
            h.signal(Signal::SIGKILL);
            h.wait_exit(Duration::from_secs(5));
        }
        rows.push(Row {
            label: g.label.clone(),
            seen_s,
            bytes: stats(bytes),
            cpu_h: stats(cpu),
            wakes_s: stats(wakes),
            rss_kib: stats(rss),
            rss_parts,
            suspects,
            self_fences,
        });
    }
    rows
}

fn cluster_join_cycles() -> u32 {
    hbfence::core::readplan::JOIN_CYCLES
}

fn print_rows(rows: &[Row]) {
    println!("| run | all seen after (s) | bytes read / interval min · median · max | CPU s/h per agent min · median · max | main-thread wake-ups/s min · median · max | VmRSS KiB min · median · max | host_suspect | self-fences (sysrq or watchdog) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} · {:.0} · {:.0} | {:.2} · {:.2} · {:.2} | {:.2} · {:.2} · {:.2} | {:.0} · {:.0} · {:.0} | {} | {} |",
            r.label,
            r.seen_s.map_or("not within limit".into(), |s| format!("{s:.1}")),
            r.bytes.0, r.bytes.1, r.bytes.2,
            r.cpu_h.0, r.cpu_h.1, r.cpu_h.2,
            r.wakes_s.0, r.wakes_s.1, r.wakes_s.2,
            r.rss_kib.0, r.rss_kib.1, r.rss_kib.2,
            r.suspects, r.self_fences
        );
    }
    for r in rows {
        let parts: Vec<String> =
            r.rss_parts.iter().map(|(what, kib)| format!("{what} {kib}")).collect();
        println!(
            "- RSS of one agent of \"{}\" (KiB, /proc/PID/smaps): {}",
            r.label,
            parts.join(", ")
        );
    }
}

fn rack_loss(a: &Args) {
    if let Some(why) = bmc::tools_missing() {
        println!("rack loss skipped: {why}");
        return;
    }
    let k = a.rack_loss.min(a.agents - 3);
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    let vol = make_volume(tmp.path(), "tmpfs", 1, Some(a.agents), None);
    let victims: Vec<u32> = (a.agents - k + 1..=a.agents).collect();
    let mut sims = Vec::new();
    let mut configs = Vec::new();
    for &id in &victims {
        let dir = tmp.path().join(format!("bmc{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = tmp.path().join(format!("host{id}/agent.pid"));
        std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
        let sim = bmc::SimBmc::start(&dir, bmc::free_udp_port(), "admin", PASSWORD, &pid_file)
            .expect("start ipmi_sim");
        let pw = tmp.path().join(format!("bmc{id}.pw"));
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        configs.push((id, BmcConfig { port: sim.port(), password_file: pw }));
        sims.push(sim);
    }
    let mut hosts = new_hosts(tmp.path(), a.agents, 1, &vol.path, a.mlock, &configs);
    let started = Instant::now();
    start(&mut hosts, false, None);
    let seen =
        all_seen(&hosts, started, Duration::from_secs(60 + u64::from(cluster_join_cycles()) + 4));
    std::thread::sleep(Duration::from_secs(5));
    let killed_at = Instant::now();
    for h in hosts.iter().filter(|h| victims.contains(&h.id)) {
        h.signal(Signal::SIGKILL);
    }
    // Every victim fenced in the coordinator's (host 1's) event log, within a minute.
    let fenced_all = cluster::wait_until(Duration::from_secs(90), || {
        let ids: BTreeSet<u64> =
            events(&hosts[0], "fenced").iter().filter_map(|e| e["host"].as_u64()).collect();
        victims.iter().all(|v| ids.contains(&u64::from(*v)))
    });
    let took = killed_at.elapsed().as_secs_f64();
    let fenced = events(&hosts[0], "fenced");
    let monos: Vec<f64> = fenced.iter().filter_map(|e| e["mono_ms"].as_f64()).collect();
    let spread = monos.iter().cloned().fold(f64::MIN, f64::max)
        - monos.iter().cloned().fold(f64::MAX, f64::min);
    let wrong: usize = hosts
        .iter()
        .filter(|h| !victims.contains(&h.id))
        .map(|h| {
            events(h, "host_suspect")
                .iter()
                .filter(|e| e["host"].as_u64().is_some_and(|id| !victims.contains(&(id as u32))))
                .count()
        })
        .sum();
    let methods: BTreeSet<String> =
        fenced.iter().filter_map(|e| e["method"].as_str().map(String::from)).collect();
    println!(
        "rack loss: {} agents, {k} killed at once (ids {}..={}), every agent saw every other after {}; all {k} fenced: {fenced_all} ({} `fenced` events, methods {methods:?}) {took:.1} s after the kill; spread first→last verdict {:.1} s; host_suspect about hosts not killed: {wrong}",
        a.agents,
        victims[0],
        victims[victims.len() - 1],
        seen.map_or("not within limit".into(), |s| format!("{s:.1} s")),
        fenced.len(),
        spread / 1000.0
    );
    for h in hosts.iter_mut() {
        h.signal(Signal::SIGKILL);
    }
    drop(sims);
    if std::env::var_os("HBFENCE_BENCH_KEEP").is_some() {
        eprintln!("kept: {}", tmp.keep().display());
    }
}

fn main() {
    let a = args();
    println!("# scale benchmark — {} — {}", now_utc(), source_state());
    println!("command: `{}`", command_line("scale"));
    println!("agents {}, window {} s after every agent saw every other, max_hosts {MAX_HOSTS}, mlockall {}", a.agents, a.secs, a.mlock);
    let mut rows = Vec::new();
    let kinds: Vec<&str> = [("tmpfs", a.use_tmpfs), ("loop", a.use_loop)]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
    for kind in &kinds {
        for &interval in &a.intervals {
            for &mode in &a.modes {
                let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
                let members = (mode == Mode::Members).then_some(a.agents);
                let vol = make_volume(tmp.path(), kind, interval, members, None);
                let hosts = new_hosts(tmp.path(), a.agents, interval, &vol.path, a.mlock, &[]);
                let label = format!("{kind}, interval {interval} s, {}", mode.label(a.agents));
                eprintln!("running: {label}");
                let read_all = mode == Mode::ReadAll;
                let mut group = [Group { label, hosts, read_all, bin: None }];
                rows.extend(measure(&mut group, interval, a.secs));
                drop(group);
                drop(vol);
                // The agents' logs and event logs, to see why an agent was suspected or
                // fenced itself.
                if std::env::var_os("HBFENCE_BENCH_KEEP").is_some() {
                    eprintln!("kept: {}", tmp.keep().display());
                }
            }
        }
    }
    print_rows(&rows);
    if a.small_cpu > 0 {
        let before = std::env::var_os("HBFENCE_BEFORE_BIN").map(PathBuf::from);
        let runs: Vec<(String, Mode, Option<PathBuf>)> = a
            .modes
            .iter()
            .map(|&m| (format!("this commit, {}", m.label(3)), m, None))
            .chain(before.iter().flat_map(|b| {
                a.before_modes.iter().map(|&m| {
                    (format!("before ({}), {}", b.display(), m.label(3)), m, Some(b.clone()))
                })
            }))
            .collect();
        // Every cluster on its own volume, all running together (kept until the end).
        let mut dirs = Vec::new();
        let mut groups = Vec::new();
        for (name, mode, bin) in runs {
            let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
            let members = (mode == Mode::Members).then_some(3);
            let vol = make_volume(tmp.path(), "tmpfs", 5, members, bin.as_deref());
            let hosts = new_hosts(tmp.path(), 3, 5, &vol.path, a.mlock, &[]);
            let label = format!("3 agents, defaults (interval 5 s), {name}");
            groups.push(Group { label, hosts, read_all: mode == Mode::ReadAll, bin });
            dirs.push((tmp, vol));
        }
        eprintln!("running {} clusters of 3 agents together", groups.len());
        let small = measure(&mut groups, 5, a.small_cpu);
        print_rows(&small);
    }
    if a.rack_loss > 0 {
        rack_loss(&a);
    }
}
