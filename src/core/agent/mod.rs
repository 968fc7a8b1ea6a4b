//! The per-host decision state machine, fed with [`Input`]s stamped with local time and
//! answering with [`Action`]s; it performs no I/O and reads no clock, so the daemon and the
//! cluster simulation run exactly this code.
//!
//! Each safety invariant has one home: S3/S7 (own lease, watchdog, doom, probe) in `lease`,
//! S4 (own storage trouble restarts peer timers) in `io`, S2/S5 (progress in local time only,
//! torn = no news, staleness from evidence) in `peers`, S1/S8 (verdicts, fencing, tables) in
//! `coordinator`, operator and fence-request messages in `mailbox`.

use super::events::{Event, EventKind};
use super::format::{
    self, caps, BootId, ClusterId, Command, FenceMethodKind, Heartbeat, HostState, Lineage,
    Verdict, VerdictKind,
};
use super::header as hdr;
pub use super::header::Membership;
use super::timing::{Timing, TimingError};
use super::view::{newest_table_record, table_order, Slot, VolumeView};
use std::collections::{BTreeMap, VecDeque};

pub use channel::{ChallengeToken, ChannelParams, ChannelView, Claim, PeerAnswer};
pub use survival::{grant_below_ms, permit_lifetime_ms, survival_unusable};

/// Local time: `mono` is CLOCK_BOOTTIME milliseconds (monotonic and counting through suspend:
/// every decision uses it), `wall` is for people only (S2).
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
    /// Declare `fenced` this many ms before the watchdog bound (breaks S1).
    pub watchdog_bound_cut_ms: u64,
    /// Use the watchdog bound without the outage-survival judge rule (breaks S1 with survival).
    pub judge_ignores_survival: bool,
    /// Count a permit's lifetime from when its answer arrived, not from the challenge (a
    /// delayed answer then extends survival: breaks S1 with survival).
    pub permit_from_answer: bool,
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
    /// The runtime marker says an earlier agent on this boot armed a watchdog that keeps
    /// running after close and did not disarm it (magic close): a reset may be pending, so
    /// the probe must find that run's lease still valid or the new agent is doomed (S3).
    pub armed_marker: bool,
    /// `[fencing] after = "on"`: power peers back on after a confirmed off.
    pub power_on_after: bool,
    pub knobs: UnsafeTestKnobs,
    /// `[network]`: the authenticated peer channel; None: no channel (as before it existed).
    pub peer_channel: Option<ChannelParams>,
    /// The membership of the headers at start (`header::adopt` over the volumes).
    pub membership: Membership,
    /// `[inventory]` has a source: this host publishes its VM list (`Input::Inventory`).
    /// Without one its heartbeat says "no inventory", never "no VMs".
    pub inventory: bool,
}

/// What the driver reports back to the core.
#[derive(Clone, Debug)]
pub enum Input {
    /// Time passes (the daemon ticks several times a second).
    Tick,
    /// One I/O cycle on a volume finished: optional write of the own block, then, no earlier
    /// than the request's `read_at`, one read of the blocks of the read plan (the own block
    /// among them: the write's read-back). Times are local monotonic ms.
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
    /// A volume's block 0 stopped (Some: why, and how to restore it) or started again (None)
    /// to hold the header this agent runs with. Sent by the I/O thread on a change only.
    HeaderChecked { volume: usize, damage: Option<String> },
    /// Block 0 of a volume holds this membership (same cluster, max_hosts and timing as at
    /// start; its epoch never goes down there, or the header counts as damaged). Sent by the
    /// I/O thread at a volume's first read and on every change.
    MembershipRead { volume: usize, membership: Membership, earlier: Vec<Membership> },
    /// An authenticated, not yet seen challenge of a peer on the peer channel: answer it from
    /// the live state (`Action::AnswerPeer`).
    PeerChallenge { peer: u32, token: ChallengeToken },
    /// An authenticated answer of a peer to a challenge this host sent and had not yet seen
    /// answered; times measured by the network thread on CLOCK_BOOTTIME.
    PeerAnswer { peer: u32, answer: PeerAnswer },
    /// The inventory thread's latest collection of the running domains.
    Inventory(crate::core::inventory::Collected),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start an I/O cycle on a volume (the volume's thread is idle): write `write` (if any),
    /// then read, not before local time `read_at` (the write's read-back half an interval
    /// after the write on the regular cadence, so a twin of this host id is seen: "One I/O
    /// cycle" in design.md).
    StartIo {
        volume: usize,
        cycle: u64,
        write: Option<Box<Heartbeat>>,
        read_at: u64,
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
    /// Answer a peer's challenge on the peer channel with this host's claim right now.
    AnswerPeer {
        peer: u32,
        token: ChallengeToken,
        claim: Claim,
        /// The members epoch this host holds (a permit counts only at the asker's epoch).
        members_epoch: u32,
        /// How long this host has granted no permit (see `PeerAnswer::no_permit_ms`).
        no_permit_ms: u64,
    },
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
    /// The VMs it published (issue 15).
    pub vms: crate::core::inventory::VmsView,
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
    /// What was seen of each recent incarnation.
    seen: VecDeque<Sighting>,
    /// When this peer last became suspect.
    suspect_since: Option<u64>,
    /// For a `fenced` verdict (incarnation, seq): the volumes that have shown one value past
    /// it since. A host that went off may have had one write in flight per volume.
    landed_after_verdict: Option<((u64, u64), Vec<bool>)>,
    /// Per volume: the latest value of a run below the accepted maximum that this volume showed
    /// after it had shown the maximum (one writer per block: only a stale replica or a forged
    /// maximum makes a volume go back).
    went_back: Vec<Option<u64>>,
    /// Per volume: a value this volume showed that was passed over (another run that did not
    /// continue the sequence while the current one ran) and is looked at again at the next read.
    /// Shown before, so not new when it is finally taken (soak seed 2041491).
    passed_over: Vec<Option<(u64, u64)>>,
    /// Per volume: the CRC-32 of the peer's block when the last read of that volume showed it
    /// unreadable (torn, corrupt); `None` after a record. Changed bytes are a write landing.
    unreadable_last: Vec<Option<u32>>,
    /// The latest VM list fetched of this peer (an I/O thread reads it when a heartbeat names
    /// a new generation).
    inventory: Option<std::sync::Arc<format::Inventory>>,
}

/// One incarnation of a peer as this host has seen it.
#[derive(Clone, Copy, Debug)]
struct Sighting {
    incarnation: u64,
    /// Highest sequence number accepted as progress.
    max_seq: u64,
    /// Sequence number and local time the plausibility of later values is counted from.
    first_seq: u64,
    first_at: u64,
    /// Whether `max_seq` was reached from an earlier value. A first sighting is unverified: it
    /// may be a forged or corrupted record.
    continued: bool,
    /// Highest value seen below an unverified `max_seq`: the host's real writes, if they go on
    /// from here.
    below: Option<u64>,
    /// `max_seq` before its latest increase.
    raised_from: u64,
    /// Another incarnation took over from this one as the peer's current record: this run is
    /// older than that one (seed 5754).
    superseded: bool,
    /// Every value of the run seen so far was first shown by a read after a gap (or by the
    /// agent's first read): they may be of any age, so a higher value is no impossible jump from
    /// them (seed 501965; seed 1000958: two old values, one continuing the other).
    age_unknown: bool,
}

impl Sighting {
    /// This host's reads saw the run write: a value continued an earlier one (a first sighting
    /// may be forged or of any age) and was new when read (values a starting agent's first
    /// reads or reads after a gap showed at different heights may all be old: seed 1811022).
    /// The one definition of "seen writing" for deciding that a run is alive.
    fn shows_writing(&self) -> bool {
        self.continued && !self.age_unknown
    }

    /// The first value seen of a run: unverified until a later value continues it.
    fn first(r: &Heartbeat, at: u64, age_unknown: bool, superseded: bool) -> Sighting {
        Sighting {
            incarnation: r.incarnation,
            max_seq: r.seq,
            first_seq: r.seq,
            first_at: at,
            continued: false,
            below: None,
            raised_from: r.seq,
            superseded,
            age_unknown,
        }
    }
}

/// One I/O cycle handed to a volume's thread and not finished yet.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    cycle: u64,
    /// When it was started (its write starts then): the lease renewal point.
    started: u64,
    /// Sequence number written, if it writes.
    written: Option<u64>,
    /// Its read starts no earlier than this (`Action::StartIo`).
    read_at: u64,
}

#[derive(Clone, Debug, Default)]
struct Vol {
    /// The I/O under way.
    in_flight: Option<InFlight>,
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
    /// Its first successful read happened (the mailbox baseline).
    mailbox_baseline: bool,
    /// Mailboxes the last read of this volume read (a host reads a peer's mailbox only while
    /// it is the coordinator with business about that peer): what a mailbox holds at its first
    /// read here, or at its first read after reads that left it out, is history, as at the
    /// volume's first read, or a new coordinator would replay a `confirm-off` that its
    /// predecessor handled long ago, or an old `clear` stop a later fencing (S1).
    mailboxes_read_before: crate::core::readplan::IdSet,
    /// From its first timely read: the highest sequence of another incarnation of another
    /// boot in the own block then (a volume unreadable during the probe may show a former
    /// run's later writes; they are history, not a second writer).
    own_block_floor: Option<u64>,
    /// When the probe first read it and what the own block held then.
    probe_first: Option<(u64, Option<RecordId>)>,
    /// When the probe first saw a record of another boot change in the own block (a lagging
    /// volume catching up with a former run, or a second writer: only the latter goes on),
    /// moved later by every read gap (soak seeds 35659, 117875).
    probe_changing_since: Option<u64>,
    /// When the probe's latest timely read of it finished.
    probe_last_read: Option<u64>,
    /// A read of this volume has shown one of this agent's own writes.
    own_write_seen: bool,
    /// A probe read of this volume showed the own block unreadable (torn or corrupt): a
    /// write the probe could not identify landed there, so the volume holds a run's history
    /// the probe never saw (soak seeds 1771016, 1777841).
    probe_own_unreadable: bool,
    /// The latest run of another boot a timely read of this volume showed in the own block:
    /// (incarnation, sequence, when). See `Agent::other_run_rises_late`.
    other_run_shown: Option<(u64, u64, u64)>,
    /// Its latest timely read showed the past, or was the first after one that did: every
    /// peer writing lately was at least two writes behind what this agent had already taken
    /// from other reads (a replica lagging behind, or gone back in time).
    shows_past: bool,
    /// The latest timely read showed the past by itself (`shows_past` also covers the read
    /// right after such a read).
    read_showed_past: bool,
    /// Block 0 no longer holds the header this agent started with (and why).
    header_damage: Option<String>,
    /// The membership block 0 showed last (None: not read yet).
    membership: Option<Membership>,
    /// The previous read of this volume was timely: a value that differs from it changed
    /// between two reads. After a gap (or on the first read) a newer value may be old news.
    read_continuous: bool,
    /// The earliest time a value this read shows for the first time may have landed: the read's
    /// finish after a timely read, else the start of the last timely read (or of this agent).
    /// Sequence plausibility counts from there (soak seed 114538).
    new_since: u64,
    /// The own inventory this volume holds (verified with a heartbeat that names it), and the
    /// one sent with the write under way.
    inventory_on_volume: Option<inventory::OnVolume>,
    inventory_in_flight: Option<inventory::OnVolume>,
    /// Generation of the verdict table in the last record sent to this volume.
    published_gen: u32,
}

#[derive(Clone, Debug, Default)]
struct FenceJob {
    in_flight: bool,
    attempts: u32,
    next_attempt_at: u64,
    last_detail: String,
    /// `fence_deferred` was reported for this suspicion.
    deferred: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Storage {
    Ok,
    Degraded,
    Lost,
}

/// (incarnation, sequence) of a heartbeat record.
type RecordId = (u64, u64);

/// The `k`-th latest of `values` (None with fewer than `k`): the latest value that `k` of them
/// reach. Counted, not sorted into a Vec: the lease and the evidence time are asked for at every
/// wake-up, and there are at most a few volumes.
fn kth_latest(values: impl Iterator<Item = u64> + Clone, k: usize) -> Option<u64> {
    values.clone().filter(|&v| values.clone().filter(|&o| o >= v).count() >= k).max()
}

/// Pets per watchdog period: a pet every quarter period leaves three quarters of it for a
/// late wake-up of the main thread before the hardware fires, and wakes the thread 0.4 times a
/// second at the default 10 s (a pet every 500 ms cost most of the agent's CPU). The lease
/// argument does not depend on this cadence: it is the last pet under a lease that counts,
/// and that one comes at `last_pet_at` whatever the cadence.
const PETS_PER_WATCHDOG: u64 = 4;
/// The self-fence comes this long before the lease ends: the watchdog, last petted exactly one
/// period before the lease end, fires at the lease end, and the agent's own reset (with its
/// marker and the configured action) should come first.
const DOOM_LEAD_MS: u64 = 200;
/// The last pet under a lease comes this long before the latest instant allowed.
const LAST_PET_EARLY_MS: u64 = 50;
/// Incarnations remembered per peer (restarts within the time a volume may lag).
const SEEN_INCARNATIONS: usize = 8;
/// Nonces remembered per mailbox.
const MAILBOX_HISTORY: usize = 16;
/// Other incarnations remembered in the own block (`Agent::own_block_history`).
const OWN_BLOCK_HISTORY_RUNS: usize = 8;
/// Runs of the own block the probe keeps (sequence, clock) samples of, and samples per run.
const PROBE_RUNS: usize = 8;
const PROBE_RUN_SAMPLES: usize = 16;
/// No run ever wrote this many records: at the fastest cadence the sequence rules allow (8
/// writes per 250 ms) it takes about 280 000 years. A record above it is forged or corrupted,
/// whatever else the volume shows, and continuing from it would overflow the sequence.
const SEQ_BEYOND_ANY_LIFETIME: u64 = 1 << 48;
/// A record of the own block the probe read: (sequence, the writer's mono clock, volume,
/// whether the writer's I/O was healthy: `caps::IO_HEALTHY`).
type ProbeSample = (u64, u64, usize, bool);
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
    /// The working table: a coordinator's own; elsewhere the adopted one with local
    /// corrections, continued from if this host takes over.
    verdicts: BTreeMap<u32, Verdict>,
    verdict_gen: u32,
    verdict_author: u32,
    /// The last table read from another author, verbatim: what a non-coordinator republishes
    /// (one (generation, author) never names two contents) and the base a coordinator merges
    /// a later table of another author against.
    mirror: Vec<Verdict>,
    mirror_gen: u32,
    mirror_author: u32,
    /// The lineage of the coordinator's own table ([`Lineage`]) and of the mirror.
    lineage: Option<Lineage>,
    mirror_lineage: Option<Lineage>,
    /// Hosts whose verdict did not fit in the last published table.
    unpublished: Vec<u32>,
    /// Highest table generation seen in any block.
    max_gen_seen: u32,
    inherited: bool,
    coordinator: Option<u32>,
    judge_from: u64,
    /// The first judgement of the peers was reported (one `cluster_seen` event): from then on
    /// a peer seen for the first time is a `host_up` of its own.
    cluster_reported: bool,
    armed: bool,
    arming: bool,
    /// The watchdog device cannot guard this host (it stops on close): run without it.
    unguarded: bool,
    ready_sent: bool,
    last_pet: Option<u64>,
    /// Recent nonces seen in every mailbox (messages present while probing are history).
    mailbox_seen: BTreeMap<u32, Vec<u64>>,
    ack_nonce: u64,
    /// A peer just became suspect: read again at once before any power-off (S1).
    recheck: bool,
    /// When this agent started (its own earlier records are older).
    started_at: u64,
    /// The sequence number continued from at the end of the probe.
    probe_seq: u64,
    /// Incarnations of other boots the probe found in the own block (former runs).
    probe_found: Vec<u64>,
    /// Per run the probe saw in the own block: (sequence, the writer's mono clock, volume) of its
    /// records, to tell a sequence its own clock cannot explain (forged or corrupted) from
    /// the run's progress (`Agent::probe_credible_seq`).
    probe_runs: Vec<(u64, Vec<ProbeSample>)>,
    /// The highest sequence of runs beyond `PROBE_RUNS` (judged by nothing else).
    probe_untracked_max: u64,
    /// (run, sequence) of the own block already reported as forged.
    probe_alarms: Vec<(u64, u64)>,
    /// The boots of those runs: a later run of one of them may have written past what a
    /// lagging volume showed the probe (soak seed 6046).
    probe_found_boots: Vec<BootId>,
    /// Other incarnations' records seen in the own block so far, (incarnation, highest
    /// sequence): one shown again (a volume gone back in time: soak seed 33216) is no new write.
    own_block_history: Vec<RecordId>,
    /// Sequence number of the first `leaving` record.
    leave_seq: Option<u64>,
    fences: BTreeMap<u32, FenceJob>,
    storage: Storage,
    /// A fence request may ask for power-off instead of the configured action.
    pending_kind: Option<SelfFenceKind>,
    actions: Vec<Action>,
    now: Now,
    /// The peer channel: what each peer last answered, and whether it is reachable.
    channel: BTreeMap<u32, channel::ChannelPeer>,
    /// The membership this host follows: the newest a read quorum of volumes shows.
    membership: Membership,
    /// Scratch list of peer ids for `judge_peers` (kept to not allocate at every wake-up).
    peer_ids: Vec<u32>,
    /// Records the I/O threads wrote and views the core read, handed back for reuse
    /// (`recycle_record`, `take_spare_view`): a steady-state cycle allocates nothing (issue 12).
    /// Boxed as `Action::StartIo` carries them: handing one over moves a pointer.
    #[allow(clippy::vec_box)]
    spare_records: Vec<Box<Heartbeat>>,
    spare_views: Vec<VolumeView>,
    /// The own VM list and the duplicate-VM alarm (issue 15).
    inventory: inventory::OwnInventory,
    duplicates: inventory::DuplicateWatch,
    /// A peer's list changed: recompute the duplicates.
    duplicates_due: bool,
    /// Outage survival: what each peer's answers prove (permits, time on storage, epochs).
    evidence: BTreeMap<u32, survival::PeerEvidence>,
    /// Every membership held since start, by epoch (the judge rule counts against each).
    memberships: BTreeMap<u32, Membership>,
    /// The latest instant the own lease had less than `grant_below_ms` left (or none).
    lease_short_at: u64,
    /// The lease ran out and permits keep this host petting (since then).
    surviving_since: Option<u64>,
    /// Survivals started and ended.
    survivals: (u64, u64),
    /// The highest sequence of a `leaving` record of this boot the probe saw in the own block.
    probe_left_seq: Option<u64>,
    /// The probe read a record of this boot (any run) in the own block on some volume.
    probe_saw_this_boot: bool,
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
            verdict_author: 0,
            mirror: Vec::new(),
            mirror_gen: 0,
            mirror_author: 0,
            lineage: None,
            mirror_lineage: None,
            max_gen_seen: 0,
            unpublished: Vec::new(),
            inherited: false,
            coordinator: None,
            judge_from: now.mono,
            cluster_reported: false,
            armed: false,
            arming: false,
            unguarded: false,
            ready_sent: false,
            last_pet: None,
            mailbox_seen: BTreeMap::new(),
            ack_nonce: 0,
            recheck: false,
            started_at: now.mono,
            probe_seq: 0,
            probe_found: Vec::new(),
            probe_runs: Vec::new(),
            probe_untracked_max: 0,
            probe_alarms: Vec::new(),
            probe_found_boots: Vec::new(),
            own_block_history: Vec::new(),
            leave_seq: None,
            fences: BTreeMap::new(),
            storage: Storage::Ok,
            pending_kind: None,
            actions: Vec::new(),
            now,
            channel: BTreeMap::new(),
            membership: p.membership.clone(),
            peer_ids: Vec::new(),
            spare_records: Vec::new(),
            spare_views: Vec::new(),
            inventory: Default::default(),
            duplicates: Default::default(),
            duplicates_due: false,
            evidence: BTreeMap::new(),
            memberships: BTreeMap::from([(p.membership.epoch, p.membership.clone())]),
            lease_short_at: now.mono,
            surviving_since: None,
            survivals: (0, 0),
            probe_left_seq: None,
            probe_saw_this_boot: false,
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

    /// Whether a table this host holds (its own, or the one it republishes) has a `fenced`
    /// verdict about `incarnation` of host `id`: it may still publish it.
    pub fn holds_fenced_verdict(&self, id: u32, incarnation: u64) -> bool {
        let fenced = |v: &Verdict| {
            v.host_id == id && v.incarnation == incarnation && v.kind == VerdictKind::Fenced
        };
        self.verdicts.values().any(fenced) || self.mirror.iter().any(fenced)
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

    /// Why block 0 of volume `v` is not the header this agent runs with, if it is not.
    pub fn header_damage(&self, v: usize) -> Option<&str> {
        self.vols.get(v).and_then(|v| v.header_damage.as_deref())
    }

    /// The membership this host follows (`hbfence members`).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Adopts the newest membership a read quorum of volumes holds (never an older one). A
    /// host removed while it runs keeps running: stopping on its own would be a decision an
    /// operator's header write makes for it (a forced removal is meant to be followed by a
    /// stop), so it raises an alarm and goes on; its next start refuses.
    fn membership_read(&mut self, volume: usize, membership: Membership, earlier: Vec<Membership>) {
        let Some(vol) = self.vols.get_mut(volume) else { return };
        // Every membership any volume showed, and the ones its header says it replaced: a
        // peer may hold any of them (the survival judge rule), also one this host never read
        // (two changes within one of its read cycles, or made before it started).
        for m in earlier.into_iter().chain([membership.clone()]) {
            self.memberships.entry(m.epoch).or_insert(m);
        }
        vol.membership = Some(membership);
        let (_, r) = Self::quorums(self.vols.len());
        let seen: Vec<Option<&Membership>> =
            self.vols.iter().map(|v| v.membership.as_ref()).collect();
        let Some(newest) = hdr::adopt(&seen, r) else { return };
        if newest.epoch <= self.membership.epoch {
            return;
        }
        let newest = newest.clone();
        let me = self.p.host_id;
        let detail = format!("{} -> {}", self.membership.describe(), newest.describe());
        self.membership = newest;
        self.event(EventKind::MembershipChanged, me, None, detail);
        // Only an older CLI can switch it on under such a timing (this one refuses): every
        // agent of this version ignores it alike (`Membership::survival_on`), but says so.
        if let Some(e) = self.membership.survival_timing_error(&self.p.timing) {
            self.event(
                EventKind::Alarm,
                me,
                None,
                format!(
                    "outage survival was switched on, but the volume's timing breaks the rule \"{}\" ({}): this agent ignores it (it asks for, grants and waits for no permit), so a storage outage longer than the lease reboots this host as without survival; agents of an older version would act on it: switch it off with `hbfence outage-survival off`",
                    e.rule, e.detail
                ),
            );
        }
        if !self.membership.admits(me) {
            self.event(
                EventKind::Alarm,
                me,
                None,
                format!(
                    "this host (id {me}) is no longer a member ({}): its peers stop reading its heartbeat, so nobody would fence it; it keeps running until stopped, and will not start again unless added back (`hbfence members add {me}`)",
                    self.membership.describe()
                ),
            );
        }
    }

    /// The agent keeps running on the header it read at start (its parameters cannot change
    /// under it: S6 forbids it to rewrite block 0), but the next start of any agent needs the
    /// header: an operator must restore it, so this is an event each way.
    fn header_checked(&mut self, volume: usize, damage: Option<String>) {
        let Some(vol) = self.vols.get_mut(volume) else { return };
        if vol.header_damage == damage {
            return;
        }
        let was_damaged = vol.header_damage.is_some();
        vol.header_damage = damage.clone();
        let me = self.p.host_id;
        match damage {
            Some(why) => {
                self.event(EventKind::HeaderDamaged, me, None, format!("volume {volume}: {why}"))
            }
            None if was_damaged => self.event(
                EventKind::HeaderRestored,
                me,
                None,
                format!("volume {volume}: block 0 holds this cluster's header again"),
            ),
            None => {}
        }
    }

    /// The next time the core needs to run even without input: the next cycle or retry, a
    /// pet, the last pet under the lease, the doom, a pending self-fence, an I/O that turns
    /// overdue or stuck, a fencing retry. The daemon sleeps until then (no fixed tick), so
    /// everything the core decides from time alone must be here.
    pub fn next_deadline(&self) -> u64 {
        // A busy volume's retry waits for its I/O to finish, which is an input of its own.
        let io = self
            .vols
            .iter()
            .filter(|v| v.in_flight.is_none())
            .filter_map(|v| v.retry_at)
            .fold(self.next_cycle_at, u64::min);
        // An I/O under way turns overdue one interval after its read's start (S4: peer timers
        // restart) and stuck io_timeout after its start (the volume turns unhealthy) without
        // any input.
        let interval = self.p.timing.interval_ms;
        let limit = self.p.timing.io_timeout_ms;
        let in_flight = self
            .vols
            .iter()
            .filter_map(|v| v.in_flight.map(|io| (v.healthy, io)))
            .flat_map(|(healthy, io)| {
                [Some(io.read_at + interval), healthy.then_some(io.started + limit)]
            })
            .flatten()
            .filter(|&t| t > self.now.mono)
            .min();
        let pets = self.armed && !self.doomed();
        let next_pet = self.last_pet.map(|t| t + self.pet_every_ms()).filter(|_| pets);
        let final_pet =
            self.last_pet_at().filter(|&l| pets && self.last_pet.is_some_and(|t| t < l));
        let doom = self.doom_at().filter(|_| matches!(self.phase, Phase::Running | Phase::Leaving));
        let self_fence = match self.phase {
            Phase::Doomed { fence_at, fenced: false, .. } => Some(fence_at),
            _ => None,
        };
        let fence_retry = self
            .fences
            .values()
            .filter(|j| !j.in_flight && j.next_attempt_at != u64::MAX)
            .map(|j| j.next_attempt_at)
            .filter(|&t| t > self.now.mono)
            .min();
        // Survival starts (an event) the instant the lease runs out under permits.
        let lease_end = self
            .lease_expiry()
            .filter(|&e| e > self.now.mono && self.survival_enabled() && !self.doomed());
        [
            in_flight,
            next_pet,
            final_pet,
            doom,
            self_fence,
            fence_retry,
            self.channel_deadline(),
            lease_end,
        ]
        .into_iter()
        .flatten()
        .fold(io, u64::min)
    }

    /// Every peer this host has seen, with its current judgement.
    pub fn peer_views(&self) -> Vec<PeerView> {
        self.peers
            .iter()
            // Peers of which only torn blocks were read are not shown.
            .filter(|(_, p)| p.record.is_some())
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
                    vms: self.vms_view(p),
                }
            })
            .collect()
    }

    /// Feeds one input at local time `now`; returns the actions to carry out, in order.
    pub fn handle(&mut self, now: Now, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.handle_into(now, input, &mut out);
        out
    }

    /// [`Agent::handle`] into a buffer the caller keeps (`out` is replaced): the daemon's
    /// steady state hands the same two buffers back and forth and allocates nothing for them.
    pub fn handle_into(&mut self, now: Now, input: Input, out: &mut Vec<Action>) {
        out.clear();
        // Monotonic time never goes backwards, even if a driver misbehaves.
        self.now = Now { mono: now.mono.max(self.now.mono), wall: now.wall };
        // Trouble that lasted up to this instant counts before the input changes it: the
        // daemon wakes on deadlines, not on a tick, so an I/O overdue since its deadline and
        // finishing now must restart the peer timers now, not at that deadline (S4; the
        // simulation without a tick, seed 813, judged from the earlier instant).
        self.check_stuck_io(self.now.mono);
        self.check_overdue_io(self.now.mono);
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
            Input::HeaderChecked { volume, damage } => self.header_checked(volume, damage),
            Input::MembershipRead { volume, membership, earlier } => {
                self.membership_read(volume, membership, earlier)
            }
            Input::PeerChallenge { peer, token } => self.peer_challenged(peer, token),
            Input::PeerAnswer { peer, answer } => self.peer_answered(peer, answer),
            Input::Inventory(collected) => self.inventory_collected(collected),
        }
        self.step();
        out.append(&mut self.actions)
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
        // A `fenced` verdict names the VMs the host ran at its last heartbeat (issue 15).
        let vms = (kind == EventKind::Fenced).then(|| Box::new(self.vms_for_event(host)));
        self.actions.push(Action::Event(Event {
            kind,
            host,
            host_name,
            method,
            detail,
            mono_ms: self.now.mono,
            wall_ms: self.now.wall,
            vms,
        }));
    }

    fn event_with_vms(
        &mut self,
        kind: EventKind,
        host: u32,
        detail: String,
        vms: crate::core::inventory::VmReport,
    ) {
        self.event(kind, host, None, detail);
        if let Some(Action::Event(e)) = self.actions.last_mut() {
            e.vms = Some(Box::new(vms));
        }
    }

    /// Everything that depends only on time: leases, pets, cycles, judgements.
    fn step(&mut self) {
        let now = self.now.mono;
        self.check_stuck_io(now);
        self.check_overdue_io(now);
        match self.phase {
            Phase::Probing { .. } | Phase::Exited => {}
            Phase::Running | Phase::Leaving => {
                if self.doom_at().is_some_and(|d| now >= d) {
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
        self.update_survival();
        if self.phase == Phase::Leaving {
            self.maybe_finish_leaving();
        }
        self.maybe_pet(now);
        self.update_storage_state();
        if !matches!(self.phase, Phase::Probing { .. } | Phase::Exited) {
            self.judge_peers();
            self.check_duplicates();
        }
        self.update_channel();
        self.schedule_io(now);
    }
}

pub mod channel;
mod coordinator;
mod inventory;
mod io;
mod lease;
mod mailbox;
mod peers;
mod survival;
#[cfg(test)]
mod tests;
