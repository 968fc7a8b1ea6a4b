//! Event driver: every event goes to the log (syslog/journal), to the JSON-lines file and to
//! every executable in the hooks directory. Runs in its own thread: a slow disk or a hanging
//! hook never blocks the main loop (S7).

use crate::core::events::Event;
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

pub struct EventSettings {
    pub cluster: String,
    pub reporter_id: u32,
    pub reporter_name: String,
    pub log: PathBuf,
    pub hooks_dir: PathBuf,
    pub hook_timeout: Duration,
}

/// Starts the event thread; send events into the returned channel.
pub fn start(settings: EventSettings) -> Sender<Event> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .stack_size(crate::sys::THREAD_STACK)
        .name("hbfence-events".into())
        .spawn(move || run(settings, rx));
    if let Err(e) = spawned {
        log::error!("cannot start the event thread: {e}; events go to the log only");
    }
    tx
}

pub fn to_json(e: &Event, s: &EventSettings) -> serde_json::Value {
    json!({
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
    })
}

fn run(s: EventSettings, rx: Receiver<Event>) {
    let mut log_warned = false;
    for e in rx {
        let line = to_json(&e, &s).to_string();
        if let Err(err) = append(&s.log, &line) {
            if !log_warned {
                log::warn!(
                    "event log {}: {err}; events still go to syslog and hooks",
                    s.log.display()
                );
                log_warned = true;
            }
        }
        run_hooks(&s, &e);
    }
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(format!("{line}\n").as_bytes())
}

fn hooks(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Package-manager leftovers and hidden files are never run.
            !name.starts_with('.')
                && !name.ends_with(".dpkg-old")
                && !name.ends_with(".dpkg-dist")
                && !name.ends_with(".rpmnew")
                && !name.ends_with('~')
        })
        .filter(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .collect();
    v.sort();
    v
}

/// Runs every hook in parallel, each with its own timeout; failures are logged, not retried.
fn run_hooks(s: &EventSettings, e: &Event) {
    let list = hooks(&s.hooks_dir);
    if list.is_empty() {
        return;
    }
    let env: Vec<(&str, String)> = vec![
        ("HBFENCE_EVENT", e.kind.as_str().to_string()),
        ("HBFENCE_HOST", e.host.to_string()),
        ("HBFENCE_HOST_NAME", e.host_name.clone()),
        ("HBFENCE_METHOD", e.method.map(|m| m.as_str()).unwrap_or("").to_string()),
        ("HBFENCE_DETAIL", e.detail.clone()),
        ("HBFENCE_WALL_TIME", crate::cli::text::wall_time(e.wall_ms)),
        ("HBFENCE_REPORTER", s.reporter_id.to_string()),
        ("HBFENCE_REPORTER_NAME", s.reporter_name.clone()),
        ("HBFENCE_CLUSTER", s.cluster.clone()),
    ];
    let handles: Vec<_> = list
        .into_iter()
        .map(|hook| {
            let env = env.clone();
            let timeout = s.hook_timeout;
            let kind = e.kind.as_str();
            std::thread::spawn(move || run_hook(&hook, &env, timeout, kind))
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

fn run_hook(hook: &Path, env: &[(&str, String)], timeout: Duration, kind: &str) {
    let mut cmd = Command::new(hook);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            log::warn!("hook {} for {kind}: cannot start: {e}", hook.display());
            return;
        }
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return,
            Ok(Some(status)) => {
                log::warn!("hook {} for {kind} failed: {status}", hook.display());
                return;
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                log::warn!(
                    "hook {} for {kind} killed after {} s timeout",
                    hook.display(),
                    timeout.as_secs_f64()
                );
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                log::warn!("hook {} for {kind}: {e}", hook.display());
                return;
            }
        }
    }
}
