//! Event driver: every event goes to the log (syslog/journal, by the daemon), to the JSON-lines
//! file and to every executable in the hooks directory.
//!
//! Bounded all the way (S7, issue 11): the daemon's main thread hands an event over with a
//! non-blocking `try_send` into a bounded queue; the event thread appends it to the JSON-lines
//! file and passes it on, again with `try_send`, to a bounded hook queue; one hook thread runs
//! the hooks of one event at a time, all of them concurrently as children in their own process
//! groups, each killed with its whole group after `hook_timeout`. No thread is started per event
//! or per hook, so a slow hook never builds a backlog: what does not fit is dropped, counted
//! ([`EventCounters`]) and logged at most every [`DROP_LOG_EVERY`].

use crate::core::events::Event;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct EventSettings {
    pub cluster: String,
    pub reporter_id: u32,
    pub reporter_name: String,
    pub log: PathBuf,
    pub hooks_dir: PathBuf,
    pub hook_timeout: Duration,
    /// Where the `HBFENCE_VMS_FILE` of an event with VMs is written (one file per event kind
    /// and host, replaced by the next one).
    pub vms_dir: PathBuf,
}

/// Queue sizes of the event driver.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Events waiting for the JSON-lines file.
    pub events: usize,
    /// Events waiting for their hooks to run.
    pub hooks: usize,
}

impl Limits {
    /// A start-up is one `cluster_seen` event; 1024 absorbs any burst a 255-host cluster makes
    /// (every peer suspect at once is 254 events), 64 events wait for slow hooks.
    pub const DEFAULT: Limits = Limits { events: 1024, hooks: 64 };
}

/// Drops and failures are logged at most this often (the first one at once).
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// How often running hooks are polled for exit and timeout.
const HOOK_POLL: Duration = Duration::from_millis(20);

/// What the event driver could not do, for the log and the metrics.
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Events that never reached the JSON-lines file or the hooks (full queue, no event thread).
    pub events_dropped: AtomicU64,
    /// Events whose hooks were not run (full hook queue, no hook thread).
    pub hook_events_dropped: AtomicU64,
    /// Hook runs that failed: not startable, non-zero exit, killed at the timeout.
    pub hook_failures: AtomicU64,
}

/// The counters of this process's event driver (the daemon starts one), for the metrics file.
static TOTALS: EventCounters = EventCounters {
    events_dropped: AtomicU64::new(0),
    hook_events_dropped: AtomicU64::new(0),
    hook_failures: AtomicU64::new(0),
};

/// Events dropped before the JSON-lines file and the hooks, in this process.
pub fn dropped_events() -> u64 {
    TOTALS.events_dropped.load(Ordering::Relaxed)
}

/// Events whose hooks were not run, in this process.
pub fn dropped_hook_events() -> u64 {
    TOTALS.hook_events_dropped.load(Ordering::Relaxed)
}

/// Hook runs that failed or timed out, in this process.
pub fn hook_failures() -> u64 {
    TOTALS.hook_failures.load(Ordering::Relaxed)
}

impl EventCounters {
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }
    pub fn hook_events_dropped(&self) -> u64 {
        self.hook_events_dropped.load(Ordering::Relaxed)
    }
    pub fn hook_failures(&self) -> u64 {
        self.hook_failures.load(Ordering::Relaxed)
    }
}

/// Which counter: the instance's and the process total move together.
#[derive(Clone, Copy)]
enum Count {
    EventDropped,
    HookEventDropped,
    HookFailure,
}

impl Count {
    fn of(self, c: &EventCounters) -> &AtomicU64 {
        match self {
            Count::EventDropped => &c.events_dropped,
            Count::HookEventDropped => &c.hook_events_dropped,
            Count::HookFailure => &c.hook_failures,
        }
    }
}

/// Counters plus the rate limit of their log lines; lock-free, so the petting thread may use it.
struct Shared {
    counters: EventCounters,
    base: Instant,
    /// Milliseconds since `base` before which no drop is logged again.
    next_drop_log_ms: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            counters: EventCounters::default(),
            base: Instant::now(),
            next_drop_log_ms: AtomicU64::new(0),
        }
    }

    /// Counts one; returns the instance's new total.
    fn count(&self, which: Count) -> u64 {
        which.of(&TOTALS).fetch_add(1, Ordering::Relaxed);
        which.of(&self.counters).fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether a drop may be logged now (at most once per [`DROP_LOG_EVERY`]).
    fn may_log_drop(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_drop_log_ms.load(Ordering::Relaxed);
        let every = u64::try_from(DROP_LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        now >= next
            && self
                .next_drop_log_ms
                .compare_exchange(
                    next,
                    now.saturating_add(every),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// The daemon's end of the event driver. `send` never blocks.
#[derive(Clone)]
pub struct EventSender {
    tx: Option<SyncSender<Event>>,
    shared: Arc<Shared>,
}

impl EventSender {
    /// Hands `e` to the event thread without blocking; a full queue (or no event thread) drops
    /// it, counted and logged rate-limited. The daemon has logged the event already.
    pub fn send(&self, e: Event) -> Result<(), Event> {
        let Some(tx) = &self.tx else {
            self.shared.count(Count::EventDropped);
            return Err(e);
        };
        match tx.try_send(e) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(e)) | Err(TrySendError::Disconnected(e)) => {
                let n = self.shared.count(Count::EventDropped);
                if self.shared.may_log_drop() {
                    log::warn!(
                        "event queue full: {} not written to the events log nor given to hooks ({n} dropped since start; a slow events log disk?)",
                        e.kind.as_str()
                    );
                }
                Err(e)
            }
        }
    }

    /// What the driver dropped or saw fail so far.
    pub fn counters(&self) -> &EventCounters {
        &self.shared.counters
    }
}

/// Starts the event and hook threads; send events into the returned sender.
pub fn start(settings: EventSettings) -> EventSender {
    start_with(settings, Limits::DEFAULT, crate::sys::THREAD_STACK)
}

/// [`start`] with explicit queue sizes and thread stack size (tests provoke a failed spawn
/// with a stack no system can give).
fn start_with(settings: EventSettings, limits: Limits, stack: usize) -> EventSender {
    let shared = Arc::new(Shared::new());
    let settings = Arc::new(settings);
    let (hook_tx, hook_rx) = mpsc::sync_channel::<Event>(limits.hooks.max(1));
    let hook_shared = Arc::clone(&shared);
    let hook_settings = Arc::clone(&settings);
    let hook_tx = match std::thread::Builder::new()
        .stack_size(stack)
        .name("hbfence-hooks".into())
        .spawn(move || hook_thread(&hook_settings, hook_rx, &hook_shared))
    {
        Ok(_) => Some(hook_tx),
        Err(e) => {
            log::error!(
                "cannot start the hook thread: {e}; hooks in {} will not run until a restart",
                settings.hooks_dir.display()
            );
            None
        }
    };
    let (tx, rx) = mpsc::sync_channel::<Event>(limits.events.max(1));
    let event_shared = Arc::clone(&shared);
    let event_settings = Arc::clone(&settings);
    let tx = match std::thread::Builder::new()
        .stack_size(stack)
        .name("hbfence-events".into())
        .spawn(move || event_thread(&event_settings, rx, hook_tx, &event_shared))
    {
        Ok(_) => Some(tx),
        Err(e) => {
            log::error!(
                "cannot start the event thread: {e}; events go to the log only (not to {} nor to hooks) until a restart",
                settings.log.display()
            );
            None
        }
    };
    EventSender { tx, shared }
}

pub fn to_json(e: &Event, s: &EventSettings) -> serde_json::Value {
    let mut v = json!({
        "event": e.kind.as_str(),
        "host": e.host,
        "host_name": e.host_name,
        "method": e.method.map(|m| m.as_str()),
        "detail": e.detail,
        "wall_time": crate::cli::text::wall_time(e.wall_ms),
        "wall_time_ms": e.wall_ms,
        "mono_ms": e.mono_ms,
        "reporter": s.reporter_id,
        "reporter_name": s.reporter_name,
        "cluster": s.cluster,
    });
    if let Some(vms) = &e.vms {
        v["vms"] = crate::inventory::report_json(vms);
    }
    v
}

/// The file `HBFENCE_VMS_FILE` names: the event and its VM list as JSON, written atomically.
fn vms_file(e: &Event, s: &EventSettings) -> std::io::Result<PathBuf> {
    let path = s.vms_dir.join(format!("{}-host{}.json", e.kind.as_str(), e.host));
    std::fs::create_dir_all(&s.vms_dir)?;
    let tmp = s.vms_dir.join(format!(".{}-host{}.json.tmp", e.kind.as_str(), e.host));
    std::fs::write(&tmp, format!("{}\n", to_json(e, s)))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn event_thread(
    s: &EventSettings,
    rx: Receiver<Event>,
    hooks: Option<SyncSender<Event>>,
    shared: &Shared,
) {
    let mut log_warned = false;
    let mut next_hook_drop_log: Option<Instant> = None;
    for e in rx {
        let line = to_json(&e, s).to_string();
        if let Err(err) = append(&s.log, &line) {
            if !log_warned {
                log::warn!(
                    "event log {}: {err}; events still go to syslog and hooks",
                    s.log.display()
                );
                log_warned = true;
            }
        }
        let dropped = match &hooks {
            Some(tx) => match tx.try_send(e) {
                Ok(()) => None,
                Err(TrySendError::Full(e)) | Err(TrySendError::Disconnected(e)) => Some(e),
            },
            None => Some(e),
        };
        if let Some(e) = dropped {
            let n = shared.count(Count::HookEventDropped);
            if next_hook_drop_log.is_none_or(|t| Instant::now() >= t) {
                next_hook_drop_log = Some(Instant::now() + DROP_LOG_EVERY);
                log::warn!(
                    "hook queue full: hooks not run for {} about host {} ({n} events without hooks since start; a hook in {} too slow?)",
                    e.kind.as_str(),
                    e.host,
                    s.hooks_dir.display()
                );
            }
        }
    }
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(format!("{line}\n").as_bytes())
}

fn hook_thread(s: &EventSettings, rx: Receiver<Event>, shared: &Shared) {
    let mut next_fail_log: Option<Instant> = None;
    for e in rx {
        for failure in run_hooks(s, &e) {
            let n = shared.count(Count::HookFailure);
            if next_fail_log.is_none_or(|t| Instant::now() >= t) {
                next_fail_log = Some(Instant::now() + DROP_LOG_EVERY);
                log::warn!("{failure} ({n} failed hook runs since start)");
            }
        }
    }
}

/// Runs every hook for `e` concurrently, each with its own timeout, and waits for all of them;
/// returns one message per failed run. Failures are not retried.
fn run_hooks(s: &EventSettings, e: &Event) -> Vec<String> {
    let kind = e.kind.as_str();
    // The rules `run` checked at start, again: a hook added or changed since is held to them.
    let (list, mut failures) = match crate::preflight::hooks_by_the_rules(&s.hooks_dir) {
        Ok(h) => (h.runnable, h.refused),
        Err(why) => (Vec::new(), vec![why]),
    };
    for f in &mut failures {
        *f = format!("{f}: not run for {kind}");
    }
    if list.is_empty() {
        return failures;
    }
    let (vms, vms_inventory) = match &e.vms {
        Some(r) => (r.uuids(), r.inventory.to_string()),
        None => (String::new(), String::new()),
    };
    let vms_file = match &e.vms {
        Some(_) => match vms_file(e, s) {
            Ok(p) => p.display().to_string(),
            Err(err) => {
                log::warn!("cannot write the VM list of {kind} to {}: {err}", s.vms_dir.display());
                String::new()
            }
        },
        None => String::new(),
    };
    let env: [(&str, String); 12] = [
        ("HBFENCE_EVENT", kind.to_string()),
        ("HBFENCE_HOST", e.host.to_string()),
        ("HBFENCE_HOST_NAME", e.host_name.clone()),
        ("HBFENCE_METHOD", e.method.map(|m| m.as_str()).unwrap_or("").to_string()),
        ("HBFENCE_DETAIL", e.detail.clone()),
        ("HBFENCE_WALL_TIME", crate::cli::text::wall_time(e.wall_ms)),
        ("HBFENCE_REPORTER", s.reporter_id.to_string()),
        ("HBFENCE_REPORTER_NAME", s.reporter_name.clone()),
        ("HBFENCE_CLUSTER", s.cluster.clone()),
        // `fenced`: the VMs the host ran at its last heartbeat; `vm_duplicate`: the domain.
        ("HBFENCE_VMS", vms),
        ("HBFENCE_VMS_FILE", vms_file),
        ("HBFENCE_VMS_INVENTORY", vms_inventory),
    ];
    let mut running: Vec<(PathBuf, Child)> = Vec::new();
    for hook in list {
        let mut cmd = Command::new(&hook);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .envs(env.iter().map(|(k, v)| (k, v)))
            // Its own process group: the timeout kill reaches whatever the hook started.
            .process_group(0);
        match cmd.spawn() {
            Ok(child) => running.push((hook, child)),
            Err(err) => {
                failures.push(format!("hook {} for {kind}: cannot start: {err}", hook.display()))
            }
        }
    }
    let deadline = Instant::now() + s.hook_timeout;
    while !running.is_empty() {
        let timed_out = Instant::now() >= deadline;
        running.retain_mut(|(hook, child)| match child.try_wait() {
            Ok(Some(status)) if status.success() => false,
            Ok(Some(status)) => {
                failures.push(format!("hook {} for {kind} failed: {status}", hook.display()));
                false
            }
            Ok(None) if timed_out => {
                kill_group(child);
                failures.push(format!(
                    "hook {} for {kind} killed with its process group after {} s timeout",
                    hook.display(),
                    s.hook_timeout.as_secs_f64()
                ));
                false
            }
            Ok(None) => true,
            Err(err) => {
                kill_group(child);
                failures.push(format!("hook {} for {kind}: {err}", hook.display()));
                false
            }
        });
        if !running.is_empty() {
            std::thread::sleep(HOOK_POLL);
        }
    }
    failures
}

/// SIGKILL to the child's process group (its id is the child's pid: `process_group(0)`; the
/// child is not reaped yet, so the id cannot have been reused), then reap the child.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::EventKind;
    use nix::sys::signal::kill;
    use std::os::unix::fs::PermissionsExt;

    fn settings(dir: &Path, hook_timeout: Duration) -> EventSettings {
        EventSettings {
            cluster: "c".into(),
            reporter_id: 1,
            reporter_name: "h1".into(),
            log: dir.join("events.jsonl"),
            hooks_dir: dir.join("hooks"),
            hook_timeout,
            vms_dir: dir.join("vms"),
        }
    }

    fn hook(dir: &Path, name: &str, script: &str) {
        let hooks = dir.join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        let path = hooks.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn event(n: u64) -> Event {
        Event {
            kind: EventKind::HostSuspect,
            host: 2,
            host_name: "h2".into(),
            method: None,
            detail: format!("event {n}"),
            mono_ms: n,
            wall_ms: n,
            vms: None,
        }
    }

    /// Waits for `cond` up to `limit` (a condition, not a guess: fails with `what`).
    fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + limit;
        while !cond() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
    }

    /// Alive and not a zombie (a zombie is dead; whether someone reaps it is init's business).
    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            }
            Err(_) => false,
        }
    }

    #[test]
    fn a_timed_out_hook_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        hook(
            dir.path(),
            "50-forks",
            &format!("sleep 1000 &\necho $! > {}.tmp\nmv {0}.tmp {0}\nwait", pidfile.display()),
        );
        let tx = start(settings(dir.path(), Duration::from_millis(500)));
        tx.send(event(1)).unwrap();
        wait_for(Duration::from_secs(10), "the hook's grandchild", || pidfile.exists());
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        wait_for(Duration::from_secs(10), "the timeout", || tx.counters().hook_failures() == 1);
        // SIGKILL is delivered asynchronously: the group was signalled before the failure was
        // counted, but the grandchild may take a moment to die. One that survived the kill (not
        // in the group) would still be sleeping its 1000 s after this bounded wait.
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let dead = !alive(pid);
        if !dead {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        assert!(dead, "the hook's grandchild {pid} survived the hook's timeout");
    }

    #[test]
    fn a_flood_with_a_slow_hook_stays_bounded_and_counts_what_it_dropped() {
        const N: u64 = 500;
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        hook(dir.path(), "50-slow", &format!("echo run >> {}\nsleep 0.3", runs.display()));
        let limits = Limits { events: 16, hooks: 4 };
        let tx = start_with(settings(dir.path(), Duration::from_secs(10)), limits, 256 * 1024);
        let started = Instant::now();
        for n in 0..N {
            let _ = tx.send(event(n));
        }
        // A blocking send would wait for the hooks: (N - queues) / 5 runs of 0.3 s.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "sends blocked: {:?}",
            started.elapsed()
        );
        let c = tx.counters();
        assert!(c.events_dropped() > 0, "no event dropped from a queue of 16");
        let log = dir.path().join("events.jsonl");
        wait_for(Duration::from_secs(10), "the events log", || {
            lines(&log) as u64 + c.events_dropped() == N
        });
        assert!(c.hook_events_dropped() > 0, "no hook run dropped with a slow hook");
        let expected = lines(&log) as u64 - c.hook_events_dropped();
        assert!(
            expected <= limits.hooks as u64 + 2,
            "{expected} events queued for hooks with a hook queue of {}",
            limits.hooks
        );
        wait_for(Duration::from_secs(20), "the queued hook runs", || {
            lines(&runs) as u64 == expected
        });
        assert_eq!(c.hook_failures(), 0);
        assert!(dropped_events() >= c.events_dropped(), "process totals lag the instance's");
    }

    #[test]
    fn threads_that_cannot_start_are_reported_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        hook(dir.path(), "50-ok", "true");
        // No system gives a thread a 2^50-byte stack: both spawns fail.
        let tx = start_with(settings(dir.path(), Duration::from_secs(1)), Limits::DEFAULT, 1 << 50);
        assert!(tx.send(event(1)).is_err());
        assert_eq!(tx.counters().events_dropped(), 1);
        assert!(!dir.path().join("events.jsonl").exists());
    }

    /// The rules `run` checks at start hold for every run: a hook added later that breaks them
    /// (here: group-writable, so someone other than root may have put code in it) is not run
    /// as root, and the failure says why; the others still run.
    #[test]
    fn a_hook_that_breaks_the_rules_after_start_is_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let (ok, bad) = (dir.path().join("ok-ran"), dir.path().join("bad-ran"));
        hook(dir.path(), "10-ok", &format!("touch {}", ok.display()));
        hook(dir.path(), "20-group-writable", &format!("touch {}", bad.display()));
        let path = dir.path().join("hooks/20-group-writable");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o775)).unwrap();
        let failures = run_hooks(&settings(dir.path(), Duration::from_secs(5)), &event(1));
        assert!(ok.exists(), "the hook that keeps the rules did not run");
        assert!(!bad.exists(), "a group-writable hook ran");
        assert!(
            failures.len() == 1
                && failures[0].contains("20-group-writable")
                && failures[0].contains("writable by group"),
            "{failures:?}"
        );
    }

    #[test]
    fn failing_and_unstartable_hooks_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        hook(dir.path(), "10-fails", "exit 3");
        hook(dir.path(), "20-ok", "true");
        // Executable, but no interpreter: spawn fails.
        let bad = dir.path().join("hooks/30-noexec");
        std::fs::write(&bad, "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = settings(dir.path(), Duration::from_secs(5));
        let failures = run_hooks(&s, &event(1));
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            failures.iter().any(|f| f.contains("10-fails") && f.contains("failed: exit status: 3")),
            "{failures:?}"
        );
        assert!(
            failures.iter().any(|f| f.contains("30-noexec") && f.contains("cannot start")),
            "{failures:?}"
        );
    }
}
