//! The per-host decision state machine: own lease, watchdog petting, self-fencing, peer
//! liveness, coordinator election and fencing decisions.
//!
//! It is fed with [`Input`]s stamped with the local monotonic time and answers with
//! [`Action`]s; it performs no I/O and reads no clock, so the daemon and the cluster simulation
//! run exactly this code. Each safety invariant of the design brief is enforced here:
//! S1 in `judge_peers`, S2 by using only `Now::mono` for decisions, S3 in `doom`, S4 in
//! `volume_health_changed`/`judge_from`, S5 in `observe`, S8 in `fence_done`.

use super::events::{Event, EventKind};
use super::format::{
    self, caps, BootId, ClusterId, Command, FenceMethodKind, Heartbeat, HostState, Verdict,
    VerdictKind,
};
use super::timing::Timing;
use super::view::{newest_coordinator_record, Slot, VolumeView};
use std::collections::{BTreeMap, VecDeque};

/// Local time: monotonic milliseconds (decisions) and wall milliseconds (for people, S2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: u64,
    pub wall: u64,
}

/// How this host resets itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfFenceKind {
    Reboot,
    PowerOff,
    Crashdump,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoomReason {
    /// The own lease expired (storage lost or too slow).
    LeaseExpired,
    /// A fence request (poison pill) arrived in the mailbox.
    Request,
    /// A previous agent on this boot expired its lease or self-fenced (S3).
    PendingFromEarlierRun,
}

impl DoomReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DoomReason::LeaseExpired => "lease expired",
            DoomReason::Request => "fence request in mailbox",
            DoomReason::PendingFromEarlierRun => {
                "an earlier agent on this boot lost its lease or self-fenced"
            }
        }
    }
}

/// Knobs that break safety on purpose: only the simulation uses them, to prove it can fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnsafeTestKnobs {
    /// Judge peers even while the own I/O is in trouble (disables S4).
    pub judge_through_trouble: bool,
}

#[derive(Clone, Debug)]
pub struct AgentParams {
    pub host_id: u32,
    pub name: String,
    pub cluster: ClusterId,
    pub max_hosts: u32,
    pub timing: Timing,
    pub volumes: usize,
    pub boot_id: BootId,
    pub incarnation: u64,
    pub eligible: bool,
    pub self_fence: SelfFenceKind,
    /// Peers this host can power off, and how.
    pub fence_methods: BTreeMap<u32, FenceMethodKind>,
    /// Watchdog timeout this host will advertise once armed.
    pub watchdog_timeout_s: u16,
    /// The runtime marker says an earlier agent on this boot was doomed (S3).
    pub doomed_marker: bool,
    /// `[fencing] after = "on"`: power peers back on after a confirmed off.
    pub power_on_after: bool,
    pub knobs: UnsafeTestKnobs,
}

/// What the driver reports back to the core.
#[derive(Clone, Debug)]
pub enum Input {
    /// Time passes (the daemon ticks several times a second).
    Tick,
    /// One I/O cycle on a volume finished: optional write of the own block, then one read of
    /// every heartbeat and mailbox. Times are local monotonic ms.
    IoDone {
        volume: usize,
        cycle: u64,
        started: u64,
        write: Option<Result<u64, String>>,
        read: Result<(u64, VolumeView), String>,
    },
    /// Result of arming the watchdog after the first successful heartbeat.
    WatchdogArmed(Result<(), String>),
    /// The device opened, but its timer stops when the device is closed (no magic close and
    /// nowayout off): a crashed agent would leave the host unguarded, so the driver closed it
    /// again and this host runs without a watchdog (never advertised, never petted; S3).
    WatchdogUnguarded(String),
    /// One fencing attempt on a peer finished.
    FenceDone { peer: u32, method: FenceMethodKind, result: Result<String, String> },
    /// SIGTERM / SIGINT.
    StopRequested,
    /// SIGHUP reloaded the peers' fencing methods and `[fencing] after`.
    FencingChanged { methods: BTreeMap<u32, FenceMethodKind>, power_on_after: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start an I/O cycle on a volume (the volume's thread is idle).
    StartIo {
        volume: usize,
        cycle: u64,
        write: Option<Box<Heartbeat>>,
    },
    ArmWatchdog,
    Pet,
    /// Magic close: the host left cleanly.
    DisarmWatchdog,
    /// Record the doom on this boot (runtime marker) before anything else.
    MarkDoomed,
    SelfFence {
        kind: SelfFenceKind,
        reason: DoomReason,
    },
    /// Power a peer off through its BMC / fence agent and confirm (one attempt).
    StartFence {
        peer: u32,
    },
    /// `[fencing] after = "on"`: power the peer back on after a confirmed off.
    PowerOn {
        peer: u32,
    },
    Event(Event),
    /// First heartbeat written with the watchdog armed: tell systemd.
    Ready,
    /// Stop the process.
    Exit {
        code: i32,
        message: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading only: watching the own block for another writer before writing.
    Probing {
        since: u64,
    },
    Running,
    /// Stopping cleanly: writing the `leaving` record.
    Leaving,
    /// Lease expired or fence request: never pets again (S3).
    Doomed {
        since: u64,
        reason: DoomReason,
        fence_at: u64,
        fenced: bool,
    },
    Exited,
}

/// What this host believes about a peer right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerStatus {
    /// Block empty: never joined.
    Absent,
    Alive,
    Suspect,
    /// Stopped cleanly: never fenced.
    Left,
    /// An operator cleared it: not judged until its heartbeat moves again.
    Cleared,
}

impl PeerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerStatus::Absent => "absent",
            PeerStatus::Alive => "alive",
            PeerStatus::Suspect => "suspect",
            PeerStatus::Left => "left",
            PeerStatus::Cleared => "cleared",
        }
    }
}

#[derive(Clone, Debug)]
pub struct PeerView {
    pub id: u32,
    pub name: String,
    pub status: PeerStatus,
    pub incarnation: u64,
    pub seq: u64,
    pub state: Option<HostState>,
    pub caps: u32,
    pub wall_ms: u64,
    /// How long no progress was observed (judged time only, S4).
    pub stale_ms: u64,
}

#[derive(Clone, Debug, Default)]
struct Peer {
    /// Last (incarnation, seq) seen on each volume.
    last: Vec<Option<(u64, u64)>>,
    /// Local time of the first read that showed the latest new value.
    last_change: u64,
    record: Option<Heartbeat>,
    status: Option<PeerStatus>,
    /// Value at which an operator cleared the peer.
    cleared_at: Option<(u64, u64)>,
    /// Highest sequence number seen of each recent incarnation.
    seen: VecDeque<(u64, u64)>,
}

#[derive(Clone, Debug, Default)]
struct Vol {
    /// (cycle, start, sequence number written) of the I/O under way.
    in_flight: Option<(u64, u64, Option<u64>)>,
    /// Start of the last verified write (lease renewal point).
    last_ok_start: Option<u64>,
    /// Sequence number of the last verified write.
    last_ok_seq: Option<u64>,
    healthy: bool,
    last_error: String,
    /// After a failed cycle, retry this volume at this time instead of a full interval later.
    retry_at: Option<u64>,
    /// Start of the latest timely read: the volume's content is known at least up to then.
    read_ok_start: Option<u64>,
}

#[derive(Clone, Debug, Default)]
struct FenceJob {
    in_flight: bool,
    attempts: u32,
    next_attempt_at: u64,
    last_detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Storage {
    Ok,
    Degraded,
    Lost,
}

/// (incarnation, sequence) of a heartbeat record.
type RecordId = (u64, u64);

const PET_EVERY_MS: u64 = 500;
/// Incarnations remembered per peer (restarts within the time a volume may lag).
const SEEN_INCARNATIONS: usize = 8;
/// Nonces remembered per mailbox.
const MAILBOX_HISTORY: usize = 16;
/// Exit codes the core asks for (sysexits.h values, see `daemon::exit_code`).
pub const EXIT_UNAVAILABLE: i32 = 69;
pub const EXIT_HOST_ID_IN_USE: i32 = 76;
/// Pause before retrying a volume whose cycle failed.
const RETRY_MS: u64 = 250;
const FENCE_BACKOFF_MAX_MS: u64 = 30_000;

pub struct Agent {
    p: AgentParams,
    phase: Phase,
    seq: u64,
    cycle: u64,
    next_cycle_at: u64,
    vols: Vec<Vol>,
    peers: BTreeMap<u32, Peer>,
    verdicts: BTreeMap<u32, Verdict>,
    verdict_gen: u32,
    /// Generation of the verdict table in the last record sent to the volumes.
    published_gen: u32,
    inherited: bool,
    coordinator: Option<u32>,
    judge_from: u64,
    armed: bool,
    arming: bool,
    /// The watchdog device cannot guard this host (it stops on close): run without it.
    unguarded: bool,
    ready_sent: bool,
    last_pet: Option<u64>,
    /// Recent nonces seen in every mailbox (messages present while probing are history).
    mailbox_seen: BTreeMap<u32, Vec<u64>>,
    ack_nonce: u64,
    /// Per volume: when the probe first read it and what the own block held then.
    probe_first: Vec<Option<(u64, Option<RecordId>)>>,
    /// Sequence number of the first `leaving` record.
    leave_seq: Option<u64>,
    fences: BTreeMap<u32, FenceJob>,
    storage: Storage,
    /// A fence request may ask for power-off instead of the configured action.
    pending_kind: Option<SelfFenceKind>,
    actions: Vec<Action>,
    now: Now,
}

impl Agent {
    pub fn new(p: AgentParams, now: Now) -> Agent {
        let vols = vec![Vol { healthy: true, ..Vol::default() }; p.volumes.max(1)];
        let mut agent = Agent {
            phase: Phase::Probing { since: now.mono },
            seq: 0,
            cycle: 0,
            next_cycle_at: now.mono,
            vols,
            peers: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            verdict_gen: 0,
            published_gen: 0,
            inherited: false,
            coordinator: None,
            judge_from: now.mono,
            armed: false,
            arming: false,
            unguarded: false,
            ready_sent: false,
            last_pet: None,
            mailbox_seen: BTreeMap::new(),
            ack_nonce: 0,
            probe_first: Vec::new(),
            leave_seq: None,
            fences: BTreeMap::new(),
            storage: Storage::Ok,
            pending_kind: None,
            actions: Vec::new(),
            now,
            p,
        };
        if agent.p.doomed_marker {
            agent.doom(DoomReason::PendingFromEarlierRun);
        }
        agent
    }

    /// Write quorum and read quorum for the number of volumes (W + R > N).
    pub fn quorums(volumes: usize) -> (usize, usize) {
        match volumes {
            0 | 1 => (1, 1),
            2 => (1, 2),
            _ => (2, 2),
        }
    }

    pub fn params(&self) -> &AgentParams {
        &self.p
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn seq(&self) -> u64 {
        self.seq
    }
    pub fn coordinator(&self) -> Option<u32> {
        self.coordinator
    }
    pub fn is_coordinator(&self) -> bool {
        self.coordinator == Some(self.p.host_id)
    }
    pub fn verdicts(&self) -> &BTreeMap<u32, Verdict> {
        &self.verdicts
    }
    pub fn watchdog_armed(&self) -> bool {
        self.armed
    }
    pub fn volume_healthy(&self, v: usize) -> bool {
        self.vols.get(v).is_some_and(|v| v.healthy)
    }
    pub fn volume_error(&self, v: usize) -> &str {
        self.vols.get(v).map(|v| v.last_error.as_str()).unwrap_or("")
    }

    /// The next time the core needs to run even without input (next cycle or retry).
    pub fn next_deadline(&self) -> u64 {
        // A busy volume's retry waits for its I/O to finish, which is an input of its own.
        self.vols
            .iter()
            .filter(|v| v.in_flight.is_none())
            .filter_map(|v| v.retry_at)
            .fold(self.next_cycle_at, u64::min)
    }

    /// End of the own lease, if a write quorum of volumes ever renewed it.
    pub fn lease_expiry(&self) -> Option<u64> {
        let (w, _) = Self::quorums(self.vols.len());
        let mut ends: Vec<u64> = self
            .vols
            .iter()
            .filter_map(|v| v.last_ok_start.map(|s| s + self.p.timing.lease_timeout_ms))
            .collect();
        if ends.len() < w {
            return None;
        }
        ends.sort_unstable_by(|a, b| b.cmp(a));
        Some(ends[w - 1])
    }

    pub fn lease_valid(&self, now: u64) -> bool {
        self.lease_expiry().is_some_and(|e| now < e)
    }

    fn doomed(&self) -> bool {
        matches!(self.phase, Phase::Doomed { .. })
    }

    /// Every peer this host has seen, with its current judgement.
    pub fn peer_views(&self) -> Vec<PeerView> {
        self.peers
            .iter()
            .map(|(&id, p)| {
                let r = p.record.as_ref();
                PeerView {
                    id,
                    name: r.map(|r| r.name.clone()).unwrap_or_default(),
                    status: p.status.unwrap_or(PeerStatus::Absent),
                    incarnation: r.map_or(0, |r| r.incarnation),
                    seq: r.map_or(0, |r| r.seq),
                    state: r.map(|r| r.state),
                    caps: r.map_or(0, |r| r.caps),
                    wall_ms: r.map_or(0, |r| r.wall_ms),
                    stale_ms: self.stale_ms(p),
                }
            })
            .collect()
    }

    /// Feeds one input at local time `now`; returns the actions to carry out, in order.
    pub fn handle(&mut self, now: Now, input: Input) -> Vec<Action> {
        // Monotonic time never goes backwards, even if a driver misbehaves.
        self.now = Now { mono: now.mono.max(self.now.mono), wall: now.wall };
        match input {
            Input::Tick => {}
            Input::IoDone { volume, cycle, started, write, read } => {
                self.io_done(volume, cycle, started, write, read)
            }
            Input::WatchdogArmed(r) => self.watchdog_armed_result(r),
            Input::WatchdogUnguarded(why) => self.watchdog_unguarded(why),
            Input::FenceDone { peer, method, result } => self.fence_done(peer, method, result),
            Input::StopRequested => self.stop_requested(),
            Input::FencingChanged { methods, power_on_after } => {
                self.fencing_changed(methods, power_on_after)
            }
        }
        self.step();
        std::mem::take(&mut self.actions)
    }

    fn event(
        &mut self,
        kind: EventKind,
        host: u32,
        method: Option<FenceMethodKind>,
        detail: String,
    ) {
        let host_name = if host == self.p.host_id {
            self.p.name.clone()
        } else {
            self.peers
                .get(&host)
                .and_then(|p| p.record.as_ref())
                .map(|r| r.name.clone())
                .unwrap_or_default()
        };
        self.actions.push(Action::Event(Event {
            kind,
            host,
            host_name,
            method,
            detail,
            mono_ms: self.now.mono,
            wall_ms: self.now.wall,
        }));
    }

    /// Everything that depends only on time: leases, pets, cycles, judgements.
    fn step(&mut self) {
        let now = self.now.mono;
        self.check_stuck_io(now);
        self.check_overdue_io(now);
        match self.phase {
            Phase::Probing { .. } | Phase::Exited => {}
            Phase::Running | Phase::Leaving => {
                if self.lease_expiry().is_some_and(|e| now >= e) {
                    self.doom(DoomReason::LeaseExpired);
                }
            }
            Phase::Doomed { since, reason, fence_at, fenced } => {
                if !fenced && now >= fence_at {
                    self.phase = Phase::Doomed { since, reason, fence_at, fenced: true };
                    self.actions.push(Action::SelfFence { kind: self.self_fence_kind(), reason });
                }
            }
        }
        if self.phase == Phase::Leaving {
            self.maybe_finish_leaving();
        }
        self.maybe_pet(now);
        self.update_storage_state();
        if !matches!(self.phase, Phase::Probing { .. } | Phase::Exited) {
            self.judge_peers();
        }
        self.schedule_io(now);
    }

    fn self_fence_kind(&self) -> SelfFenceKind {
        self.pending_kind.unwrap_or(self.p.self_fence)
    }

    fn maybe_pet(&mut self, now: u64) {
        // S3: only while the lease is valid, never once doomed.
        if !self.armed || self.doomed() || !self.lease_valid(now) {
            return;
        }
        if self.last_pet.is_none_or(|t| now >= t + PET_EVERY_MS) {
            self.last_pet = Some(now);
            self.actions.push(Action::Pet);
        }
    }

    /// The lease is gone: never pet again, mark the boot, reset the host (S3).
    fn doom(&mut self, reason: DoomReason) {
        if self.doomed() || self.phase == Phase::Exited {
            return;
        }
        let now = self.now.mono;
        // A fence request first writes its acknowledgement (bounded by io_timeout); a lost
        // lease means storage is gone, so the reset happens at once.
        let fence_at =
            if reason == DoomReason::Request { now + self.p.timing.io_timeout_ms } else { now };
        self.phase = Phase::Doomed { since: now, reason, fence_at, fenced: false };
        self.actions.push(Action::MarkDoomed);
        self.event(EventKind::SelfFence, self.p.host_id, None, reason.as_str().to_string());
        if fence_at <= now {
            self.phase = Phase::Doomed { since: now, reason, fence_at, fenced: true };
            self.actions.push(Action::SelfFence { kind: self.self_fence_kind(), reason });
        }
    }

    fn stop_requested(&mut self) {
        match self.phase {
            Phase::Probing { .. } => {
                self.phase = Phase::Exited;
                self.actions.push(Action::Exit {
                    code: 0,
                    message: "stopped before the first heartbeat".into(),
                });
            }
            Phase::Running => {
                if !self.watchdog_settled() && self.seq == 0 {
                    self.phase = Phase::Exited;
                    self.actions.push(Action::Exit {
                        code: 0,
                        message: "stopped before the first heartbeat".into(),
                    });
                    return;
                }
                self.phase = Phase::Leaving;
                // Write the leaving record now instead of waiting for the next interval.
                self.next_cycle_at = self.now.mono;
            }
            // S3: a pending self-fence cannot be cancelled by stopping the agent.
            Phase::Leaving | Phase::Doomed { .. } | Phase::Exited => {}
        }
    }

    /// The leaving record must be verified on a write quorum before the watchdog is disarmed:
    /// otherwise peers would later fence a host whose watchdog no longer guards it (S1).
    fn maybe_finish_leaving(&mut self) {
        let (w, _) = Self::quorums(self.vols.len());
        // Only a verified write of the leaving record itself counts: a cycle already in flight
        // when the stop came (even one started in the same millisecond) wrote an `active`
        // record, and disarming after it leaves peers a record that says "watchdog armed" for a
        // host that is no longer guarded (S1).
        let Some(leave_seq) = self.leave_seq else { return };
        let written =
            self.vols.iter().filter(|v| v.last_ok_seq.is_some_and(|s| s >= leave_seq)).count();
        if written >= w {
            self.phase = Phase::Exited;
            if self.armed {
                self.actions.push(Action::DisarmWatchdog);
                self.armed = false;
            }
            self.actions.push(Action::Exit { code: 0, message: "left the cluster cleanly".into() });
        }
    }

    fn watchdog_armed_result(&mut self, r: Result<(), String>) {
        self.arming = false;
        match r {
            Ok(()) => {
                self.armed = true;
                // Publish the armed watchdog at the next cycle, right away.
                self.next_cycle_at = self.now.mono;
            }
            Err(e) => {
                self.phase = Phase::Exited;
                // The device may come back (driver reload, holder stopped): a restart may help.
                self.actions.push(Action::Exit {
                    code: EXIT_UNAVAILABLE,
                    message: format!("cannot arm the watchdog: {e}"),
                });
            }
        }
    }

    /// The driver logged why; peers learn it from the record (no `watchdog armed` flag), so
    /// they never apply the watchdog bound to this host (S1).
    fn watchdog_unguarded(&mut self, _why: String) {
        self.arming = false;
        self.unguarded = true;
        self.armed = false;
        self.next_cycle_at = self.now.mono;
    }

    /// Arming is over: either the watchdog guards this host or it cannot (and is not used).
    fn watchdog_settled(&self) -> bool {
        self.armed || self.unguarded
    }

    pub fn watchdog_unusable(&self) -> bool {
        self.unguarded
    }

    fn check_stuck_io(&mut self, now: u64) {
        let limit = self.p.timing.io_timeout_ms;
        let mut changed = false;
        for v in &mut self.vols {
            if let Some((_, started, _)) = v.in_flight {
                if now >= started + limit && v.healthy {
                    v.healthy = false;
                    v.last_error = format!("I/O stuck for more than {} ms", limit);
                    changed = true;
                }
            }
        }
        if changed {
            self.volume_health_changed();
        }
    }

    /// S4: an own I/O cycle still running one interval after its start is not a failure yet
    /// (that takes io_timeout), but this host observes nobody meanwhile, and its peers' writes
    /// were most likely held up by the same stall: while fewer than a read quorum of volumes
    /// are healthy and timely, peer timers stay restarted.
    fn check_overdue_io(&mut self, now: u64) {
        if self.p.knobs.judge_through_trouble {
            return;
        }
        let (_, r) = Self::quorums(self.vols.len());
        let interval = self.p.timing.interval_ms;
        let timely = self
            .vols
            .iter()
            .filter(|v| v.healthy && v.in_flight.is_none_or(|(_, s, _)| now < s + interval))
            .count();
        if timely < r {
            self.judge_from = now;
        }
    }

    /// S4: any change of the own storage health restarts every peer timer.
    fn volume_health_changed(&mut self) {
        if !self.p.knobs.judge_through_trouble {
            self.judge_from = self.now.mono;
        }
    }

    fn healthy_volumes(&self) -> usize {
        self.vols.iter().filter(|v| v.healthy).count()
    }

    /// True while this host may judge peers (S4): a read quorum of healthy volumes.
    fn can_judge(&self) -> bool {
        let (_, r) = Self::quorums(self.vols.len());
        self.p.knobs.judge_through_trouble || self.healthy_volumes() >= r
    }

    fn io_healthy(&self) -> bool {
        let (w, r) = Self::quorums(self.vols.len());
        self.p.knobs.judge_through_trouble || self.healthy_volumes() >= w.max(r)
    }

    fn update_storage_state(&mut self) {
        if matches!(self.phase, Phase::Probing { .. } | Phase::Exited) {
            return;
        }
        let (w, r) = Self::quorums(self.vols.len());
        let healthy = self.healthy_volumes();
        let state = if healthy == self.vols.len() {
            Storage::Ok
        } else if healthy >= w.max(r) {
            Storage::Degraded
        } else {
            Storage::Lost
        };
        if state != self.storage {
            let detail = self
                .vols
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.healthy)
                .map(|(i, v)| format!("volume {i}: {}", v.last_error))
                .collect::<Vec<_>>()
                .join("; ");
            let kind = match state {
                Storage::Ok => EventKind::StorageRestored,
                Storage::Degraded => EventKind::StorageDegraded,
                Storage::Lost => EventKind::StorageLost,
            };
            self.storage = state;
            self.event(kind, self.p.host_id, None, detail);
        }
    }

    fn schedule_io(&mut self, now: u64) {
        if self.phase == Phase::Exited {
            return;
        }
        let due = now >= self.next_cycle_at;
        // A coordinator publishes a changed verdict table at once, not an interval later.
        let publish = self.is_coordinator()
            && self.verdict_gen != self.published_gen
            && self.phase == Phase::Running;
        // A volume whose last cycle failed is retried early: a short storage blip then costs
        // the lease only its own length, not an extra interval.
        let retry: Vec<usize> = (0..self.vols.len())
            .filter(|&v| {
                let vol = &self.vols[v];
                vol.in_flight.is_none() && (publish || vol.retry_at.is_some_and(|t| now >= t))
            })
            .collect();
        if !due && retry.is_empty() {
            return;
        }
        let interval = self.p.timing.interval_ms;
        self.cycle += 1;
        if due {
            self.next_cycle_at = if now >= self.next_cycle_at + interval {
                now + interval
            } else {
                self.next_cycle_at + interval
            };
        }
        let write = match self.phase {
            Phase::Probing { .. } | Phase::Exited => None,
            // A doomed host writes once more only to acknowledge a fence request.
            Phase::Doomed { fenced, reason, .. } => {
                if reason == DoomReason::Request && !fenced {
                    Some(HostState::SelfFencing)
                } else {
                    None
                }
            }
            Phase::Leaving => Some(HostState::Leaving),
            Phase::Running => {
                Some(if self.watchdog_settled() { HostState::Active } else { HostState::Starting })
            }
        };
        let record = write.map(|state| {
            self.seq += 1;
            if state == HostState::Leaving && self.leave_seq.is_none() {
                self.leave_seq = Some(self.seq);
            }
            Box::new(self.record(state))
        });
        let written = record.as_ref().map(|r| r.seq);
        for v in 0..self.vols.len() {
            // A stuck I/O is never queued behind: this volume skips the cycle.
            if self.vols[v].in_flight.is_some() || (!due && !retry.contains(&v)) {
                continue;
            }
            self.vols[v].retry_at = None;
            if written.is_some() {
                self.published_gen = self.verdict_gen;
            }
            self.vols[v].in_flight = Some((self.cycle, now, written));
            self.actions.push(Action::StartIo {
                volume: v,
                cycle: self.cycle,
                write: record.clone(),
            });
        }
    }

    fn record(&self, state: HostState) -> Heartbeat {
        let mut c = 0;
        if self.armed {
            c |= caps::WATCHDOG_ARMED;
        }
        if self.p.eligible {
            c |= caps::COORDINATOR_ELIGIBLE;
        }
        if self.is_coordinator() {
            c |= caps::COORDINATOR;
        }
        if self.io_healthy() {
            c |= caps::IO_HEALTHY;
        }
        let mut verdicts: Vec<Verdict> = if self.is_coordinator() {
            self.verdicts.values().copied().collect()
        } else {
            Vec::new()
        };
        verdicts.truncate(format::MAX_VERDICTS);
        Heartbeat {
            cluster: self.p.cluster,
            host_id: self.p.host_id,
            incarnation: self.p.incarnation,
            seq: self.seq,
            wall_ms: self.now.wall,
            mono_ms: self.now.mono,
            boot_id: self.p.boot_id,
            state,
            watchdog_timeout_s: if self.armed { self.p.watchdog_timeout_s } else { 0 },
            caps: c,
            ack_nonce: self.ack_nonce,
            coordinator: self.coordinator.unwrap_or(0),
            verdict_gen: self.verdict_gen,
            name: self.p.name.clone(),
            verdicts,
        }
    }

    fn io_done(
        &mut self,
        v: usize,
        cycle: u64,
        started: u64,
        write: Option<Result<u64, String>>,
        read: Result<(u64, VolumeView), String>,
    ) {
        if v >= self.vols.len() {
            return;
        }
        let mut written_seq = None;
        if let Some((c, _, seq)) = self.vols[v].in_flight {
            if c == cycle {
                self.vols[v].in_flight = None;
                written_seq = seq;
            }
        }
        let limit = self.p.timing.io_timeout_ms;
        let mut failure: Option<String> = None;
        if let Some(Err(e)) = &write {
            failure = Some(format!("write failed: {e}"));
        }
        let view = match read {
            Ok((finished, view)) => {
                // The whole cycle counts as one I/O: slower than io_timeout is a failure, even
                // if it completed (a late success must not renew the lease).
                if finished > started + limit {
                    failure.get_or_insert(format!(
                        "I/O cycle took {} ms (io_timeout {} ms)",
                        finished - started,
                        limit
                    ));
                    None
                } else {
                    Some((finished, view))
                }
            }
            Err(e) => {
                failure.get_or_insert(format!("read failed: {e}"));
                None
            }
        };
        let mut renewed = false;
        if let (Some(Ok(_)), Some((_, view))) = (&write, &view) {
            if failure.is_none() {
                // The write is verified only if the read shows exactly what was written:
                // a torn or lost write must not renew the lease.
                match view.record(self.p.host_id) {
                    Some(r)
                        if r.incarnation == self.p.incarnation && Some(r.seq) == written_seq =>
                    {
                        renewed = true;
                    }
                    Some(r) if r.incarnation != self.p.incarnation => {
                        self.collision(r.incarnation, r.seq);
                        return;
                    }
                    _ => {
                        failure =
                            Some("write not visible when read back (torn or lost write)".into())
                    }
                }
            }
        }
        let was_healthy = self.vols[v].healthy;
        match &failure {
            Some(e) => {
                self.vols[v].healthy = false;
                self.vols[v].last_error.clone_from(e);
                let wait = RETRY_MS.min(self.p.timing.interval_ms);
                self.vols[v].retry_at = Some(self.now.mono + wait);
            }
            None => {
                if renewed {
                    self.vols[v].last_ok_start = Some(started);
                    self.vols[v].last_ok_seq = written_seq;
                }
                if view.is_some() {
                    self.vols[v].read_ok_start = Some(started);
                }
                self.vols[v].healthy = true;
            }
        }
        if was_healthy != self.vols[v].healthy {
            self.volume_health_changed();
        }
        if renewed {
            self.after_renewal();
        }
        if let Some((finished, view)) = view {
            if matches!(self.phase, Phase::Probing { .. }) {
                self.probe(v, finished, &view);
            }
            self.observe(v, finished, &view);
        }
    }

    fn after_renewal(&mut self) {
        // The acknowledgement of a fence request is on the volume: reset now.
        if let Phase::Doomed { since, reason: DoomReason::Request, fenced: false, .. } = self.phase
        {
            self.phase = Phase::Doomed {
                since,
                reason: DoomReason::Request,
                fence_at: self.now.mono,
                fenced: false,
            };
        }
        if matches!(self.phase, Phase::Running) {
            if !self.watchdog_settled() && !self.arming {
                self.arming = true;
                self.actions.push(Action::ArmWatchdog);
            }
            if self.watchdog_settled() && !self.ready_sent {
                self.ready_sent = true;
                self.actions.push(Action::Ready);
            }
        }
    }

    fn collision(&mut self, other_incarnation: u64, other_seq: u64) {
        self.phase = Phase::Exited;
        // An armed watchdog is left running (no magic close): a host that cannot keep its
        // heartbeat must not stay unguarded.
        let message = format!(
            "host id {} is in use by another writer (incarnation {other_incarnation}, seq {other_seq}); two hosts with one id would defeat fencing: give every host its own [host] id",
            self.p.host_id
        );
        self.actions.push(Action::Exit { code: EXIT_HOST_ID_IN_USE, message });
    }

    /// Startup: the own block must stay still for 1.5 intervals, and an expired lease of an
    /// earlier agent on this boot dooms this one (S3).
    fn probe(&mut self, v: usize, finished: u64, view: &VolumeView) {
        let own = view.record(self.p.host_id);
        let value = own.map(|r| (r.incarnation, r.seq));
        if let Some(r) = own {
            if r.boot_id == self.p.boot_id && r.state != HostState::Leaving {
                // Only a run that armed the watchdog can leave a reset pending: a record of
                // one that never did (it could not open the device and exited) is history.
                let expired = r.mono_ms + self.p.timing.lease_timeout_ms <= self.now.mono
                    && r.caps & caps::WATCHDOG_ARMED != 0;
                if r.state == HostState::SelfFencing || expired {
                    self.doom(DoomReason::PendingFromEarlierRun);
                    return;
                }
            }
        }
        if let Some(r) = own {
            // Continue the sequence of an earlier run so observers see progress, not a rewind.
            self.seq = self.seq.max(r.seq);
        }
        if self.probe_first.len() < self.vols.len() {
            self.probe_first.resize(self.vols.len(), None);
        }
        // Volumes may legitimately differ (one missed writes); only a change on the same
        // volume while nobody of ours writes is another writer.
        match self.probe_first[v] {
            None => self.probe_first[v] = Some((finished, value)),
            Some((first_at, first_value)) => {
                if value != first_value {
                    if let Some(r) = own {
                        // A write of this boot's own earlier agent, started before this agent
                        // existed and stuck in flight when it was killed, may land late (up to
                        // io_timeout): not another host, watch again. Anything written since
                        // this agent started is a live second writer.
                        let started = match self.phase {
                            Phase::Probing { since } => since,
                            _ => 0,
                        };
                        if r.boot_id != self.p.boot_id || r.mono_ms >= started {
                            self.collision(r.incarnation, r.seq);
                            return;
                        }
                        self.probe_first[v] = Some((finished, value));
                        return;
                    }
                }
                let watched = finished.saturating_sub(first_at);
                if watched >= self.p.timing.interval_ms * 3 / 2 {
                    self.phase = Phase::Running;
                    self.next_cycle_at = self.now.mono;
                    if !self.inherited {
                        self.inherit_verdicts(view);
                    }
                }
            }
        }
    }

    /// A host that starts adopts the verdict table with the highest generation on the volume.
    fn inherit_verdicts(&mut self, view: &VolumeView) {
        self.inherited = true;
        if let Some(r) = newest_coordinator_record(view, Some(self.p.host_id)) {
            self.adopt_verdicts(r);
        }
    }

    fn adopt_verdicts(&mut self, coordinator: &Heartbeat) {
        self.verdicts = coordinator.verdicts.iter().map(|v| (v.host_id, *v)).collect();
        self.verdict_gen = coordinator.verdict_gen;
    }

    /// Liveness evidence from one timely read (S2: local time only; S5: torn = no news).
    fn observe(&mut self, v: usize, finished: u64, view: &VolumeView) {
        let now_mono = self.now.mono;
        let interval = self.p.timing.interval_ms;
        let nvol = self.vols.len();
        let own_id = self.p.host_id;
        let mut rejoined = Vec::new();
        let mut contradicted = Vec::new();
        for (i, slot) in view.slots.iter().enumerate() {
            let id = i as u32 + 1;
            let Slot::Record(r) = slot else { continue };
            if id == own_id {
                continue;
            }
            let peer = self
                .peers
                .entry(id)
                .or_insert_with(|| Peer { last: vec![None; nvol], ..Peer::default() });
            if peer.last.len() != nvol {
                peer.last.resize(nvol, None);
            }
            let value = (r.incarnation, r.seq);
            if peer.last[v] == Some(value) {
                continue;
            }
            let previous_incarnation = peer.record.as_ref().map(|p| p.incarnation);
            // Only a value newer than anything seen is progress. Incarnation numbers are
            // random, so "another incarnation" does not mean "a newer one": a volume that
            // missed the last writes of a run would otherwise bring that run back as a
            // rejoin, and its stale record would be judged instead of the live one. An
            // incarnation seen before is newer only with a higher sequence number; an unknown
            // one if it continues the sequence (a restart does) or if the current one has
            // stopped (a restart that could not read its old block starts again at 1).
            let stopped = now_mono.saturating_sub(peer.last_change) >= 2 * interval;
            let newer = match peer.seen.iter_mut().find(|(i, _)| *i == r.incarnation) {
                Some((_, seq)) => r.seq > *seq,
                None => peer.record.as_ref().is_none_or(|p| r.seq > p.seq || stopped),
            };
            peer.last[v] = Some(value);
            if !newer {
                continue;
            }
            match peer.seen.iter_mut().find(|(i, _)| *i == r.incarnation) {
                Some((_, seq)) => *seq = r.seq,
                None => {
                    if peer.seen.len() >= SEEN_INCARNATIONS {
                        peer.seen.pop_front();
                    }
                    peer.seen.push_back((r.incarnation, r.seq));
                }
            }
            peer.last_change = finished;
            if previous_incarnation.is_some_and(|p| p != r.incarnation) {
                rejoined.push(id);
            } else if self
                .verdicts
                .get(&id)
                .is_some_and(|v| v.kind == VerdictKind::Fenced && v.incarnation == r.incarnation)
            {
                contradicted.push(id);
            }
            peer.record = Some(r.clone());
            if peer.cleared_at.is_some_and(|c| c != value) {
                peer.cleared_at = None;
            }
        }
        for id in contradicted {
            // Declared fenced, yet its heartbeat moved in the same incarnation: the verdict was
            // wrong. Withdraw it loudly rather than keep lying.
            self.verdicts.remove(&id);
            self.verdict_gen += 1;
            self.event(
                EventKind::FenceFailed,
                id,
                None,
                "was declared fenced but its heartbeat advanced: verdict withdrawn".into(),
            );
        }
        for id in rejoined {
            self.fences.remove(&id);
            let had = self.verdicts.remove(&id);
            if had.is_some() && self.is_coordinator() {
                self.verdict_gen += 1;
            }
            let detail = match had {
                Some(v) => format!("new incarnation after verdict {}", v.kind.as_str()),
                None => "new incarnation".to_string(),
            };
            self.event(EventKind::HostUp, id, None, detail);
        }
        self.mailboxes(view);
        self.mirror_coordinator(view);
    }

    fn mailboxes(&mut self, view: &VolumeView) {
        let own_id = self.p.host_id;
        let probing = matches!(self.phase, Phase::Probing { .. });
        let coordinator = self.is_coordinator();
        for m in &view.mailboxes {
            // Every volume may hold another message: remember each nonce, not just the last,
            // so a lagging volume never replays an old command. Messages already on any volume
            // while this agent probes are history and never obeyed.
            let seen = self.mailbox_seen.entry(m.host_id).or_default();
            if seen.contains(&m.nonce) {
                continue;
            }
            if seen.len() >= MAILBOX_HISTORY {
                seen.remove(0);
            }
            seen.push(m.nonce);
            if probing {
                continue;
            }
            if m.host_id == own_id {
                self.own_message(m);
            } else if coordinator {
                // Only the coordinator acts on clear / confirm-off; a command written while no
                // coordinator ran is reported as not taken by the CLI.
                self.operator_message(m);
            }
        }
    }

    fn own_message(&mut self, m: &format::Mailbox) {
        if m.target_incarnation != 0 && m.target_incarnation != self.p.incarnation {
            return;
        }
        match m.command {
            Command::Test => self.ack_nonce = m.nonce,
            Command::Reset | Command::PowerOff => {
                self.ack_nonce = m.nonce;
                self.pending_kind = Some(if m.command == Command::PowerOff {
                    SelfFenceKind::PowerOff
                } else {
                    SelfFenceKind::Reboot
                });
                self.doom(DoomReason::Request);
            }
            Command::None | Command::Clear | Command::ConfirmOff => {}
        }
    }

    fn operator_message(&mut self, m: &format::Mailbox) {
        let id = m.host_id;
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let Some(current) = peer.record.as_ref().map(|r| (r.incarnation, r.seq)) else { return };
        // The operator named an incarnation: a host that rebooted since is another host now.
        if m.target_incarnation != 0 && m.target_incarnation != current.0 {
            return;
        }
        match m.command {
            Command::Clear => {
                peer.cleared_at = Some(current);
                self.fences.remove(&id);
                if self.verdicts.remove(&id).is_some() {
                    self.verdict_gen += 1;
                }
            }
            Command::ConfirmOff => {
                self.fences.remove(&id);
                self.set_verdict(id, VerdictKind::Fenced, FenceMethodKind::Manual, current.0);
                self.event(
                    EventKind::Fenced,
                    id,
                    Some(FenceMethodKind::Manual),
                    "power-off confirmed by an operator".into(),
                );
            }
            _ => {}
        }
    }

    /// Non-coordinators keep the current coordinator's verdict table (verdicts live on the
    /// volume, so a new coordinator inherits them).
    fn mirror_coordinator(&mut self, view: &VolumeView) {
        if !self.inherited && !matches!(self.phase, Phase::Probing { .. }) {
            self.inherit_verdicts(view);
        }
        let Some(c) = self.coordinator else { return };
        if c == self.p.host_id {
            return;
        }
        if let Some(r) = view.record(c) {
            if r.caps & caps::COORDINATOR != 0 && r.verdict_gen != self.verdict_gen {
                self.adopt_verdicts(r);
            }
        }
    }

    fn set_verdict(
        &mut self,
        id: u32,
        kind: VerdictKind,
        method: FenceMethodKind,
        incarnation: u64,
    ) {
        let v = Verdict { host_id: id, kind, method, incarnation, wall_ms: self.now.wall };
        let changed = self
            .verdicts
            .get(&id)
            .is_none_or(|o| o.kind != kind || o.method != method || o.incarnation != incarnation);
        if changed {
            self.verdicts.insert(id, v);
            self.verdict_gen += 1;
        }
    }

    /// How long a peer is known to have made no progress: from the first read that showed
    /// its last value (finish time) to the start of the latest timely read of a read quorum.
    /// Time in which this host read nothing (paused, storage stalled) proves nothing (S4).
    fn stale_ms(&self, p: &Peer) -> u64 {
        // Reads come once per interval: counting only up to the start of the latest one makes
        // every verdict up to an interval late. Count up to now, but never more than one
        // interval past the latest timely read, so a stall of this host's own I/O still does
        // not age its peers.
        let until = self.now.mono.min(self.evidence_until() + self.p.timing.interval_ms);
        until.saturating_sub(p.last_change.max(self.judge_from))
    }

    /// The start of the latest read such that a read quorum of volumes was read since.
    fn evidence_until(&self) -> u64 {
        let (_, r) = Self::quorums(self.vols.len());
        let mut starts: Vec<u64> = self.vols.iter().filter_map(|v| v.read_ok_start).collect();
        if starts.len() < r {
            return 0;
        }
        starts.sort_unstable_by(|a, b| b.cmp(a));
        starts[r - 1]
    }

    /// Peer states, coordinator election and, on the coordinator, fencing decisions.
    fn judge_peers(&mut self) {
        let t = self.p.timing;
        let judging = self.can_judge();
        let ids: Vec<u32> = self.peers.keys().copied().collect();
        for id in &ids {
            let (status, old) = {
                let p = &self.peers[id];
                let Some(r) = &p.record else { continue };
                let stale = self.stale_ms(p);
                let status = if r.state == HostState::Leaving {
                    PeerStatus::Left
                } else if p.cleared_at.is_some() {
                    PeerStatus::Cleared
                } else if judging && stale >= t.suspect_after_ms {
                    PeerStatus::Suspect
                } else {
                    PeerStatus::Alive
                };
                (status, p.status)
            };
            if old != Some(status) {
                if let Some(p) = self.peers.get_mut(id) {
                    p.status = Some(status);
                }
                match (old, status) {
                    (_, PeerStatus::Suspect) => self.event(
                        EventKind::HostSuspect,
                        *id,
                        None,
                        format!("no heartbeat progress for {} ms", self.stale_ms(&self.peers[id])),
                    ),
                    (Some(PeerStatus::Suspect), PeerStatus::Alive) => {
                        // Progress again: a verdict short of `fenced` is withdrawn.
                        let drop =
                            self.verdicts.get(id).is_some_and(|v| v.kind != VerdictKind::Fenced);
                        if drop && !self.fences.get(id).is_some_and(|f| f.in_flight) {
                            self.verdicts.remove(id);
                            self.verdict_gen += 1;
                            self.fences.remove(id);
                        }
                        self.event(EventKind::HostRecovered, *id, None, String::new());
                    }
                    (_, PeerStatus::Left) => {
                        self.event(EventKind::HostLeft, *id, None, "stopped cleanly".into())
                    }
                    (None, PeerStatus::Alive) => {
                        self.event(EventKind::HostUp, *id, None, String::new())
                    }
                    _ => {}
                }
            }
        }
        self.elect();
        if self.is_coordinator()
            && self.lease_valid(self.now.mono)
            && self.io_healthy()
            && judging
            && !self.doomed()
        {
            for id in ids {
                self.fence_if_needed(id);
            }
        }
    }

    fn elect(&mut self) {
        let now = self.now.mono;
        let mut best: Option<u32> = None;
        // The same conditions peers must show (`active`): armed, leased, healthy I/O.
        if self.p.eligible
            && self.watchdog_settled()
            && matches!(self.phase, Phase::Running)
            && self.lease_valid(now)
            && self.io_healthy()
        {
            best = Some(self.p.host_id);
        }
        for (&id, p) in &self.peers {
            let Some(r) = &p.record else { continue };
            let fenced = self
                .verdicts
                .get(&id)
                .is_some_and(|v| v.kind == VerdictKind::Fenced && v.incarnation == r.incarnation);
            let candidate = p.status == Some(PeerStatus::Alive)
                && r.state == HostState::Active
                && r.caps & caps::COORDINATOR_ELIGIBLE != 0
                && r.caps & caps::IO_HEALTHY != 0
                && !fenced;
            if candidate && best.is_none_or(|b| id < b) {
                best = Some(id);
            }
        }
        if best != self.coordinator {
            let was = self.coordinator;
            self.coordinator = best;
            if best == Some(self.p.host_id) {
                // Continue from the newest table on the volume (our mirror of the last one).
                self.verdict_gen += 1;
            }
            let detail = format!(
                "coordinator {} -> {}",
                was.map_or("none".to_string(), |w| w.to_string()),
                best.map_or("none".to_string(), |b| b.to_string())
            );
            self.event(EventKind::CoordinatorChanged, best.unwrap_or(0), None, detail);
        }
    }

    /// S1: `fenced` only on a confirmed power-off or after the watchdog bound.
    fn fence_if_needed(&mut self, id: u32) {
        let t = self.p.timing;
        let now = self.now.mono;
        let Some(p) = self.peers.get(&id) else { return };
        if p.status != Some(PeerStatus::Suspect) {
            return;
        }
        let Some(r) = p.record.clone() else { return };
        let stale = self.stale_ms(p);
        if self
            .verdicts
            .get(&id)
            .is_some_and(|v| v.kind == VerdictKind::Fenced && v.incarnation == r.incarnation)
        {
            return;
        }
        // The watchdog bound: lease + in-flight I/O + watchdog + margin since the first read
        // that showed the last value. A host that acknowledged a fence request stopped petting
        // before writing that record, so only in-flight I/O + watchdog + margin remain.
        if r.caps & caps::WATCHDOG_ARMED != 0 {
            let wd_ms = t.watchdog_timeout_ms.max(u64::from(r.watchdog_timeout_s) * 1000);
            let (bound, method) = if r.state == HostState::SelfFencing {
                (t.io_timeout_ms + wd_ms + t.margin_ms, FenceMethodKind::Request)
            } else {
                (
                    t.lease_timeout_ms + t.io_timeout_ms + wd_ms + t.margin_ms,
                    FenceMethodKind::Watchdog,
                )
            };
            if stale >= bound {
                self.fences.remove(&id);
                self.set_verdict(id, VerdictKind::Fenced, method, r.incarnation);
                self.event(
                    EventKind::Fenced,
                    id,
                    Some(method),
                    format!("no progress for {stale} ms (bound {bound} ms)"),
                );
                return;
            }
        }
        let method = self.p.fence_methods.get(&id).copied();
        let job = self.fences.entry(id).or_default();
        if job.in_flight || now < job.next_attempt_at {
            return;
        }
        match method {
            Some(_) => {
                job.in_flight = true;
                job.attempts += 1;
                let first = job.attempts == 1;
                if self.verdicts.get(&id).is_none_or(|v| v.incarnation != r.incarnation) {
                    self.set_verdict(
                        id,
                        VerdictKind::Fencing,
                        FenceMethodKind::None,
                        r.incarnation,
                    );
                }
                if first {
                    self.event(
                        EventKind::FenceStarted,
                        id,
                        method,
                        format!("no progress for {stale} ms"),
                    );
                }
                self.actions.push(Action::StartFence { peer: id });
            }
            None => {
                if job.attempts == 0 {
                    job.attempts = 1;
                    job.next_attempt_at = u64::MAX;
                    self.set_verdict(
                        id,
                        VerdictKind::FenceFailed,
                        FenceMethodKind::None,
                        r.incarnation,
                    );
                    let why = if r.caps & caps::WATCHDOG_ARMED != 0 {
                        "no BMC or fence agent configured for it; waiting for the watchdog bound"
                    } else {
                        "no BMC or fence agent configured and no armed watchdog advertised: it will never be declared fenced; power it off and run `hbfence fence HOST --confirm-off`"
                    };
                    self.event(EventKind::FenceFailed, id, None, why.into());
                }
            }
        }
    }

    /// A reload changed how peers are fenced: jobs of peers whose method changed start over
    /// (an attempt still running is not waited for; its late result finds no job).
    fn fencing_changed(&mut self, methods: BTreeMap<u32, FenceMethodKind>, power_on_after: bool) {
        let changed: Vec<u32> = self
            .fences
            .keys()
            .copied()
            .filter(|id| self.p.fence_methods.get(id) != methods.get(id))
            .collect();
        self.p.fence_methods = methods;
        self.p.power_on_after = power_on_after;
        for id in changed {
            self.fences.remove(&id);
            let detail = match self.p.fence_methods.get(&id) {
                Some(m) => format!("fencing method changed by a reload (now {})", m.as_str()),
                None => "fencing method removed by a reload".to_string(),
            };
            self.event(EventKind::FenceFailed, id, None, detail);
        }
    }

    fn fence_done(&mut self, id: u32, method: FenceMethodKind, result: Result<String, String>) {
        let incarnation =
            self.peers.get(&id).and_then(|p| p.record.as_ref()).map_or(0, |r| r.incarnation);
        let Some(job) = self.fences.get_mut(&id) else { return };
        job.in_flight = false;
        match result {
            Ok(detail) => {
                // S8: the driver reports Ok only when the power state was confirmed off.
                self.fences.remove(&id);
                if !self
                    .verdicts
                    .get(&id)
                    .is_some_and(|v| v.kind == VerdictKind::Fenced && v.incarnation == incarnation)
                {
                    self.set_verdict(id, VerdictKind::Fenced, method, incarnation);
                    self.event(EventKind::Fenced, id, Some(method), detail);
                    if self.p.power_on_after {
                        self.actions.push(Action::PowerOn { peer: id });
                    }
                }
            }
            Err(detail) => {
                let suspect =
                    self.peers.get(&id).is_some_and(|p| p.status == Some(PeerStatus::Suspect));
                if !suspect {
                    // It came back while the attempt ran: nothing to fence any more.
                    self.fences.remove(&id);
                    if self.verdicts.get(&id).is_some_and(|v| v.kind != VerdictKind::Fenced) {
                        self.verdicts.remove(&id);
                        self.verdict_gen += 1;
                    }
                    return;
                }
                let Some(job) = self.fences.get_mut(&id) else { return };
                let backoff =
                    (2_000u64 << job.attempts.saturating_sub(1).min(4)).min(FENCE_BACKOFF_MAX_MS);
                job.next_attempt_at = self.now.mono + backoff;
                let repeat = job.last_detail == detail;
                job.last_detail.clone_from(&detail);
                if !self.verdicts.get(&id).is_some_and(|v| v.kind == VerdictKind::Fenced) {
                    self.set_verdict(id, VerdictKind::FenceFailed, method, incarnation);
                }
                if !repeat {
                    self.event(EventKind::FenceFailed, id, Some(method), detail);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Focused scenarios on a tiny in-memory cluster with 10 ms I/O. The exhaustive, randomized
    //! checks live in tests/simulation.rs.
    use super::*;
    use crate::core::format::{encode_heartbeat, encode_mailbox, Geometry, Mailbox, BLOCK_SIZE};
    use crate::core::view::decode_view;

    const T: Timing = Timing {
        interval_ms: 1000,
        io_timeout_ms: 2000,
        lease_timeout_ms: 4000,
        watchdog_timeout_ms: 2000,
        suspect_after_ms: 3000,
        margin_ms: 1000,
    };
    const MAX: u32 = 4;
    const CLUSTER: ClusterId = [5; 16];

    struct Host {
        agent: Agent,
        alive: bool,
        pets: Vec<u64>,
        self_fenced: Option<u64>,
        pending: Vec<(usize, u64, u64, Option<Box<Heartbeat>>)>,
        fences: Vec<u32>,
        events: Vec<Event>,
        exit: Option<i32>,
    }

    struct Sim {
        now: u64,
        disk: Vec<[u8; BLOCK_SIZE]>,
        hosts: Vec<Host>,
        /// Storage fails (EIO) for these hosts.
        broken: Vec<u32>,
        /// Writes of these hosts land torn (first 512 bytes only).
        torn: Vec<u32>,
    }

    fn params(id: u32) -> AgentParams {
        AgentParams {
            host_id: id,
            name: format!("h{id}"),
            cluster: CLUSTER,
            max_hosts: MAX,
            timing: T,
            volumes: 1,
            boot_id: [id as u8; 16],
            incarnation: 1000 + u64::from(id),
            eligible: true,
            self_fence: SelfFenceKind::Reboot,
            fence_methods: BTreeMap::new(),
            watchdog_timeout_s: 2,
            doomed_marker: false,
            power_on_after: false,
            knobs: UnsafeTestKnobs::default(),
        }
    }

    const GEO: Geometry = Geometry { max_hosts: MAX };

    impl Sim {
        fn new(n: u32) -> Sim {
            let mut sim = Sim {
                now: 1_000_000,
                disk: vec![[0u8; BLOCK_SIZE]; GEO.total_blocks() as usize],
                hosts: Vec::new(),
                broken: vec![],
                torn: vec![],
            };
            for id in 1..=n {
                sim.add(params(id));
            }
            sim
        }
        fn add(&mut self, p: AgentParams) {
            let mut agent = Agent::new(p, Now { mono: self.now, wall: 1 });
            let first = agent.handle(Now { mono: self.now, wall: 1 }, Input::Tick);
            self.hosts.push(Host {
                agent,
                alive: true,
                pets: vec![],
                self_fenced: None,
                pending: vec![],
                fences: vec![],
                events: vec![],
                exit: None,
            });
            let i = self.hosts.len() - 1;
            self.apply(i, first);
        }
        fn host(&mut self, id: u32) -> &mut Host {
            self.hosts.iter_mut().rev().find(|h| h.agent.params().host_id == id).unwrap()
        }
        fn feed(&mut self, i: usize, input: Input) {
            let a = self.hosts[i].agent.handle(Now { mono: self.now, wall: self.now }, input);
            self.apply(i, a);
        }
        fn apply(&mut self, i: usize, actions: Vec<Action>) {
            for a in actions {
                let h = &mut self.hosts[i];
                match a {
                    Action::StartIo { volume, cycle, write } => {
                        h.pending.push((volume, cycle, self.now, write))
                    }
                    Action::Pet => h.pets.push(self.now),
                    Action::SelfFence { .. } => h.self_fenced = Some(self.now),
                    Action::StartFence { peer } => h.fences.push(peer),
                    Action::Event(e) => h.events.push(e),
                    Action::Exit { code, .. } => h.exit = Some(code),
                    Action::ArmWatchdog => {
                        let a = h.agent.handle(
                            Now { mono: self.now, wall: self.now },
                            Input::WatchdogArmed(Ok(())),
                        );
                        self.apply(i, a);
                    }
                    _ => {}
                }
            }
        }
        fn io(&mut self, i: usize) {
            let id = self.hosts[i].agent.params().host_id;
            let pending = std::mem::take(&mut self.hosts[i].pending);
            for (volume, cycle, started, write) in pending {
                let broken = self.broken.contains(&id);
                let write = write.map(|r| {
                    if broken {
                        return Err("EIO".to_string());
                    }
                    let block = encode_heartbeat(&r).unwrap();
                    let slot = &mut self.disk[GEO.heartbeat_block(id) as usize];
                    if self.torn.contains(&id) {
                        slot[..512].copy_from_slice(&block[..512]);
                    } else {
                        *slot = block;
                    }
                    Ok(self.now)
                });
                let read = if broken {
                    Err("EIO".to_string())
                } else {
                    let raw: Vec<u8> = self.disk[1..].iter().flatten().copied().collect();
                    Ok((self.now, decode_view(&raw, GEO, &CLUSTER)))
                };
                self.feed(i, Input::IoDone { volume, cycle, started, write, read });
            }
        }
        /// Advances time in 10 ms steps: I/O completes 10 ms after it starts.
        fn run(&mut self, ms: u64) {
            let end = self.now + ms;
            while self.now < end {
                self.now += 10;
                for i in 0..self.hosts.len() {
                    if !self.hosts[i].alive || self.hosts[i].exit.is_some() {
                        continue;
                    }
                    self.io(i);
                    self.feed(i, Input::Tick);
                }
            }
        }
        fn kill(&mut self, id: u32) {
            self.host(id).alive = false;
        }
        fn mailbox(&mut self, id: u32, command: Command, nonce: u64) {
            let m = Mailbox {
                cluster: CLUSTER,
                host_id: id,
                nonce,
                command,
                sender: 0,
                wall_ms: 1,
                target_incarnation: 0,
                sender_name: "op".into(),
            };
            self.disk[GEO.mailbox_block(id) as usize] = encode_mailbox(&m);
        }
        fn verdict(&mut self, observer: u32, id: u32) -> Option<(VerdictKind, FenceMethodKind)> {
            self.host(observer).agent.verdicts().get(&id).map(|v| (v.kind, v.method))
        }
    }

    fn events(h: &Host, kind: EventKind) -> Vec<&Event> {
        h.events.iter().filter(|e| e.kind == kind).collect()
    }

    #[test]
    fn starts_probes_arms_and_pets_only_with_a_lease() {
        let mut s = Sim::new(1);
        s.run(1000);
        assert!(
            matches!(s.host(1).agent.phase(), Phase::Probing { .. }),
            "writes before the probe ended"
        );
        assert!(s.host(1).pets.is_empty());
        s.run(2000);
        assert_eq!(s.host(1).agent.phase(), Phase::Running);
        assert!(s.host(1).agent.watchdog_armed());
        assert!(!s.host(1).pets.is_empty());
        assert!(s.host(1).agent.is_coordinator());
    }

    #[test]
    fn lease_expiry_self_fences_and_never_pets_again() {
        let mut s = Sim::new(1);
        s.run(4000);
        s.broken.push(1);
        let broke = s.now;
        s.run(6000);
        let h = s.host(1);
        let fenced = h.self_fenced.expect("no self-fence");
        // The last successful cycle started at most one interval before the failure.
        assert!(
            fenced <= broke + T.lease_timeout_ms + 20,
            "self-fence {} ms after the failure",
            fenced - broke
        );
        assert!(fenced >= broke + T.lease_timeout_ms - T.interval_ms - 20);
        assert!(h.pets.iter().all(|&p| p < fenced), "petted after the self-fence");
        let expiry = h.agent.lease_expiry().unwrap();
        assert!(h.pets.iter().all(|&p| p < expiry), "petted after lease expiry");
        assert_eq!(events(h, EventKind::SelfFence).len(), 1);
        // Storage comes back: the doomed host still never pets.
        s.broken.clear();
        let n = s.host(1).pets.len();
        s.run(3000);
        assert_eq!(s.host(1).pets.len(), n);
    }

    #[test]
    fn torn_own_writes_do_not_renew_the_lease() {
        let mut s = Sim::new(1);
        s.run(4000);
        s.torn.push(1);
        s.run(6000);
        assert!(s.host(1).self_fenced.is_some(), "torn writes kept the lease");
    }

    #[test]
    fn a_second_writer_on_the_same_id_is_refused_at_start() {
        let mut s = Sim::new(1);
        s.run(4000);
        let mut twin = params(1);
        twin.incarnation = 77;
        twin.boot_id = [9; 16];
        s.add(twin);
        s.run(3000);
        assert_eq!(s.hosts[1].exit, Some(EXIT_HOST_ID_IN_USE), "the twin kept running");
        assert!(s.hosts[1].pets.is_empty());
        assert_eq!(s.hosts[0].exit, None);
    }

    #[test]
    fn restart_on_the_same_boot_after_expiry_is_doomed_at_once() {
        let mut s = Sim::new(1);
        s.run(4000);
        s.kill(1);
        s.run(5000); // longer than the lease: the old record's lease has expired
        s.add(AgentParams { incarnation: 4242, ..params(1) });
        s.run(500);
        let h = &s.hosts[1];
        assert!(h.self_fenced.is_some(), "restarted agent did not self-fence");
        assert!(h.pets.is_empty(), "restarted agent petted");
    }

    #[test]
    fn restart_within_the_lease_continues() {
        let mut s = Sim::new(1);
        s.run(4000);
        s.kill(1);
        s.run(500);
        s.add(AgentParams { incarnation: 4242, ..params(1) });
        s.run(3000);
        let h = &s.hosts[1];
        assert!(h.self_fenced.is_none());
        assert!(!h.pets.is_empty());
    }

    #[test]
    fn doomed_marker_dooms_at_once() {
        let mut s = Sim::new(0);
        s.add(AgentParams { doomed_marker: true, ..params(1) });
        assert!(s.hosts[0].self_fenced.is_some());
        s.run(3000);
        assert!(s.hosts[0].pets.is_empty());
    }

    #[test]
    fn dead_peer_without_bmc_is_fenced_at_the_watchdog_bound_not_before() {
        let mut s = Sim::new(3);
        s.run(5000);
        s.kill(3);
        let killed = s.now;
        let mut fenced_at = None;
        for _ in 0..2000 {
            s.run(10);
            if s.verdict(1, 3).is_some_and(|v| v.0 == VerdictKind::Fenced) {
                fenced_at = Some(s.now);
                break;
            }
        }
        let at = fenced_at.expect("never fenced");
        assert_eq!(s.verdict(1, 3), Some((VerdictKind::Fenced, FenceMethodKind::Watchdog)));
        assert!(at - killed >= T.dead_after_ms(), "fenced {} ms after death", at - killed);
        assert!(
            at - killed <= T.dead_after_ms() + T.interval_ms + 100,
            "fenced late: {} ms",
            at - killed
        );
        // Host 2 mirrors the coordinator's table from the volume.
        s.run(1500);
        assert_eq!(s.verdict(2, 3), Some((VerdictKind::Fenced, FenceMethodKind::Watchdog)));
    }

    #[test]
    fn bmc_fencing_needs_a_confirmed_off() {
        let mut s = Sim::new(0);
        let mut p = params(1);
        p.fence_methods.insert(2, FenceMethodKind::Ipmi);
        s.add(p);
        s.add(params(2));
        s.run(5000);
        s.kill(2);
        s.run(T.suspect_after_ms + 1500);
        assert_eq!(s.host(1).fences, vec![2], "fencing did not start exactly once");
        assert_eq!(s.verdict(1, 2).map(|v| v.0), Some(VerdictKind::Fencing));
        s.feed(
            0,
            Input::FenceDone {
                peer: 2,
                method: FenceMethodKind::Ipmi,
                result: Err("Unable to establish IPMI v2 / RMCP+ session".into()),
            },
        );
        assert_eq!(s.verdict(1, 2).map(|v| v.0), Some(VerdictKind::FenceFailed));
        assert_eq!(events(s.host(1), EventKind::FenceFailed).len(), 1);
        s.run(2500); // backoff, then a new attempt
        assert_eq!(s.host(1).fences, vec![2, 2]);
        s.feed(
            0,
            Input::FenceDone {
                peer: 2,
                method: FenceMethodKind::Ipmi,
                result: Ok("off confirmed".into()),
            },
        );
        assert_eq!(s.verdict(1, 2), Some((VerdictKind::Fenced, FenceMethodKind::Ipmi)));
    }

    #[test]
    fn storage_blip_restarts_peer_timers_s4() {
        let mut s = Sim::new(3);
        s.run(5000);
        // Everybody loses storage for less than the lease.
        // Survivable by the lease: the last good cycle started up to one interval earlier.
        s.broken = vec![1, 2, 3];
        s.run(T.lease_timeout_ms - T.interval_ms - 600);
        s.broken.clear();
        s.run(10_000);
        for id in 1..=3 {
            let h = s.host(id);
            assert!(h.self_fenced.is_none(), "host {id} self-fenced");
            assert!(
                events(h, EventKind::HostSuspect).is_empty(),
                "host {id} suspected a peer after a blip"
            );
            assert!(h.agent.verdicts().is_empty());
        }
    }

    #[test]
    fn without_s4_a_blip_makes_suspects() {
        // The same blip with S4 disabled: proves the previous test can fail.
        let mut s = Sim::new(0);
        for id in 1..=3 {
            let mut p = params(id);
            p.knobs.judge_through_trouble = true;
            s.add(p);
        }
        s.run(5000);
        s.broken = vec![2, 3];
        s.run(T.lease_timeout_ms - 500);
        s.broken.clear();
        s.run(2000);
        assert!(!events(s.host(1), EventKind::HostSuspect).is_empty());
    }

    #[test]
    fn clean_stop_leaves_and_is_never_fenced() {
        let mut s = Sim::new(2);
        s.run(5000);
        s.feed(1, Input::StopRequested);
        s.run(500);
        assert_eq!(s.hosts[1].exit, Some(0));
        s.run(T.dead_after_ms() + 3000);
        assert!(s.verdict(1, 2).is_none(), "a host that left was judged");
        assert_eq!(events(s.host(1), EventKind::HostLeft).len(), 1);
    }

    #[test]
    fn stop_is_ignored_while_doomed() {
        let mut s = Sim::new(1);
        s.run(4000);
        s.broken.push(1);
        s.run(6000);
        s.feed(0, Input::StopRequested);
        s.run(500);
        assert_eq!(s.hosts[0].exit, None, "a doomed agent exited on SIGTERM");
    }

    #[test]
    fn fence_request_is_acknowledged_then_self_fenced_and_declared_by_request() {
        let mut s = Sim::new(2);
        s.run(5000);
        s.mailbox(2, Command::Reset, 99);
        s.run(200);
        assert!(s.host(2).self_fenced.is_none() || s.host(2).agent.phase() != Phase::Running);
        s.run(T.io_timeout_ms + 200);
        assert!(s.host(2).self_fenced.is_some(), "no self-fence on request");
        s.kill(2);
        let record =
            decode_view(&s.disk[1..].iter().flatten().copied().collect::<Vec<u8>>(), GEO, &CLUSTER);
        let r = record.record(2).unwrap().clone();
        assert_eq!((r.ack_nonce, r.state), (99, HostState::SelfFencing));
        s.run(T.io_timeout_ms + T.watchdog_timeout_ms + T.margin_ms + 1500);
        assert_eq!(s.verdict(1, 2), Some((VerdictKind::Fenced, FenceMethodKind::Request)));
    }

    #[test]
    fn stale_poison_pill_is_ignored_at_start() {
        let mut s = Sim::new(0);
        s.mailbox(1, Command::Reset, 5);
        s.add(params(1));
        s.run(5000);
        assert!(s.host(1).self_fenced.is_none());
        s.mailbox(1, Command::Test, 6);
        s.run(1500);
        let raw: Vec<u8> = s.disk[1..].iter().flatten().copied().collect();
        assert_eq!(decode_view(&raw, GEO, &CLUSTER).record(1).unwrap().ack_nonce, 6);
    }

    #[test]
    fn coordinator_failover_inherits_verdicts_and_clear_removes_one() {
        let mut s = Sim::new(4);
        s.run(5000);
        s.kill(4);
        s.run(T.dead_after_ms() + 2000);
        assert_eq!(s.verdict(1, 4).map(|v| v.0), Some(VerdictKind::Fenced));
        s.kill(1);
        s.run(T.dead_after_ms() + 3000);
        assert!(s.host(2).agent.is_coordinator());
        assert_eq!(
            s.verdict(2, 4).map(|v| v.0),
            Some(VerdictKind::Fenced),
            "verdict lost in the hand-over"
        );
        assert_eq!(s.verdict(2, 1).map(|v| v.0), Some(VerdictKind::Fenced));
        s.mailbox(4, Command::Clear, 7);
        s.run(1500);
        assert_eq!(s.verdict(2, 4), None, "clear did not remove the verdict");
        s.run(2000);
        assert_eq!(s.verdict(3, 4), None, "host 3 did not mirror the clear");
        assert_eq!(s.verdict(3, 1).map(|v| v.0), Some(VerdictKind::Fenced));
    }

    #[test]
    fn reload_that_removes_a_bmc_reaches_the_core() {
        // Issue 10 item 10: the job stayed in flight forever, with no event.
        let mut s = Sim::new(0);
        let mut p = params(1);
        p.fence_methods.insert(2, FenceMethodKind::Ipmi);
        s.add(p);
        s.add(params(2));
        s.run(5000);
        s.kill(2);
        s.run(T.suspect_after_ms + 1500);
        assert_eq!(s.host(1).fences, vec![2]);
        s.feed(0, Input::FencingChanged { methods: BTreeMap::new(), power_on_after: false });
        let failed = events(s.host(1), EventKind::FenceFailed);
        assert!(
            failed.iter().any(|e| e.host == 2 && e.detail.contains("removed by a reload")),
            "no event for the removed method: {failed:?}"
        );
        s.run(200);
        assert_eq!(s.verdict(1, 2).map(|v| v.0), Some(VerdictKind::FenceFailed));
        assert_eq!(s.host(1).fences, vec![2], "fenced through a removed BMC");
    }
}
