//! Logging to syslog (and so the journal) and stderr from a dedicated thread, so a stuck
//! syslog socket never blocks the main loop (S7): a caller only `try_send`s into a bounded
//! queue (no lock: `SyncSender` is `Sync`), and a full queue drops the line and counts it.
//! Repeated messages are rate-limited.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

static QUEUED: AtomicU64 = AtomicU64::new(0);
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped because the writer's queue was full (or the writer is gone).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Capacity of the queue in front of the writer thread.
const QUEUE: usize = 1024;

struct ChannelLogger {
    // No mutex: a SCHED_RR petting thread must never wait behind an ordinary thread that holds
    // a lock while it logs.
    tx: SyncSender<(Level, String)>,
    level: LevelFilter,
}

impl Log for ChannelLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // A full queue drops the message rather than block the caller.
        match self.tx.try_send((r.level(), r.args().to_string())) {
            Ok(()) => {
                QUEUED.fetch_add(1, Ordering::SeqCst);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    fn flush(&self) {}
}

/// Installs the logger. `syslog`: send to the local syslog socket; `stderr`: also write to
/// stderr. Lines go to stderr as well whenever they go nowhere else (`syslog` off, or its
/// socket cannot be opened): under systemd stderr is the journal, and a self-fence line must
/// never be lost.
pub fn init(syslog: bool, stderr: bool, level: LevelFilter) {
    let (tx, rx) = mpsc::sync_channel::<(Level, String)>(QUEUE);
    let logger = ChannelLogger { tx, level };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    let _ = std::thread::Builder::new()
        .stack_size(crate::sys::THREAD_STACK)
        .name("hbfence-log".into())
        .spawn(move || writer(rx, syslog, stderr));
}

const REPEAT_WINDOW: Duration = Duration::from_secs(60);

fn writer(rx: Receiver<(Level, String)>, use_syslog: bool, stderr: bool) {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "hbfence".into(),
        pid: std::process::id(),
    };
    let mut sys = if use_syslog { syslog::unix(formatter).ok() } else { None };
    let stderr = stderr_needed(stderr, sys.is_some());
    if use_syslog && sys.is_none() {
        emit(&mut None, true, Level::Warn, "cannot open the syslog socket; logging to stderr");
    }
    let mut seen: HashMap<String, (Instant, u64)> = HashMap::new();
    for (level, msg) in rx {
        handle(&mut sys, stderr, &mut seen, level, msg);
        WRITTEN.fetch_add(1, Ordering::SeqCst);
    }
}

/// Whether lines go to stderr: when asked (`--foreground`, a terminal), and always when
/// syslog does not take them.
fn stderr_needed(asked: bool, syslog_open: bool) -> bool {
    asked || !syslog_open
}

/// Waits (at most `limit`) until every queued message is written: called before exiting.
pub fn flush(limit: Duration) {
    let deadline = Instant::now() + limit;
    while WRITTEN.load(Ordering::SeqCst) < QUEUED.load(Ordering::SeqCst)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

type SysLogger = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

fn handle(
    sys: &mut Option<SysLogger>,
    stderr: bool,
    seen: &mut HashMap<String, (Instant, u64)>,
    level: Level,
    msg: String,
) {
    {
        let now = Instant::now();
        if let Some((since, suppressed)) = seen.get_mut(&msg) {
            if now.duration_since(*since) < REPEAT_WINDOW {
                *suppressed += 1;
                return;
            }
            let n = *suppressed;
            *since = now;
            *suppressed = 0;
            if n > 0 {
                emit(
                    sys,
                    stderr,
                    level,
                    &format!("{msg} (repeated {n} more times in the last minute)"),
                );
                return;
            }
        } else {
            if seen.len() > 4096 {
                seen.retain(|_, (t, _)| now.duration_since(*t) < REPEAT_WINDOW);
            }
            seen.insert(msg.clone(), (now, 0));
        }
        emit(sys, stderr, level, &msg);
    }
}

fn emit(sys: &mut Option<SysLogger>, stderr: bool, level: Level, msg: &str) {
    if let Some(s) = sys {
        let _ = match level {
            Level::Error => s.err(msg),
            Level::Warn => s.warning(msg),
            Level::Info => s.info(msg),
            Level::Debug | Level::Trace => s.debug(msg),
        };
    }
    if stderr {
        let tag = match level {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug | Level::Trace => "debug",
        };
        let _ = writeln!(std::io::stderr(), "hbfence[{}]: {tag}: {msg}", std::process::id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_written_whenever_syslog_is_not() {
        assert!(stderr_needed(false, false), "syslog off or unavailable: stderr");
        assert!(stderr_needed(true, true));
        assert!(stderr_needed(true, false));
        // syslog on under systemd: not twice into the journal.
        assert!(!stderr_needed(false, true));
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let (tx, _rx) = mpsc::sync_channel::<(Level, String)>(1);
        let logger = ChannelLogger { tx, level: LevelFilter::Info };
        let before = dropped();
        let started = Instant::now();
        for _ in 0..3 {
            logger.log(&Record::builder().level(Level::Info).args(format_args!("x")).build());
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(dropped() >= before + 2, "two of three lines must be dropped");
    }
}
