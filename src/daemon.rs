//! `hbfence run`: wires the drivers (volume I/O threads, watchdog, fencing workers, events,
//! reporter) to the decision core. The main thread pets the watchdog and never blocks on
//! storage, on a child process or on a socket, and creates no thread after start-up (S7):
//! everything slow runs in a thread started at boot and is handed over with a non-blocking
//! send (bounded queues drop and count rather than wait).

use crate::config::{AfterFence, Config, SelfFenceAction};
use crate::core::agent::{
    Action, Agent, AgentParams, ChannelParams, Input, Now, Phase, SelfFenceKind, UnsafeTestKnobs,
};
use crate::core::format::{self, BootId, FenceMethodKind, Header};
use crate::core::header::{self, check_header, same_parameters, HeaderCheck, Membership};
use crate::core::readplan::{IdSet, ReadPlanner};
use crate::core::view::VolumeView;
use crate::events::{self, EventSettings};
use crate::fence::pool::Pool;
use crate::fence::{self, AgentTarget, FenceMethod, FenceSettings, IpmiTarget};
use crate::inventory::InventoryReader;
use crate::net::{Net, NetSettings};
use crate::report::{
    ChannelPeerStats, NetworkSnapshot, ReportSettings, Reporter, Snapshot, VolumeStats,
};
use crate::sys;
use crate::volume::{Access, AlignedBuf, Volume};
use crate::watchdog::{self, Armed, Watchdog};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

/// The main loop sleeps until the core's next deadline (`Agent::next_deadline`) or an input;
/// this only bounds a sleep should a deadline be far away (the core has one every interval).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Exit codes of `hbfence run` (sysexits.h values), so the unit restarts only what may heal.
pub mod exit_code {
    /// Clean stop after the `leaving` record.
    pub const OK: i32 = 0;
    /// Unexpected failure.
    pub const FAILURE: i32 = 1;
    /// A volume or the watchdog is not available (yet): NFS not mounted, driver not loaded,
    /// device busy. A restart may succeed.
    pub const UNAVAILABLE: i32 = crate::core::agent::EXIT_UNAVAILABLE;
    /// Another writer uses this host id: never restart, fix the ids.
    pub const HOST_ID_IN_USE: i32 = crate::core::agent::EXIT_HOST_ID_IN_USE;
    /// The configuration (or the volume's layout for it) is wrong: never restart, fix it.
    pub const CONFIG: i32 = 78;
}

pub struct StartError(pub String, pub i32);

impl StartError {
    pub(crate) fn unavailable(e: impl std::fmt::Display) -> StartError {
        StartError(e.to_string(), exit_code::UNAVAILABLE)
    }
    pub(crate) fn config(e: impl std::fmt::Display) -> StartError {
        StartError(e.to_string(), exit_code::CONFIG)
    }
    fn failure(e: impl std::fmt::Display) -> StartError {
        StartError(e.to_string(), exit_code::FAILURE)
    }
}

struct IoRequest {
    cycle: u64,
    started: u64,
    record: Option<Box<format::Heartbeat>>,
    /// The read starts no earlier than this (CLOCK_BOOTTIME ms; `Action::StartIo`).
    read_at: u64,
    /// The peers' mailboxes to read besides the own one (`Agent::peer_mailboxes`).
    peer_mailboxes: IdSet,
    /// The members the core follows (None: open membership).
    members: Option<IdSet>,
    /// A view the core is done with, to decode this cycle's read into (no allocation).
    view: Option<VolumeView>,
}

/// Records the I/O threads have written, on their way back to the core for reuse
/// (`Agent::recycle_record`). Locked only to push or drain, never across I/O; the main thread
/// only tries the lock (S7). Its capacity, one per volume, is never exceeded, so it allocates
/// nothing after start.
type Recycled = Arc<std::sync::Mutex<Vec<Box<format::Heartbeat>>>>;

/// What an I/O thread hands to the core: its inputs, and the records it wrote.
struct ToCore {
    inputs: Sender<Input>,
    recycled: Recycled,
}

/// Benchmark knob (not a user option): `HBFENCE_BENCH_READ_ALL=1` makes every cycle read all
/// heartbeat and mailbox blocks, as before issue 12, for the baseline of `bench/scale.rs`.
pub const READ_ALL_ENV: &str = "HBFENCE_BENCH_READ_ALL";

/// Reads the kernel's boot id (a UUID that changes on every boot).
pub fn boot_id() -> Result<BootId, String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map_err(|e| format!("/proc/sys/kernel/random/boot_id: {e}"))?;
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return Err(format!("/proc/sys/kernel/random/boot_id: unexpected content {text:?}"));
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| "boot_id is not hex".to_string())?;
    }
    Ok(id)
}

/// S3: the doom marker holds the boot id of a boot whose agent expired its lease or
/// self-fenced.
const DOOMED_MARKER: &str = "doomed";
/// S3: the armed marker holds the boot id of a boot on which an agent opened a watchdog that
/// keeps running after close and has not disarmed it (magic close) since: a restarted agent
/// must find that run's lease still valid, or a reset may be pending (core: `armed_marker`).
const ARMED_MARKER: &str = "armed";

/// The marker `name` in `runtime_dir` holds this boot's id.
fn marker_holds(runtime_dir: &Path, name: &str, boot: &BootId) -> bool {
    std::fs::read_to_string(runtime_dir.join(name))
        .is_ok_and(|t| t.trim() == crate::cli::text::hex(boot))
}

fn write_marker(runtime_dir: &Path, name: &str, boot: &BootId) {
    let path = runtime_dir.join(name);
    let _ = std::fs::create_dir_all(runtime_dir);
    if let Err(e) = std::fs::write(&path, crate::cli::text::hex(boot)) {
        log::error!("cannot write the {name} marker {}: {e}", path.display());
    }
}

fn remove_marker(runtime_dir: &Path, name: &str) {
    let path = runtime_dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::error!("cannot remove the {name} marker {}: {e}", path.display()),
    }
}

/// The core's clock: CLOCK_BOOTTIME (see `sys::boottime_ms`); every timestamp handed to the
/// core (I/O start and finish, ticks) comes from it.
fn now() -> Now {
    Now { mono: sys::boottime_ms(), wall: sys::wall_ms() }
}

pub fn fence_method_for(config: &Config, peer: u32) -> Option<FenceMethod> {
    let p = config.peer(peer)?;
    if let Some(b) = &p.bmc {
        return Some(FenceMethod::Ipmi(IpmiTarget {
            address: b.address.clone(),
            port: b.port,
            username: b.username.clone(),
            password_file: b.password_file.clone(),
            cipher_suite: b.cipher_suite,
            interface: b.interface.clone(),
        }));
    }
    p.agent.as_ref().map(|a| {
        FenceMethod::Agent(AgentTarget {
            program: a.program.clone(),
            options: a.option_pairs(),
            password_file: a.password_file.clone(),
        })
    })
}

pub fn fence_settings(config: &Config) -> FenceSettings {
    FenceSettings {
        ipmitool: config.fencing.ipmitool.clone(),
        command_timeout: Duration::from_secs_f64(config.fencing.command_timeout),
        confirm_timeout: Duration::from_secs_f64(config.fencing.timeout),
        poll_interval: Duration::from_secs(1),
    }
}

/// An I/O error may heal (NFS not mounted yet); a wrong file or header will not.
fn volume_error(e: crate::volume::VolumeError) -> StartError {
    match e {
        // Retried: an operator restores the header (`hbfence restore-header`) while the
        // running agents go on; this one then starts without anybody's intervention.
        crate::volume::VolumeError::Io { .. }
        | crate::volume::VolumeError::DamagedHeader { .. } => StartError::unavailable(e),
        _ => StartError::config(e),
    }
}

/// Opens every configured volume and checks they belong to one cluster; returns each volume
/// with its header, and the cluster's header with the membership a read quorum holds
/// (`header::adopt`). A host that is not a member does not start (78).
pub fn open_volumes(config: &Config) -> Result<(Vec<(Volume, Header)>, Header), StartError> {
    let mut volumes: Vec<(Volume, Header)> = Vec::new();
    for v in &config.volumes {
        let vol = Volume::open(&v.path, Access::ReadWrite).map_err(volume_error)?;
        let h = vol.read_header().map_err(volume_error)?;
        config
            .check_against_volume(h.max_hosts)
            .map_err(|e| StartError::config(format!("volume {}: {e}", v.path.display())))?;
        if let Some((_, first)) = volumes.first() {
            if !same_parameters(first, &h) {
                return Err(StartError::config(format!(
                    "volume {} belongs to another cluster (or has other timing) than {}; create all volumes for one cluster",
                    v.path.display(),
                    config.volumes[0].path.display()
                )));
            }
        }
        volumes.push((vol, h));
    }
    let Some((_, first)) = volumes.first() else {
        return Err(StartError::config("no [[volume]] configured"));
    };
    let seen: Vec<Membership> = volumes.iter().map(|(_, h)| Membership::of(h)).collect();
    let (_, r) = Agent::quorums(volumes.len());
    let refs: Vec<Option<&Membership>> = seen.iter().map(Some).collect();
    let m = header::adopt(&refs, r).cloned().unwrap_or_default();
    let id = config.host.id;
    if !m.admits(id) {
        return Err(StartError::config(format!(
            "host id {id} is not a member of this cluster (members {}): add it with `hbfence members add {id} --config {}` on any host (or `--volume PATH` for every volume), then start again",
            m.describe(),
            crate::config::DEFAULT_CONFIG
        )));
    }
    // An older agent would survive on permits under this timing, and this one, ignoring
    // survival, would judge it by the watchdog bound: so it does not run beside them.
    if let Some(e) = m.survival_timing_error(&first.timing) {
        return Err(StartError::config(format!(
            "outage survival is on in the volume header, but this agent's I/O cycle needs the rule \"{}\" for it ({}): switch it off with `hbfence outage-survival off --config {}` on any host, or move the cluster to a volume initialised with --lease-timeout {} or more; then start again",
            e.rule,
            e.detail,
            crate::config::DEFAULT_CONFIG,
            first.timing.outage_survival_min_lease_ms() / 1000
        )));
    }
    let header = Header {
        members: m.members,
        members_epoch: m.epoch,
        outage_survival: m.outage_survival,
        ..first.clone()
    };
    Ok((volumes, header))
}

fn spawn_io_thread(
    realtime_priority: i32,
    index: usize,
    volume: Volume,
    header: Header,
    peers: Vec<u32>,
    own_id: u32,
    to_core: ToCore,
) -> Result<Sender<IoRequest>, StartError> {
    let ToCore { inputs: tx, recycled } = to_core;
    let (req_tx, req_rx) = mpsc::channel::<IoRequest>();
    let geo = header.geometry();
    let cluster = header.cluster;
    let own_block_of = move |id: u32| geo.heartbeat_block(id);
    // This volume's header as last accepted: its membership follows the operator's changes.
    let mut current = header;
    let mut damage: Option<String> = None;
    let _ = tx.send(Input::MembershipRead {
        volume: index,
        membership: Membership::of(&current),
        earlier: current.earlier_memberships.clone(),
    });
    let mut volume_members = explicit_members(&current.members);
    let read_all = std::env::var_os(READ_ALL_ENV).is_some_and(|v| v == "1");
    let mut planner = ReadPlanner::new(geo, own_id, &peers, read_all);
    std::thread::Builder::new()
        .stack_size(crate::sys::THREAD_STACK)
        .name(format!("hbfence-io{index}"))
        .spawn(move || {
            // The heartbeat write keeps the lease: under CPU overload it must not wait behind
            // ordinary work any more than the petting thread does.
            if realtime_priority > 0 {
                if let Err(e) = sys::set_realtime(realtime_priority) {
                    log::warn!("I/O thread {index}: SCHED_RR failed: {e}");
                }
            }
            // Sized to the longest request read so far (`AlignedBuf::fit`), at most
            // CHUNK_BLOCKS: a small cluster with a member list reads a few blocks, and with
            // mlockall all of the buffer is resident.
            let buffers = (
                AlignedBuf::new(1),
                AlignedBuf::new(1),
                volume.page_buffer(geo),
                AlignedBuf::new(format::INVENTORY_SET),
                InventoryReader::new(),
            );
            let (mut wbuf, mut rbuf, mut pages, mut inventory_buf, mut inventories) = match buffers
            {
                (Ok(w), Ok(r), Ok(p), Ok(i), Ok(reader)) => (w, r, p, i, reader),
                _ => {
                    log::error!("volume {}: cannot allocate I/O buffers", volume.path().display());
                    return;
                }
            };
            for req in req_rx {
                let write = req.record.as_ref().map(|record| {
                    format::encode_heartbeat_into(record, wbuf.block_mut(0))
                        .map_err(|e| e.to_string())?;
                    // Pages first: a reader that sees the heartbeat finds its table's pages.
                    // Rewritten every cycle, so a torn page heals by itself.
                    if let Some(pages) = pages.as_mut() {
                        volume
                            .write_verdict_pages(geo, record, pages)
                            .map_err(|e| e.to_string())?;
                    }
                    // The VM list (only when the core attached a new one) into the set the
                    // heartbeat written next names; the other set keeps the previous list.
                    volume
                        .write_inventory(geo, record, &mut inventory_buf)
                        .map_err(|e| e.to_string())?;
                    volume
                        .write_block(own_block_of(record.host_id), &wbuf, 0)
                        .map_err(|e| e.to_string())?;
                    Ok(sys::boottime_ms())
                });
                if let (Some(record), Ok(mut bin)) = (req.record, recycled.lock()) {
                    if bin.len() < bin.capacity() {
                        bin.push(record);
                    }
                }
                // The write's read-back, half an interval after it on the regular cadence (the
                // core says when): it is also what shows a twin of this host id (design.md
                // "One I/O cycle"). The core counts this read as evidence from `read_at`, so
                // it must not start earlier; after a failed write there is nothing to read
                // back, and the core takes that read for no evidence: it starts at once (the
                // retry comes sooner).
                if !matches!(write, Some(Err(_))) {
                    wait_until(req.read_at);
                }
                // Explicit only while both the core's membership and this volume's header
                // list members: the union of the two (a change is read as soon as the header
                // on this volume shows it, before a read quorum of volumes holds it).
                planner.set_members(match (req.members, volume_members) {
                    (Some(mut a), Some(b)) => {
                        a.union_with(&b);
                        Some(a)
                    }
                    _ => None,
                });
                // Block 0 too: the header is checked every cycle, in the first request.
                let mut heartbeats_read = planner.next(&req.peer_mailboxes).heartbeats;
                let mut view = match req.view {
                    Some(mut view) => {
                        view.recycle(geo);
                        view
                    }
                    None => VolumeView::unread(geo),
                };
                let mut header_block = None;
                let mut newer = None;
                let mut result = Ok(());
                for &(first, n) in &planner.plan().runs {
                    result = rbuf
                        .fit(n as usize)
                        .map_err(|e| volume.error("allocate a read buffer", e))
                        .and_then(|()| volume.read_blocks_into(first, &mut rbuf, n as usize));
                    if result.is_err() {
                        break;
                    }
                    let raw = &rbuf.as_slice()[..n as usize * format::BLOCK_SIZE];
                    if first == 0 {
                        let block0 = &raw[..format::BLOCK_SIZE];
                        header_block = Some(match check_header(block0, &current) {
                            HeaderCheck::Same => None,
                            HeaderCheck::Newer { membership, earlier } => {
                                newer = Some((membership, earlier));
                                None
                            }
                            HeaderCheck::Damaged(why) => Some(match format::decode(block0) {
                                format::Decoded::Header(h) if same_parameters(&h, &current) => why,
                                // Re-created on purpose or by mistake: not something to undo
                                // from here; the agents must be restarted on the new header.
                                format::Decoded::Header(_) => {
                                    format!("{why}; every agent must be restarted to use it")
                                }
                                _ => format!(
                                    "{why}; restore it with `{}`",
                                    crate::cli::restore::restore_command(volume.path(), &current)
                                ),
                            }),
                        });
                    }
                    view.decode_blocks(first, raw, geo, &cluster);
                }
                if let (Ok(()), Some((m, earlier))) = (&result, newer) {
                    // Members added by this header are read in this very cycle: the join
                    // bound is one interval from the header write.
                    if !m.is_open() {
                        for &id in &m.members {
                            if heartbeats_read.contains(id) {
                                continue;
                            }
                            let block = geo.heartbeat_block(id);
                            if volume.read_blocks_into(block, &mut rbuf, 1).is_ok() {
                                let raw = &rbuf.as_slice()[..format::BLOCK_SIZE];
                                view.decode_blocks(block, raw, geo, &cluster);
                                heartbeats_read.insert(id);
                            }
                        }
                    }
                    current.members.clone_from(&m.members);
                    current.members_epoch = m.epoch;
                    current.outage_survival = m.outage_survival;
                    current.earlier_memberships.clone_from(&earlier);
                    volume_members = explicit_members(&current.members);
                    let _ =
                        tx.send(Input::MembershipRead { volume: index, membership: m, earlier });
                }
                let read = result
                    .map(|()| {
                        if let Some(now_damaged) = header_block {
                            if now_damaged != damage {
                                damage = now_damaged;
                                let _ = tx.send(Input::HeaderChecked {
                                    volume: index,
                                    damage: damage.clone(),
                                });
                            }
                        }
                        planner.learn(&view.slots, &heartbeats_read);
                        if let Some(pages) = pages.as_mut() {
                            volume.read_verdict_pages(&mut view, geo, &cluster, pages);
                        }
                        // Peers' VM lists: read only when a heartbeat names a new one.
                        inventories.fetch(
                            &volume,
                            geo,
                            &cluster,
                            &mut view,
                            Some(own_id),
                            crate::inventory::FETCHES_PER_CYCLE,
                        );
                        (sys::boottime_ms(), view)
                    })
                    .map_err(|e| e.to_string());
                let done = Input::IoDone {
                    volume: index,
                    cycle: req.cycle,
                    started: req.started,
                    write,
                    read,
                };
                if tx.send(done).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| StartError::failure(format!("cannot start the I/O thread: {e}")))?;
    Ok(req_tx)
}

/// Sleeps until CLOCK_BOOTTIME reaches `at` (ms). A sleep runs on CLOCK_MONOTONIC, which
/// stops in a suspend: the loop checks the clock that counts it.
fn wait_until(at: u64) {
    loop {
        let now = sys::boottime_ms();
        if now >= at {
            return;
        }
        std::thread::sleep(Duration::from_millis(at - now));
    }
}

/// The members as a set for the read plan; None: open membership.
fn explicit_members(members: &[u32]) -> Option<IdSet> {
    if members.is_empty() {
        return None;
    }
    let mut set = IdSet::default();
    members.iter().for_each(|&id| set.insert(id));
    Some(set)
}

struct Daemon {
    config: Config,
    config_path: PathBuf,
    agent: Agent,
    io: Vec<Sender<IoRequest>>,
    recycled: Recycled,
    inputs: Sender<Input>,
    watchdog: Option<Watchdog>,
    /// Why the watchdog device cannot guard this host (its timer stops on close), if so.
    unguarded: Option<String>,
    /// The armed marker holds this boot's id (S3; written before the device is opened).
    armed_marker: bool,
    /// The last outage-survival warning logged (`survival_unusable`): logged at start and
    /// whenever it changes (the switch or the membership changed in the header).
    survival_warning: Option<String>,
    events: events::EventSender,
    fence_settings: FenceSettings,
    header: Header,
    boot: BootId,
    /// Status file, sd_notify and metrics: written by the reporter thread.
    reporter: Reporter,
    last_snapshot: u64,
    /// Something the status file shows changed since the last snapshot.
    snapshot_due: bool,
    /// Fencing attempts and power-on commands run here (threads started at boot).
    pool: Pool,
    /// What the driver counts itself (latencies, errors, attempts) for the metrics.
    stats: DriverStats,
    /// `[network]`: the peer channel's thread.
    net: Option<Net>,
    /// The inventory thread's handover (none with `[inventory] source = "none"`).
    inventory: Option<crate::inventory::Handover>,
    exit: Option<(i32, String)>,
    /// `feed`'s input queue and action buffer, kept between calls.
    queue: Vec<Input>,
    actions: Vec<Action>,
}

/// Counters the core does not keep, counted on the way in and out of it.
#[derive(Default)]
struct DriverStats {
    volumes: Vec<VolumeStats>,
    fence_attempts: u64,
    fence_failures: u64,
}

impl DriverStats {
    fn saw(&mut self, input: &Input) {
        match input {
            Input::IoDone { volume, started, write, read, .. } => {
                let Some(v) = self.volumes.get_mut(*volume) else { return };
                let mut read_from = *started;
                match write {
                    Some(Ok(done)) => {
                        v.write_latency_ms = Some(done.saturating_sub(*started));
                        read_from = *done;
                    }
                    Some(Err(_)) => v.io_errors += 1,
                    None => {}
                }
                match read {
                    Ok((done, _)) => v.read_latency_ms = Some(done.saturating_sub(read_from)),
                    Err(_) => v.io_errors += 1,
                }
            }
            Input::FenceDone { result: Err(_), .. } => self.fence_failures += 1,
            _ => {}
        }
    }
}

/// Workers for fencing and power-on: one per peer that can be fenced, at least 2, at most 8
/// (every worker's stack is locked in memory at boot).
fn pool_workers(fenceable_peers: usize) -> usize {
    fenceable_peers.clamp(2, 8)
}

/// S3 at the ioctl itself: a pet is safe only if the own lease, on a clock reading taken right
/// before it, still lasts one more watchdog period, and the host is not doomed. The core
/// decided the pet with a `now` read before the earlier actions of the same batch.
fn pet_allowed(lease_expiry: Option<u64>, watchdog_ms: u64, doomed: bool, now: u64) -> bool {
    !doomed && lease_expiry.is_some_and(|e| now.saturating_add(watchdog_ms) <= e)
}

/// Runs the daemon until it exits; returns the exit code.
pub fn run(config_path: &Path, stderr_log: bool) -> i32 {
    match start(config_path, stderr_log) {
        Ok(code) => code,
        Err(StartError(msg, code)) => {
            log::error!("{msg}");
            crate::logging::flush(Duration::from_millis(500));
            eprintln!("hbfence: error: {msg}");
            code
        }
    }
}

fn start(config_path: &Path, stderr_log: bool) -> Result<i32, StartError> {
    let config = Config::load(config_path).map_err(StartError::config)?;
    if config.daemon.lock_memory {
        // Before the logging thread exists: a thread that allocated first would keep an arena
        // of its own (152 KiB of it resident and locked, issue 12).
        sys::single_malloc_arena();
    }
    crate::logging::init(config.daemon.syslog, stderr_log, log::LevelFilter::Info);
    // The same checks as `run --check`, before anything is armed.
    let checked = crate::preflight::check(&config)?;
    for w in &checked.warnings {
        log::warn!("{w}");
        if !stderr_log {
            eprintln!("hbfence: warning: {w}");
        }
    }
    let (volumes, header, network_key) = (checked.volumes, checked.header, checked.network_key);
    let timing = header.timing;
    let wd_secs = timing.watchdog_timeout_secs();
    let boot = boot_id().map_err(StartError::failure)?;
    std::fs::create_dir_all(&config.daemon.runtime_dir).map_err(|e| {
        StartError::config(format!("runtime_dir {}: {e}", config.daemon.runtime_dir.display()))
    })?;
    let doomed = marker_holds(&config.daemon.runtime_dir, DOOMED_MARKER, &boot);
    let armed_marker = marker_holds(&config.daemon.runtime_dir, ARMED_MARKER, &boot);

    if config.daemon.lock_memory {
        if let Err(e) = sys::lock_all_memory() {
            log::warn!("mlockall failed: {e}; the heartbeat may stall under memory pressure");
        }
    }
    // Every thread the daemon needs is started now, never from the petting thread later (S7):
    // the stacks are faulted in and locked (mlockall) at boot, not under memory pressure.
    let fence_methods = fence_methods(&config);
    let workers = pool_workers(fence_methods.len());
    let pool = Pool::start("hbfence-fence", workers, 2 * config.peers.len().max(workers))
        .map_err(StartError::failure)?;
    let mut reporter = Reporter::start(ReportSettings {
        status_path: config.daemon.runtime_dir.join("status.json"),
        metrics: config.metrics.textfile.clone(),
        metrics_every: Duration::from_millis(timing.interval_ms),
        notify_socket: std::env::var_os("NOTIFY_SOCKET"),
    })
    .map_err(StartError::failure)?;
    if config.daemon.realtime_priority > 0 {
        if let Err(e) = sys::set_realtime(config.daemon.realtime_priority) {
            log::warn!(
                "SCHED_RR priority {} failed: {e}; running with normal scheduling",
                config.daemon.realtime_priority
            );
        }
    }

    let incarnation = (sys::random_u64() & ((1 << 53) - 1)).max(1);
    let params = AgentParams {
        host_id: config.host.id,
        name: config.host_name(),
        cluster: header.cluster,
        max_hosts: header.max_hosts,
        timing,
        volumes: volumes.len(),
        boot_id: boot,
        incarnation,
        eligible: config.coordinator.eligible,
        self_fence: match config.self_fence.action {
            SelfFenceAction::Reboot => SelfFenceKind::Reboot,
            SelfFenceAction::Poweroff => SelfFenceKind::PowerOff,
            SelfFenceAction::Crashdump => SelfFenceKind::Crashdump,
        },
        fence_methods,
        watchdog_timeout_s: wd_secs as u16,
        doomed_marker: doomed,
        armed_marker,
        power_on_after: config.fencing.after == AfterFence::On,
        membership: Membership::of(&header),
        knobs: UnsafeTestKnobs::default(),
        peer_channel: config.network.as_ref().map(|n| ChannelParams {
            challenge_every_ms: n.challenge_every_ms(timing.interval_ms),
        }),
        inventory: config.inventory.source != crate::config::InventorySource::None,
    };
    log::info!(
        "starting: host {} \"{}\" incarnation {incarnation}, cluster {}, {} volume(s), interval {} ms, lease {} ms, watchdog {} s",
        config.host.id,
        params.name,
        format::uuid_string(&header.cluster),
        volumes.len(),
        timing.interval_ms,
        timing.lease_timeout_ms,
        wd_secs
    );
    let (tx, rx) = mpsc::channel::<Input>();
    let net = start_network(&config, &params, network_key, tx.clone())?;
    let mut io = Vec::new();
    let recycled: Recycled = Arc::new(std::sync::Mutex::new(Vec::with_capacity(volumes.len())));
    for (i, (v, volume_header)) in volumes.into_iter().enumerate() {
        let peers = config.peers.iter().map(|p| p.id).collect();
        io.push(spawn_io_thread(
            config.daemon.realtime_priority,
            i,
            v,
            volume_header,
            peers,
            config.host.id,
            ToCore { inputs: tx.clone(), recycled: recycled.clone() },
        )?);
    }
    // After the I/O threads: the first list then reaches a core that can publish it.
    let inventory = crate::inventory::start(
        &config.inventory,
        Duration::from_millis(timing.interval_ms),
        tx.clone(),
    )
    .map_err(StartError::failure)?;
    let events = events::start(EventSettings {
        vms_dir: config.daemon.runtime_dir.join("vms"),
        cluster: format::uuid_string(&header.cluster),
        reporter_id: config.host.id,
        reporter_name: params.name.clone(),
        log: config.events.log.clone(),
        hooks_dir: config.events.hooks_dir.clone(),
        hook_timeout: Duration::from_secs_f64(config.events.hook_timeout),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(StartError::failure)?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .map_err(StartError::failure)?;

    let agent = Agent::new(params, now());
    let stats = DriverStats {
        volumes: config
            .volumes
            .iter()
            .map(|v| VolumeStats { path: v.path.clone(), ..Default::default() })
            .collect(),
        ..Default::default()
    };
    reporter.notify("STATUS=probing the volume for another writer of this host id");
    let mut d = Daemon {
        fence_settings: fence_settings(&config),
        config,
        config_path: config_path.to_path_buf(),
        agent,
        io,
        recycled,
        inputs: tx,
        watchdog: None,
        unguarded: None,
        armed_marker,
        survival_warning: None,
        events,
        header,
        boot,
        reporter,
        last_snapshot: 0,
        snapshot_due: true,
        pool,
        stats,
        net,
        inventory,
        exit: None,
        queue: Vec::new(),
        actions: Vec::new(),
    };
    Ok(d.main_loop(rx, &stop, &hup))
}

/// `[network]`: binds the listen address and starts thread `hbfence-net` (before anything is
/// armed, so a taken port stops the agent with nothing to undo).
fn start_network(
    config: &Config,
    params: &AgentParams,
    key: Option<crate::net::wire::Key>,
    inputs: Sender<Input>,
) -> Result<Option<Net>, StartError> {
    let (Some(n), Some(key), Some(channel)) = (&config.network, key, params.peer_channel) else {
        return Ok(None);
    };
    let listen = n.listen_addr().map_err(StartError::config)?;
    let socket = crate::net::bind(listen).map_err(|e| {
        let msg = format!(
            "[network] listen {listen}: cannot bind it: {e}; another process (an agent still stopping?) holds the port, or the address is not this host's yet"
        );
        match e.kind() {
            // A restart may succeed: the port is freed, the address comes up.
            std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable => {
                StartError::unavailable(msg)
            }
            _ => StartError::config(msg),
        }
    })?;
    let mut peers = BTreeMap::new();
    for p in &config.peers {
        let text = p.address.as_deref().unwrap_or_default();
        let a = text.parse().map_err(|_| {
            StartError::config(format!("[[peer]] id {} address {text:?} does not parse", p.id))
        })?;
        peers.insert(p.id, a);
    }
    let settings = NetSettings {
        me: params.host_id,
        cluster: params.cluster,
        boot: params.boot_id,
        incarnation: params.incarnation,
        key,
        peers,
        challenge_every_ms: channel.challenge_every_ms,
    };
    let net = Net::start(socket, settings, inputs).map_err(StartError::failure)?;
    log::info!(
        "peer channel: listening on {}, challenging {} peer(s) every {} ms",
        net.listen,
        net.peers.len(),
        channel.challenge_every_ms
    );
    Ok(Some(net))
}

/// `[metrics] textfile`: its directory must exist (node_exporter's textfile directory).
/// Returns a warning for a name node_exporter would not read.
pub fn check_metrics_dir(path: &Path) -> Result<Option<String>, String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        return Err(format!(
            "[metrics] textfile {}: directory {} does not exist; create it (it is node_exporter's --collector.textfile.directory) or remove [metrics]",
            path.display(),
            dir.display()
        ));
    }
    Ok(path.extension().is_none_or(|e| e != "prom").then(|| {
        format!(
            "[metrics] textfile {}: node_exporter's textfile collector reads only files ending in .prom",
            path.display()
        )
    }))
}

/// How the core may fence each peer, from the configuration.
fn fence_methods(config: &Config) -> BTreeMap<u32, FenceMethodKind> {
    config
        .peers
        .iter()
        .filter_map(|p| match fence_method_for(config, p.id)? {
            FenceMethod::Ipmi(_) => Some((p.id, FenceMethodKind::Ipmi)),
            FenceMethod::Agent(_) => Some((p.id, FenceMethodKind::Agent)),
        })
        .collect()
}

impl Daemon {
    fn main_loop(&mut self, rx: Receiver<Input>, stop: &AtomicBool, hup: &AtomicBool) -> i32 {
        let mut stop_sent = false;
        self.feed(Input::Tick);
        loop {
            if let Some((code, msg)) = self.exit.take() {
                if code == 0 {
                    log::info!("exiting: {msg}");
                } else {
                    log::error!("exiting: {msg}");
                    eprintln!("hbfence: error: {msg}");
                }
                self.send_snapshot();
                self.reporter.notify(&format!("STOPPING=1\nSTATUS={msg}"));
                self.reporter.flush(Duration::from_secs(1));
                crate::logging::flush(Duration::from_secs(1));
                return code;
            }
            if stop.load(Ordering::Relaxed) && !stop_sent {
                stop_sent = true;
                if matches!(self.agent.phase(), Phase::Doomed { .. }) {
                    log::warn!(
                        "stop requested, but a self-fence is pending: it cannot be cancelled (S3)"
                    );
                } else {
                    log::info!("stop requested: writing the leaving record");
                }
                self.feed(Input::StopRequested);
                continue;
            }
            if hup.swap(false, Ordering::Relaxed) {
                self.reload();
            }
            // Wake up for the core's next deadline or the next status snapshot, on time.
            let t = sys::boottime_ms();
            let deadline = self.agent.next_deadline().min(self.next_snapshot_at());
            let wait = MAX_SLEEP.min(Duration::from_millis(deadline.saturating_sub(t).max(1)));
            match rx.recv_timeout(wait) {
                Ok(input) => self.feed(input),
                Err(RecvTimeoutError::Timeout) => self.feed(Input::Tick),
                Err(RecvTimeoutError::Disconnected) => return 1,
            }
            if self.snapshot_due || sys::boottime_ms() >= self.early_snapshot_at() {
                self.send_snapshot();
            }
        }
    }

    /// A snapshot goes out with any wake-up in the last quarter of its interval, so it rides on
    /// a pet or a cycle instead of waking the thread once more; `next_snapshot_at` still
    /// bounds its age when nothing else wakes the thread.
    fn early_snapshot_at(&self) -> u64 {
        self.next_snapshot_at().saturating_sub(self.header.timing.interval_ms / 4)
    }

    /// The status file is rewritten when something a reader looks at changed (an event, a
    /// phase, the coordinator) and at least once per interval: `status --health` and `check`
    /// call it stale after `report::fresh_for_ms(interval)` (see `cli::ops`).
    fn next_snapshot_at(&self) -> u64 {
        self.last_snapshot.saturating_add(self.header.timing.interval_ms)
    }

    fn feed(&mut self, input: Input) {
        // Buffers kept between calls: the steady state allocates nothing for them.
        let (mut queue, mut actions) =
            (std::mem::take(&mut self.queue), std::mem::take(&mut self.actions));
        queue.push(input);
        let before = (self.agent.phase(), self.agent.coordinator(), self.agent.watchdog_armed());
        while let Some(input) = queue.pop() {
            self.stats.saw(&input);
            if matches!(input, Input::IoDone { .. }) {
                // The records written by now, for the next cycle's record to reuse. Never
                // waits (S7): held by an I/O thread just now, they are taken next time.
                if let Ok(mut bin) = self.recycled.try_lock() {
                    bin.drain(..).for_each(|r| self.agent.recycle_record(r));
                }
            }
            if let (Input::Inventory(_), Some(h)) = (&input, &self.inventory) {
                h.taken();
            }
            self.agent.handle_into(now(), input, &mut actions);
            for a in actions.drain(..) {
                if matches!(a, Action::Event(_) | Action::Ready | Action::Exit { .. }) {
                    self.snapshot_due = true;
                }
                if let Some(next) = self.execute(a) {
                    queue.push(next);
                }
            }
        }
        (self.queue, self.actions) = (queue, actions);
        let after = (self.agent.phase(), self.agent.coordinator(), self.agent.watchdog_armed());
        if before != after {
            self.snapshot_due = true;
        }
    }

    fn execute(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::StartIo { volume, cycle, write, read_at } => {
                let req = IoRequest {
                    cycle,
                    started: sys::boottime_ms(),
                    record: write,
                    read_at,
                    peer_mailboxes: self.agent.peer_mailboxes(),
                    members: explicit_members(&self.agent.membership().members),
                    view: self.agent.take_spare_view(),
                };
                if let Some(tx) = self.io.get(volume) {
                    let _ = tx.send(req);
                }
                None
            }
            Action::ArmWatchdog => {
                let secs = self.header.timing.watchdog_timeout_secs();
                let device = self.config.watchdog.device.display().to_string();
                // Before opening: a kill right after the open leaves a timer running.
                let had_marker = std::mem::replace(&mut self.armed_marker, true);
                if !had_marker {
                    write_marker(&self.config.daemon.runtime_dir, ARMED_MARKER, &self.boot);
                }
                let runtime_dir = self.config.daemon.runtime_dir.clone();
                match Watchdog::arm(&self.config.watchdog.device, secs) {
                    Ok(Armed::Guarding(wd)) => {
                        log::info!("watchdog {device} armed with a {secs} s timeout");
                        self.watchdog = Some(wd);
                        Some(Input::WatchdogArmed(Ok(())))
                    }
                    Ok(Armed::Unguarded(why)) => {
                        log::error!(
                            "watchdog {device} not used: {why}. {}",
                            watchdog::UNGUARDED_ADVICE
                        );
                        self.unguarded = Some(why.clone());
                        // Nothing keeps running after close on this device: no reset pending.
                        self.armed_marker = false;
                        remove_marker(&runtime_dir, ARMED_MARKER);
                        Some(Input::WatchdogUnguarded(why))
                    }
                    Err(e) => {
                        // Not opened: the marker says only what an earlier run left.
                        if !had_marker {
                            self.armed_marker = false;
                            remove_marker(&runtime_dir, ARMED_MARKER);
                        }
                        Some(Input::WatchdogArmed(Err(e.to_string())))
                    }
                }
            }
            Action::Pet => {
                let watchdog_ms = self.watchdog_ms();
                if let Some(wd) = &mut self.watchdog {
                    let t = sys::boottime_ms();
                    // The lease, or while surviving an outage the permits (the core's guard).
                    let expiry = self.agent.guard_expiry();
                    let doomed = matches!(self.agent.phase(), Phase::Doomed { .. });
                    if !pet_allowed(expiry, watchdog_ms, doomed, t) {
                        log::warn!(
                            "pet skipped: at the ioctl the lease no longer covers a watchdog period ({} ms left{})",
                            expiry.map_or(0, |e| e.saturating_sub(t)),
                            if doomed { ", doomed" } else { "" }
                        );
                    } else if let Err(e) = wd.keepalive() {
                        log::error!("watchdog keepalive failed: {e}");
                    }
                }
                None
            }
            Action::DisarmWatchdog => {
                if let Some(mut wd) = self.watchdog.take() {
                    if wd.disarm() {
                        log::info!("watchdog disarmed (magic close)");
                        self.armed_marker = false;
                        remove_marker(&self.config.daemon.runtime_dir, ARMED_MARKER);
                    }
                }
                None
            }
            Action::MarkDoomed => {
                write_marker(&self.config.daemon.runtime_dir, DOOMED_MARKER, &self.boot);
                None
            }
            Action::SelfFence { kind, reason } => {
                self.self_fence(kind, reason.as_str());
                None
            }
            Action::StartFence { peer } => {
                self.start_fence(peer);
                None
            }
            Action::PowerOn { peer } => {
                if let Some(method) = fence_method_for(&self.config, peer) {
                    let settings = self.fence_settings.clone();
                    let job = Box::new(move || match fence::power_on(&method, &settings) {
                        Ok(()) => {
                            log::info!("host {peer}: powered on again ([fencing] after = \"on\")")
                        }
                        Err(e) => log::error!("host {peer}: power on failed: {e}"),
                    });
                    if let Err(e) = self.pool.submit(job) {
                        log::error!("host {peer}: power on not started: {e}");
                    }
                }
                None
            }
            Action::Event(e) => {
                let level = match e.kind.as_str() {
                    "fence_failed"
                    | "self_fence"
                    | "storage_lost"
                    | "volume_header_damaged"
                    | "alarm"
                    | "vm_duplicate" => log::Level::Error,
                    "host_suspect" | "fence_started" | "storage_degraded" | "fenced"
                    | "peer_unreachable" => log::Level::Warn,
                    _ => log::Level::Info,
                };
                log::log!(
                    level,
                    "event {} host {} ({}){}{}",
                    e.kind.as_str(),
                    e.host,
                    e.host_name,
                    e.method.map(|m| format!(" method {}", m.as_str())).unwrap_or_default(),
                    if e.detail.is_empty() { String::new() } else { format!(": {}", e.detail) }
                );
                // Never blocks; a full queue is counted by the events driver.
                let _ = self.events.send(e);
                None
            }
            Action::AnswerPeer { peer, token, claim, members_epoch, no_permit_ms } => {
                if let Some(net) = &self.net {
                    net.answer(peer, token, claim, members_epoch, no_permit_ms);
                }
                None
            }
            Action::Ready => {
                if self.unguarded.is_some() {
                    log::warn!("first heartbeat written WITHOUT watchdog protection: ready");
                } else {
                    log::info!("first heartbeat written with the watchdog armed: ready");
                }
                self.reporter.notify("READY=1");
                None
            }
            Action::Exit { code, message } => {
                if code != 0 {
                    if let Some(mut wd) = self.watchdog.take() {
                        // No magic close: the watchdog keeps guarding this host.
                        wd.abandon();
                    }
                }
                self.exit = Some((code, message));
                None
            }
        }
    }

    fn self_fence(&mut self, kind: SelfFenceKind, reason: &str) {
        let letter = match kind {
            SelfFenceKind::Reboot => "b",
            SelfFenceKind::PowerOff => "o",
            SelfFenceKind::Crashdump => "c",
        };
        let trigger = &self.config.self_fence.sysrq_trigger;
        log::error!("SELF-FENCE ({reason}): writing '{letter}' to {}", trigger.display());
        crate::logging::flush(Duration::from_millis(200));
        // Only the real trigger needs sysrq enabled; a test double must not touch the kernel.
        if trigger == Path::new("/proc/sysrq-trigger") {
            let _ = std::fs::write("/proc/sys/kernel/sysrq", "1");
        }
        let r = std::fs::OpenOptions::new()
            .append(true)
            .create(trigger != Path::new("/proc/sysrq-trigger"))
            .open(trigger)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(letter.as_bytes())
            });
        if let Err(e) = r {
            log::error!(
                "self-fence: cannot write {}: {e}; the watchdog will reset this host",
                trigger.display()
            );
        }
    }

    fn start_fence(&mut self, peer: u32) {
        self.stats.fence_attempts += 1;
        let Some(method) = fence_method_for(&self.config, peer) else {
            // The core and the configuration disagree (a reload raced this action): never
            // leave the core waiting for an attempt that does not run.
            let _ = self.inputs.send(Input::FenceDone {
                peer,
                method: FenceMethodKind::None,
                result: Err("no BMC or fence agent configured for this host".into()),
            });
            return;
        };
        let kind = match method {
            FenceMethod::Ipmi(_) => FenceMethodKind::Ipmi,
            FenceMethod::Agent(_) => FenceMethodKind::Agent,
        };
        let settings = self.fence_settings.clone();
        let tx = self.inputs.clone();
        let job = Box::new(move || {
            let result = match fence::power_off_and_confirm(&method, &settings) {
                fence::AttemptOutcome::ConfirmedOff { detail } => Ok(detail),
                fence::AttemptOutcome::Failed { detail } => Err(detail),
            };
            let _ = tx.send(Input::FenceDone { peer, method: kind, result });
        });
        if let Err(e) = self.pool.submit(job) {
            let _ = self.inputs.send(Input::FenceDone {
                peer,
                method: kind,
                result: Err(format!("fencing attempt not started: {e}")),
            });
        }
    }

    /// The watchdog period this host's hardware runs with (as the core counts it).
    fn watchdog_ms(&self) -> u64 {
        let p = self.agent.params();
        p.timing.watchdog_timeout_ms.max(u64::from(p.watchdog_timeout_s) * 1000)
    }

    /// SIGHUP: what can change safely (peers' BMC details, fencing settings) is applied; what
    /// cannot (host id, volumes, watchdog, events, metrics...) is reported.
    fn reload(&mut self) {
        let new = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload refused: {e}; keeping the running configuration");
                return;
            }
        };
        let mut kept = Vec::new();
        if new.host.id != self.config.host.id || new.host.name != self.config.host.name {
            kept.push("[host]");
        }
        if new.volumes.iter().map(|v| &v.path).ne(self.config.volumes.iter().map(|v| &v.path)) {
            kept.push("[[volume]]");
        }
        if new.watchdog.device != self.config.watchdog.device {
            kept.push("[watchdog]");
        }
        if new.self_fence.action != self.config.self_fence.action
            || new.self_fence.sysrq_trigger != self.config.self_fence.sysrq_trigger
        {
            kept.push("[self_fence]");
        }
        if new.coordinator.eligible != self.config.coordinator.eligible {
            kept.push("[coordinator]");
        }
        if new.daemon.runtime_dir != self.config.daemon.runtime_dir
            || new.daemon.realtime_priority != self.config.daemon.realtime_priority
        {
            kept.push("[daemon]");
        }
        if new.metrics != self.config.metrics {
            kept.push("[metrics]");
        }
        // The events driver runs with the settings it started with (log, hooks, timeout).
        if new.events != self.config.events {
            kept.push("[events]");
        }
        // The network thread runs with the socket, key and addresses it started with.
        let addresses =
            |c: &Config| c.peers.iter().map(|p| (p.id, p.address.clone())).collect::<Vec<_>>();
        if new.network != self.config.network || addresses(&new) != addresses(&self.config) {
            kept.push("[network] and peer addresses");
        }
        let mut merged = new.clone();
        merged.host = self.config.host.clone();
        merged.volumes = self.config.volumes.clone();
        merged.watchdog = self.config.watchdog.clone();
        merged.self_fence = self.config.self_fence.clone();
        merged.coordinator = self.config.coordinator.clone();
        merged.daemon = self.config.daemon.clone();
        merged.metrics = self.config.metrics.clone();
        merged.events = self.config.events.clone();
        merged.network = self.config.network.clone();
        for p in &mut merged.peers {
            p.address = self.config.peer(p.id).and_then(|old| old.address.clone());
        }
        // Peers' BMC details and [fencing] apply to the next fencing attempt.
        self.fence_settings = fence_settings(&merged);
        self.config = merged;
        let methods = fence_methods(&self.config);
        let power_on_after = self.config.fencing.after == AfterFence::On;
        self.feed(Input::FencingChanged { methods, power_on_after });
        if kept.is_empty() {
            log::info!("configuration reloaded: peers and [fencing] applied");
        } else {
            log::warn!(
                "configuration reloaded: peers and [fencing] applied; {} changed but need a restart (`systemctl restart hbfence`) to take effect",
                kept.join(", ")
            );
        }
    }

    /// Hands the current state to the reporter (status file, STATUS=, metrics). Copies a
    /// bounded amount (one entry per host of the volume) and never blocks.
    fn send_snapshot(&mut self) {
        let t = now();
        self.last_snapshot = t.mono;
        self.snapshot_due = false;
        let warning = self.agent.survival_warning();
        if warning != self.survival_warning {
            match &warning {
                Some(w) => log::warn!("{w}"),
                None => log::info!("outage survival: the earlier warning no longer applies"),
            }
            self.survival_warning = warning;
        }
        let a = &self.agent;
        let phase = match a.phase() {
            Phase::Probing { .. } => "probing",
            Phase::Running => "running",
            Phase::Leaving => "leaving",
            Phase::Doomed { .. } => "self-fencing",
            Phase::Exited => "exited",
        };
        let mut volumes = self.stats.volumes.clone();
        for (i, v) in volumes.iter_mut().enumerate() {
            v.healthy = a.volume_healthy(i);
            v.error = a.volume_error(i).to_string();
            v.header_damage = a.header_damage(i).map(str::to_string);
        }
        let snap = Snapshot {
            host: a.params().host_id,
            name: a.params().name.clone(),
            incarnation: a.params().incarnation,
            phase,
            doomed: matches!(a.phase(), Phase::Doomed { .. }),
            seq: a.seq(),
            lease_valid: a.lease_valid(t.mono),
            lease_remaining_ms: a.lease_expiry().map(|e| e as i64 - t.mono as i64),
            surviving_ms: a.surviving_since().map(|s| t.mono.saturating_sub(s)),
            survivals: a.survivals(),
            watchdog_armed: a.watchdog_armed(),
            unguarded: self.unguarded.clone(),
            survival_warning: self.survival_warning.clone(),
            coordinator: a.coordinator(),
            volumes,
            peers: a.peer_views(),
            verdicts: a.verdicts().values().cloned().collect(),
            mono_ms: t.mono,
            wall_ms: t.wall,
            update_every_ms: self.header.timing.interval_ms,
            fence_attempts: self.stats.fence_attempts,
            fence_failures: self.stats.fence_failures,
            network: self.net.as_ref().map(|net| network_snapshot(net, a, t.mono)),
            membership: a.membership().clone(),
            vms: a.own_vms(),
            inventory_error: a.inventory_error().map(str::to_string),
            vm_duplicates: a.vm_duplicates().to_vec(),
        };
        self.reporter.snapshot(snap);
    }
}

/// The peer channel for the reporter: every configured peer, reachable or not.
fn network_snapshot(net: &Net, agent: &Agent, now: u64) -> NetworkSnapshot {
    let views = agent.channel_views();
    NetworkSnapshot {
        listen: net.listen.to_string(),
        counters: net.counters(),
        peers: net
            .peers
            .iter()
            .map(|(&id, addr)| {
                let v = views.get(&id);
                let last = v.and_then(|v| v.last);
                ChannelPeerStats {
                    id,
                    address: addr.to_string(),
                    reachable: v.is_some_and(|v| v.reachable),
                    answer_age_ms: last.map(|a| now.saturating_sub(a.received_at)),
                    round_trip_ms: last.map(|a| a.received_at.saturating_sub(a.challenge_sent_at)),
                    claim: last.map(|a| a.claim),
                    incarnation: last.map(|a| a.incarnation),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pet_needs_the_lease_to_cover_a_watchdog_period_at_the_ioctl() {
        // Lease ends at 10 000 ms, watchdog period 2 000 ms.
        assert!(pet_allowed(Some(10_000), 2_000, false, 7_000));
        assert!(pet_allowed(Some(10_000), 2_000, false, 8_000));
        // The core decided at 7 950 ms, earlier actions of the batch took 100 ms: too late.
        assert!(!pet_allowed(Some(10_000), 2_000, false, 8_050));
        assert!(!pet_allowed(Some(10_000), 2_000, false, 12_000));
        assert!(!pet_allowed(None, 2_000, false, 0), "never a lease: never a pet");
        assert!(!pet_allowed(Some(10_000), 2_000, true, 1_000), "doomed: never a pet");
        assert!(!pet_allowed(Some(10_000), 2_000, false, sys::CLOCK_FAILED_MS));
    }

    #[test]
    fn driver_counts_latencies_errors_and_failed_attempts() {
        let mut s = DriverStats {
            volumes: vec![VolumeStats::default(), VolumeStats::default()],
            ..Default::default()
        };
        let view = || crate::core::view::VolumeView::default();
        s.saw(&Input::IoDone {
            volume: 0,
            cycle: 1,
            started: 1000,
            write: Some(Ok(1030)),
            read: Ok((1045, view())),
        });
        s.saw(&Input::IoDone {
            volume: 1,
            cycle: 1,
            started: 1000,
            write: Some(Err("EIO".into())),
            read: Err("EIO".into()),
        });
        s.saw(&Input::IoDone {
            volume: 1,
            cycle: 2,
            started: 2000,
            write: None,
            read: Ok((2007, view())),
        });
        // An unknown volume index is ignored, not a panic.
        s.saw(&Input::IoDone {
            volume: 9,
            cycle: 1,
            started: 0,
            write: None,
            read: Err("x".into()),
        });
        s.saw(&Input::FenceDone {
            peer: 2,
            method: FenceMethodKind::Ipmi,
            result: Err("no".into()),
        });
        s.saw(&Input::FenceDone {
            peer: 2,
            method: FenceMethodKind::Ipmi,
            result: Ok("off".into()),
        });
        assert_eq!(s.volumes[0].write_latency_ms, Some(30));
        assert_eq!(s.volumes[0].read_latency_ms, Some(15));
        assert_eq!(s.volumes[0].io_errors, 0);
        assert_eq!(s.volumes[1].io_errors, 2);
        assert_eq!(s.volumes[1].read_latency_ms, Some(7));
        assert_eq!(s.fence_failures, 1);
    }

    #[test]
    fn pool_size_is_bounded() {
        assert_eq!(pool_workers(0), 2);
        assert_eq!(pool_workers(5), 5);
        assert_eq!(pool_workers(249), 8);
    }
}
