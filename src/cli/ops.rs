//! Operator commands that use a host's configuration: `status --config`, `check`, `fence`,
//! `clear`, and `test-watchdog`.

use super::text::{age, table, wall_time, Align};
use super::{CliError, CliResult};
use crate::config::{Config, DEFAULT_CONFIG};
use crate::core::agent::Agent;
use crate::core::format::{self, caps, Command, Header, VerdictKind};
use crate::core::view::{merge_views, table_order, MergedView, Slot, TableOrder, VolumeView};
use crate::sys;
use crate::volume::{Access, Volume};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `check` exit codes (documented in `--help` and hbfence(8)).
pub mod check_exit {
    pub const ALIVE: i32 = 0;
    pub const DEAD: i32 = 3;
    pub const FENCED: i32 = 4;
    pub const LEFT: i32 = 5;
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Host id or name.
    pub host: String,
    #[arg(long, short = 'c', value_name = "PATH", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Print CloudStack's kvmheartbeat.sh -r lines and exit 0 (DEAD only when fenced).
    #[arg(long)]
    pub cloudstack: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct FenceArgs {
    /// Host id or name.
    pub host: String,
    #[arg(long, short = 'c', value_name = "PATH", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The host is confirmed powered off by hand: record it as fenced (method manual). Only
    /// for a host the coordinator holds suspect (verdict fencing or fence-failed).
    #[arg(long)]
    pub confirm_off: bool,
    /// Ask the host to power off instead of rebooting.
    #[arg(long)]
    pub poweroff: bool,
    /// Write the request and return without waiting for the outcome.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct ClearArgs {
    /// Host id or name.
    pub host: String,
    #[arg(long, short = 'c', value_name = "PATH", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct TestWatchdogArgs {
    /// Watchdog device (default: [watchdog] device of /etc/hbfence/hbfence.toml, else /dev/watchdog).
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,
    /// Also open the device to query it through ioctls when sysfs has no details. Opening ARMS
    /// most watchdogs; hbfence disarms it with the magic close, which a `nowayout` driver ignores.
    #[arg(long)]
    pub open: bool,
}

struct Cluster {
    config: Config,
    volumes: Vec<(Volume, Header)>,
    /// Why configured volumes could not be opened.
    errors: Vec<String>,
}

fn load(config_path: &Path) -> Result<Cluster, CliError> {
    load_with(config_path, Access::ReadWrite)
}

/// `load` with the volumes opened for `access` (`check` only reads: it also works on a
/// read-only mount, e.g. a management server's).
fn load_with(config_path: &Path, access: Access) -> Result<Cluster, CliError> {
    let config = Config::load(config_path)?;
    let mut volumes = Vec::new();
    let mut errors = Vec::new();
    for v in &config.volumes {
        match Volume::open(&v.path, access).and_then(|vol| vol.read_header().map(|h| (vol, h))) {
            Ok(x) => volumes.push(x),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if volumes.is_empty() {
        return Err(CliError::new(format!(
            "no volume of {} is readable: {}",
            config_path.display(),
            errors.join("; ")
        )));
    }
    Ok(Cluster { config, volumes, errors })
}

/// The volumes that opened with their headers, and why the others did not.
pub(super) type OpenedVolumes = (Vec<(Volume, Header)>, Vec<String>);

/// Opens `paths` read-only for `status --volume` and `vms --volume`: the volumes that open,
/// which must belong to one cluster, and why the others did not (for `read_quorum`).
pub(super) fn open_read_only(paths: &[PathBuf]) -> Result<OpenedVolumes, CliError> {
    let mut volumes: Vec<(Volume, Header)> = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match Volume::open(path, Access::ReadOnly).and_then(|v| v.read_header().map(|h| (v, h))) {
            Ok((v, h)) => {
                if let Some((first, fh)) = volumes.first() {
                    if fh.cluster != h.cluster || fh.max_hosts != h.max_hosts {
                        return Err(CliError::new(format!(
                            "volume {} belongs to another cluster than {}; name the volumes of one cluster",
                            path.display(),
                            first.path().display()
                        )));
                    }
                }
                volumes.push((v, h));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Ok((volumes, errors))
}

/// Re-reads of a volume whose read showed a torn or corrupt heartbeat block: a read that raced
/// a write tears, the next one usually does not. Pauses before each re-read.
const TORN_RETRIES_MS: [u64; 3] = [20, 60, 150];

/// Reads of one volume: the first, plus re-reads while some heartbeat block stays torn.
fn read_volume(vol: &Volume, h: &Header) -> Result<Vec<VolumeView>, String> {
    let first = vol.read_view(h).map_err(|e| e.to_string())?;
    let mut torn: Vec<usize> = torn_slots(&first);
    let mut reads = vec![first];
    for pause in TORN_RETRIES_MS {
        if torn.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(pause));
        let Ok(again) = vol.read_view(h) else { break };
        torn.retain(|&i| again.slots.get(i) == Some(&Slot::NoNews));
        reads.push(again);
    }
    Ok(reads)
}

fn torn_slots(view: &VolumeView) -> Vec<usize> {
    view.slots.iter().enumerate().filter(|(_, s)| **s == Slot::NoNews).map(|(i, _)| i).collect()
}

/// Reads every open volume and merges the reads, or refuses without a read quorum of the
/// `configured` volumes (1 → 1, 2 → 2, 3 → 2): a reader never decides from fewer volumes than
/// the agents judge from. `errors` are earlier failures (volumes that did not open).
pub(super) fn read_quorum(
    volumes: &[(Volume, Header)],
    configured: usize,
    errors: &[String],
) -> Result<MergedView, CliError> {
    let (_, need) = Agent::quorums(configured);
    let mut reads = Vec::new();
    let mut readable = 0;
    let mut errors = errors.to_vec();
    for (vol, h) in volumes {
        match read_volume(vol, h) {
            Ok(r) => {
                readable += 1;
                reads.extend(r);
            }
            Err(e) => errors.push(e),
        }
    }
    if readable < need {
        return Err(CliError::new(format!(
            "only {readable} of {configured} volumes readable, a decision needs a read quorum of {need}: {}; fix the storage (or ask a host that reads them)",
            errors.join("; ")
        )));
    }
    Ok(merge_views(&reads))
}

impl Cluster {
    fn header(&self) -> &Header {
        &self.volumes[0].1
    }
    /// The merged reads of a read quorum of the configured volumes.
    fn view(&self) -> Result<MergedView, CliError> {
        read_quorum(&self.volumes, self.config.volumes.len(), &self.errors)
    }
    /// How many volumes hold a verdict table newer than `after` without `verdict` (about host
    /// `id`): where a withdrawal has landed.
    fn volumes_without(
        &self,
        id: u32,
        verdict: &format::Verdict,
        after: Option<TableOrder>,
    ) -> usize {
        self.volumes
            .iter()
            .filter_map(|(vol, h)| read_volume(vol, h).ok())
            .filter(|reads| {
                merge_views(reads).table.is_some_and(|t| {
                    Some(table_order(&t)) > after
                        && !t.verdicts.iter().any(|v| {
                            v.host_id == id
                                && v.incarnation == verdict.incarnation
                                && v.kind == verdict.kind
                        })
                })
            })
            .count()
    }
    fn resolve(&self, what: &str, view: &MergedView) -> Result<u32, CliError> {
        let by_record = view.records().find(|r| r.name == what).map(|r| r.host_id);
        let id = self.config.resolve_host(what).or(by_record).ok_or_else(|| {
            CliError::new(format!(
                "unknown host {what:?}: give a host id or a name from the config or the volume"
            ))
        })?;
        if !self.header().geometry().contains_host(id) {
            return Err(CliError::new(format!(
                "host id {id} is out of range: the volume holds ids 1..={}",
                self.header().max_hosts
            )));
        }
        Ok(id)
    }
}

/// A status file older than this (by CLOCK_BOOTTIME) belongs to a daemon that is not running
/// or hangs, when the file does not say how often it is rewritten.
pub const STATUS_FRESH_MS: u64 = 5_000;

/// How old a status file may be: the daemon rewrites it on every change and at least once
/// per interval (`update_every_ms`), so two missed updates and a second of slack, never less
/// than [`STATUS_FRESH_MS`].
pub fn status_fresh_ms(status: &Value) -> u64 {
    status["update_every_ms"]
        .as_u64()
        .map_or(STATUS_FRESH_MS, |every| every.saturating_mul(2).saturating_add(1000))
        .max(STATUS_FRESH_MS)
}

/// The daemon's view from runtime_dir/status.json, if the daemon is running.
pub fn daemon_view(config: &Config) -> Option<Value> {
    let text = std::fs::read_to_string(config.daemon.runtime_dir.join("status.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let alive = v["pid"].as_u64().is_some_and(pid_alive);
    let fresh = v["mono_ms"]
        .as_u64()
        .is_some_and(|m| sys::boottime_ms().saturating_sub(m) < status_fresh_ms(&v));
    (alive && fresh).then_some(v)
}

fn pid_alive(pid: u64) -> bool {
    i32::try_from(pid).is_ok_and(|pid| {
        pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
    })
}

/// `status --health` exit codes, Nagios/Icinga plugin style (documented in `status --help`
/// and hbfence(8)).
pub mod health_exit {
    /// Running, lease valid, watchdog armed.
    pub const OK: i32 = 0;
    /// Running, but not protected as it should be: starting (probing), stopping (leaving), or
    /// the watchdog not armed.
    pub const WARNING: i32 = 1;
    /// Not running (no status file, its process gone, status not updated), self-fencing
    /// (doomed), or the own lease not valid.
    pub const CRITICAL: i32 = 2;
    /// The question cannot be answered: the configuration or the status file is unreadable.
    pub const UNKNOWN: i32 = 3;
}

/// The health of this host's own agent from its status file: (exit code, one line).
pub fn health_of(runtime_dir: &Path) -> (i32, String) {
    use health_exit::*;
    let path = runtime_dir.join("status.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (CRITICAL, format!("agent not running (no status file {})", path.display()))
        }
        Err(e) => return (UNKNOWN, format!("cannot read the status file {}: {e}", path.display())),
    };
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return (UNKNOWN, format!("status file {} is not valid JSON: {e}", path.display()))
        }
    };
    let Some(pid) = v["pid"].as_u64() else {
        return (UNKNOWN, format!("status file {} names no pid", path.display()));
    };
    if !pid_alive(pid) {
        return (
            CRITICAL,
            format!("agent not running (process {pid} of {} is gone)", path.display()),
        );
    }
    let age = v["mono_ms"].as_u64().map(|m| sys::boottime_ms().saturating_sub(m));
    if age.is_none_or(|a| a >= status_fresh_ms(&v)) {
        return (
            CRITICAL,
            format!(
                "agent (pid {pid}) not responding: {} not updated for {}",
                path.display(),
                age.map_or("ever".to_string(), |a| format!("{:.1} s", a as f64 / 1000.0))
            ),
        );
    }
    let phase = v["phase"].as_str().unwrap_or("?");
    let lease_valid = v["lease_valid"].as_bool() == Some(true);
    let armed = v["watchdog_armed"].as_bool() == Some(true);
    let watchdog = v["watchdog"].as_str().unwrap_or(if armed { "armed" } else { "not armed" });
    let left = v["lease_remaining_ms"]
        .as_i64()
        .map_or(String::new(), |l| format!(", {:.1} s left", l as f64 / 1000.0));
    let surviving = v["surviving_ms"].as_u64();
    let summary = format!(
        "phase {phase}, lease {}{left}, watchdog {watchdog}",
        if lease_valid { "valid" } else { "NOT valid" }
    );
    match phase {
        "self-fencing" => (CRITICAL, format!("agent doomed, self-fencing: {summary}")),
        "exited" => (CRITICAL, format!("agent exited: {summary}")),
        "probing" => (WARNING, format!("agent starting (probing the volumes): {summary}")),
        _ if surviving.is_some() => (
            CRITICAL,
            format!(
                "own lease expired, SURVIVING a cluster-wide storage outage on permits of a majority for {:.0} s: {summary}",
                surviving.unwrap_or(0) as f64 / 1000.0
            ),
        ),
        _ if !lease_valid => (CRITICAL, format!("own lease not valid: {summary}")),
        "leaving" => (WARNING, format!("agent stopping (leaving): {summary}")),
        _ if !armed => (WARNING, format!("watchdog not armed: {summary}")),
        _ if v["survival_warning"].is_string() => (
            WARNING,
            format!("{}: {summary}", v["survival_warning"].as_str().unwrap_or_default()),
        ),
        "running" => (OK, summary),
        _ => (UNKNOWN, format!("unknown phase: {summary}")),
    }
}

/// `status --health`: one Nagios-style line on stdout, the exit code says it.
pub fn health(config_path: &Path) -> CliResult {
    let (code, line) = match Config::load(config_path) {
        Ok(c) => health_of(&c.daemon.runtime_dir),
        Err(e) => (health_exit::UNKNOWN, e.to_string()),
    };
    let word = match code {
        health_exit::OK => "OK",
        health_exit::WARNING => "WARNING",
        health_exit::CRITICAL => "CRITICAL",
        _ => "UNKNOWN",
    };
    println!("HBFENCE {word} - {line}");
    if code == health_exit::OK {
        Ok(())
    } else {
        Err(CliError { message: String::new(), code })
    }
}

/// This host's daemon's judgement of peer `id` (alive, suspect, left...), if it runs.
fn daemon_peer_status(daemon: Option<&Value>, id: u32) -> Option<&str> {
    daemon?["peers"].as_array()?.iter().find(|p| p["id"] == id)?["status"].as_str()
}

/// The daemon's peer-channel entry for host `id` (None without [network] or for this host).
fn daemon_channel(daemon: Option<&Value>, id: u32) -> Value {
    daemon
        .and_then(|d| d["network"]["peers"].as_array())
        .and_then(|peers| peers.iter().find(|p| p["id"] == id))
        .map_or(Value::Null, |p| {
            json!({
                "reachable": p["reachable"],
                "answer_age_ms": p["answer_age_ms"],
                "claim": p["claim"],
                "lease_remaining_ms": p["lease_remaining_ms"],
            })
        })
}

pub fn status_config(config_path: &Path, json_out: bool) -> CliResult {
    let c = load(config_path)?;
    let view = c.view()?;
    let daemon = daemon_view(&c.config);
    let coordinator = view.coordinator();
    let now = sys::wall_ms();
    let mut rows = Vec::new();
    for (i, s) in view.slots.iter().enumerate() {
        let id = i as u32 + 1;
        let Slot::Record(r) = s else {
            // A block torn on every volume is no news: a verdict about it still stands.
            if let (Slot::NoNews, Some(v)) = (s, view.current_verdict(id)) {
                rows.push(json!({
                    "id": id,
                    "name": "",
                    "state": "unreadable",
                    "view": daemon_peer_status(daemon.as_ref(), id).unwrap_or("-"),
                    "seq": null,
                    "incarnation": v.incarnation,
                    "wall_time": "-",
                    "age_s": null,
                    "capabilities": [],
                    "verdict": v.kind.as_str(),
                    "method": v.method.as_str(),
                    "verdict_wall_time": wall_time(v.wall_ms),
                    "network": daemon_channel(daemon.as_ref(), id),
                }));
            }
            continue;
        };
        let judged = if r.host_id == c.config.host.id {
            daemon.as_ref().map_or("not running".to_string(), |d| {
                d["phase"].as_str().unwrap_or("?").to_string()
            })
        } else {
            daemon_peer_status(daemon.as_ref(), r.host_id).unwrap_or("-").to_string()
        };
        let verdict = view.current_verdict(r.host_id);
        rows.push(json!({
            "id": r.host_id,
            "name": r.name,
            "state": r.state.as_str(),
            "view": judged,
            "seq": r.seq,
            "incarnation": r.incarnation,
            "wall_time": wall_time(r.wall_ms),
            "age_s": (now as i64 - r.wall_ms as i64) as f64 / 1000.0,
            "capabilities": caps::names(r.caps),
            "verdict": verdict.map(|v| v.kind.as_str()),
            "method": verdict.map(|v| v.method.as_str()),
            "verdict_wall_time": verdict.map(|v| wall_time(v.wall_ms)),
            "network": daemon_channel(daemon.as_ref(), r.host_id),
            "vms": crate::inventory::report_json(&crate::inventory::merged_vms(&view, r.host_id, now)),
        }));
    }
    let m = super::inspect::newest_membership(c.volumes.iter().map(|(_, h)| h));
    if json_out {
        let out = json!({
            "cluster": format::uuid_string(&c.header().cluster),
            "members": m.members,
            "members_epoch": m.epoch,
            "outage_survival": m.outage_survival,
            "host": c.config.host.id,
            "coordinator": coordinator,
            "daemon": daemon,
            "hosts": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "cluster {}  members {}  this host {}  daemon {}  coordinator {}",
        format::uuid_string(&c.header().cluster),
        m.describe(),
        c.config.host.id,
        daemon.as_ref().map_or("NOT RUNNING".to_string(), |d| format!(
            "{} (lease {}, watchdog {})",
            d["phase"].as_str().unwrap_or("?"),
            match (d["lease_valid"].as_bool() == Some(true), d["surviving_ms"].as_u64()) {
                (true, _) => "valid".to_string(),
                (false, Some(ms)) => format!("expired, SURVIVING an outage for {} s", ms / 1000),
                (false, None) => "NOT valid".to_string(),
            },
            d["watchdog"].as_str().unwrap_or("?")
        )),
        coordinator.map_or("none".to_string(), |c| c.to_string())
    );
    if let Some(w) = daemon.as_ref().and_then(|d| d["survival_warning"].as_str()) {
        println!("WARNING: {w}");
    }
    for line in status_table(&rows) {
        println!("{line}");
    }
    Ok(())
}

const STATUS_COLUMNS: [(&str, Align); 10] = [
    ("ID", Align::Right),
    ("NAME", Align::Left),
    ("STATE", Align::Left),
    ("VIEW", Align::Left),
    ("NETWORK", Align::Left),
    ("SEQ", Align::Right),
    ("LAST WRITE (UTC)", Align::Left),
    ("AGE", Align::Right),
    ("VERDICT", Align::Left),
    ("CAPABILITIES", Align::Left),
];

/// The NETWORK cell: reachable on the peer channel, and the age of the last answer.
fn network_cell(n: &Value) -> String {
    if n.is_null() {
        return "-".into();
    }
    let age = n["answer_age_ms"].as_u64().map(|ms| age(ms as i64));
    match (n["reachable"].as_bool() == Some(true), age) {
        (true, Some(a)) => format!("reachable ({a})"),
        (false, Some(a)) => format!("UNREACHABLE ({a})"),
        (_, None) => "no answer".into(),
    }
}

/// The cells of `status --config`'s table, from its JSON rows.
fn status_cells(r: &Value) -> Vec<String> {
    let num = |v: &Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
    let verdict = match (r["verdict"].as_str(), r["method"].as_str()) {
        (Some(v), Some(m)) if m != "none" => format!("{v} ({m})"),
        (Some(v), _) => v.to_string(),
        _ => "-".into(),
    };
    vec![
        num(&r["id"]),
        r["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("?").to_string(),
        r["state"].as_str().unwrap_or("").to_string(),
        r["view"].as_str().unwrap_or("").to_string(),
        network_cell(&r["network"]),
        num(&r["seq"]),
        r["wall_time"].as_str().unwrap_or("").to_string(),
        r["age_s"].as_f64().map_or("-".to_string(), |a| age((a * 1000.0) as i64)),
        verdict,
        r["capabilities"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
    ]
}

/// `status --config`'s table: header and one line per row, columns aligned.
fn status_table(rows: &[Value]) -> Vec<String> {
    let cells: Vec<Vec<String>> = rows.iter().map(status_cells).collect();
    table(&STATUS_COLUMNS, &cells)
}

pub fn check(a: &CheckArgs) -> CliResult {
    let c = load_with(&a.config, Access::ReadOnly)?;
    let view = c.view()?;
    let id = c.resolve(&a.host, &view)?;
    let daemon = daemon_view(&c.config);
    let record = view.record(id);
    let verdict = view.current_verdict(id);
    let daemon_status = daemon_peer_status(daemon.as_ref(), id);
    let (word, code, why) = if verdict.is_some_and(|v| v.kind == VerdictKind::Fenced) {
        (
            "FENCED",
            check_exit::FENCED,
            "the coordinator recorded a fenced verdict for its current incarnation",
        )
    } else if record.is_some_and(|r| r.state == format::HostState::Leaving) {
        ("LEFT", check_exit::LEFT, "its agent stopped cleanly: not protected, never fenced")
    } else if id == c.config.host.id && daemon.is_some() {
        ("ALIVE", check_exit::ALIVE, "this host's own agent is running")
    } else if daemon_status == Some("suspect") {
        (
            "DEAD",
            check_exit::DEAD,
            "no heartbeat progress for suspect_after (not yet fenced: do not restart its VMs)",
        )
    } else if daemon.is_none() && a.cloudstack {
        // kvmheartbeat.sh -r always answers; without a judgement, never say DEAD.
        ("ALIVE", check_exit::ALIVE, "the daemon is not running here: not judged")
    } else if daemon.is_none() {
        return Err(CliError::new(format!(
            "the hbfence daemon is not running on this host ({}), so liveness cannot be judged; start it or ask a host where it runs",
            c.config.daemon.runtime_dir.join("status.json").display()
        )));
    } else if record.is_none() {
        return Err(CliError::new(format!(
            "host {id} has never written a heartbeat on this volume"
        )));
    } else {
        ("ALIVE", check_exit::ALIVE, "its heartbeat progresses")
    };
    if a.cloudstack {
        // CloudStack restarts VMs on DEAD: only a fenced host is reported dead.
        if word == "FENCED" {
            println!("=====> DEAD <======");
        } else {
            println!("=====> ALIVE <=====");
        }
        return Ok(());
    }
    if a.json {
        println!(
            "{}",
            json!({"host": id, "result": word, "exit_code": code, "reason": why, "verdict": verdict.map(|v| json!({"verdict": v.kind.as_str(), "method": v.method.as_str(), "wall_time": wall_time(v.wall_ms)})), "vms": crate::inventory::report_json(&crate::inventory::merged_vms(&view, id, sys::wall_ms()))})
        );
    } else {
        println!("{word}");
    }
    if code == check_exit::ALIVE {
        Ok(())
    } else {
        Err(CliError { message: String::new(), code })
    }
}

/// What a message records that its issuer saw: the generation of the verdict table of the read
/// quorum it decided from (0: no table). A `clear` ends only a `fenced` verdict stamped at or
/// before it, never one a coordinator reached after this read.
fn seen_verdict_gen(view: &MergedView) -> Option<u32> {
    Some(view.table.as_ref().map_or(0, |t| t.verdict_gen))
}

fn send(
    c: &Cluster,
    id: u32,
    command: Command,
    target_incarnation: u64,
    seen: &MergedView,
) -> Result<u64, CliError> {
    let nonce = sys::random_u64().max(1);
    let m = format::Mailbox {
        cluster: c.header().cluster,
        host_id: id,
        nonce,
        command,
        sender: c.config.host.id,
        wall_ms: sys::wall_ms(),
        target_incarnation,
        sender_name: c.config.host_name(),
        seen_verdict_gen: seen_verdict_gen(seen),
    };
    let mut written = 0;
    let mut errors = Vec::new();
    for (vol, h) in &c.volumes {
        match vol.write_mailbox(h, &m) {
            Ok(()) => written += 1,
            Err(e) => errors.push(e.to_string()),
        }
    }
    if written == 0 {
        return Err(CliError::new(format!(
            "could not write the {} request: {}",
            command.as_str(),
            errors.join("; ")
        )));
    }
    Ok(nonce)
}

/// Polls the volume until `done` says so or `limit` passes; returns the last view.
fn wait_for(
    c: &Cluster,
    limit: Duration,
    mut done: impl FnMut(&MergedView) -> bool,
) -> Result<(bool, MergedView), CliError> {
    let start = Instant::now();
    let step = Duration::from_millis((c.header().timing.interval_ms / 4).clamp(100, 1000));
    loop {
        let view = c.view()?;
        if done(&view) {
            return Ok((true, view));
        }
        if start.elapsed() >= limit {
            return Ok((false, view));
        }
        std::thread::sleep(step);
    }
}

pub fn fence(a: &FenceArgs) -> CliResult {
    let c = load(&a.config)?;
    let view = c.view()?;
    let id = c.resolve(&a.host, &view)?;
    if id == c.config.host.id {
        return Err(CliError::new(
            "refusing to fence this host itself; run the command on another host",
        ));
    }
    let t = c.header().timing;
    if a.confirm_off {
        // A manual confirm applies only to a host the coordinator holds suspect (S1).
        match view.current_verdict(id) {
            Some(v) if matches!(v.kind, VerdictKind::Fencing | VerdictKind::FenceFailed) => {}
            Some(v) if v.kind == VerdictKind::Fenced => {
                return Err(CliError::new(format!(
                    "host {id} is already fenced (method {}): nothing to confirm",
                    v.method.as_str()
                )))
            }
            _ => {
                return Err(CliError::new(format!(
                    "refusing --confirm-off: host {id} is not suspect in the coordinator's view (no `fencing` or `fence-failed` verdict about its current incarnation), so its heartbeat may still be advancing. A manual confirm applies only to a host whose heartbeat stopped for suspect_after ({}); if you powered it off, wait until `hbfence status` shows it fencing or fence-failed and run this again",
                    crate::core::timing::format_secs(t.suspect_after_ms)
                )))
            }
        }
    }
    let incarnation = target_incarnation(&view, id)?;
    // Proof of a reset is a new boot id; a new incarnation alone is an agent restart.
    let boot = view.record(id).map(|r| r.boot_id);
    let restart_noted = std::cell::Cell::new(false);
    let rebooted = |v: &MergedView| {
        let Some(r) = v.record(id) else { return false };
        if boot.is_some_and(|b| b != r.boot_id) {
            return true;
        }
        if r.incarnation != incarnation && !restart_noted.replace(true) {
            println!(
                "host {id}: its agent restarted on the same boot (incarnation {}, same boot id): no proof of a reset; still waiting",
                r.incarnation
            );
        }
        false
    };
    let fenced = |v: &MergedView| {
        v.current_verdict(id).is_some_and(|v| v.kind == VerdictKind::Fenced) || rebooted(v)
    };
    let started = Instant::now();
    if a.confirm_off {
        send(&c, id, Command::ConfirmOff, incarnation, &view)?;
        println!(
            "host {id}: power-off confirmation written; waiting for the coordinator to record it"
        );
        if a.no_wait {
            return Ok(());
        }
        let (ok, _) =
            wait_for(&c, Duration::from_millis(3 * t.interval_ms + t.io_timeout_ms), fenced)?;
        return if ok {
            println!(
                "host {id}: FENCED (method manual) after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        } else {
            Err(CliError::new(format!("host {id}: no coordinator recorded the confirmation; is an eligible hbfence running? (`hbfence status`)")))
        };
    }
    let command = if a.poweroff { Command::PowerOff } else { Command::Reset };
    let nonce = send(&c, id, command, incarnation, &view)?;
    println!("host {id}: {} request written to its mailbox (nonce {nonce})", command.as_str());
    let bmc = crate::daemon::fence_method_for(&c.config, id);
    let bmc_thread = bmc.map(|method| {
        let settings = crate::daemon::fence_settings(&c.config);
        println!("host {id}: powering it off through {}", method.describe());
        std::thread::spawn(move || crate::fence::power_off_and_confirm(&method, &settings))
    });
    if a.no_wait {
        return Ok(());
    }
    let acked = |v: &MergedView| v.record(id).is_some_and(|r| r.ack_nonce == nonce);
    let (ack, v) = wait_for(&c, Duration::from_millis(2 * t.interval_ms + t.io_timeout_ms), |v| {
        acked(v) || fenced(v)
    })?;
    if ack && acked(&v) {
        println!("host {id}: acknowledged after {:.1} s; it stopped petting its watchdog and is resetting itself", started.elapsed().as_secs_f64());
    } else if !ack {
        println!("host {id}: no acknowledgement (it may be dead or hung); waiting for the watchdog bound");
    }
    if let Some(h) = bmc_thread {
        match h.join() {
            Ok(crate::fence::AttemptOutcome::ConfirmedOff { detail }) => {
                println!("host {id}: {detail}");
                // The coordinator takes a confirm-off only for a host it holds suspect (S1):
                // wait for that (its heartbeat has stopped now), then confirm.
                let suspect = |v: &MergedView| {
                    fenced(v)
                        || v.current_verdict(id).is_some_and(|v| {
                            matches!(v.kind, VerdictKind::Fencing | VerdictKind::FenceFailed)
                        })
                };
                let until_suspect =
                    Duration::from_millis(t.suspect_after_ms + 3 * t.interval_ms + t.io_timeout_ms);
                let (ok, v) = wait_for(&c, until_suspect, suspect)?;
                if ok && !fenced(&v) {
                    send(&c, id, Command::ConfirmOff, incarnation, &v)?;
                }
            }
            Ok(crate::fence::AttemptOutcome::Failed { detail }) => {
                println!("host {id}: BMC fencing failed: {detail}")
            }
            Err(_) => println!("host {id}: BMC fencing thread failed"),
        }
    }
    let limit = Duration::from_millis(t.dead_after_ms() + 3 * t.interval_ms);
    let (ok, v) = wait_for(&c, limit, fenced)?;
    if ok {
        let how = v
            .current_verdict(id)
            .filter(|v| v.kind == VerdictKind::Fenced)
            .map_or("rejoined after a reset: new boot id".to_string(), |v| {
                format!("method {}", v.method.as_str())
            });
        println!(
            "host {id}: FENCED ({how}) {:.1} s after the request",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        Err(CliError::new(format!(
            "host {id}: not confirmed fenced within {:.0} s; check `hbfence status` and the coordinator's log",
            limit.as_secs_f64()
        )))
    }
}

/// The incarnation a message to host `id` names: that of its newest record, or, when its
/// block is torn on every volume, that of the coordinator's verdict about it. Never 0 ("any
/// incarnation") because a read was torn: an old message for any incarnation could hit the
/// host after a later restart.
fn target_incarnation(view: &MergedView, id: u32) -> Result<u64, CliError> {
    match view.slot(id) {
        Some(Slot::Record(r)) => Ok(r.incarnation),
        Some(Slot::NoNews) => view.current_verdict(id).map(|v| v.incarnation).ok_or_else(|| {
            CliError::new(format!(
                "host {id}: its heartbeat block is unreadable on every volume (torn or corrupt, also after re-reads), so its incarnation cannot be determined and the message cannot name it; try again in a moment, and check the storage (`hbfence dump --volume PATH`)"
            ))
        }),
        _ => Err(CliError::new(format!(
            "host {id} has never written a heartbeat on the volumes: there is nothing to address (check the host id)"
        ))),
    }
}

pub fn clear(a: &ClearArgs) -> CliResult {
    let c = load(&a.config)?;
    let view = c.view()?;
    let id = c.resolve(&a.host, &view)?;
    let before = view.current_verdict(id);
    let incarnation = target_incarnation(&view, id)?;
    // The message names the table read here: a `fenced` verdict a coordinator reaches after
    // this read (a power-off confirmed while the operator typed) is not ended by it.
    let seen = seen_verdict_gen(&view).unwrap_or(0);
    send(&c, id, Command::Clear, incarnation, &view)?;
    let later_fenced = |v: &MergedView| {
        v.current_verdict(id).filter(|v| v.kind == VerdictKind::Fenced && v.changed_gen > seen)
    };
    let t = c.header().timing;
    let limit = Duration::from_millis(3 * t.interval_ms + t.io_timeout_ms);
    let Some(before) = before else {
        // Nothing to wait for, unless a verdict appears meanwhile: it is one this clear
        // does not end, and the operator must hear of it.
        if let Some(v) = later_fenced(&c.view()?) {
            return Err(fenced_after_read(id, &v, seen));
        }
        println!("host {id}: mailbox cleared; there was no verdict about it");
        return Ok(());
    };
    // Done once the table without the verdict is on a write quorum of volumes: every read
    // quorum then holds it. On fewer, a reader that cannot read those volumes still shows the
    // verdict, and a coordinator that dies meanwhile may leave it so.
    let after = view.table.as_ref().map(table_order);
    let configured = c.config.volumes.len();
    let (need, _) = Agent::quorums(configured);
    let mut withdrawn = 0;
    let (ok, v) = wait_for(&c, limit, |v| {
        if later_fenced(v).is_some() {
            return true;
        }
        let rejoined = v.record(id).is_some_and(|r| r.incarnation != before.incarnation);
        withdrawn = c.volumes_without(id, &before, after);
        rejoined || (v.current_verdict(id).is_none() && withdrawn >= need)
    })?;
    if let Some(v) = later_fenced(&v) {
        return Err(fenced_after_read(id, &v, seen));
    }
    if ok {
        println!(
            "host {id}: verdict {} cleared; it is not judged again until its heartbeat moves",
            before.kind.as_str()
        );
        Ok(())
    } else if withdrawn > 0 {
        Err(CliError::new(format!("host {id}: the coordinator withdrew the verdict, but its table reached only {withdrawn} of {configured} volumes (a write quorum is {need}): hosts that cannot read those volumes still show the verdict. The coordinator republishes its table on every volume each interval: check the storage and the coordinator (`hbfence status`)")))
    } else {
        Err(CliError::new(format!("host {id}: the coordinator did not clear the verdict; is an eligible hbfence running? (`hbfence status`)")))
    }
}

/// A `clear` names the verdict table its issuer read; a `fenced` verdict reached after that
/// stands (the host IS off: management must see it).
fn fenced_after_read(id: u32, v: &format::Verdict, seen: u32) -> CliError {
    CliError::new(format!(
        "host {id} was confirmed FENCED (method {}, verdict table generation {}) after this command read the verdicts (generation {seen}); the clear does not end a verdict it could not see. The host is off: check it, and run `hbfence clear` again only if you mean to withdraw that verdict",
        v.method.as_str(),
        v.changed_gen
    ))
}

pub fn test_watchdog(a: &TestWatchdogArgs) -> CliResult {
    let device = a.device.clone().unwrap_or_else(|| {
        Config::load(Path::new(DEFAULT_CONFIG))
            .map(|c| c.watchdog.device)
            .unwrap_or_else(|_| PathBuf::from("/dev/watchdog"))
    });
    use crate::watchdog::{after_close, AfterClose};
    let (kind, info) = crate::watchdog::inspect(&device)?;
    let identity = info.identity.clone().unwrap_or_else(|| "unknown".into());
    // Known without opening: the double's emulated driver, sysfs `options`, or nowayout=1.
    let mut close = match (kind, info.options, info.nowayout) {
        (_, Some(options), nowayout) => Some(after_close(&identity, options, nowayout)),
        (_, None, Some(true)) => Some(after_close(&identity, 0, Some(true))),
        _ => None,
    };
    println!("device: {}", device.display());
    if kind == crate::watchdog::DeviceKind::Double {
        println!("kind: FIFO test double (NOT a hardware watchdog; never use it in production)");
    }
    let show = |k: &str, v: Option<String>| {
        println!("{k}: {}", v.unwrap_or_else(|| "unknown (no sysfs entry)".into()))
    };
    if kind == crate::watchdog::DeviceKind::Kernel {
        show("driver", info.identity.clone());
        show("timeout", info.timeout.map(|t| format!("{t} s")));
        show("min timeout", info.min_timeout.map(|t| format!("{t} s")));
        show("max timeout", info.max_timeout.map(|t| format!("{t} s")));
        show("state", info.state.clone());
        show(
            "nowayout",
            info.nowayout
                .map(|n| if n { "yes: once opened it cannot be stopped" } else { "no" }.into()),
        );
    }
    if info.holders.is_empty() {
        println!("held by: nobody");
    } else {
        for (pid, comm) in &info.holders {
            println!("held by: process {pid} ({comm})");
        }
    }
    if kind == crate::watchdog::DeviceKind::Kernel && a.open {
        if info.nowayout == Some(true) {
            return Err(CliError::new("refusing --open: the driver is nowayout, opening it would start a timer nobody can stop"));
        }
        let file = std::fs::OpenOptions::new().write(true).open(&device)?;
        use std::os::fd::AsFd;
        let support = sys::watchdog_get_support(file.as_fd());
        let timeout = sys::watchdog_get_timeout(file.as_fd());
        let left = sys::watchdog_get_timeleft(file.as_fd());
        let boot = sys::watchdog_get_bootstatus(file.as_fd());
        {
            use std::io::Write;
            let mut f = file;
            let _ = f.write_all(b"V");
        }
        println!("opened (armed) and closed with the magic close");
        match support {
            Ok(i) => {
                println!(
                    "ioctl identity: {} (options {:#x}, firmware {})",
                    i.identity(),
                    i.options,
                    i.firmware_version
                );
                close = Some(after_close(&i.identity(), i.options, info.nowayout));
            }
            Err(e) => println!("WDIOC_GETSUPPORT failed: {e}: not a watchdog"),
        }
        if let Ok(t) = timeout {
            println!("ioctl timeout: {t} s");
        }
        if let Ok(t) = left {
            println!("ioctl time left: {t} s");
        }
        if let Ok(b) = boot {
            println!(
                "boot status: {b:#x}{}",
                if b != 0 { " (the last reset was caused by the watchdog)" } else { "" }
            );
        }
    } else if kind == crate::watchdog::DeviceKind::Kernel {
        println!("(not opened: opening arms the watchdog; pass --open to query the driver through ioctls)");
    }
    match &close {
        Some(AfterClose::KeepsRunning(why)) => println!("after close: keeps running ({why})"),
        Some(AfterClose::Stops(why)) => println!("after close: STOPS ({why})"),
        None => println!(
            "after close: unknown without --open (hbfence needs magic close, WDIOF_MAGICCLOSE, or nowayout=1)"
        ),
    }
    if let Some((pid, comm)) = info.holders.first() {
        return Err(CliError::new(format!(
            "{} is busy: held by process {pid} ({comm}); stop that program (or systemd's RuntimeWatchdogSec) before starting hbfence",
            device.display()
        )));
    }
    match close {
        Some(AfterClose::Stops(why)) => Err(CliError::new(format!(
            "{} is not usable for hbfence: {why}. hbfence would close it again and run without it. {}",
            device.display(),
            crate::watchdog::UNGUARDED_ADVICE
        ))),
        Some(AfterClose::KeepsRunning(_)) => {
            println!("usable: yes");
            Ok(())
        }
        None => {
            println!("usable: not determined: run `hbfence test-watchdog --open` to ask the driver whether it has magic close (hbfence refuses to rely on it otherwise)");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: the ID and SEQ cells were JSON values, printed without their width.
    #[test]
    fn status_config_columns_align() {
        let rows = vec![
            json!({"id": 1, "name": "kvm01", "state": "active", "view": "running", "seq": 7,
                   "wall_time": wall_time(1_700_000_000_000), "age_s": 0.4,
                   "capabilities": ["watchdog-armed", "coordinator"], "verdict": null, "method": null,
                   "network": null}),
            json!({"id": 12, "name": "a-very-long-host-name.example.org", "state": "active",
                   "view": "suspect", "seq": 1_234_567_890_123u64, "wall_time": "-",
                   "age_s": 130.0, "capabilities": [], "verdict": "fencing", "method": "ipmi",
                   "network": {"reachable": true, "answer_age_ms": 1200}}),
            json!({"id": 200, "name": "", "state": "unreadable", "view": "-", "seq": null,
                   "wall_time": "-", "age_s": null, "capabilities": [], "verdict": "fenced",
                   "method": "watchdog", "network": {"reachable": false, "answer_age_ms": 12000}}),
        ];
        let lines = status_table(&rows);
        let cells: Vec<Vec<String>> = rows.iter().map(status_cells).collect();
        assert_eq!(cells[2][0], "200");
        assert_eq!(cells[2][5], "-", "a missing sequence is -, not null");
        assert_eq!(cells[0][4], "-", "no [network]: no channel");
        assert_eq!(cells[1][4], "reachable (1.2 s)");
        assert_eq!(cells[2][4], "UNREACHABLE (12.0 s)");
        crate::cli::text::tests::assert_aligned(&lines, &STATUS_COLUMNS, &cells);
    }
}
