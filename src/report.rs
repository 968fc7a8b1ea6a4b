//! The reporter thread: everything the agent tells the outside about itself that may be slow
//! (S7): the status file (`runtime_dir/status.json`), sd_notify datagrams to systemd, and the
//! Prometheus textfile (`[metrics] textfile`). The petting thread only hands over a snapshot
//! with `try_send` into a bounded queue: a full queue drops it (and counts it), nothing ever
//! waits. The datagram socket is non-blocking too, so a systemd that does not read its socket
//! cannot stop the status file or the metrics either.

use crate::core::agent::{Claim, PeerStatus, PeerView};
use crate::core::format::{caps, Verdict, VerdictKind};
use serde_json::json;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Snapshots in flight at most: the reporter is far faster than one per second.
const QUEUE: usize = 8;
/// sd_notify STATUS at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// Messages kept for a notify socket that is full (READY=1 and STOPPING=1 must not be lost).
const NOTIFY_PENDING: usize = 8;

/// One volume as the daemon sees it, with the driver's own counters.
#[derive(Clone, Debug, Default)]
pub struct VolumeStats {
    pub path: PathBuf,
    pub healthy: bool,
    pub error: String,
    /// Last successful write of the own block: start of the cycle to its completion.
    pub write_latency_ms: Option<u64>,
    /// Last successful read of all blocks.
    pub read_latency_ms: Option<u64>,
    /// Failed writes and reads.
    pub io_errors: u64,
    /// What is wrong with the volume's header block, if anything.
    pub header_damage: Option<String>,
}

/// What the petting thread knows at one instant: everything the reporter writes out.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub host: u32,
    pub name: String,
    pub incarnation: u64,
    pub phase: &'static str,
    pub doomed: bool,
    pub seq: u64,
    pub lease_valid: bool,
    pub lease_remaining_ms: Option<i64>,
    /// Outage survival: how long the lease has been expired with permits of a majority
    /// keeping this host up (None: not surviving).
    pub surviving_ms: Option<u64>,
    /// Survivals started and ended since the agent started.
    pub survivals: (u64, u64),
    pub watchdog_armed: bool,
    /// Why the watchdog device cannot guard this host, if so.
    pub unguarded: Option<String>,
    /// Why outage survival, on in the header, cannot work on this host, if so.
    pub survival_warning: Option<String>,
    pub coordinator: Option<u32>,
    pub volumes: Vec<VolumeStats>,
    pub peers: Vec<PeerView>,
    pub verdicts: Vec<Verdict>,
    pub mono_ms: u64,
    pub wall_ms: u64,
    /// The daemon writes a new status at least this often (once per interval): a reader
    /// calls the file stale by `cli::ops::status_fresh_ms`.
    pub update_every_ms: u64,
    /// Power-off attempts started and failed (the driver's counts).
    pub fence_attempts: u64,
    pub fence_failures: u64,
    /// `[network]`: the peer channel; None without it.
    pub network: Option<NetworkSnapshot>,
    /// The membership and cluster flags this agent follows.
    pub membership: crate::core::header::Membership,
    /// This host's own VM list, and why its latest collection failed.
    pub vms: crate::core::inventory::VmReport,
    pub inventory_error: Option<String>,
    /// Domains running on two live hosts now (the `vm_duplicate` alarm).
    pub vm_duplicates: Vec<crate::core::inventory::Duplicate>,
}

/// The peer channel at one instant.
#[derive(Clone, Debug, Default)]
pub struct NetworkSnapshot {
    pub listen: String,
    pub counters: crate::net::NetCounters,
    pub peers: Vec<ChannelPeerStats>,
}

/// One configured peer on the peer channel.
#[derive(Clone, Debug)]
pub struct ChannelPeerStats {
    pub id: u32,
    pub address: String,
    pub reachable: bool,
    /// Since its last accepted answer was received (None: it never answered in this run).
    pub answer_age_ms: Option<u64>,
    /// From sending the challenge to receiving its answer (both on this host's clock).
    pub round_trip_ms: Option<u64>,
    pub claim: Option<Claim>,
    pub incarnation: Option<u64>,
}

fn network_json(n: &NetworkSnapshot) -> serde_json::Value {
    let c = &n.counters;
    let dropped: serde_json::Map<String, serde_json::Value> =
        c.dropped.iter().map(|(r, v)| (r.to_string(), json!(v))).collect();
    json!({
        "listen": n.listen,
        "peers": n.peers.iter().map(|p| json!({
            "id": p.id,
            "address": p.address,
            "reachable": p.reachable,
            "answer_age_ms": p.answer_age_ms,
            "round_trip_ms": p.round_trip_ms,
            "claim": p.claim.map(|c| c.as_str()),
            "lease_remaining_ms": match p.claim {
                Some(Claim::LeaseValid { remaining_ms }) => Some(remaining_ms),
                _ => None,
            },
            "incarnation": p.incarnation,
        })).collect::<Vec<_>>(),
        "challenges_sent": c.challenges_sent,
        "answers_sent": c.answers_sent,
        "received": c.received,
        "challenges_accepted": c.challenges_accepted,
        "answers_accepted": c.answers_accepted,
        "auth_failures": c.auth_failures(),
        "dropped": dropped,
        "send_errors": c.send_errors,
        "queue_full": c.queue_full,
    })
}

enum Report {
    Snapshot(Box<Snapshot>),
    Notify(String),
}

pub struct ReportSettings {
    pub status_path: PathBuf,
    /// `[metrics] textfile`.
    pub metrics: Option<PathBuf>,
    /// Write the metrics at most this often (the heartbeat interval).
    pub metrics_every: Duration,
    /// `$NOTIFY_SOCKET`.
    pub notify_socket: Option<OsString>,
}

/// The petting thread's handle: every call returns at once.
pub struct Reporter {
    tx: SyncSender<Report>,
    sent: u64,
    done: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl Reporter {
    /// Starts the reporter thread (at boot, so nothing is spawned later).
    pub fn start(settings: ReportSettings) -> Result<Reporter, String> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let done = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (d, drop_count) = (done.clone(), dropped.clone());
        std::thread::Builder::new()
            .stack_size(crate::sys::THREAD_STACK)
            .name("hbfence-report".into())
            .spawn(move || run(settings, rx, &d, &drop_count))
            .map_err(|e| format!("cannot start the reporter thread: {e}"))?;
        Ok(Reporter { tx, sent: 0, done, dropped })
    }

    /// Hands over the current state (status file, STATUS=, metrics). Never blocks.
    pub fn snapshot(&mut self, s: Snapshot) {
        self.send(Report::Snapshot(Box::new(s)));
    }

    /// An sd_notify message (READY=1, STOPPING=1, STATUS=...). Never blocks.
    pub fn notify(&mut self, msg: &str) {
        self.send(Report::Notify(msg.to_string()));
    }

    fn send(&mut self, r: Report) {
        match self.tx.try_send(r) {
            Ok(()) => self.sent += 1,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (at most `limit`) until everything handed over is handled: before exiting.
    pub fn flush(&self, limit: Duration) {
        let end = Instant::now() + limit;
        while self.done.load(Ordering::SeqCst) < self.sent && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn run(s: ReportSettings, rx: Receiver<Report>, done: &AtomicU64, dropped: &AtomicU64) {
    let mut notifier = s.notify_socket.as_ref().and_then(Notifier::new);
    let mut last_summary = String::new();
    let mut last_status_at: Option<Instant> = None;
    let mut last_metrics_at: Option<Instant> = None;
    let mut metrics_warned = false;
    loop {
        // Asleep until the next report, unless a notification waits for room in the socket.
        let waiting = notifier.as_ref().is_some_and(|n| !n.pending.is_empty());
        let r = if waiting {
            rx.recv_timeout(Duration::from_millis(200))
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        let handled = r.is_ok();
        match r {
            Ok(Report::Snapshot(snap)) => {
                // The runtime dir may have vanished; the status file is informative only.
                let _ = write_atomically(&s.status_path, &status_json(&snap));
                let summary = summary(&snap);
                let due = last_status_at.is_none_or(|t| t.elapsed() >= STATUS_EVERY);
                if summary != last_summary && due {
                    if let Some(n) = notifier.as_mut() {
                        n.queue(format!("STATUS={summary}"));
                    }
                    last_summary = summary;
                    last_status_at = Some(Instant::now());
                }
                if let Some(path) = &s.metrics {
                    let due = last_metrics_at.is_none_or(|t| t.elapsed() >= s.metrics_every);
                    if due {
                        last_metrics_at = Some(Instant::now());
                        let text = metrics_text(&snap, dropped.load(Ordering::Relaxed));
                        match write_atomically(path, &text) {
                            Ok(()) => metrics_warned = false,
                            Err(e) if !metrics_warned => {
                                metrics_warned = true;
                                log::warn!("[metrics] textfile {}: {e}", path.display());
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
            Ok(Report::Notify(msg)) => {
                if let Some(n) = notifier.as_mut() {
                    n.queue(msg);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Some(n) = notifier.as_mut() {
            n.send_pending();
        }
        if handled {
            done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET from a non-blocking socket.
struct Notifier {
    sock: std::os::unix::net::UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
    pending: VecDeque<String>,
    dropped_warned: bool,
}

impl Notifier {
    fn new(path: &OsString) -> Option<Notifier> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let sock = UnixDatagram::unbound().ok()?;
        sock.set_nonblocking(true).ok()?;
        let bytes = path.as_encoded_bytes();
        let addr = if let Some(name) = bytes.strip_prefix(b"@") {
            SocketAddr::from_abstract_name(name)
        } else {
            SocketAddr::from_pathname(Path::new(path))
        }
        .ok()?;
        Some(Notifier { sock, addr, pending: VecDeque::new(), dropped_warned: false })
    }

    /// Only the latest STATUS matters; READY=1 and STOPPING=1 are kept.
    fn queue(&mut self, msg: String) {
        if msg.starts_with("STATUS=") {
            self.pending.retain(|m| !m.starts_with("STATUS="));
        }
        if self.pending.len() >= NOTIFY_PENDING {
            self.pending.pop_front();
            if !self.dropped_warned {
                self.dropped_warned = true;
                log::warn!("the systemd notify socket does not take messages; dropping some");
            }
        }
        self.pending.push_back(msg);
    }

    fn send_pending(&mut self) {
        while let Some(msg) = self.pending.front() {
            match self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
                Ok(_) => {
                    self.pending.pop_front();
                }
                // Full: try again at the next wake-up.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // No listener (not under systemd any more) or another error: nobody to tell.
                Err(_) => {
                    self.pending.pop_front();
                }
            }
        }
    }
}

/// Writes `PATH.tmp`-style in the same directory, then renames: a reader sees the old or the
/// new file, never a part. The temporary name does not end in `.prom` (node_exporter's
/// textfile collector reads only those).
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The daemon's view for `hbfence status --config`.
pub fn status_json(s: &Snapshot) -> String {
    let peers: Vec<_> = s
        .peers
        .iter()
        .map(|p| {
            let verdict =
                s.verdicts.iter().find(|v| v.host_id == p.id && v.incarnation == p.incarnation);
            json!({
                "id": p.id,
                "name": p.name,
                "status": p.status.as_str(),
                "state": p.state.map(|s| s.as_str()),
                "seq": p.seq,
                "incarnation": p.incarnation,
                "stale_ms": p.stale_ms,
                "capabilities": caps::names(p.caps),
                "wall_time": crate::cli::text::wall_time(p.wall_ms),
                "verdict": verdict.map(|v| v.kind.as_str()),
                "method": verdict.map(|v| v.method.as_str()),
                "vms": crate::inventory::report_json(&p.vms.report()),
            })
        })
        .collect();
    let verdicts: Vec<_> = s
        .verdicts
        .iter()
        .map(|v| json!({"id": v.host_id, "verdict": v.kind.as_str(), "method": v.method.as_str(), "incarnation": v.incarnation, "wall_time": crate::cli::text::wall_time(v.wall_ms)}))
        .collect();
    let vols: Vec<_> = s
        .volumes
        .iter()
        .map(|v| json!({"path": v.path, "healthy": v.healthy, "error": v.error, "header_damage": v.header_damage}))
        .collect();
    json!({
        "pid": std::process::id(),
        "host": s.host,
        "name": s.name,
        "incarnation": s.incarnation,
        "phase": s.phase,
        "seq": s.seq,
        "lease_valid": s.lease_valid,
        "lease_remaining_ms": s.lease_remaining_ms,
        "surviving_ms": s.surviving_ms,
        "survival_warning": s.survival_warning,
        "watchdog_armed": s.watchdog_armed,
        "watchdog": match (&s.unguarded, s.watchdog_armed) {
            (Some(why), _) => format!("unguarded ({why})"),
            (None, true) => "armed".to_string(),
            (None, false) => "not armed".to_string(),
        },
        "coordinator": s.coordinator,
        "members": s.membership.members,
        "members_epoch": s.membership.epoch,
        "outage_survival": s.membership.outage_survival,
        "membership": s.membership.describe(),
        "volumes": vols,
        "peers": peers,
        "verdicts": verdicts,
        "mono_ms": s.mono_ms,
        "update_every_ms": s.update_every_ms,
        "wall_time": crate::cli::text::wall_time(s.wall_ms),
        "wall_time_ms": s.wall_ms,
        "network": s.network.as_ref().map(network_json),
        "vms": crate::inventory::report_json(&s.vms),
        "inventory_error": s.inventory_error,
        "vm_duplicates": s.vm_duplicates.iter().map(|d| json!({
            "uuid": crate::core::format::uuid_string(&d.uuid),
            "hosts": d.hosts.iter().map(|(id, name, state)| json!({"host": id, "name": name, "state": state.as_str()})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

/// The one-line STATUS= for systemd.
pub fn summary(s: &Snapshot) -> String {
    format!(
        "{}, seq {}, lease {}, coordinator {}, {} peer(s)",
        s.phase,
        s.seq,
        match (s.lease_valid, s.surviving_ms) {
            (true, _) => "valid".to_string(),
            (false, Some(ms)) =>
                format!("expired, SURVIVING an outage on permits for {} s", ms / 1000),
            (false, None) => "not valid".to_string(),
        },
        s.coordinator.map_or("none".to_string(), |c| c.to_string()),
        s.peers.len()
    )
}

const PEER_STATES: [PeerStatus; 5] = [
    PeerStatus::Absent,
    PeerStatus::Alive,
    PeerStatus::Suspect,
    PeerStatus::Left,
    PeerStatus::Cleared,
];
const VERDICT_KINDS: [VerdictKind; 3] =
    [VerdictKind::Fencing, VerdictKind::Fenced, VerdictKind::FenceFailed];

/// A label value in the text exposition format.
fn label(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn secs(ms: f64) -> String {
    format!("{:.3}", ms / 1000.0)
}

/// The node_exporter textfile collector file (Prometheus text exposition format 0.0.4).
pub fn metrics_text(s: &Snapshot, reports_dropped: u64) -> String {
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    let flag = |b: bool| one(if b { "1" } else { "0" }.to_string());
    let per_volume = |f: &dyn Fn(&VolumeStats) -> Option<String>| -> Vec<(String, String)> {
        s.volumes
            .iter()
            .filter_map(|v| {
                f(v).map(|x| (format!("{{volume=\"{}\"}}", label(&v.path.to_string_lossy())), x))
            })
            .collect()
    };
    family("hbfence_host_id", "gauge", "This host's id ([host] id).", &one(s.host.to_string()));
    family(
        "hbfence_lease_valid",
        "gauge",
        "1 while this host's own storage lease is valid.",
        &flag(s.lease_valid),
    );
    family(
        "hbfence_lease_remaining_seconds",
        "gauge",
        "Time until this host's own storage lease expires (0 when it never held or has expired).",
        &one(secs(s.lease_remaining_ms.unwrap_or(0).max(0) as f64)),
    );
    family(
        "hbfence_surviving",
        "gauge",
        "1 while this host's lease is expired and permits of a majority of the members keep it up (outage survival).",
        &flag(s.surviving_ms.is_some()),
    );
    family(
        "hbfence_survivals_started_total",
        "counter",
        "Cluster-wide outages this agent survived on permits (survival_started events).",
        &one(s.survivals.0.to_string()),
    );
    family(
        "hbfence_survivals_ended_total",
        "counter",
        "Survivals that ended (survival_ended events: storage back, or doomed).",
        &one(s.survivals.1.to_string()),
    );
    family(
        "hbfence_watchdog_armed",
        "gauge",
        "1 while the watchdog is armed and petted by this agent.",
        &flag(s.watchdog_armed),
    );
    family(
        "hbfence_doomed",
        "gauge",
        "1 once this host lost its lease or got a fence request: it is resetting itself.",
        &flag(s.doomed),
    );
    family(
        "hbfence_coordinator_id",
        "gauge",
        "Host id of the coordinator this host follows (0: none).",
        &one(s.coordinator.unwrap_or(0).to_string()),
    );
    family(
        "hbfence_volume_healthy",
        "gauge",
        "1 while the heartbeat volume's last I/O cycle succeeded in time.",
        &per_volume(&|v| Some(if v.healthy { "1" } else { "0" }.to_string())),
    );
    family(
        "hbfence_last_write_latency_seconds",
        "gauge",
        "Duration of the last successful heartbeat write.",
        &per_volume(&|v| v.write_latency_ms.map(|ms| secs(ms as f64))),
    );
    family(
        "hbfence_last_read_latency_seconds",
        "gauge",
        "Duration of the last successful read of all heartbeat and mailbox blocks.",
        &per_volume(&|v| v.read_latency_ms.map(|ms| secs(ms as f64))),
    );
    family(
        "hbfence_io_errors_total",
        "counter",
        "Failed heartbeat writes and reads.",
        &per_volume(&|v| Some(v.io_errors.to_string())),
    );
    let peers: Vec<_> = PEER_STATES
        .iter()
        .map(|st| {
            let n = s.peers.iter().filter(|p| p.status == *st).count();
            (format!("{{state=\"{}\"}}", st.as_str()), n.to_string())
        })
        .collect();
    family("hbfence_peers", "gauge", "Peers by this host's current judgement.", &peers);
    let verdicts: Vec<_> = VERDICT_KINDS
        .iter()
        .map(|k| {
            let n = s.verdicts.iter().filter(|v| v.kind == *k).count();
            (format!("{{kind=\"{}\"}}", k.as_str()), n.to_string())
        })
        .collect();
    family("hbfence_verdicts", "gauge", "Verdicts in the cluster's verdict table.", &verdicts);
    family(
        "hbfence_vm_duplicates",
        "gauge",
        "Domains in the VM lists of two live hosts at once (the vm_duplicate alarm).",
        &one(s.vm_duplicates.len().to_string()),
    );
    family(
        "hbfence_inventory_domains",
        "gauge",
        "Domains in this host's published VM list.",
        &one(s.vms.domains.len().to_string()),
    );
    family(
        "hbfence_inventory_stale",
        "gauge",
        "1 while this host's latest VM inventory collection failed (the last list stays published).",
        &flag(s.inventory_error.is_some()),
    );
    family(
        "hbfence_fence_attempts_total",
        "counter",
        "Power-off attempts this agent started (BMC or fence agent).",
        &one(s.fence_attempts.to_string()),
    );
    family(
        "hbfence_fence_failures_total",
        "counter",
        "Power-off attempts that did not confirm the peer off.",
        &one(s.fence_failures.to_string()),
    );
    family(
        "hbfence_hook_failures_total",
        "counter",
        "Hook runs that failed or timed out.",
        &one(crate::events::hook_failures().to_string()),
    );
    family(
        "hbfence_events_dropped_total",
        "counter",
        "Events that did not reach the event log and hooks.",
        &one(crate::events::dropped_events().to_string()),
    );
    family(
        "hbfence_hook_events_dropped_total",
        "counter",
        "Events whose hooks were not run (the hook queue was full).",
        &one(crate::events::dropped_hook_events().to_string()),
    );
    family(
        "hbfence_log_lines_dropped_total",
        "counter",
        "Log lines dropped because the log writer was behind.",
        &one(crate::logging::dropped().to_string()),
    );
    family(
        "hbfence_reports_dropped_total",
        "counter",
        "Status snapshots and systemd notifications dropped because the reporter was behind.",
        &one(reports_dropped.to_string()),
    );
    if let Some(n) = &s.network {
        let c = &n.counters;
        family(
            "hbfence_peer_channel_sent_total",
            "counter",
            "Datagrams sent on the peer channel, by type.",
            &[
                ("{type=\"challenge\"}".to_string(), c.challenges_sent.to_string()),
                ("{type=\"answer\"}".to_string(), c.answers_sent.to_string()),
            ],
        );
        family(
            "hbfence_peer_channel_received_total",
            "counter",
            "Datagrams received on the peer channel (accepted or not).",
            &one(c.received.to_string()),
        );
        family(
            "hbfence_peer_channel_accepted_total",
            "counter",
            "Authenticated, fresh datagrams handed to the decision core, by type.",
            &[
                ("{type=\"challenge\"}".to_string(), c.challenges_accepted.to_string()),
                ("{type=\"answer\"}".to_string(), c.answers_accepted.to_string()),
            ],
        );
        family(
            "hbfence_peer_channel_auth_failures_total",
            "counter",
            "Datagrams whose HMAC did not verify under the cluster key (wrong key or altered).",
            &one(c.auth_failures().to_string()),
        );
        let dropped: Vec<_> =
            c.dropped.iter().map(|(r, v)| (format!("{{reason=\"{r}\"}}"), v.to_string())).collect();
        family(
            "hbfence_peer_channel_dropped_total",
            "counter",
            "Datagrams dropped, by reason (bad_mac: authentication failures).",
            &dropped,
        );
        family(
            "hbfence_peer_channel_queue_full_total",
            "counter",
            "Answers the main thread could not hand to the network thread (queue full).",
            &one(c.queue_full.to_string()),
        );
        family(
            "hbfence_peers_reachable",
            "gauge",
            "Configured peers answering this host's challenges on the peer channel.",
            &one(n.peers.iter().filter(|p| p.reachable).count().to_string()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::format::FenceMethodKind;

    fn snap() -> Snapshot {
        let peer = |id, status| PeerView {
            id,
            name: format!("h{id}"),
            status,
            incarnation: 7,
            seq: 1,
            state: None,
            caps: 0,
            wall_ms: 0,
            stale_ms: 0,
            vms: Default::default(),
        };
        Snapshot {
            host: 1,
            phase: "running",
            lease_valid: true,
            lease_remaining_ms: Some(5500),
            watchdog_armed: true,
            coordinator: Some(1),
            volumes: vec![VolumeStats {
                path: "/mnt/a \"b\".vol".into(),
                healthy: true,
                write_latency_ms: Some(12),
                read_latency_ms: None,
                io_errors: 3,
                ..Default::default()
            }],
            peers: vec![
                peer(2, PeerStatus::Alive),
                peer(3, PeerStatus::Alive),
                peer(4, PeerStatus::Suspect),
            ],
            verdicts: vec![Verdict {
                host_id: 4,
                kind: VerdictKind::Fencing,
                method: FenceMethodKind::Ipmi,
                incarnation: 7,
                wall_ms: 0,
                seq: 1,
                changed_gen: 0,
            }],
            fence_attempts: 2,
            fence_failures: 1,
            ..Default::default()
        }
    }

    #[test]
    fn metrics_name_every_family_once_with_help_and_type() {
        let t = metrics_text(&snap(), 0);
        for name in [
            "hbfence_lease_remaining_seconds",
            "hbfence_io_errors_total",
            "hbfence_peers",
            "hbfence_verdicts",
            "hbfence_fence_attempts_total",
            "hbfence_log_lines_dropped_total",
        ] {
            assert_eq!(t.matches(&format!("# HELP {name} ")).count(), 1, "{name}\n{t}");
            assert_eq!(t.matches(&format!("# TYPE {name} ")).count(), 1, "{name}\n{t}");
        }
        assert!(t.contains("hbfence_lease_remaining_seconds 5.500\n"), "{t}");
        assert!(t.contains("hbfence_peers{state=\"alive\"} 2\n"), "{t}");
        assert!(t.contains("hbfence_peers{state=\"suspect\"} 1\n"), "{t}");
        assert!(t.contains("hbfence_verdicts{kind=\"fencing\"} 1\n"), "{t}");
        assert!(t.contains("hbfence_fence_failures_total 1\n"), "{t}");
        // Label values are escaped; a volume without a read yet has no read latency sample.
        assert!(t.contains("hbfence_io_errors_total{volume=\"/mnt/a \\\"b\\\".vol\"} 3\n"), "{t}");
        assert!(t.contains(
            "hbfence_last_write_latency_seconds{volume=\"/mnt/a \\\"b\\\".vol\"} 0.012\n"
        ));
        assert!(!t.contains("hbfence_last_read_latency_seconds{"), "{t}");
    }

    #[test]
    fn the_peer_channel_is_reported_only_when_configured() {
        let t = metrics_text(&snap(), 0);
        assert!(!t.contains("hbfence_peer_channel"), "{t}");
        assert!(!status_json(&snap()).contains("\"listen\""));
        let mut s = snap();
        let counters = crate::net::NetStats {
            challenges_sent: 5.into(),
            replayed: 2.into(),
            ..Default::default()
        };
        counters.rejected[6].store(3, std::sync::atomic::Ordering::Relaxed);
        let peer = |id, reachable, claim| ChannelPeerStats {
            id,
            address: format!("127.0.0.{id}:7405"),
            reachable,
            answer_age_ms: Some(40),
            round_trip_ms: Some(3),
            claim,
            incarnation: Some(9),
        };
        s.network = Some(NetworkSnapshot {
            listen: "127.0.0.1:7405".into(),
            counters: counters.counters(),
            peers: vec![
                peer(2, true, Some(Claim::LeaseValid { remaining_ms: 4_000 })),
                peer(3, false, None),
            ],
        });
        let t = metrics_text(&s, 0);
        assert!(t.contains("hbfence_peer_channel_sent_total{type=\"challenge\"} 5\n"), "{t}");
        assert!(t.contains("hbfence_peer_channel_auth_failures_total 3\n"), "{t}");
        assert!(t.contains("hbfence_peer_channel_dropped_total{reason=\"bad_mac\"} 3\n"), "{t}");
        assert!(t.contains("hbfence_peer_channel_dropped_total{reason=\"replayed\"} 2\n"), "{t}");
        assert!(t.contains("hbfence_peers_reachable 1\n"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&status_json(&s)).unwrap();
        let n = &j["network"];
        assert_eq!(n["auth_failures"], 3);
        assert_eq!(n["peers"][0]["reachable"], true);
        assert_eq!(n["peers"][0]["claim"], "lease-valid");
        assert_eq!(n["peers"][0]["lease_remaining_ms"], 4_000);
        assert_eq!(n["peers"][1]["answer_age_ms"], 40);
        assert_eq!(n["dropped"]["replayed"], 2);
    }

    #[test]
    fn expired_lease_reports_zero_and_not_valid() {
        let mut s = snap();
        s.lease_valid = false;
        s.lease_remaining_ms = Some(-300);
        let t = metrics_text(&s, 0);
        assert!(t.contains("hbfence_lease_remaining_seconds 0.000\n"), "{t}");
        assert!(t.contains("hbfence_lease_valid 0\n"), "{t}");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hbfence.prom");
        write_atomically(&p, "a\n").unwrap();
        write_atomically(&p, "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        assert!(write_atomically(&dir.path().join("missing/x.prom"), "c").is_err());
    }

    #[test]
    fn status_only_latest_and_ready_kept_for_a_full_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let _sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier::new(&path.clone().into_os_string()).unwrap();
        n.queue("READY=1".into());
        n.queue("STATUS=a".into());
        n.queue("STATUS=b".into());
        assert_eq!(n.pending, ["READY=1", "STATUS=b"]);
    }

    #[test]
    fn a_full_reporter_queue_drops_and_never_blocks() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let mut r = Reporter {
            tx,
            sent: 0,
            done: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let t = Instant::now();
        for _ in 0..5 {
            r.snapshot(snap());
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!((r.sent, r.dropped.load(Ordering::Relaxed)), (1, 4));
    }
}
