//! Process-level cluster harness: real `hbfence run` agents sharing a volume, each with a FIFO
//! watchdog double whose timer this harness emulates, and a sysrq test file. Never touches the
//! machine's real watchdog or sysrq.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hbfence");

/// Test timing (seconds): interval 1, io_timeout 2, lease 6, watchdog 2, suspect_after 3.
/// Margin = interval = 1 s, so dead_after = 6 + 2 + 2 + 1 = 11 s (lease >= 2*interval +
/// io_timeout + watchdog_timeout).
pub const INIT_ARGS: &[&str] = &[
    "--interval",
    "1",
    "--io-timeout",
    "2",
    "--lease-timeout",
    "6",
    "--watchdog-timeout",
    "2",
    "--suspect-after",
    "3",
];
pub const LEASE: Duration = Duration::from_secs(6);
pub const WATCHDOG: Duration = Duration::from_secs(2);
pub const DEAD_AFTER: Duration = Duration::from_secs(11);

/// Skips (returns false) without root or FUSE, unless CI=true, where that is a failure.
pub fn require_root(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    let reason = format!("{test}: needs root and /dev/fuse (root: {root}, /dev/fuse: {fuse})");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}; CI=true forbids skipping");
    }
    eprintln!("skipping {reason}");
    false
}

pub fn hbfence(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run hbfence")
}

pub fn init_volume(path: &Path, extra: &[&str]) {
    init_volume_for(path, "8", extra)
}

/// `init_volume` with room for `max_hosts` hosts.
pub fn init_volume_for(path: &Path, max_hosts: &str, extra: &[&str]) {
    let mut args = vec!["init", "--volume", path.to_str().unwrap(), "--max-hosts", max_hosts];
    args.extend_from_slice(INIT_ARGS);
    args.extend_from_slice(extra);
    let out = hbfence(&args);
    assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the watchdog double saw.
#[derive(Default)]
pub struct WatchdogLog {
    pub keepalives: Vec<Instant>,
    pub magic_close: bool,
    /// The writer closed the FIFO.
    pub closed: Option<Instant>,
    /// The emulated timer expired (no keepalive for the timeout, no magic close).
    pub fired: Option<Instant>,
}

/// Emulates a hardware watchdog on the reading end of a FIFO: armed at the first byte, fires
/// when no byte arrives for `timeout`, disarmed by `V`. On fire it kills `kill_pid` (the
/// "reset" of the host), if set.
pub struct WatchdogDouble {
    pub path: PathBuf,
    pub log: Arc<Mutex<WatchdogLog>>,
    stop: Arc<AtomicBool>,
    pub kill_pid: Arc<Mutex<Option<u32>>>,
    /// Emulates a driver without magic close: closing the FIFO stops the timer.
    stops_on_close: Arc<AtomicBool>,
    /// The emulated timer's period in ms (`set_timeout`).
    timeout_ms: Arc<AtomicU64>,
}

impl WatchdogDouble {
    pub fn new(path: &Path, timeout: Duration) -> WatchdogDouble {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let log = Arc::new(Mutex::new(WatchdogLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let kill_pid = Arc::new(Mutex::new(None::<u32>));
        let stops_on_close = Arc::new(AtomicBool::new(false));
        let timeout_ms = Arc::new(AtomicU64::new(timeout.as_millis() as u64));
        let (p, l, s, k) = (path.to_path_buf(), log.clone(), stop.clone(), kill_pid.clone());
        let (soc, period) = (stops_on_close.clone(), timeout_ms.clone());
        std::thread::spawn(move || {
            // Non-blocking read end so the thread can notice the deadline and the stop flag.
            let mut f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&p)
                .expect("open fifo");
            let mut armed_at: Option<Instant> = None;
            let mut had_writer = false;
            let mut buf = [0u8; 256];
            while !s.load(Ordering::Relaxed) {
                match f.read(&mut buf) {
                    Ok(0) => {
                        if had_writer {
                            let mut g = l.lock().unwrap();
                            if g.closed.is_none() {
                                g.closed = Some(Instant::now());
                            }
                            if g.magic_close || soc.load(Ordering::Relaxed) {
                                armed_at = None;
                            }
                        }
                    }
                    Ok(n) => {
                        had_writer = true;
                        let now = Instant::now();
                        let mut g = l.lock().unwrap();
                        g.closed = None;
                        for &b in &buf[..n] {
                            if b == b'V' {
                                g.magic_close = true;
                            } else {
                                g.magic_close = false;
                                g.keepalives.push(now);
                            }
                        }
                        armed_at = if g.magic_close { None } else { Some(now) };
                    }
                    Err(_) => {}
                }
                if let Some(last) = armed_at {
                    if last.elapsed() >= Duration::from_millis(period.load(Ordering::Relaxed)) {
                        armed_at = None;
                        l.lock().unwrap().fired = Some(Instant::now());
                        if let Some(pid) = *k.lock().unwrap() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        WatchdogDouble { path: path.to_path_buf(), log, stop, kill_pid, stops_on_close, timeout_ms }
    }

    /// The period of the volume's timing, when it is not `WATCHDOG` (the agent pets every
    /// quarter of the volume's period: a shorter emulated timer would fire on a healthy agent).
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms.store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Emulates a driver without WDIOF_MAGICCLOSE (and nowayout as given): writes the
    /// test-only sidecar `FIFO.test-driver` that hbfence reads for a FIFO double, and makes
    /// this emulated timer stop when the FIFO is closed unless `nowayout`.
    pub fn emulate_driver(&self, magic_close: bool, nowayout: bool) {
        let sidecar = PathBuf::from(format!("{}.test-driver", self.path.display()));
        fs::write(&sidecar, format!("magic_close = {magic_close}\nnowayout = {nowayout}\n"))
            .unwrap();
        self.stops_on_close.store(!magic_close && !nowayout, Ordering::Relaxed);
    }

    pub fn keepalives(&self) -> usize {
        self.log.lock().unwrap().keepalives.len()
    }
    pub fn fired(&self) -> Option<Instant> {
        self.log.lock().unwrap().fired
    }
    pub fn magic_close(&self) -> bool {
        self.log.lock().unwrap().magic_close
    }
    pub fn closed(&self) -> Option<Instant> {
        self.log.lock().unwrap().closed
    }
}

impl Drop for WatchdogDouble {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The harness's `[inventory]` section unless a test sets one (`Host::set_inventory`).
pub const NO_INVENTORY: &str = "[inventory]\nsource = \"none\"\n\n";

pub struct BmcConfig {
    pub port: u16,
    pub password_file: PathBuf,
}

/// One simulated host: config, agent process, watchdog double, sysrq file.
pub struct Host {
    pub id: u32,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub sysrq: PathBuf,
    pub log: PathBuf,
    pub events: PathBuf,
    pub pid_file: PathBuf,
    pub watchdog: WatchdogDouble,
    pub child: Option<Child>,
}

pub struct HostSpec<'a> {
    pub id: u32,
    pub volumes: Vec<PathBuf>,
    /// (peer id, BMC) for every peer this host may fence.
    pub peers: Vec<(u32, Option<&'a BmcConfig>)>,
    pub hooks_dir: Option<PathBuf>,
    pub eligible: bool,
}

impl Host {
    pub fn new(base: &Path, spec: &HostSpec<'_>) -> Host {
        let id = spec.id;
        let dir = base.join(format!("host{id}"));
        fs::create_dir_all(&dir).unwrap();
        let watchdog = WatchdogDouble::new(&dir.join("watchdog"), WATCHDOG);
        // The agent sets the device to the volume's watchdog_timeout and pets every quarter of
        // it: the double emulates that timeout (a shorter one fires on a healthy agent).
        if let Some(ms) = spec.volumes.first().and_then(|v| volume_watchdog_ms(v)) {
            watchdog.set_timeout(Duration::from_millis(ms));
        }
        let mut text = format!("[host]\nid = {id}\nname = \"host{id}\"\n\n");
        for v in &spec.volumes {
            text += &format!("[[volume]]\npath = \"{}\"\n\n", v.display());
        }
        text += &format!(
            "[watchdog]\ndevice = \"{}\"\n\n[self_fence]\naction = \"reboot\"\nsysrq_trigger = \"{}\"\n\n[coordinator]\neligible = {}\n\n[daemon]\nruntime_dir = \"{}\"\nsyslog = false\nrealtime_priority = 0\nlock_memory = false\n\n[events]\nlog = \"{}\"\nhooks_dir = \"{}\"\nhook_timeout = 5\n\n[fencing]\ntimeout = 5\ncommand_timeout = 1\n\n{}",
            dir.join("watchdog").display(),
            dir.join("sysrq").display(),
            spec.eligible,
            dir.join("run").display(),
            dir.join("events.jsonl").display(),
            spec.hooks_dir.clone().unwrap_or_else(|| dir.join("hooks")).display(),
            NO_INVENTORY,
        );
        for (peer, bmc) in &spec.peers {
            text += &format!("[[peer]]\nid = {peer}\nname = \"host{peer}\"\n");
            if let Some(b) = bmc {
                text += &format!(
                    "bmc = {{ address = \"127.0.0.1\", port = {}, username = \"admin\", password_file = \"{}\", cipher_suite = 3 }}\n",
                    b.port,
                    b.password_file.display()
                );
            }
            text += "\n";
        }
        let config = dir.join("hbfence.toml");
        fs::write(&config, text).unwrap();
        Host {
            id,
            sysrq: dir.join("sysrq"),
            log: dir.join("agent.log"),
            events: dir.join("events.jsonl"),
            pid_file: dir.join("agent.pid"),
            config,
            dir,
            watchdog,
            child: None,
        }
    }

    pub fn start(&mut self) {
        self.start_with(true, &[]);
    }

    /// Replaces the `[inventory]` section (the harness's agents publish none by default: a
    /// libvirt on the test machine must not feed every test agent the same domains).
    pub fn set_inventory(&self, section: &str) {
        let text = fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(NO_INVENTORY), "set_inventory once, before start");
        fs::write(&self.config, text.replace(NO_INVENTORY, section)).unwrap();
    }

    /// `start` with or without `--foreground` and with extra environment variables.
    pub fn start_with(&mut self, foreground: bool, envs: &[(&str, &std::ffi::OsStr)]) {
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut args = vec!["run", "--config", self.config.to_str().unwrap()];
        if foreground {
            args.insert(1, "--foreground");
        }
        let child = Command::new(BIN)
            .args(&args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start agent");
        fs::write(&self.pid_file, child.id().to_string()).unwrap();
        *self.watchdog.kill_pid.lock().unwrap() = Some(child.id());
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Exit status once the process ended (reaps it).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.exited();
            status.is_some()
        });
        status
    }

    pub fn sysrq_letters(&self) -> String {
        fs::read_to_string(&self.sysrq).unwrap_or_default()
    }

    /// Waits (10 s at most) until the agent armed its watchdog double: it is running, wrote its
    /// first heartbeat and pets. Panics with the agent's log otherwise.
    #[allow(dead_code)]
    pub fn wait_armed(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self.watchdog.keepalives() > 0),
            "host {} never armed its watchdog:\n{}",
            self.id,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn events_text(&self) -> String {
        fs::read_to_string(&self.events).unwrap_or_default()
    }

    /// Events of one kind about `host`, from this host's JSON-lines log.
    pub fn events_about(&self, kind: &str, host: u32) -> Vec<serde_json::Value> {
        self.events_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == kind && e["host"] == host)
            .collect()
    }

    /// Runs an hbfence command with this host's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--config", self.config.to_str().unwrap()]);
        hbfence(&all)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `hbfence dump --json` of a volume.
/// The watchdog_timeout in the header of an initialised volume (None if it cannot be read).
fn volume_watchdog_ms(volume: &Path) -> Option<u64> {
    let vol = hbfence::volume::Volume::open(volume, hbfence::volume::Access::ReadOnly).ok()?;
    vol.read_header().ok().map(|h| h.timing.watchdog_timeout_ms)
}

pub fn dump(volume: &Path) -> serde_json::Value {
    let out = hbfence(&["dump", "--volume", volume.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("dump json")
}

/// `(seq, state)` of host `id` from a dump.
pub fn host_record(dump: &serde_json::Value, id: u32) -> Option<(u64, String)> {
    dump["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["id"] == id && h["crc"] == "ok")
        .map(|h| (h["seq"].as_u64().unwrap_or(0), h["state"].as_str().unwrap_or("").to_string()))
}

/// The verdict about `id` in any coordinator record of a dump: (verdict, method).
pub fn verdict(volume: &Path, id: u32) -> Option<(String, String)> {
    let out = hbfence(&["status", "--volume", volume.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let h = v["hosts"].as_array()?.iter().find(|h| h["id"] == id)?;
    Some((h["verdict"].as_str()?.to_string(), h["method"].as_str().unwrap_or("").to_string()))
}
