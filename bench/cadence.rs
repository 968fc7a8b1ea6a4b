//! Benchmark: heartbeat cadence of one agent, idle and under CPU + memory stress, with and
//! without SCHED_RR + mlockall; I/O operations per cycle; the daemon's RSS and CPU time.
//!
//! Agents (real `hbfence run` processes with the harness's FIFO watchdog double and a sysrq test
//! file; never the machine's watchdog or sysrq):
//! - `rt-off` and `rt-on`: interval 0.1 s (`--interval 0.1 --io-timeout 0.5 --lease-timeout 3
//!   --watchdog-timeout 2 --suspect-after 0.3`), each alone on its own volume on its own 4K-sector
//!   loop device (direct I/O); `[daemon] realtime_priority = 0, lock_memory = false` vs
//!   `realtime_priority = 10, lock_memory = true`. Both run side by side through an idle phase
//!   and then a stress phase (`stress-ng --cpu 2 --vm 1 --vm-bytes 4G --vm-keep`), so the two
//!   settings see the same noise.
//! - `cpu-1s` (interval 1 s, the cluster tests' timing) and `cpu-5s` (`init` defaults: interval
//!   5 s), production daemon settings (RT on, mlockall), on volume files: CPU time and RSS.
//!
//! Gap measurement: a sampler thread (SCHED_RR 1, below the agent's 10) reads each agent's own
//! heartbeat block every 5 ms with O_DIRECT from the loop's backing file, and keeps the first
//! sighting of every (seq, mono_ms). `mono_ms` is the agent's CLOCK_MONOTONIC at the start of the
//! cycle, so consecutive-seq differences are the cycle-start gaps; the sampler's own
//! CLOCK_MONOTONIC at the first sighting gives the write's visibility (same clock, same host).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench cadence [-- --secs N] [--no-heavy]
//! [--keep] [--backing-dir DIR]` (`--backing-dir /dev/shm`: loop devices over tmpfs files, so
//! the disk's flush latency is out of the picture and only CPU/memory effects remain);
//! (`--no-heavy` skips the third phase, `stress-ng --cpu 16 --vm 2 --vm-bytes 4G --vm-keep`;
//! `--keep` keeps the agents' logs, events and volumes).
//! Needs root, loop devices and stress-ng (prints why and exits otherwise).

#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "common.rs"]
mod common;
use common::{command_line, now_utc, source_state};

use cluster::{Host, HostSpec};
use hbfence::core::format::{self, caps, Decoded, HostState};
use hbfence::sys::boottime_ms;
use hbfence::volume::{Access, AlignedBuf, Volume};
use nix::sys::signal::Signal;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FAST_INIT: &[&str] = &[
    "--interval",
    "0.1",
    "--io-timeout",
    "0.5",
    "--lease-timeout",
    "3",
    "--watchdog-timeout",
    "2",
    "--suspect-after",
    "0.3",
];
const STRESS_VM_BYTES: &str = "4G";
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

static ATTACHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Result<Loop, String> {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on", "--sector-size", "4096"])
            .arg(file)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!("losetup failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        ATTACHED.lock().unwrap().push(dev.clone());
        Ok(Loop(dev))
    }
    fn name(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let mut attached = ATTACHED.lock().unwrap_or_else(|p| p.into_inner());
        if attached.contains(&self.0) {
            attached.retain(|d| d != &self.0);
            detach(&self.0);
        }
    }
}

fn detach(dev: &Path) {
    match Command::new("losetup").arg("-d").arg(dev).status() {
        Ok(s) if s.success() => eprintln!("detached {}", dev.display()),
        other => eprintln!("WARNING: could not detach {}: {other:?}", dev.display()),
    }
}

/// stress-ng, stopped (SIGINT to its pid, then wait) on drop.
struct Stress(Option<Child>);

impl Stress {
    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            untrack(c.id() as i32);
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), Signal::SIGINT);
            let end = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Processes this bench started (agents, stress-ng), stopped by `cleanup` on failure or panic.
static STARTED: Mutex<Vec<(i32, Signal)>> = Mutex::new(Vec::new());

fn track(pid: i32, sig: Signal) {
    STARTED.lock().unwrap_or_else(|p| p.into_inner()).push((pid, sig));
}

fn untrack(pid: i32) {
    STARTED.lock().unwrap_or_else(|p| p.into_inner()).retain(|(p, _)| *p != pid);
}

/// Stops what this process started (by pid) and detaches its loop devices.
fn cleanup() {
    let pids: Vec<(i32, Signal)> =
        STARTED.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
    for (pid, sig) in &pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), *sig);
    }
    if !pids.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
    }
    for dev in ATTACHED.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        detach(&dev);
    }
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("cadence: {msg}");
    cleanup();
    std::process::exit(1)
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

fn preflight() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root (loop devices, SCHED_RR, mlockall); run as root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("needs loop devices: /dev/loop-control is missing (modprobe loop)".into());
    }
    for (tool, pkg) in [("losetup", "mount"), ("stress-ng", "stress-ng")] {
        if !on_path(tool) {
            return Err(format!("{tool} not found in PATH (apt-get install {pkg})"));
        }
    }
    Ok(())
}

/// One sighting of a new record.
#[derive(Clone, Copy, Debug)]
struct Seen {
    seq: u64,
    /// The agent's CLOCK_MONOTONIC at the start of the cycle.
    mono_ms: u64,
    /// Sampler's CLOCK_MONOTONIC (µs) when the read that first showed it returned.
    seen_us: u64,
    state: HostState,
    caps: u32,
}

struct Agent {
    label: &'static str,
    interval_ms: u64,
    rt: bool,
    host: Host,
    volume: PathBuf,
    /// Backing file (sampled): the loop device's file, or the volume itself.
    file: PathBuf,
    lo: Option<Loop>,
    seen: Arc<Mutex<Vec<Seen>>>,
    sample_every: u32,
}

fn mono_us() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000
}

fn setup_agent(
    base: &Path,
    label: &'static str,
    init: &[&str],
    interval_ms: u64,
    rt: bool,
    on_loop: bool,
) -> Agent {
    let dir = base.join(label);
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hb.vol");
    let mut args = vec!["init", "--volume", file.to_str().unwrap()];
    args.extend_from_slice(init);
    let out = cluster::hbfence(&args);
    if !out.status.success() {
        fail(format!("init {label}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let lo = on_loop.then(|| Loop::attach(&file).unwrap_or_else(|e| fail(e)));
    let volume = lo.as_ref().map_or(file.clone(), |l| l.0.clone());
    let host = Host::new(
        &dir,
        &HostSpec {
            id: 1,
            volumes: vec![volume.clone()],
            peers: vec![],
            hooks_dir: None,
            eligible: true,
        },
    );
    let text = fs::read_to_string(&host.config).unwrap();
    let daemon_off = "realtime_priority = 0\nlock_memory = false\n";
    assert!(text.contains(daemon_off), "cluster.rs config layout changed: {text}");
    let text = if rt {
        text.replace(daemon_off, "realtime_priority = 10\nlock_memory = true\n")
    } else {
        text
    };
    fs::write(&host.config, text).unwrap();
    Agent {
        label,
        interval_ms,
        rt,
        host,
        volume,
        file,
        lo,
        seen: Arc::new(Mutex::new(Vec::new())),
        sample_every: if interval_ms <= 100 { 1 } else { 10 },
    }
}

/// Reads every agent's own block every 5 ms (agents with a long interval less often).
fn spawn_sampler(agents: &[Agent], stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    type Target = (PathBuf, Arc<Mutex<Vec<Seen>>>, u32);
    let targets: Vec<Target> =
        agents.iter().map(|a| (a.file.clone(), a.seen.clone(), a.sample_every)).collect();
    std::thread::spawn(move || {
        if let Err(e) = hbfence::sys::set_realtime(1) {
            eprintln!(
                "cadence: sampler could not get SCHED_RR 1 ({e}); sampling at normal priority"
            );
        }
        let vols: Vec<Volume> = targets
            .iter()
            .map(|(f, _, _)| Volume::open(f, Access::ReadOnly).unwrap_or_else(|e| fail(e)))
            .collect();
        let block = vols[0].read_header().unwrap().geometry().heartbeat_block(1);
        let mut buf = AlignedBuf::new(1).unwrap();
        let mut last: Vec<u64> = vec![0; vols.len()];
        let mut round: u32 = 0;
        let mut reads = 0u64;
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            for (i, vol) in vols.iter().enumerate() {
                if round % targets[i].2 != 0 {
                    continue;
                }
                if vol.read_blocks(block, &mut buf).is_err() {
                    continue;
                }
                reads += 1;
                let seen_us = mono_us();
                if let Decoded::Heartbeat(h) = format::decode(buf.block(0)) {
                    if h.seq != last[i] {
                        last[i] = h.seq;
                        targets[i].1.lock().unwrap().push(Seen {
                            seq: h.seq,
                            mono_ms: h.mono_ms,
                            seen_us,
                            state: h.state,
                            caps: h.caps,
                        });
                    }
                }
            }
            round = round.wrapping_add(1);
            next += SAMPLE_EVERY;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        reads
    })
}

#[derive(Clone, Copy, Default, Debug)]
struct DiskStat {
    reads: u64,
    read_sectors: u64,
    writes: u64,
    flushes: u64,
}

fn disk_stat(dev: &str) -> DiskStat {
    let text = fs::read_to_string(format!("/sys/block/{dev}/stat")).unwrap_or_default();
    let f: Vec<u64> = text.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    DiskStat { reads: g(0), read_sectors: g(2), writes: g(4), flushes: g(15) }
}

#[derive(Clone, Copy, Default, Debug)]
struct Proc {
    /// utime + stime (clock ticks) from /proc/PID/stat.
    ticks: u64,
    /// Sum of every thread's on-CPU time (ns) from /proc/PID/task/*/schedstat.
    sched_ns: u64,
    majflt: u64,
    rss_kb: u64,
    hwm_kb: u64,
    locked_kb: u64,
    threads: u64,
}

fn proc_sample(pid: i32) -> Proc {
    let mut p = Proc::default();
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Fields after the ")" of comm: state is field 3; majflt 12, utime 14, stime 15.
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
            let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
            p.majflt = f.get(9).copied().unwrap_or(0);
            p.ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        }
    }
    if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let kb = || line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            if line.starts_with("VmRSS:") {
                p.rss_kb = kb();
            } else if line.starts_with("VmHWM:") {
                p.hwm_kb = kb();
            } else if line.starts_with("Threads:") {
                p.threads = kb();
            }
        }
    }
    // Resident locked memory (VmLck would count locked but unpopulated address space too, such
    // as glibc's 64 MB PROT_NONE malloc arena reservations per thread).
    if let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        p.locked_kb = rollup
            .lines()
            .find(|l| l.starts_with("Locked:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
    }
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("schedstat")) {
                p.sched_ns += s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
    }
    p
}

/// "name:POLICY/prio" of every thread of `pid` (policy 0 OTHER, 1 FIFO, 2 RR).
fn thread_policies(pid: i32) -> String {
    let mut out = vec![];
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let Ok(stat) = fs::read_to_string(t.path().join("stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let name = &stat[open + 1..close];
            let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            let prio = f.get(37).copied().unwrap_or("?");
            let policy = match f.get(38).copied() {
                Some("0") => "OTHER",
                Some("1") => "FIFO",
                Some("2") => "RR",
                Some(p) => p,
                None => "?",
            };
            out.push(if policy == "OTHER" {
                format!("{name}:{policy}")
            } else {
                format!("{name}:{policy}/{prio}")
            });
        }
    }
    out.sort();
    out.join(" ")
}

fn mem_available_mb() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// Per-agent figures at one instant.
#[derive(Clone, Copy, Default)]
struct Snap {
    mono_ms: u64,
    disk: DiskStat,
    proc_: Proc,
}

fn snap(a: &Agent) -> Snap {
    Snap {
        mono_ms: boottime_ms(),
        disk: a.lo.as_ref().map(|l| disk_stat(&l.name())).unwrap_or_default(),
        proc_: proc_sample(a.host.pid()),
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct GapStats {
    cycles: u64,
    gaps: Vec<f64>,
    seen_gaps: Vec<f64>,
    lags: Vec<f64>,
    missing: u64,
    /// (seq, gap ms, mono_ms) of the worst gaps.
    worst: Vec<(u64, f64, u64)>,
    /// (seq, lag ms, mono_ms) of the worst cycle-start -> visible lags.
    worst_lags: Vec<(u64, f64, u64)>,
}

fn gap_stats(seen: &[Seen], from_ms: u64, to_ms: u64) -> GapStats {
    let w: Vec<&Seen> = seen.iter().filter(|s| s.mono_ms >= from_ms && s.mono_ms < to_ms).collect();
    let mut g = GapStats {
        cycles: 0,
        gaps: vec![],
        seen_gaps: vec![],
        lags: vec![],
        missing: 0,
        worst: vec![],
        worst_lags: vec![],
    };
    if let (Some(f), Some(l)) = (w.first(), w.last()) {
        g.cycles = l.seq - f.seq + 1;
    }
    for s in &w {
        let lag = s.seen_us as f64 / 1000.0 - s.mono_ms as f64;
        g.lags.push(lag);
        g.worst_lags.push((s.seq, lag, s.mono_ms));
    }
    g.worst_lags.sort_by(|x, y| y.1.partial_cmp(&x.1).unwrap());
    g.worst_lags.truncate(5);
    for pair in w.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.seq == a.seq + 1 {
            let gap = b.mono_ms as f64 - a.mono_ms as f64;
            g.gaps.push(gap);
            g.seen_gaps.push((b.seen_us as f64 - a.seen_us as f64) / 1000.0);
            g.worst.push((b.seq, gap, b.mono_ms));
        } else if b.seq > a.seq {
            g.missing += b.seq - a.seq - 1;
        }
    }
    g.worst.sort_by(|x, y| y.1.partial_cmp(&x.1).unwrap());
    g.worst.truncate(5);
    for v in [&mut g.gaps, &mut g.seen_gaps, &mut g.lags] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    g
}

fn wait_active(a: &Agent, limit: Duration) {
    let ok = cluster::wait_until(limit, || {
        a.seen
            .lock()
            .unwrap()
            .last()
            .is_some_and(|s| s.state == HostState::Active && s.caps & caps::WATCHDOG_ARMED != 0)
    });
    if !ok {
        fail(format!(
            "agent {} not active with an armed watchdog after {limit:?}; log:\n{}",
            a.label,
            a.host.log_text()
        ));
    }
}

struct Phase {
    name: &'static str,
    start: Vec<Snap>,
    end: Vec<Snap>,
    mem_available_mb: u64,
}

fn run_phase(name: &'static str, agents: &[Agent], secs: u64) -> Phase {
    eprintln!("phase {name}: {secs} s...");
    let start: Vec<Snap> = agents.iter().map(snap).collect();
    let mut mem_min = u64::MAX;
    let end_at = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end_at {
        std::thread::sleep(Duration::from_millis(500));
        mem_min = mem_min.min(mem_available_mb());
    }
    let end: Vec<Snap> = agents.iter().map(snap).collect();
    Phase { name, start, end, mem_available_mb: mem_min }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| fail("--secs needs a number")))
        .unwrap_or(60);
    if let Err(why) = preflight() {
        eprintln!("cadence: skipped: {why}");
        std::process::exit(if std::env::var("CI").as_deref() == Ok("true") { 1 } else { 0 });
    }
    // Ctrl-C or SIGTERM: stop the agents and stress-ng, detach the loop devices.
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                eprintln!("cadence: signal {sig}: cleaning up");
                cleanup();
                std::process::exit(130);
            }
        });
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        cleanup();
    }));
    let started = Instant::now();
    // Where the volumes (the loop devices' backing files) live: by default the target
    // directory's filesystem (a real disk); `--backing-dir /dev/shm` takes the disk out.
    let base = args
        .iter()
        .position(|a| a == "--backing-dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("/var/tmp")));
    fs::create_dir_all(&base).unwrap_or_else(|e| fail(format!("{}: {e}", base.display())));
    let tmp = tempfile::tempdir_in(&base).unwrap_or_else(|e| fail(e));
    let keep = args.iter().any(|a| a == "--keep");

    let mut agents = vec![
        setup_agent(tmp.path(), "rt-off", FAST_INIT, 100, false, true),
        setup_agent(tmp.path(), "rt-on", FAST_INIT, 100, true, true),
        setup_agent(tmp.path(), "cpu-1s", cluster::INIT_ARGS, 1000, true, false),
        setup_agent(tmp.path(), "cpu-5s", &[], 5000, true, false),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(&agents, stop.clone());
    for a in &mut agents {
        a.host.start();
        track(a.host.pid(), Signal::SIGKILL);
    }
    for a in &agents {
        wait_active(a, Duration::from_secs(30));
    }
    eprintln!("all agents active; settling 3 s");
    std::thread::sleep(Duration::from_secs(3));

    let policies: Vec<String> = agents.iter().map(|a| thread_policies(a.host.pid())).collect();
    let mut phases = vec![run_phase("idle", &agents, secs)];
    let mut stress_cmds = vec![];
    let stress_sets: Vec<(&'static str, String)> = {
        let mut v =
            vec![("stress", format!("--cpu 2 --vm 1 --vm-bytes {STRESS_VM_BYTES} --vm-keep"))];
        if !args.iter().any(|a| a == "--no-heavy") {
            v.push(("heavy", format!("--cpu 16 --vm 2 --vm-bytes {STRESS_VM_BYTES} --vm-keep")));
        }
        v
    };
    for (name, opts) in stress_sets {
        let cmd = format!("stress-ng {opts} --timeout {}s", secs + 60);
        let mut stress = Stress(Some(
            Command::new("sh")
                .arg("-c")
                .arg(format!("exec {cmd}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| fail(format!("cannot start stress-ng: {e}"))),
        ));
        if let Some(c) = &stress.0 {
            track(c.id() as i32, Signal::SIGINT);
        }
        eprintln!("started: {cmd}; settling 5 s");
        std::thread::sleep(Duration::from_secs(5));
        phases.push(run_phase(name, &agents, secs));
        stress.stop();
        stress_cmds.push((name, cmd));
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    let sampler_reads = sampler.join().unwrap_or(0);

    // Did any agent die or self-fence?
    let mut incidents = vec![];
    for a in &mut agents {
        if let Some(status) = a.host.exited() {
            incidents.push(format!("agent {} exited: {status}", a.label));
        }
        let letters = a.host.sysrq_letters();
        if !letters.is_empty() {
            incidents.push(format!("agent {} wrote sysrq {letters:?} (self-fence)", a.label));
        }
        if a.host.watchdog.fired().is_some() {
            incidents.push(format!("agent {}: watchdog double fired", a.label));
        }
    }

    // ---- Report ----
    println!();
    println!("hbfence cadence benchmark, {} (2 cores)", now_utc());
    println!(
        "volume: init default --max-hosts 255 (each cycle = write 1 block + read 510 blocks, 2 MB)"
    );
    println!(
        "agents rt-off / rt-on: interval 0.1 s, own 4K-sector loop device with direct I/O ({} / {})",
        agents[0].volume.display(),
        agents[1].volume.display()
    );
    println!(
        "backing files in {} ({}): O_DSYNC writes become flushes of that filesystem",
        tmp.path().display(),
        fs_type(tmp.path())
    );
    println!("phase idle: {secs} s, nothing else started by the benchmark");
    for (name, cmd) in &stress_cmds {
        println!("phase {name}: {secs} s under `{cmd}` (after 5 s settling)");
    }
    println!(
        "MemAvailable minimum: {}",
        phases
            .iter()
            .map(|p| format!("{} {} MB", p.name, p.mem_available_mb))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("Cycle-start gaps (difference of mono_ms between consecutive seqs), ms:");
    println!(
        "| {:<7} | {:<26} | {:>6} | {:>5} | {:>7} | {:>7} | {:>7} | {:>7} | {:>8} | {:>8} | {:>8} |",
        "phase", "agent", "gaps", "miss", "min", "p50", "p99", "max", "<0.5 int", ">1.5 int", "> 2 int"
    );
    println!("|---------|----------------------------|--------|-------|---------|---------|---------|---------|----------|----------|----------|");
    let mut details = vec![];
    for ph in &phases {
        for (i, a) in agents.iter().enumerate().take(2) {
            let seen = a.seen.lock().unwrap();
            let g = gap_stats(&seen, ph.start[i].mono_ms, ph.end[i].mono_ms);
            let late = |f: f64| g.gaps.iter().filter(|&&x| x > f * a.interval_ms as f64).count();
            println!(
                "| {:<7} | {:<26} | {:>6} | {:>5} | {:>7.1} | {:>7.1} | {:>7.1} | {:>7.1} | {:>8} | {:>8} | {:>8} |",
                ph.name,
                agent_desc(a),
                g.gaps.len(),
                g.missing,
                g.gaps.first().copied().unwrap_or(f64::NAN),
                pct(&g.gaps, 0.5),
                pct(&g.gaps, 0.99),
                g.gaps.last().copied().unwrap_or(f64::NAN),
                g.gaps.iter().filter(|&&x| x < 0.5 * a.interval_ms as f64).count(),
                late(1.5),
                late(2.0)
            );
            details.push((ph.name, a.label, g));
        }
    }
    println!();
    println!("Write visibility: gaps between first sightings of consecutive seqs, and lag from cycle start to the record being readable on the device (sampler every 5 ms), ms:");
    println!(
        "| {:<7} | {:<26} | {:>9} | {:>9} | {:>9} | {:>8} | {:>8} | {:>8} |",
        "phase", "agent", "seen p50", "seen p99", "seen max", "lag p50", "lag p99", "lag max"
    );
    println!("|---------|----------------------------|-----------|-----------|-----------|----------|----------|----------|");
    for (ph, label, g) in &details {
        let a = agents.iter().find(|a| a.label == *label).unwrap();
        println!(
            "| {:<7} | {:<26} | {:>9.1} | {:>9.1} | {:>9.1} | {:>8.1} | {:>8.1} | {:>8.1} |",
            ph,
            agent_desc(a),
            pct(&g.seen_gaps, 0.5),
            pct(&g.seen_gaps, 0.99),
            g.seen_gaps.last().copied().unwrap_or(f64::NAN),
            pct(&g.lags, 0.5),
            pct(&g.lags, 0.99),
            g.lags.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!();
    println!("Worst cycle-start gaps (seq: gap ms @ agent mono_ms):");
    for (ph, label, g) in &details {
        let w: Vec<String> =
            g.worst.iter().map(|(s, gap, m)| format!("{s}: {gap:.0} @ {m}")).collect();
        println!("  {ph:<7} {label:<7} {}", w.join(", "));
    }
    println!("Worst cycle-start -> visible lags (seq: lag ms @ agent mono_ms):");
    for (ph, label, g) in &details {
        let w: Vec<String> =
            g.worst_lags.iter().map(|(s, lag, m)| format!("{s}: {lag:.0} @ {m}")).collect();
        println!("  {ph:<7} {label:<7} {}", w.join(", "));
    }
    println!();
    println!("I/O per cycle on the agent's loop device (/sys/block/loopN/stat deltas / cycles):");
    println!(
        "| {:<7} | {:<26} | {:>6} | {:>8} | {:>8} | {:>8} | {:>10} |",
        "phase", "agent", "cycles", "reads", "writes", "flushes", "KiB read"
    );
    println!("|---------|----------------------------|--------|----------|----------|----------|------------|");
    for ph in &phases {
        for (i, a) in agents.iter().enumerate().take(2) {
            let (s, e) = (ph.start[i], ph.end[i]);
            let seen = a.seen.lock().unwrap();
            let cyc = gap_stats(&seen, s.mono_ms, e.mono_ms).cycles.max(1) as f64;
            println!(
                "| {:<7} | {:<26} | {:>6} | {:>8.3} | {:>8.3} | {:>8.3} | {:>10.1} |",
                ph.name,
                agent_desc(a),
                cyc,
                (e.disk.reads - s.disk.reads) as f64 / cyc,
                (e.disk.writes - s.disk.writes) as f64 / cyc,
                (e.disk.flushes - s.disk.flushes) as f64 / cyc,
                (e.disk.read_sectors - s.disk.read_sectors) as f64 * 512.0 / 1024.0 / cyc
            );
        }
    }
    println!();
    let hz =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    println!("Daemon CPU and memory per phase (CPU: sum of threads' schedstat run time; utime+stime in ticks of 1/{hz} s shown too):");
    println!(
        "| {:<7} | {:<26} | {:>6} | {:>8} | {:>10} | {:>10} | {:>12} | {:>9} | {:>9} | {:>9} | {:>6} |",
        "phase", "agent", "secs", "cycles", "CPU ms", "ticks", "CPU s / hour", "VmRSS kB", "VmHWM kB", "Locked kB", "majflt"
    );
    println!("|---------|----------------------------|--------|----------|------------|------------|--------------|-----------|-----------|-----------|--------|");
    for ph in &phases {
        for (i, a) in agents.iter().enumerate() {
            let (s, e) = (ph.start[i], ph.end[i]);
            let seen = a.seen.lock().unwrap();
            let cyc = gap_stats(&seen, s.mono_ms, e.mono_ms).cycles;
            let wall = (e.mono_ms - s.mono_ms) as f64 / 1000.0;
            if e.proc_.rss_kb == 0 || s.proc_.rss_kb == 0 || e.proc_.sched_ns < s.proc_.sched_ns {
                println!(
                    "| {:<7} | {:<26} | {:>6.1} | {:>8} | agent not running at the end of the phase (see incidents) |",
                    ph.name,
                    agent_desc(a),
                    wall,
                    cyc
                );
                continue;
            }
            let cpu_ms = (e.proc_.sched_ns - s.proc_.sched_ns) as f64 / 1e6;
            println!(
                "| {:<7} | {:<26} | {:>6.1} | {:>8} | {:>10.1} | {:>10} | {:>12.2} | {:>9} | {:>9} | {:>9} | {:>6} |",
                ph.name,
                agent_desc(a),
                wall,
                cyc,
                cpu_ms,
                e.proc_.ticks - s.proc_.ticks,
                cpu_ms / 1000.0 / wall * 3600.0,
                e.proc_.rss_kb,
                e.proc_.hwm_kb,
                e.proc_.locked_kb,
                e.proc_.majflt - s.proc_.majflt
            );
        }
    }
    for (a, policies) in agents.iter().zip(&policies) {
        println!("threads of {}: {policies}", a.label);
    }
    println!("CPU s / hour = CPU time in the phase / phase wall time x 3600; the cpu-5s row is measured directly at the default 5 s timing.");
    println!("Locked kB = resident locked memory (smaps_rollup; shared pages counted proportionally); majflt = major page faults in the phase.");
    println!("sampler: {sampler_reads} O_DIRECT reads of the backing files (not counted in the loop devices' stats)");
    for a in &agents {
        let log = a.host.log_text();
        let warn: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                !l.contains("test double")
                    && (l.contains("warn")
                        || l.contains("error")
                        || l.contains("slow")
                        || l.contains("fail"))
            })
            .collect();
        for l in warn.iter().take(10) {
            println!("agent {} log: {l}", a.label);
        }
        // Events other than start-up ones, placed in their phase (agent clock = ours).
        for e in a
            .host
            .events_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            let kind = e["event"].as_str().unwrap_or("");
            if matches!(kind, "host_up" | "coordinator_changed") {
                continue;
            }
            let at = e["mono_ms"].as_u64().unwrap_or(0);
            let i = agents.iter().position(|b| b.label == a.label).unwrap();
            let place = phases
                .iter()
                .find(|p| at >= p.start[i].mono_ms && at < p.end[i].mono_ms)
                .map(|p| {
                    format!("phase {} +{:.1} s", p.name, (at - p.start[i].mono_ms) as f64 / 1000.0)
                })
                .unwrap_or_else(|| "outside the measured phases".into());
            println!(
                "agent {} event: {kind} @ mono {at} ({place}): {}",
                a.label,
                e["detail"].as_str().unwrap_or("")
            );
        }
    }
    if incidents.is_empty() {
        println!("incidents: none (no agent exited, self-fenced or let the watchdog double fire)");
    } else {
        for i in &incidents {
            println!("INCIDENT: {i}");
        }
    }
    println!();
    println!("source: {}", source_state());
    println!("command: {}", command_line("cadence"));
    println!("total run time: {:.1} s", started.elapsed().as_secs_f64());
    drop(agents);
    if keep {
        println!("kept (agent logs, events, volumes): {}", tmp.keep().display());
    }
}

fn fs_type(p: &Path) -> String {
    Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "--target"])
        .arg(p)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn agent_desc(a: &Agent) -> String {
    format!("{} ({})", a.label, if a.rt { "RR 10 + mlockall" } else { "no RT, no mlock" })
}
