//! `cloudstack-heartbeat`: a drop-in for CloudStack's `kvmheartbeat.sh` and
//! `kvmsmpheartbeat.sh` (same `-i -p -m -h -t -r -c` options). Write mode keeps CloudStack's
//! own `hb-HOST_IP` file going; `-r` answers from hbfence's verdicts, DEAD only for a fenced
//! host, within a hard deadline; `-c` never reboots (hbfence owns self-fencing).

use super::{exit, CliResult};
use crate::config::{Config, DaemonConfig, DEFAULT_CONFIG};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The lines CloudStack's Java looks for (`contains("DEAD")`, older `contains("> DEAD <")`).
pub const ALIVE_LINE: &str = "=====> ALIVE <=====";
pub const DEAD_LINE: &str = "=====> DEAD <======";

/// The original's exit code when it cannot write the heartbeat file.
const WRITE_FAILED: i32 = 2;

/// File under `[daemon] runtime_dir` that counts the answers given without a judgement.
pub const WARNINGS_FILE: &str = "cloudstack-warnings.json";

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct HeartbeatArgs {
    /// NFS server (accepted and ignored: hbfence mounts nothing).
    #[arg(short = 'i', value_name = "NFS_SERVER")]
    pub nfs_server: Option<String>,
    /// NFS export path (accepted and ignored).
    #[arg(short = 'p', value_name = "NFS_PATH")]
    pub nfs_path: Option<String>,
    /// Mount point of the primary storage pool: the heartbeat file is MOUNT/KVMHA/hb-HOST_IP.
    #[arg(short = 'm', value_name = "MOUNT")]
    pub mount_point: Option<PathBuf>,
    /// The host's IP as CloudStack knows it: an `aliases` entry of [host] or a [[peer]].
    #[arg(short = 'h', value_name = "HOST_IP")]
    pub host_ip: Option<String>,
    /// Interval between CloudStack's two reads (accepted and ignored: hbfence judges).
    #[arg(short = 't', value_name = "SECONDS")]
    pub interval: Option<String>,
    /// Read mode: print ALIVE or DEAD (DEAD only for a host hbfence holds fenced), exit 0.
    #[arg(short = 'r')]
    pub read: bool,
    /// CloudStack's "reboot this host" request: logged and ignored (hbfence self-fences).
    #[arg(short = 'c')]
    pub cleanup: bool,
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Write mode writes only when MOUNT is a mount point, as kvmheartbeat.sh (NFS pools)
    /// does: a heartbeat on the local disk under an unmounted pool would look like success.
    #[arg(long)]
    pub require_mount: bool,
    /// Seconds within which `-r` answers, whatever the volume does (then ALIVE).
    #[arg(long, value_name = "SECONDS", default_value_t = 4.0)]
    pub deadline: f64,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

pub fn run(a: &HeartbeatArgs) -> CliResult {
    let config = Config::load(&a.config);
    let syslog = config.as_ref().map_or(true, |c| c.daemon.syslog);
    // Logging goes to stderr where syslog is off or unavailable, and CloudStack merges stderr
    // into the line it parses: it starts only once the verdict line is out.
    let start_logging = || crate::logging::init(syslog, false, log::LevelFilter::Info);
    let code = if a.cleanup {
        start_logging();
        cleanup(a)
    } else if a.read {
        read(a, config.as_ref().map_err(|e| e.to_string()), start_logging)
    } else {
        start_logging();
        write_heartbeat(a)
    };
    crate::logging::flush(Duration::from_secs(1));
    std::process::exit(code)
}

fn cleanup(a: &HeartbeatArgs) -> i32 {
    log::warn!(
        "cloudstack-heartbeat -c: CloudStack asked for a reboot of this host (it could not write its heartbeat file under {}); ignored: hbfence fences this host itself when its own storage lease expires",
        a.mount_point.as_deref().map_or("?".into(), |m| m.display().to_string())
    );
    exit::OK
}

/// The heartbeat file CloudStack's scripts write and `kvmvmactivity.sh` reads.
pub fn heartbeat_file(mount: &Path, host_ip: &str) -> PathBuf {
    mount.join("KVMHA").join(format!("hb-{host_ip}"))
}

fn write_heartbeat(a: &HeartbeatArgs) -> i32 {
    let (Some(mount), Some(ip)) = (&a.mount_point, &a.host_ip) else {
        println!("cloudstack-heartbeat: write mode needs -m MOUNT and -h HOST_IP");
        return exit::FAILURE;
    };
    if ip.is_empty() || ip.contains('/') {
        println!("cloudstack-heartbeat: -h {ip:?} is not a host address");
        return exit::FAILURE;
    }
    if a.require_mount && !is_mount_point(mount) {
        println!(
            "Failed to write the heartbeat: {} is not mounted (hbfence mounts nothing: mount the pool)",
            mount.display()
        );
        log::warn!(
            "cloudstack-heartbeat: {} is not a mount point; heartbeat not written",
            mount.display()
        );
        return exit::FAILURE;
    }
    let file = heartbeat_file(mount, ip);
    // Through a temporary file and a rename, as kvmsmpheartbeat.sh does: a reader
    // (kvmvmactivity.sh) never sees a half-written timestamp.
    let tmp = file.with_file_name(format!("hb-{ip}.{}", std::process::id()));
    let written = file.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{}\n", crate::sys::wall_ms() / 1000).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)
    });
    match written {
        Ok(()) => exit::OK,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            println!("Failed to write {}: {e}", file.display());
            log::warn!("cloudstack-heartbeat: cannot write {}: {e}", file.display());
            WRITE_FAILED
        }
    }
}

/// Whether `path` is where something is mounted (/proc/self/mountinfo, field 5).
fn is_mount_point(path: &Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else { return false };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(&unescape_mountinfo(m)) == path)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|o| o.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(o) if bytes[i] == b'\\' => {
                out.push(o.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `-r` answer: the verdict line, then why.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub dead: bool,
    pub why: String,
    /// Answered ALIVE without a judgement (misconfiguration, stopped agent, storage): logged
    /// as a warning and counted.
    pub unjudged: bool,
}

impl Answer {
    fn alive(why: String) -> Answer {
        Answer { dead: false, why, unjudged: false }
    }
    fn unjudged(why: String) -> Answer {
        Answer { dead: false, why, unjudged: true }
    }
}

fn read(a: &HeartbeatArgs, config: Result<&Config, String>, start_logging: impl FnOnce()) -> i32 {
    // A config that does not load is counted too, where the agent would keep its runtime dir.
    let runtime_dir = config
        .as_ref()
        .map_or_else(|_| DaemonConfig::default().runtime_dir, |c| c.daemon.runtime_dir.clone());
    let ip = a.host_ip.clone().unwrap_or_default();
    let answer = match config {
        Err(e) => Answer::unjudged(format!("cannot use the hbfence config: {e}")),
        Ok(c) => judge(a, c, &ip),
    };
    // The verdict line first: CloudStack reads only the first line.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", if answer.dead { DEAD_LINE } else { ALIVE_LINE });
    let _ = writeln!(out, "hbfence: {}", answer.why);
    let _ = out.flush();
    drop(out);
    start_logging();
    if answer.unjudged {
        let total = count_warning(&runtime_dir, &ip, &answer.why);
        log::warn!(
            "cloudstack-heartbeat -r -h {ip}: answered ALIVE without a judgement: {} (CloudStack's HA cannot act on this host until this is fixed; {} such answers counted)",
            answer.why,
            total.map_or("not".to_string(), |n| n.to_string())
        );
    } else {
        log::info!("cloudstack-heartbeat -r -h {ip}: {}", answer.why);
    }
    exit::OK
}

fn judge(a: &HeartbeatArgs, c: &Config, ip: &str) -> Answer {
    if ip.is_empty() {
        return Answer::unjudged("no -h HOST_IP given".into());
    }
    let Some(id) = c.resolve_host(ip) else {
        return Answer::unjudged(format!(
            "unknown host {ip:?}: add it to `aliases` of its [[peer]] (or [host]) in {}",
            a.config.display()
        ));
    };
    let deadline = if a.deadline.is_finite() && (0.5..=60.0).contains(&a.deadline) {
        Duration::from_secs_f64(a.deadline)
    } else {
        return Answer::unjudged(format!("--deadline {} must be 0.5 to 60 seconds", a.deadline));
    };
    match check_within(&a.config, id, deadline) {
        Ok((code, stdout, stderr)) => interpret(id, ip, code, &stdout, &stderr),
        Err(why) => Answer::unjudged(format!("host {id} ({ip}): {why}")),
    }
}

/// Runs `hbfence check ID --json` in a child, so that a volume that hangs (even in an
/// uninterruptible read) costs at most `deadline`: the child is then killed and left behind.
fn check_within(
    config: &Path,
    id: u32,
    deadline: Duration,
) -> Result<(i32, String, String), String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the hbfence binary: {e}"))?;
    let mut child = Command::new(exe)
        .arg("check")
        .arg(id.to_string())
        .arg("--json")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `hbfence check`: {e}"))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let spawned =
        std::thread::Builder::new().stack_size(crate::sys::THREAD_STACK).spawn(move || {
            let mut out = String::new();
            let mut err = String::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_string(&mut out);
            }
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_string(&mut err);
            }
            let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
            let _ = tx.send((code, out, err));
        });
    if let Err(e) = spawned {
        kill(pid);
        return Err(format!("cannot start a thread: {e}"));
    }
    rx.recv_timeout(deadline).map_err(|_| {
        kill(pid);
        format!(
            "no answer from the heartbeat volume within {:.1} s (hung storage?); not judged",
            deadline.as_secs_f64()
        )
    })
}

fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Maps `hbfence check --json`'s outcome to CloudStack's answer: DEAD only for FENCED.
pub fn interpret(id: u32, ip: &str, code: i32, stdout: &str, stderr: &str) -> Answer {
    let v: Option<Value> = serde_json::from_str(stdout.trim()).ok();
    let result = v.as_ref().and_then(|v| v["result"].as_str());
    let reason = v.as_ref().and_then(|v| v["reason"].as_str()).unwrap_or("");
    let host = format!("host {id} ({ip})");
    match result {
        Some("FENCED") => Answer {
            dead: true,
            why: format!("{host} is FENCED: {reason}; its VMs may be restarted elsewhere"),
            unjudged: false,
        },
        Some("DEAD") => Answer::alive(format!(
            "{host} is suspect but not fenced yet: {reason}; answering ALIVE until it is fenced"
        )),
        Some("LEFT") => Answer::unjudged(format!(
            "{host} LEFT: its hbfence agent stopped cleanly, so it is neither protected nor ever reported dead"
        )),
        Some(word) => Answer::alive(format!("{host} is {word}: {reason}")),
        None => {
            let msg = stderr.trim().trim_start_matches("hbfence: error: ");
            let msg = if msg.is_empty() { format!("exit status {code}") } else { msg.to_string() };
            Answer::unjudged(format!("{host}: `hbfence check` could not judge: {msg}"))
        }
    }
}

/// Adds one to the counter in `runtime_dir`/[`WARNINGS_FILE`] (under a lock: CloudStack runs
/// checks concurrently) and records the last reason; returns the new total.
fn count_warning(runtime_dir: &Path, ip: &str, why: &str) -> Option<u64> {
    let path = runtime_dir.join(WARNINGS_FILE);
    let update = || -> std::io::Result<u64> {
        std::fs::create_dir_all(runtime_dir)?;
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(runtime_dir.join(".cloudstack-warnings.lock"))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::from(e))?;
        let before: Option<Value> =
            std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok());
        let total = before.and_then(|v| v["warnings_total"].as_u64()).unwrap_or(0) + 1;
        let text = json!({
            "warnings_total": total,
            "last_wall_time": crate::cli::text::wall_time(crate::sys::wall_ms()),
            "last_host_ip": ip,
            "last_reason": why,
        });
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, format!("{text}\n"))?;
        std::fs::rename(&tmp, &path)?;
        Ok(total)
    };
    match update() {
        Ok(n) => Some(n),
        Err(e) => {
            log::warn!("cloudstack-heartbeat: cannot update {}: {e}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fenced_is_dead() {
        let fenced = interpret(2, "10.1.1.12", 4, r#"{"result":"FENCED","reason":"r"}"#, "");
        assert!(fenced.dead && !fenced.unjudged, "{fenced:?}");
        for word in ["DEAD", "ALIVE"] {
            let a = interpret(2, "ip", 3, &format!(r#"{{"result":"{word}","reason":"r"}}"#), "");
            assert!(!a.dead && !a.unjudged, "{word}: {a:?}");
        }
        let left = interpret(2, "ip", 5, r#"{"result":"LEFT","reason":"r"}"#, "");
        assert!(!left.dead && left.unjudged, "{left:?}");
    }

    #[test]
    fn a_failed_check_is_alive_unjudged_with_its_message() {
        let a = interpret(2, "ip", 1, "", "hbfence: error: the hbfence daemon is not running\n");
        assert!(!a.dead && a.unjudged);
        assert!(a.why.contains("the hbfence daemon is not running"), "{}", a.why);
        let b = interpret(2, "ip", -1, "garbage", "");
        assert!(!b.dead && b.unjudged && b.why.contains("exit status -1"), "{}", b.why);
    }

    #[test]
    fn warnings_are_counted_across_calls() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        assert_eq!(count_warning(&run, "10.0.0.1", "a"), Some(1));
        assert_eq!(count_warning(&run, "10.0.0.2", "b"), Some(2));
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join(WARNINGS_FILE)).unwrap())
                .unwrap();
        assert_eq!(v["warnings_total"], 2);
        assert_eq!(v["last_host_ip"], "10.0.0.2");
        assert_eq!(v["last_reason"], "b");
    }

    #[test]
    fn mount_points_are_found_with_escapes() {
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("not-mounted");
        std::fs::create_dir(&plain).unwrap();
        assert!(!is_mount_point(&plain));
        assert_eq!(unescape_mountinfo("/mnt/a\\040b\\134c"), "/mnt/a b\\c");
        assert_eq!(unescape_mountinfo("/mnt/x\\9"), "/mnt/x\\9");
    }

    #[test]
    fn heartbeat_file_is_cloudstacks() {
        assert_eq!(
            heartbeat_file(Path::new("/mnt/abc"), "10.1.1.12"),
            PathBuf::from("/mnt/abc/KVMHA/hb-10.1.1.12")
        );
    }
}
