//! The simulated cluster: hosts (boots, clocks, agent processes, watchdogs, BMCs), volumes,
//! the event queue, the fault/episode generator and the invariant checker.
//!
//! Modelling choices (see also the report in `tests/simulation.rs`):
//! - True time is in µs; every host boot has its own monotonic clock (random origin, rate
//!   ±1000 ppm) and a wall clock that may jump. Agents only ever see their host's clocks.
//! - An agent process is driven like the daemon drives it: `Input::Tick` at the core's next
//!   deadline (no fixed tick), I/O completions, fence results and stop requests; actions are executed in order and
//!   an input produced by an action (`WatchdogArmed`) is fed after the batch, as `daemon::feed`.
//! - One I/O cycle = optional write of the own block, then one read of blocks 1..=2*max_hosts,
//!   decoded with `decode_view` from the raw bytes. Every block of a read is taken at its own
//!   instant within the read (a multi-block read is not atomic); a block read after a stall is
//!   read after the stall ended.
//! - In-flight writes: by default (`Inflight::DiscardOnDeath`) a write that has not reached the
//!   disk when its host is reset or powered off never lands (the host's HBA is gone). Every
//!   write of a live host lands no later than io_timeout after its start, or never (the
//!   brief's assumption). `Inflight::LandWithinIoTimeout` lets the in-flight writes of a dead
//!   host land too (up to io_timeout after their start) and then also checks that no write of
//!   a boot lands after a `fenced` verdict about it.

use super::net::{Net, NetFault, NetMsg, NetWin};
use super::storage::{plan_op, Volume, WinKind, Window};
use super::{fmt_t, Clock, Fnv, Rng, MS, SEC};
use hbfence::core::agent::{
    Action, Agent, AgentParams, ChallengeToken, ChannelParams, DoomReason, Input, Membership, Now,
    PeerAnswer, PeerStatus, Phase, SelfFenceKind, UnsafeTestKnobs, EXIT_HOST_ID_IN_USE,
};
use hbfence::core::events::EventKind;
use hbfence::core::format::{
    self, BootId, ClusterId, Command, FenceMethodKind, Geometry, Header, Heartbeat, Mailbox,
    VerdictKind, BLOCK_SIZE,
};
use hbfence::core::timing::Timing;
use hbfence::core::view::{decode_view, table_order, take_later_fenced, Slot};
use hbfence::net::wire::NO_PERMIT_MAX_MS;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::rc::Rc;

/// Slack allowed on top of the liveness bounds, in ms: 100 ms tick granularity (judgements are
/// made on ticks and I/O completions) + up to 2×40 ms for the observer's write+read cycle
/// (base latency ≤ 20 ms × jitter ≤ 2) + clock-rate differences (≤ 0.2 % of ≤ 15 s = 30 ms),
/// rounded up. The "read-phase jitter" itself (the observer reads once per interval, so it
/// sees the last heartbeat up to one interval late) is the "+ one interval" of the bound.
pub const LIVENESS_SLACK_MS: u64 = 300;
/// [`LIVENESS_SLACK_MS`], or `SIM_LIVENESS_SLACK_MS` for experiments (how late are verdicts?).
pub fn liveness_slack_ms() -> u64 {
    std::env::var("SIM_LIVENESS_SLACK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LIVENESS_SLACK_MS)
}

/// Longest BMC power-off + confirmation of a working BMC in this model (ms).
pub const BMC_CONFIRM_MAX_MS: u64 = 2_500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inflight {
    DiscardOnDeath,
    LandWithinIoTimeout,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Give the agents a Timing with dead_after below the real bound (margin 0, watchdog term
    /// 0), which `init` would refuse; the hardware watchdogs keep the real timeout.
    pub unsafe_timing: bool,
    /// `AgentParams.knobs.judge_through_trouble` (disables S4).
    pub judge_through_trouble: bool,
    /// Random wall-clock origins and jumps (false: the reference run of the S2 comparison).
    pub wall_clocks: bool,
    pub inflight: Inflight,
    /// Print every trace line as it happens (replay of one seed).
    pub full_trace: bool,
    /// Record the decision digest (S2 comparison).
    pub digest: bool,
    /// No BMC and no working sysrq anywhere: the hardware watchdog is the only guarantee.
    pub watchdog_only: bool,
    /// Only these rules count (others are traced and ignored): used by the tests that prove
    /// a deliberately unsafe configuration is caught, whatever else the core gets wrong.
    pub only_rules: Option<&'static [&'static str]>,
    /// Unsafe: the agent's clock stops while its host is suspended (today's CLOCK_MONOTONIC
    /// daemon) instead of counting on (CLOCK_BOOTTIME).
    pub clock_stops_in_suspend: bool,
    /// Unsafe: a watchdog whose timer stops on close answers `WatchdogArmed(Ok)` (today's
    /// driver), so a dead agent leaves its host unguarded while advertising an armed watchdog.
    pub arm_stop_on_close: bool,
    /// Schedule focus for the checker tests (more of one fault class).
    pub focus: Focus,
    /// The peer channel with outage survival on (members: every host): Some(on/off) forces
    /// it, None draws it per seed (half of them).
    pub survival: Option<bool>,
    /// Unsafe: the judge uses the watchdog bound without the survival rule.
    pub judge_ignores_survival: bool,
    /// Unsafe: a permit's lifetime counts from the answer's arrival, not from the challenge.
    pub permit_from_answer: bool,
}

/// Raises the weight of one fault class (the checker tests look for one kind of failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    None,
    Suspend,
    StopOnClose,
    /// Cluster-wide outages and network faults (the survival checker tests).
    Survival,
    /// Storage-wide blips in most episodes (the S4 checker test).
    Blip,
}

impl Options {
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            unsafe_timing: false,
            judge_through_trouble: false,
            wall_clocks: true,
            inflight: Inflight::DiscardOnDeath,
            full_trace: false,
            digest: false,
            watchdog_only: false,
            only_rules: None,
            clock_stops_in_suspend: false,
            arm_stop_on_close: false,
            focus: Focus::None,
            survival: None,
            judge_ignores_survival: false,
            permit_from_answer: false,
        }
    }

    /// The same seed and schedule focus with every unsafe knob off (baseline of a checker test).
    pub fn normal(&self) -> Options {
        Options {
            unsafe_timing: false,
            judge_through_trouble: false,
            clock_stops_in_suspend: false,
            arm_stop_on_close: false,
            judge_ignores_survival: false,
            permit_from_answer: false,
            ..self.clone()
        }
    }
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub rule: &'static str,
    pub t: u64,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} violated at t={}: {}", self.rule, fmt_t(self.t), self.message)
    }
}

/// Time from a quiet death to the first `fenced` verdict about it.
#[derive(Clone, Debug)]
pub struct FenceTime {
    pub seed: u64,
    pub ms: u64,
    pub bound_ms: u64,
    pub method: FenceMethodKind,
}

impl FenceTime {
    /// How much earlier than its bound the verdict came (negative: late).
    pub fn margin(&self) -> i64 {
        self.bound_ms as i64 - self.ms as i64
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub hosts: usize,
    pub sim_ms: u64,
    pub quiet_deaths: usize,
    pub quiet_deaths_rejoined: usize,
    /// Worst time to fenced for quiet deaths with a working BMC, and through the watchdog.
    pub worst_bmc: Option<FenceTime>,
    pub worst_wd: Option<FenceTime>,
    /// The verdicts that came closest to their bound (bound minus slack is the brief's
    /// suspect_after + fencing time + interval, or dead_after + interval).
    pub closest_bmc: Option<FenceTime>,
    pub closest_wd: Option<FenceTime>,
    pub fenced_verdicts: usize,
    pub fenced_by: BTreeMap<&'static str, usize>,
    pub short_blips: usize,
    pub medium_blips: usize,
    pub chaos_episodes: usize,
    pub self_fences: usize,
    pub watchdog_resets: usize,
    pub bmc_power_offs: usize,
    pub agent_starts: usize,
    pub pets: u64,
    /// How often each kind of thing happened (coverage of the fault and decision space).
    pub counts: BTreeMap<String, u64>,
    pub io_cycles: u64,
    pub torn_landings: u64,
    pub stale_writes_discarded: u64,
}

pub struct Outcome {
    pub violation: Option<Violation>,
    /// The last trace lines (all of them if there were fewer than the ring's size).
    pub trace: Vec<String>,
    pub stats: Stats,
    pub digest: Vec<(u64, u32, u64)>,
    pub summary: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bmc {
    None,
    Confirm,
    Fail,
    Lie,
    Unreachable,
    Flaky,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeathHow {
    PowerLoss,
    Crash,
    Hang,
}

struct Boot {
    boot_id: BootId,
    clock: Clock,
    wall_origin_ms: u64,
    dead_at: Option<u64>,
    /// The runtime marker written on `MarkDoomed` (lives in /run: gone at reboot).
    marker: bool,
    /// The daemon's armed marker: written before it opens the watchdog, removed after a magic
    /// close or when the device turns out to stop on close (lives in /run: gone at reboot).
    armed_marker: bool,
    /// An agent on this boot expired its lease or was doomed: no agent may pet again (S3).
    lease_lost: Option<String>,
    /// An agent armed the watchdog on this boot.
    armed_ever: bool,
    /// Suspensions the agent's clock did not count (only with `clock_stops_in_suspend`):
    /// (boot-clock ms at the start, length in ms), in order.
    stops: Vec<(u64, u64)>,
    /// The host is suspended: since (true time, boot-clock ms), the watchdog's remaining time,
    /// whether the agent process was SIGSTOPped before.
    suspended: Option<Suspension>,
    /// Incarnations of this boot declared fenced while it was suspended: acceptable only if
    /// the boot never acts again after resuming (S1-RESUME).
    fenced_while_suspended: Vec<u64>,
    /// The agent's clock when the host last woke up.
    resumed_ms: Option<u64>,
    /// Whether the agent's first step after the last resume found it doomed (None: no step
    /// yet). A boot doomed on resume runs no agent that pets or writes again.
    doomed_on_resume: Option<bool>,
    /// The agent process was gone after the last resume and the kernel pinged the running
    /// timer on close: the reset may come one watchdog period after that (design.md, known
    /// limits).
    close_ping_after_resume: bool,
    /// Suspends of this boot so far.
    suspends: u32,
}

#[derive(Clone, Copy)]
struct Suspension {
    since: u64,
    boot_ms: u64,
    wd_remaining: Option<u64>,
    was_paused: bool,
}

struct IoReq {
    cycle: u64,
    started: u64,
    record: Option<Box<Heartbeat>>,
    /// Agent time before which the read does not start (`Action::StartIo`).
    read_at: u64,
}

enum Pending {
    Input(Input),
    Io(IoDoneEv),
}

struct Proc {
    pid: u64,
    inc: u64,
    agent: Agent,
    paused: bool,
    /// Counts the stops of this process: a SIGCONT scheduled for one stop does not end a later
    /// one (seed 56700: the end of a chaos episode resumed a stopped agent early; the stop's own
    /// SIGCONT, still due, then revived the host after it had hung for good).
    pause_token: u64,
    pending: Vec<Pending>,
    io_busy: Vec<bool>,
    io_queue: Vec<VecDeque<IoReq>>,
    exited: bool,
    ready_at: Option<u64>,
    broken_watchdog: bool,
    /// Started on a boot where no agent ever armed the watchdog, lost its lease or was doomed.
    clean_boot: bool,
    tick_gen: u64,
    /// True time the process started.
    started: u64,
    /// The peer channel's challenges in flight: nonce -> (peer, sent at (agent ms), answered).
    book: HashMap<u64, (u32, u64, bool)>,
    /// Incarnations whose `leaving` record a read of this process returned.
    read_leaving: HashSet<u64>,
    /// This process has the watchdog device open (from `ArmWatchdog` until the magic close):
    /// only its death makes the kernel ping or stop the timer on close (seed 1509970: restarts
    /// killed while still probing had never opened it, and postponed nothing).
    holds_watchdog: bool,
    /// Per volume, the members epoch this process last read in block 0 (the I/O thread sends
    /// `MembershipRead` on a change).
    header_epochs: Vec<u32>,
}

#[derive(Default)]
struct Wd {
    running: bool,
    token: u64,
    /// True time the running timer fires.
    expires: u64,
}

struct Host {
    id: u32,
    ppm: i64,
    bmc: Bmc,
    eligible: bool,
    sysrq_ok: bool,
    self_fence: SelfFenceKind,
    self_fence_delay: u64,
    base_lat: Vec<u64>,
    power_on: bool,
    boot_token: u64,
    boots: Vec<Boot>,
    proc: Option<Proc>,
    wd: Wd,
    wall_jump_ms: i64,
    /// No reboot / power-on before this true time (liveness episodes).
    hold_until: u64,
    agent_start_pending: bool,
    /// The watchdog driver stops the timer on close (no WDIOF_MAGICCLOSE, nowayout off).
    wd_stops_on_close: bool,
}

impl Host {
    fn alive(&self) -> bool {
        self.power_on && self.boots.last().is_some_and(|b| b.dead_at.is_none())
    }
}

struct IoDoneEv {
    h: usize,
    pid: u64,
    vol: usize,
    cycle: u64,
    started: u64,
    write: Option<(bool, u64)>,
    read_lo: u64,
    read_ok: bool,
}

enum Fault {
    Crash {
        h: usize,
        restart_after: Option<u64>,
    },
    Pause {
        h: usize,
        dur: Option<u64>,
    },
    Stop {
        h: usize,
        restart_after: u64,
    },
    PowerLoss {
        h: usize,
        on_after: Option<u64>,
    },
    Mailbox {
        h: usize,
        cmd: Command,
    },
    WallJump {
        h: usize,
        delta_ms: i64,
    },
    Kill {
        h: usize,
        how: DeathHow,
        bound_ms: u64,
        path: &'static str,
    },
    /// The whole host freezes (agent, I/O, watchdog timer) for `dur`.
    Suspend {
        h: usize,
        dur: u64,
    },
    /// The operator powers the host off out of band, then types confirm-off.
    OperatorOff {
        h: usize,
        confirm_after: u64,
    },
    /// Clean (SIGTERM, then reset) or unclean reboot of the host.
    Reboot {
        h: usize,
        clean: bool,
    },
    /// A second machine with the same host id starts its agent at the same instant as h's.
    Twin {
        h: usize,
    },
    /// A block of h's heartbeat on volume v is overwritten with h's incarnation and a sequence
    /// number far ahead.
    Forge {
        h: usize,
        v: usize,
    },
}

enum Ev {
    Tick {
        h: usize,
        pid: u64,
        gen: u64,
    },
    IoDone(Box<IoDoneEv>),
    Land {
        writer: Option<(usize, usize)>,
        vol: usize,
        block: usize,
        data: Rc<format::Block>,
        torn: bool,
        inc: u64,
    },
    BmcOff {
        target: usize,
    },
    BmcConfirm {
        h: usize,
        pid: u64,
        peer: u32,
        target: usize,
    },
    FenceResult {
        h: usize,
        pid: u64,
        peer: u32,
        result: Result<String, String>,
    },
    BmcOn {
        target: usize,
    },
    WdExpire {
        h: usize,
        boot: usize,
        token: u64,
    },
    SelfFenceNow {
        h: usize,
        boot: usize,
        kind: SelfFenceKind,
    },
    Boot {
        h: usize,
        token: u64,
    },
    AgentStart {
        h: usize,
        boot: usize,
    },
    Resume {
        h: usize,
        pid: u64,
        token: u64,
    },
    Fault(Fault),
    Episode {
        attempt: u32,
    },
    Deadline {
        idx: usize,
    },
    Note(String),
    Wake {
        h: usize,
        boot: usize,
    },
    ResumeDeadline {
        h: usize,
        boot: usize,
        /// The boot's suspend count when scheduled: a later suspend froze the watchdog, and
        /// the wake after it schedules the deadline again (seed 136074).
        suspends: u32,
    },
    TwinStart {
        h: usize,
        tw: usize,
    },
    TwinDeadline {
        idx: usize,
    },
    TwinOff {
        tw: usize,
    },
    ReaderCheck,
    /// An operator rewrites block 0 with a new members epoch (`hbfence members`, or the
    /// survival switch off and on again): same members, same switch.
    MembersEpoch,
    /// The agent's network thread challenges every peer (every `[network] interval_ms`).
    NetTimer {
        h: usize,
        pid: u64,
    },
    /// A quarter period after `NetTimer`: unanswered challenges are sent again.
    NetRetry {
        h: usize,
        pid: u64,
    },
    NetArrive {
        to: usize,
        msg: NetMsg,
    },
}

struct Queued {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

struct DeathWatch {
    h: usize,
    inc: u64,
    at: u64,
    bound_ms: u64,
    path: &'static str,
    done: bool,
}

/// A death episode on a settled cluster: nobody but the victim may be fenced.
struct QuietWatch {
    until: u64,
    victim: usize,
}

struct TwinWatch {
    id: u32,
    h: usize,
    tw: usize,
    incs: Vec<u64>,
    /// Exits with the collision code are expected until then (late writes included).
    until: u64,
    /// When both agents started.
    from: u64,
    /// Time either twin was frozen (suspend, SIGSTOP) during the episode.
    frozen: u64,
    /// How far the deadline has been moved so far (`twin_deadline`).
    moved: u64,
}

/// Where copies of a `fenced` verdict are (`World::copies`).
struct Copies {
    on_a_volume: bool,
    lagging: bool,
    to_land: bool,
    held: bool,
}

/// What a reader of a read quorum of volumes knows about one `fenced` verdict (VERDICTS).
#[derive(Clone, Copy)]
struct ReaderVerdict {
    since: u64,
    /// Consecutive checks in which some read quorum's table lacked it.
    missing: u32,
    /// Consecutive checks in which every read quorum's table lacked it.
    all_missing: u32,
    /// The check at which the current run of `all_missing` began.
    all_missing_since: u64,
    /// It was missing from every quorum's table for 3 checks (withdrawn) since this instant
    /// (the first of those checks: a coordinator may judge it again before the third).
    gone: Option<u64>,
    /// The newest (generation, author) of a table that showed it.
    newest: (u32, u32),
    /// The lowest generation stamp (`changed_gen`) any table on the volumes gave it (0:
    /// unknown): a `clear` whose issuer saw a table at least that new ends it.
    stamp: u32,
}

/// A cluster-wide storage outage (SURVIVAL): the hosts of a connected majority must not die
/// and must all run on with a lease once storage is back.
struct OutageWatch {
    from: u64,
    storage_back: u64,
    until: u64,
    protected: Vec<bool>,
    boots: Vec<usize>,
}

struct BlipWatch {
    from: u64,
    until: u64,
    short: bool,
    dur: u64,
}

const TRACE_RING: usize = 4000;
const TICK_MS: u64 = 100;
/// The daemon's longest sleep without a deadline (`daemon::MAX_SLEEP`).
const MAX_SLEEP_MS: u64 = 60_000;

/// What a reader of one read quorum picks: (volumes, (gen, author), `fenced` verdicts).
type QuorumTable = (Vec<usize>, Option<(u32, u32)>, HashSet<(u32, u64)>);

/// Table order: higher generation first, then the lower author (as readers pick).
fn newer(a: (u32, u32), b: (u32, u32)) -> bool {
    (a.0, Reverse(a.1)) > (b.0, Reverse(b.1))
}

/// Budget of host ticks per seed (the main cost of a seed).
const HOST_TICKS_PER_SEED: u64 = 10_000;
/// Budget of peer-channel datagrams per seed.
const NET_MESSAGES_PER_SEED: u64 = 60_000;

/// Lagging volumes return content up to this many intervals old.
const MAX_LAG: u64 = 4;

fn first_episode(u: u64) -> u64 {
    8 * SEC + 8 * u
}

/// A timing from the whole domain `Timing::validate` accepts: interval 0.1..10 s
/// (log-uniform), the others mostly a few intervals above their rule's minimum and now and then
/// anywhere up to their limit; drawn again until `validate` accepts (so the generator follows
/// changes of the rules).
pub fn draw_timing(rng: &mut Rng) -> Timing {
    for _ in 0..10_000 {
        // Log-uniform 100 ms .. 10 s.
        let interval_ms = (100.0 * 100f64.powf(rng.below(1_000_001) as f64 / 1e6)) as u64;
        let i = interval_ms;
        let wide = rng.chance(150);
        let io_timeout_ms = if wide { rng.range(i, 20 * i) } else { i * rng.range(2, 8) / 2 };
        let lease_timeout_ms = 2 * i
            + io_timeout_ms
            + if wide { rng.range(0, 20 * i) } else { rng.range(0, 6) * i / 2 };
        let watchdog_timeout_ms = if rng.chance(150) {
            rng.range(2, 255) * 1000
        } else {
            (i * rng.range(1, 8) / 1000).clamp(2, 255) * 1000
        };
        let margin_ms = if rng.chance(300) { 1000 } else { rng.range(1000, (2 * i).max(1000)) };
        let suspect_after_ms =
            3 * i + if wide { rng.range(0, 30 * i) } else { rng.range(0, 6) * i / 2 };
        let t = Timing {
            interval_ms,
            io_timeout_ms,
            lease_timeout_ms,
            watchdog_timeout_ms,
            suspect_after_ms,
            margin_ms,
        };
        if t.validate().is_ok() {
            return t;
        }
    }
    panic!("the timing generator finds no timing `validate` accepts");
}

pub struct World {
    o: Options,
    rng: Rng,
    t: u64,
    seq: u64,
    q: BinaryHeap<Reverse<Queued>>,
    end: u64,
    timing: Timing,
    agent_timing: Timing,
    advertised_wd_s: u16,
    bound_cut_ms: u64,
    max_hosts: u32,
    geo: Geometry,
    cluster: ClusterId,
    hosts: Vec<Host>,
    vols: Vec<Volume>,
    link_win: Vec<Vec<Vec<Window>>>,
    vol_win: Vec<Vec<Window>>,
    fence_methods: BTreeMap<u32, FenceMethodKind>,
    power_on_after: bool,
    next_pid: u64,
    incs: HashMap<u64, (usize, usize)>,
    left_clean: HashSet<u64>,
    /// Per incarnation: when fencing against it first started (StartFence).
    fence_started_at: HashMap<u64, u64>,
    /// Incarnations that left cleanly while a BMC/agent power-off started before their
    /// `leaving` record landed was under way (seed 42068).
    left_during_fencing: HashSet<u64>,
    /// Left-clean incarnations judged by an agent that never read their `leaving` record, after
    /// later runs of the host overwrote it everywhere (`left_unknowable`).
    left_unknowable: HashSet<u64>,
    /// Per incarnation: (highest seq that reached a volume, when it first did, when the
    /// previous one first did).
    landed: HashMap<u64, (u64, u64, u64)>,
    /// Per incarnation: the true time it last started a write.
    last_write_started: HashMap<u64, u64>,
    first_fenced: HashMap<u64, u64>,
    /// Per incarnation: when a `fenced` verdict about it first appeared in an agent's table,
    /// whatever the checks made of it (a suspended host's verdict is judged by S1-RESUME and
    /// is no `first_fenced`; an operator's `clear` after this moment may end it: seed 2080152).
    first_in_table: HashMap<u64, u64>,
    /// Incarnations whose `fenced (manual)` verdict came from an operator's wrong confirm-off
    /// about a silent host: the core followed its rules, so republishing it later (once the
    /// host writes again, as a new agent) is no new violation (soak seed 21952).
    fenced_by_operator_error: HashSet<u64>,
    deaths: Vec<DeathWatch>,
    blip: Option<BlipWatch>,
    quiet: Option<QuietWatch>,
    /// A BMC power-off scheduled (a fencing attempt in flight) lands until then.
    power_off_pending_until: u64,
    /// The last chaos fault is scheduled at or before this instant.
    faults_until: u64,
    trace: VecDeque<String>,
    violation: Option<Violation>,
    stats: Stats,
    digest: Vec<(u64, u32, u64)>,
    raw: Vec<u8>,
    summary: String,
    /// One interval, µs: the schedule's unit of time (episodes scale with the drawn timing).
    u: u64,
    /// Real hosts (twins come after them in `hosts`).
    n: usize,
    /// Per volume: windows (start, end, lag) in which reads return content `lag` old.
    lag_win: Vec<Vec<(u64, u64, u64)>>,
    /// Per host id - 1, per volume: (true time, incarnation, seq) of every whole heartbeat
    /// record that landed.
    landings: Vec<Vec<Vec<(u64, u64, u64)>>>,
    /// Per host id - 1, per volume: true times its heartbeat block was spoiled (a torn landing,
    /// a forged record): the value before it can no longer be read.
    spoiled_at: Vec<Vec<Vec<u64>>>,
    /// Per host id - 1, per volume: the incarnation whose write (whole or torn) last landed on
    /// its heartbeat block.
    block_writer: Vec<Vec<u64>>,
    /// Per host id: state of its last landed record.
    last_state: HashMap<u32, format::HostState>,
    /// Per host id: last time a landing showed another incarnation than the one before.
    inc_changed: HashMap<u32, (u64, u64)>,
    /// Per host id: last operator command written about it.
    op_cmd_at: HashMap<u32, u64>,
    /// Per host id: the last operator `clear` about it, and the verdict table generation its
    /// issuer saw (`None`: written as by an hbfence before that field).
    op_clear_at: HashMap<u32, (u64, Option<u32>)>,
    /// Per host id: last `fenced` event a coordinator reported about it.
    fenced_event_at: HashMap<u32, u64>,
    /// Per host id: last forged record written into its block.
    forged_at: HashMap<u32, u64>,
    twins: Vec<TwinWatch>,
    reader: HashMap<(u32, u64), ReaderVerdict>,
    /// Per tracked `fenced` verdict: the agent processes (pid) that held it at the last reader
    /// check, and whether one of them dropped it while it kept running (then its loss is the
    /// core's doing, never "every copy torn").
    holders: HashMap<(u32, u64), (Vec<u64>, bool)>,
    /// The peer channel and outage survival (None: agents without `[network]`).
    net: Option<Net>,
    outage: Option<OutageWatch>,
    /// (true time, epoch) of every members epoch an operator wrote: a read of a volume shows
    /// the latest one written before what it returns (a lagging volume an older one).
    members_bumps: Vec<(u64, u32)>,
}

pub fn run(o: Options) -> Outcome {
    let mut w = World::new(o);
    w.start();
    while let Some(Reverse(q)) = w.q.pop() {
        if q.t > w.end {
            break;
        }
        w.t = q.t;
        w.dispatch(q.ev);
        if w.violation.is_some() {
            break;
        }
    }
    w.stats.sim_ms = w.t / MS;
    Outcome {
        violation: w.violation,
        trace: w.trace.into_iter().collect(),
        stats: w.stats,
        digest: w.digest,
        summary: w.summary,
    }
}

impl World {
    fn new(o: Options) -> World {
        let mut rng = Rng::new(o.seed);
        let mut timing = draw_timing(&mut rng);
        if o.focus == Focus::Survival {
            // Where answer delays matter: the shortest watchdog and margin `validate` allows
            // against a long interval (an answer may come up to 3 challenge periods late).
            let i = rng.range(6_000, 10_000);
            let focused = Timing {
                interval_ms: i,
                io_timeout_ms: i,
                lease_timeout_ms: 7 * i / 2 + 2_000 + rng.range(0, i),
                watchdog_timeout_ms: 2_000,
                suspect_after_ms: 3 * i,
                margin_ms: 1_000,
            };
            if focused.validate().is_ok() {
                timing = focused;
            }
        }
        // A stream of its own, so that seeds without the channel keep their schedules.
        let mut survival =
            o.survival.unwrap_or_else(|| super::Rng::new(o.seed ^ 0x0c4a).chance(500));
        // Agents refuse to start with survival on under a timing that breaks its rule
        // (`Timing::validate_outage_survival`): such a cluster gets the lease it needs.
        if survival && timing.validate_outage_survival().is_err() {
            timing.lease_timeout_ms =
                (7 * timing.interval_ms + 2 * timing.watchdog_timeout_ms).div_ceil(2);
            assert!(timing.validate().is_ok() && timing.validate_outage_survival().is_ok());
        }
        let u = timing.interval_ms * MS;
        // 60..120 intervals, and room for a few watchdog-bound deaths.
        let duration = (rng.range(60, 120) * u)
            .max(first_episode(u) + 3 * (timing.dead_after_ms() * MS + 4 * u));
        // Every host ticks every 100 ms: long runs get fewer hosts, so a seed stays cheap.
        let max_n = (HOST_TICKS_PER_SEED / (duration / (TICK_MS * MS)).max(1)).clamp(3, 16);
        let n = rng.range(3, max_n) as usize;
        let nvol = rng.range(1, 3) as usize;
        let max_hosts = n as u32 + rng.range(1, 3) as u32;
        let agent_timing = timing;
        // `[network] interval_ms` at its default (config.rs): half the volume's interval.
        let period = (timing.interval_ms / 2).clamp(50, 60_000);
        // Datagrams cost like ticks: every period each host challenges every other one and is
        // answered. Fewer hosts when a long run would exceed the budget, no channel if even 3
        // would (a seed stays cheap; forced runs keep the channel).
        let periods = (duration / (period * MS)).max(1);
        let mut n = n;
        if survival {
            while n > 3 && 2 * periods * (n * (n - 1)) as u64 > NET_MESSAGES_PER_SEED {
                n -= 1;
            }
            if o.survival.is_none() && 2 * periods * (n * (n - 1)) as u64 > NET_MESSAGES_PER_SEED {
                survival = false;
            }
        }
        let net = survival.then(|| {
            let membership =
                Membership { members: (1..=n as u32).collect(), epoch: 1, outage_survival: true };
            Net::new(o.seed, period, membership)
        });
        let advertised_wd_s = (timing.watchdog_timeout_ms / 1000) as u16;
        let bound_cut_ms = if o.unsafe_timing {
            // The watchdog bound without its lease and io terms: `fenced` for a peer whose
            // lease may still be valid (what a wrong timing rule would do).
            timing.lease_timeout_ms + timing.io_timeout_ms
        } else {
            0
        };
        let mut cluster = [0u8; 16];
        cluster[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        cluster[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        let no_bmc_at_all = rng.chance(150) || o.watchdog_only;
        // Some clusters have sysrq disabled everywhere: self-fencing is the watchdog's job.
        let no_sysrq_at_all = rng.chance(100) || o.watchdog_only;
        let mut hosts = Vec::new();
        for i in 0..n {
            let bmc = if no_bmc_at_all {
                Bmc::None
            } else {
                [Bmc::Confirm, Bmc::None, Bmc::Fail, Bmc::Lie, Bmc::Unreachable, Bmc::Flaky]
                    [rng.weighted(&[50, 15, 8, 8, 9, 10])]
            };
            hosts.push(Host {
                id: i as u32 + 1,
                ppm: rng.signed(1000),
                bmc,
                eligible: rng.chance(850),
                sysrq_ok: rng.chance(900) && !no_sysrq_at_all,
                self_fence: [
                    SelfFenceKind::Reboot,
                    SelfFenceKind::PowerOff,
                    SelfFenceKind::Crashdump,
                ][rng.weighted(&[75, 15, 10])],
                self_fence_delay: if rng.chance(500) { 0 } else { rng.range(MS, 200 * MS) },
                base_lat: (0..nvol).map(|_| rng.range(200, 20 * MS)).collect(),
                power_on: false,
                boot_token: 0,
                boots: Vec::new(),
                proc: None,
                wd: Wd::default(),
                wall_jump_ms: 0,
                hold_until: 0,
                agent_start_pending: false,
                wd_stops_on_close: rng.chance(120) || o.focus == Focus::StopOnClose,
            });
        }
        if !hosts.iter().any(|h| h.eligible) && !rng.chance(100) {
            hosts[0].eligible = true;
        }
        if rng.chance(150) {
            // One coordinator-eligible host: its restarts must not set verdict tables back.
            let only = rng.below(n as u64) as usize;
            for (i, h) in hosts.iter_mut().enumerate() {
                h.eligible = i == only;
            }
        }
        let fence_methods: BTreeMap<u32, FenceMethodKind> = hosts
            .iter()
            .filter(|h| h.bmc != Bmc::None)
            .map(|h| {
                (h.id, if h.id % 4 == 0 { FenceMethodKind::Agent } else { FenceMethodKind::Ipmi })
            })
            .collect();
        let power_on_after = rng.chance(300);
        let header = format::encode_header(&Header {
            cluster,
            max_hosts,
            timing,
            created_wall_ms: 1_700_000_000_000,
            created_by: "sim".into(),
            members: vec![],
            members_epoch: 0,
            outage_survival: false,
            earlier_memberships: Vec::new(),
        });
        // Lagging reads look up to MAX_LAG intervals back.
        let retain = (2 * timing.io_timeout_ms + 2000) * MS + (MAX_LAG + 1) * u;
        let vols = (0..nvol).map(|_| Volume::new(header, max_hosts, retain)).collect();
        let summary = format!(
            "seed {}: {} hosts, {} volume(s), max_hosts {}, timing interval {} io {} lease {} watchdog {} suspect {} margin {} (dead_after {}){}{}, {} s; hosts: {}",
            o.seed,
            n,
            nvol,
            max_hosts,
            timing.interval_ms,
            timing.io_timeout_ms,
            timing.lease_timeout_ms,
            timing.watchdog_timeout_ms,
            timing.suspect_after_ms,
            timing.margin_ms,
            timing.dead_after_ms(),
            if o.unsafe_timing {
                ", UNSAFE watchdog bound (lease and io terms cut)"
            } else {
                ""
            },
            if o.judge_through_trouble { ", S4 DISABLED (judge_through_trouble)" } else { "" },
            duration / SEC,
            hosts
                .iter()
                .map(|h| format!(
                    "{}[bmc {:?}{}{}{}{} {:+}ppm]",
                    h.id,
                    h.bmc,
                    if h.eligible { "" } else { " ineligible" },
                    if h.wd_stops_on_close { " wd-stops-on-close" } else { "" },
                    if h.sysrq_ok { "" } else { " no-sysrq" },
                    match h.self_fence {
                        SelfFenceKind::Reboot => "",
                        SelfFenceKind::PowerOff => " sf-poweroff",
                        SelfFenceKind::Crashdump => " sf-crashdump",
                    },
                    h.ppm
                ))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let summary = format!(
            "{summary}{}",
            match &net {
                None => String::new(),
                Some(nt) => format!(
                    "; peer channel every {} ms (delay {}..{} µs, loss {}‰), outage survival ON{}{}",
                    nt.period_ms,
                    nt.base_delay.0,
                    nt.base_delay.1,
                    nt.base_loss,
                    if o.judge_ignores_survival { ", UNSAFE judge ignores survival" } else { "" },
                    if o.permit_from_answer { ", UNSAFE permits count from the answer" } else { "" },
                ),
            }
        );
        World {
            stats: Stats { hosts: n, ..Stats::default() },
            link_win: vec![vec![Vec::new(); nvol]; n],
            vol_win: vec![Vec::new(); nvol],
            o,
            rng,
            t: 0,
            seq: 0,
            q: BinaryHeap::new(),
            end: duration,
            timing,
            agent_timing,
            advertised_wd_s,
            bound_cut_ms,
            max_hosts,
            geo: Geometry { max_hosts },
            cluster,
            hosts,
            vols,
            fence_methods,
            power_on_after,
            next_pid: 1,
            incs: HashMap::new(),
            left_clean: HashSet::new(),
            fence_started_at: HashMap::new(),
            left_during_fencing: HashSet::new(),
            left_unknowable: HashSet::new(),
            landed: HashMap::new(),
            last_write_started: HashMap::new(),
            first_fenced: HashMap::new(),
            first_in_table: HashMap::new(),
            fenced_by_operator_error: HashSet::new(),
            deaths: Vec::new(),
            blip: None,
            quiet: None,
            power_off_pending_until: 0,
            faults_until: 0,
            trace: VecDeque::new(),
            violation: None,
            digest: Vec::new(),
            raw: Vec::with_capacity(2 * max_hosts as usize * BLOCK_SIZE),
            summary,
            u,
            n,
            lag_win: vec![Vec::new(); nvol],
            landings: vec![vec![Vec::new(); nvol]; max_hosts as usize],
            spoiled_at: vec![vec![Vec::new(); nvol]; max_hosts as usize],
            block_writer: vec![vec![0; nvol]; max_hosts as usize],
            last_state: HashMap::new(),
            inc_changed: HashMap::new(),
            op_cmd_at: HashMap::new(),
            op_clear_at: HashMap::new(),
            fenced_event_at: HashMap::new(),
            forged_at: HashMap::new(),
            twins: Vec::new(),
            reader: HashMap::new(),
            holders: HashMap::new(),
            net,
            outage: None,
            members_bumps: Vec::new(),
        }
    }

    fn start(&mut self) {
        let s = self.summary.clone();
        self.log(s);
        for h in 0..self.hosts.len() {
            self.hosts[h].power_on = true;
            let at = self.rng.range(0, 3 * SEC);
            let token = self.hosts[h].boot_token;
            self.at(at, Ev::Boot { h, token });
        }
        self.at(first_episode(self.u), Ev::Episode { attempt: 0 });
        self.at(first_episode(self.u), Ev::ReaderCheck);
        // Membership changes while the agents run, for clusters on the peer channel (a stream
        // of its own: seeds without the channel keep their schedules).
        if self.net.is_some() {
            let mut r = super::Rng::new(self.o.seed ^ 0x3e0c);
            for _ in 0..r.range(0, 2) {
                let at = r.range(first_episode(self.u), self.end);
                self.at(at, Ev::MembersEpoch);
            }
        }
    }

    // ----- plumbing -----

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.q.push(Reverse(Queued { t: t.max(self.t), seq: self.seq, ev }));
    }

    fn after(&mut self, d: u64, ev: Ev) {
        self.at(self.t + d, ev);
    }

    fn log(&mut self, line: String) {
        let line = format!("t={} {}", fmt_t(self.t), line);
        if self.o.full_trace {
            println!("{line}");
        }
        if self.trace.len() >= TRACE_RING {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn hlog(&mut self, h: usize, line: String) {
        let id = self.hosts[h].id;
        self.log(format!("host {id}: {line}"));
    }

    fn count(&mut self, what: impl Into<String>) {
        *self.stats.counts.entry(what.into()).or_default() += 1;
    }

    fn violate(&mut self, rule: &'static str, message: String) {
        if self.o.only_rules.is_some_and(|r| !r.contains(&rule)) {
            self.log(format!("(ignored) VIOLATION {rule}: {message}"));
            return;
        }
        if self.violation.is_none() {
            self.log(format!("VIOLATION {rule}: {message}"));
            self.violation = Some(Violation { rule, t: self.t, message });
        }
    }

    fn boot_idx(&self, h: usize) -> usize {
        self.hosts[h].boots.len() - 1
    }

    fn now_for(&self, h: usize) -> Now {
        let host = &self.hosts[h];
        let b = host.boots.last().expect("a running host has a boot");
        let local_us = b.clock.local_us(self.t);
        let since = (local_us - b.clock.origin_local_us) / 1000;
        let wall = if self.o.wall_clocks {
            (b.wall_origin_ms + since) as i64 + host.wall_jump_ms
        } else {
            (b.wall_origin_ms + self.t / MS) as i64
        };
        Now { mono: self.local_ms_at(h, self.t), wall: wall.max(0) as u64 }
    }

    /// The agent's clock at true time `t`: the boot clock (CLOCK_BOOTTIME), less the
    /// suspensions it did not count (`clock_stops_in_suspend`).
    fn local_ms_at(&self, h: usize, t: u64) -> u64 {
        let b = self.hosts[h].boots.last().expect("boot");
        let boot_ms = b.clock.local_ms(t);
        b.stops
            .iter()
            .fold(boot_ms, |a, &(s, d)| if boot_ms > s { a - d.min(boot_ms - s) } else { a })
    }

    /// The earliest true time at which the agent's clock shows `ms`.
    fn agent_true_at(&self, h: usize, ms: u64) -> u64 {
        let b = self.hosts[h].boots.last().expect("boot");
        let boot_ms = b.stops.iter().fold(ms, |bm, &(s, d)| if bm > s { bm + d } else { bm });
        b.clock.true_at(boot_ms)
    }

    /// True time at which an agent lease expiring at agent time `expiry` really expires: the
    /// renewal point converted through the boot clock, plus lease_timeout on the boot clock
    /// (suspended time counts, whatever the agent's clock did).
    fn lease_true_expiry(&self, h: usize, expiry: u64) -> u64 {
        let b = self.hosts[h].boots.last().expect("boot");
        let lease = self.agent_timing.lease_timeout_ms;
        let renewal = expiry.saturating_sub(lease);
        let boot_ms = b.stops.iter().fold(renewal, |bm, &(s, d)| if bm > s { bm + d } else { bm });
        b.clock.true_at(boot_ms + lease)
    }

    fn proc_is(&self, h: usize, pid: u64) -> bool {
        self.hosts[h].proc.as_ref().is_some_and(|p| p.pid == pid)
    }

    fn io_cap(&self, t0: u64) -> u64 {
        // In-flight writes are bounded by io_timeout (on the slowest clock: -0.2 %).
        t0 + self.timing.io_timeout_ms * MS * 998 / 1000
    }

    fn link_latency(&mut self, h: usize, v: usize) -> u64 {
        let base = self.hosts[h].base_lat[v];
        base * self.rng.range(50, 200) / 100
    }

    // ----- dispatch -----

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { h, pid, gen } => {
                if !self.hosts[h]
                    .proc
                    .as_ref()
                    .is_some_and(|p| p.pid == pid && !p.paused && p.tick_gen == gen)
                {
                    return;
                }
                // `feed` schedules the next tick.
                self.feed(h, Input::Tick);
            }
            Ev::IoDone(e) => self.io_done_event(*e),
            Ev::Land { writer, vol, block, data, torn, inc } => {
                self.land(writer, vol, block, data, torn, inc)
            }
            Ev::BmcOff { target } => {
                if self.hosts[target].power_on {
                    self.stats.bmc_power_offs += 1;
                    self.hlog(target, "BMC: chassis power off".into());
                    self.kill(target, "powered off by its BMC", true);
                }
            }
            Ev::BmcConfirm { h, pid, peer, target } => {
                // The driver's status check (S8): Ok only if the power is really off.
                let result = if self.hosts[target].power_on {
                    Err("power state is still on after power off".to_string())
                } else {
                    Ok("chassis power is off (confirmed)".to_string())
                };
                self.deliver(
                    h,
                    pid,
                    Input::FenceDone { peer, method: self.method_of(peer), result },
                );
            }
            Ev::FenceResult { h, pid, peer, result } => self.deliver(
                h,
                pid,
                Input::FenceDone { peer, method: self.method_of(peer), result },
            ),
            Ev::BmcOn { target } => self.power_on(target, "BMC power on"),
            Ev::WdExpire { h, boot, token } => {
                let host = &self.hosts[h];
                if host.alive()
                    && host.boots.len() - 1 == boot
                    && host.wd.running
                    && host.wd.token == token
                {
                    self.check_missed_pets(h);
                    self.stats.watchdog_resets += 1;
                    self.hlog(h, "WATCHDOG fired: hardware reset".into());
                    self.kill(h, "watchdog reset", false);
                }
            }
            Ev::SelfFenceNow { h, boot, kind } => {
                if self.hosts[h].alive() && self.boot_idx(h) == boot {
                    self.self_fence_exec(h, kind);
                }
            }
            Ev::Boot { h, token } => {
                if self.hosts[h].boot_token == token
                    && self.hosts[h].power_on
                    && !self.hosts[h].alive()
                {
                    if self.t < self.hosts[h].hold_until {
                        let at = self.hosts[h].hold_until;
                        self.at(at, Ev::Boot { h, token });
                        return;
                    }
                    self.new_boot(h);
                }
            }
            Ev::AgentStart { h, boot } => {
                if self.frozen(h) && self.boot_idx(h) == boot {
                    // A suspended machine starts no process: systemd restarts the agent after
                    // the wake-up (seed 119502: an agent started and wrote on a suspended host).
                    self.after(100 * MS, Ev::AgentStart { h, boot });
                    return;
                }
                self.hosts[h].agent_start_pending = false;
                if self.hosts[h].alive() && self.boot_idx(h) == boot && self.hosts[h].proc.is_none()
                {
                    self.start_agent(h);
                }
            }
            Ev::Resume { h, pid, token } => self.resume(h, pid, token),
            Ev::NetTimer { h, pid } => self.net_timer(h, pid),
            Ev::NetRetry { h, pid } => self.net_retry(h, pid),
            Ev::NetArrive { to, msg } => self.net_arrive(to, msg),
            Ev::Fault(f) => self.fault(f),
            Ev::Episode { attempt } => self.episode(attempt),
            Ev::Deadline { idx } => self.deadline(idx),
            Ev::Note(s) => self.log(s),
            Ev::Wake { h, boot } => self.wake(h, boot),
            Ev::ResumeDeadline { h, boot, suspends } => {
                let wd = &self.hosts[h].wd;
                let b = &self.hosts[h].boots[boot];
                if b.suspends != suspends || b.suspended.is_some() {
                    // Suspended again since (or now): the watchdog stops counting meanwhile,
                    // and the wake schedules the deadline from its remaining time.
                } else if self.hosts[h].boots.len() - 1 == boot
                    && self.hosts[h].alive()
                    && self.hosts[h].boots[boot].close_ping_after_resume
                    && wd.running
                    && wd.expires > self.t
                {
                    // The agent died after the resume: the kernel's ping on close restarted
                    // the timer (once: a doomed boot never opens the device again).
                    let at = wd.expires + 10 * MS;
                    self.at(at, Ev::ResumeDeadline { h, boot, suspends });
                } else if self.hosts[h].boots.len() - 1 == boot && self.hosts[h].alive() {
                    let incs = self.hosts[h].boots[boot].fenced_while_suspended.clone();
                    let id = self.hosts[h].id;
                    self.violate(
                        "S1-RESUME",
                        format!("host {id} resumed {} ms ago and is still up, but incarnation(s) {incs:?} were declared fenced while it was suspended", self.timing.watchdog_timeout_ms.max(500)),
                    );
                }
            }
            Ev::TwinStart { h, tw } => self.twin_start(h, tw),
            Ev::TwinDeadline { idx } => self.twin_deadline(idx),
            Ev::TwinOff { tw } => {
                self.hosts[tw].hold_until = u64::MAX;
                self.kill(tw, "misconfigured twin powered off by an operator", true);
            }
            Ev::ReaderCheck => {
                self.reader_check();
                self.after(self.u, Ev::ReaderCheck);
            }
            Ev::MembersEpoch => {
                // No wait between changes: every header carries the memberships it replaced,
                // so a judge that read only the second of two quick changes still knows the
                // epoch between (soak seeds 1805101, 1809936).
                let Some(nt) = self.net.as_mut() else { return };
                nt.membership.epoch += 1;
                let epoch = nt.membership.epoch;
                self.members_bumps.push((self.t, epoch));
                self.count("operator: members epoch rewritten");
                self.log(format!(
                    "operator: block 0 of every volume rewritten with members epoch {epoch}"
                ));
            }
        }
    }

    /// The whole host freezes: the agent (as if stopped), its I/O completions, its watchdog
    /// timer. Its boot clock keeps counting (CLOCK_BOOTTIME).
    fn suspend(&mut self, h: usize, dur: u64) {
        if !self.hosts[h].alive()
            || self.hosts[h].boots.last().is_some_and(|b| b.suspended.is_some())
        {
            return;
        }
        let t = self.t;
        // A fault until the host resumes (soak seed 1748210: a death episode began 1 s after
        // the only other eligible host resumed from a 51 s suspend, its lease gone; it
        // self-fenced and rebooted, and no coordinator was left to fence within the bound).
        self.faults_until = self.faults_until.max(t + dur);
        let wd_remaining =
            self.hosts[h].wd.running.then(|| self.hosts[h].wd.expires.saturating_sub(t));
        let wd = &mut self.hosts[h].wd;
        wd.token += 1;
        let was_paused = match self.hosts[h].proc.as_mut() {
            Some(p) => std::mem::replace(&mut p.paused, true),
            None => false,
        };
        let b = self.boot_idx(h);
        let boot_ms = self.hosts[h].boots[b].clock.local_ms(t);
        self.hosts[h].boots[b].suspended =
            Some(Suspension { since: t, boot_ms, wd_remaining, was_paused });
        self.hosts[h].boots[b].suspends += 1;
        // A frozen agent notices a twin only once it runs again.
        self.extend_twin_watch(h, dur);
        self.hlog(
            h,
            format!(
                "fault: host SUSPENDED for {} ms (dead_after {} ms)",
                dur / MS,
                self.timing.dead_after_ms()
            ),
        );
        self.after(dur, Ev::Wake { h, boot: b });
    }

    fn wake(&mut self, h: usize, boot: usize) {
        if self.boot_idx(h) != boot || !self.hosts[h].alive() {
            return;
        }
        let t = self.t;
        let Some(s) = self.hosts[h].boots[boot].suspended.take() else { return };
        if self.o.clock_stops_in_suspend {
            let d = self.hosts[h].boots[boot].clock.local_ms(t) - s.boot_ms;
            self.hosts[h].boots[boot].stops.push((s.boot_ms, d));
        }
        let resumed_ms = self.local_ms_at(h, t);
        self.hosts[h].boots[boot].resumed_ms = Some(resumed_ms);
        self.hosts[h].boots[boot].doomed_on_resume = None;
        self.hosts[h].boots[boot].close_ping_after_resume = false;
        self.hlog(
            h,
            format!("host resumes after {} ms (agent clock {} ms)", (t - s.since) / MS, resumed_ms),
        );
        if let Some(r) = s.wd_remaining {
            self.set_wd(h, t + r);
        }
        if !self.hosts[h].boots[boot].fenced_while_suspended.is_empty() {
            // It must be gone before it could act: the self-fence at the first step, or the
            // watchdog's remaining time if sysrq fails.
            let d = s.wd_remaining.unwrap_or(0).max(500 * MS) + 10 * MS;
            let suspends = self.hosts[h].boots[boot].suspends;
            self.after(d, Ev::ResumeDeadline { h, boot, suspends });
        }
        let proc = self.hosts[h].proc.as_ref().map(|p| (p.pid, p.pause_token));
        if let (Some((pid, token)), false) = (proc, s.was_paused) {
            self.resume(h, pid, token);
        }
    }

    fn method_of(&self, peer: u32) -> FenceMethodKind {
        self.fence_methods.get(&peer).copied().unwrap_or(FenceMethodKind::Ipmi)
    }

    /// Input from a worker thread: queued while the process is stopped.
    fn deliver(&mut self, h: usize, pid: u64, input: Input) {
        let Some(p) = self.hosts[h].proc.as_mut() else { return };
        if p.pid != pid {
            return;
        }
        if p.paused {
            p.pending.push(Pending::Input(input));
            return;
        }
        self.feed(h, input);
    }

    /// A tick at the core's next deadline; a new chain (after a resume) replaces the old one.
    fn schedule_tick(&mut self, h: usize, pid: u64) {
        // As the daemon: no fixed tick, a wake-up on time for the core's next deadline (at
        // most MAX_SLEEP_MS later), so a deadline missing from `next_deadline` shows here.
        let now = self.now_for(h).mono;
        let deadline = self.hosts[h].proc.as_ref().map_or(u64::MAX, |p| p.agent.next_deadline());
        let next = (now + MAX_SLEEP_MS).min(deadline.max(now + 1));
        let at = self.agent_true_at(h, next);
        let Some(p) = self.hosts[h].proc.as_mut() else { return };
        p.tick_gen += 1;
        let gen = p.tick_gen;
        self.at(at, Ev::Tick { h, pid, gen });
    }

    // ----- hosts: power, boots, agents -----

    fn power_on(&mut self, h: usize, why: &str) {
        if self.hosts[h].power_on {
            return;
        }
        self.hosts[h].power_on = true;
        self.hosts[h].boot_token += 1;
        let token = self.hosts[h].boot_token;
        self.hlog(h, format!("power on ({why})"));
        let d = self.rng.range(2 * SEC, 6 * SEC);
        self.after(d, Ev::Boot { h, token });
    }

    fn new_boot(&mut self, h: usize) {
        // A new boot ends every earlier one (a reboot path that forgot to say so must not
        // leave an old boot "alive" for the checker).
        let t = self.t;
        for b in &mut self.hosts[h].boots {
            b.dead_at.get_or_insert(t);
        }
        let mut boot_id = [0u8; 16];
        boot_id[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        boot_id[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        let origin_local_us = self.rng.range(5 * SEC, 100_000 * SEC);
        let wall_rand = self.rng.range(0, 3_600_000);
        let wall_origin_ms =
            if self.o.wall_clocks { 1_700_000_000_000 + wall_rand } else { 1_700_000_000_000 };
        let clock = Clock { origin_true: self.t, origin_local_us, ppm: self.hosts[h].ppm };
        let host = &mut self.hosts[h];
        host.boots.push(Boot {
            boot_id,
            clock,
            wall_origin_ms,
            dead_at: None,
            marker: false,
            armed_marker: false,
            lease_lost: None,
            armed_ever: false,
            stops: Vec::new(),
            suspended: None,
            fenced_while_suspended: Vec::new(),
            resumed_ms: None,
            doomed_on_resume: None,
            close_ping_after_resume: false,
            suspends: 0,
        });
        host.wd = Wd { running: false, token: host.wd.token + 1, expires: 0 };
        host.wall_jump_ms = 0;
        let b = host.boots.len() - 1;
        self.hlog(h, format!("booted (boot #{b}, mono clock at {} ms)", origin_local_us / 1000));
        let d = self.rng.range(200 * MS, 3 * SEC);
        self.hosts[h].agent_start_pending = true;
        self.after(d, Ev::AgentStart { h, boot: b });
    }

    fn start_agent(&mut self, h: usize) {
        let mut inc;
        loop {
            inc = (self.rng.next_u64() & ((1 << 53) - 1)).max(1);
            if !self.incs.contains_key(&inc) {
                break;
            }
        }
        let b = self.boot_idx(h);
        self.incs.insert(inc, (h, b));
        let broken_watchdog = self.rng.chance(15);
        let host = &self.hosts[h];
        let boot = &host.boots[b];
        let params = AgentParams {
            host_id: host.id,
            name: format!("kvm{:02}", host.id),
            cluster: self.cluster,
            max_hosts: self.max_hosts,
            timing: self.agent_timing,
            volumes: self.vols.len(),
            boot_id: boot.boot_id,
            incarnation: inc,
            eligible: host.eligible,
            self_fence: host.self_fence,
            fence_methods: self
                .fence_methods
                .iter()
                .filter(|(id, _)| **id != host.id)
                .map(|(k, v)| (*k, *v))
                .collect(),
            watchdog_timeout_s: self.advertised_wd_s,
            doomed_marker: boot.marker,
            armed_marker: boot.armed_marker,
            power_on_after: self.power_on_after,
            knobs: UnsafeTestKnobs {
                judge_through_trouble: self.o.judge_through_trouble,
                watchdog_bound_cut_ms: self.bound_cut_ms,
                judge_ignores_survival: self.o.judge_ignores_survival,
                permit_from_answer: self.o.permit_from_answer,
            },
            inventory: false,
            peer_channel: self
                .net
                .as_ref()
                .filter(|_| h < self.n)
                .map(|nt| ChannelParams { challenge_every_ms: nt.period_ms }),
            membership: self.net.as_ref().map(|nt| nt.membership.clone()).unwrap_or_default(),
        };
        let marker = boot.marker;
        let clean_boot = !marker && !boot.armed_ever && boot.lease_lost.is_none();
        if marker {
            self.count("agent started with the doomed marker");
        }
        let now = self.now_for(h);
        let agent = Agent::new(params, now);
        let pid = self.next_pid;
        self.next_pid += 1;
        let nvol = self.vols.len();
        self.hosts[h].proc = Some(Proc {
            pid,
            inc,
            agent,
            paused: false,
            pause_token: 0,
            pending: Vec::new(),
            io_busy: vec![false; nvol],
            io_queue: (0..nvol).map(|_| VecDeque::new()).collect(),
            exited: false,
            ready_at: None,
            broken_watchdog,
            clean_boot,
            tick_gen: 0,
            started: self.t,
            book: HashMap::new(),
            read_leaving: HashSet::new(),
            holds_watchdog: false,
            header_epochs: vec![self.net.as_ref().map_or(0, |nt| nt.membership.epoch); nvol],
        });
        if self.rng.chance(120) {
            // Storage the agent cannot read when it starts (a volume not attached yet, a path
            // still failing over) for several intervals.
            let d = self.rng.range(2 * self.u, 8 * self.u);
            let kind = if self.rng.chance(500) { WinKind::Eio } else { WinKind::Stall };
            let t = self.t;
            self.count("volume unreadable at agent start");
            for v in 0..nvol {
                if v == 0 || self.rng.chance(500) {
                    self.link_window(h, v, t, d, kind);
                }
            }
        }
        self.stats.agent_starts += 1;
        self.hlog(
            h,
            format!(
                "agent started: incarnation {inc}{}{}",
                if marker { ", doomed marker present" } else { "" },
                if broken_watchdog { ", watchdog device will fail to open" } else { "" }
            ),
        );
        self.feed(h, Input::Tick);
        if self.proc_is(h, pid) {
            self.schedule_tick(h, pid);
        }
        if h < self.n && self.net.is_some() {
            self.net_timer(h, pid);
        }
    }

    /// The current boot of host `h` ends (reset or power off).
    fn kill(&mut self, h: usize, why: &str, power_off: bool) {
        let t = self.t;
        if !self.hosts[h].alive() {
            if power_off && self.hosts[h].power_on {
                self.hosts[h].power_on = false;
                self.hosts[h].boot_token += 1;
                self.hlog(h, format!("{why} (was not running)"));
            }
            return;
        }
        if let Some(o) = &self.outage {
            if o.protected.get(h).copied().unwrap_or(false) && t >= o.from && t <= o.until {
                let id = self.hosts[h].id;
                let msg = format!(
                    "host {id} of the connected majority dies ({why}) during a cluster-wide storage outage (from t={}, storage back at t={})",
                    fmt_t(o.from),
                    fmt_t(o.storage_back)
                );
                self.violate("SURVIVAL", msg);
            }
        }
        let host = &mut self.hosts[h];
        let b = host.boots.len() - 1;
        host.boots[b].dead_at = Some(t);
        host.proc = None;
        host.agent_start_pending = false;
        host.wd = Wd { running: false, token: host.wd.token + 1, expires: 0 };
        host.boot_token += 1;
        let token = host.boot_token;
        if power_off {
            host.power_on = false;
            self.hlog(h, format!("DEAD: {why}; power stays off"));
        } else {
            let d = self.rng.range(3 * SEC, 15 * SEC);
            self.hlog(h, format!("DEAD: {why}; reboots in {} ms", d / MS));
            self.after(d, Ev::Boot { h, token });
        }
    }

    fn self_fence_exec(&mut self, h: usize, kind: SelfFenceKind) {
        self.stats.self_fences += 1;
        match kind {
            SelfFenceKind::PowerOff => self.kill(h, "self-fence (sysrq o: power off)", true),
            SelfFenceKind::Reboot => self.kill(h, "self-fence (sysrq b: reboot)", false),
            SelfFenceKind::Crashdump => self.kill(h, "self-fence (sysrq c: crash dump)", false),
        }
    }

    fn resume(&mut self, h: usize, pid: u64, token: u64) {
        if self.hosts[h].proc.as_ref().is_some_and(|p| p.pid == pid && p.pause_token != token) {
            return;
        }
        if let Some(s) = self.hosts[h].boots.last_mut().and_then(|b| b.suspended.as_mut()) {
            // SIGCONT to a frozen host: it takes effect at wake-up.
            s.was_paused = false;
            return;
        }
        let Some(p) = self.hosts[h].proc.as_mut() else { return };
        if p.pid != pid || !p.paused {
            return;
        }
        p.paused = false;
        let pending = std::mem::take(&mut p.pending);
        self.hlog(h, format!("SIGCONT: agent resumes ({} queued inputs)", pending.len()));
        for item in pending {
            if !self.proc_is(h, pid) {
                return;
            }
            match item {
                Pending::Input(i) => self.feed(h, i),
                Pending::Io(e) => self.deliver_io(e, true),
            }
        }
        if self.proc_is(h, pid) {
            self.feed(h, Input::Tick);
            if self.proc_is(h, pid) {
                self.schedule_tick(h, pid);
            }
        }
    }

    // ----- the agent, as the daemon drives it -----

    fn feed(&mut self, h: usize, input: Input) {
        let Some(pid) = self.hosts[h].proc.as_ref().map(|p| p.pid) else { return };
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            if !self.proc_is(h, pid) || self.violation.is_some() {
                return;
            }
            let now = self.now_for(h);
            self.trace_input(h, &input);
            let (actions, before) = {
                let p = self.hosts[h].proc.as_mut().expect("checked");
                let before = p.agent.phase();
                (p.agent.handle(now, input), before)
            };
            self.check_agent(h, now);
            for a in actions {
                if !self.proc_is(h, pid) {
                    break;
                }
                if let Some(next) = self.execute(h, a, now, before) {
                    queue.push(next);
                }
            }
        }
        if self.hosts[h].proc.as_ref().is_some_and(|p| p.pid == pid && p.exited) {
            self.hosts[h].proc = None;
        }
        // As the daemon's loop: after every input the sleep is recomputed from the core's next
        // deadline (an input may bring one closer: the first pet after arming).
        if self.hosts[h].proc.as_ref().is_some_and(|p| p.pid == pid && !p.paused) {
            self.schedule_tick(h, pid);
        }
    }

    fn trace_input(&mut self, h: usize, input: &Input) {
        let line = match input {
            Input::Tick => return,
            Input::IoDone { volume, cycle, started, write, read } => {
                let w = match write {
                    None => String::new(),
                    Some(Ok(_)) => " write ok".into(),
                    Some(Err(e)) => format!(" write ERR({e})"),
                };
                let r = match read {
                    Ok((fin, _)) => format!(" read ok, {} ms", fin.saturating_sub(*started)),
                    Err(e) => format!(" read ERR({e})"),
                };
                format!("IoDone vol {volume} cycle {cycle}{w}{r}")
            }
            Input::WatchdogArmed(r) => format!("WatchdogArmed {r:?}"),
            Input::WatchdogUnguarded(why) => format!("WatchdogUnguarded {why}"),
            Input::FenceDone { peer, method, result } => {
                format!("FenceDone host {peer} method {} {result:?}", method.as_str())
            }
            Input::StopRequested => "StopRequested (SIGTERM)".into(),
            Input::FencingChanged { methods, .. } => format!("FencingChanged {methods:?}"),
            Input::HeaderChecked { volume, damage } => {
                format!("HeaderChecked vol {volume} {damage:?}")
            }
            Input::MembershipRead { volume, membership, .. } => {
                format!("MembershipRead vol {volume} {}", membership.describe())
            }
            Input::PeerChallenge { peer, .. } => format!("PeerChallenge host {peer}"),
            Input::PeerAnswer { peer, answer } => format!("PeerAnswer host {peer} {answer:?}"),
            Input::Inventory(c) => format!("Inventory {c:?}"),
        };
        self.hlog(h, format!("<- {line}"));
    }

    fn digest_action(&mut self, h: usize, a: &Action) {
        let mut a = a.clone();
        match &mut a {
            Action::StartIo { write: Some(r), .. } => {
                r.wall_ms = 0;
                for v in &mut r.verdicts {
                    v.wall_ms = 0;
                }
            }
            Action::Event(e) => e.wall_ms = 0,
            _ => {}
        }
        let mut f = Fnv::new();
        let _ = write!(f, "{a:?}");
        let id = self.hosts[h].id;
        self.digest.push((self.t, id, f.0));
    }

    fn execute(&mut self, h: usize, a: Action, now: Now, before: Phase) -> Option<Input> {
        if self.o.digest {
            self.digest_action(h, &a);
        }
        match a {
            Action::StartIo { volume, cycle, write, read_at } => {
                self.stats.io_cycles += 1;
                let desc = match &write {
                    Some(r) => format!(
                        " write seq {} {} caps {:?} coord {} gen {}/{} verdicts {}",
                        r.seq,
                        r.state.as_str(),
                        format::caps::names(r.caps),
                        r.coordinator,
                        r.verdict_gen,
                        r.verdict_author,
                        r.verdicts
                            .iter()
                            .map(|v| format!(
                                "{}:{}/{}@{}",
                                v.host_id,
                                v.kind.as_str(),
                                v.method.as_str(),
                                v.incarnation
                            ))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    None => " read only".into(),
                };
                let wait = read_at.saturating_sub(now.mono);
                self.hlog(
                    h,
                    format!("StartIo vol {volume} cycle {cycle}{desc}, read in {wait} ms"),
                );
                let p = self.hosts[h].proc.as_mut().expect("running");
                if write.is_some() {
                    self.last_write_started.insert(p.inc, self.t);
                }
                let req = IoReq { cycle, started: now.mono, record: write, read_at };
                p.io_queue[volume].push_back(req);
                if !p.io_busy[volume] {
                    self.start_next_io(h, volume);
                }
                None
            }
            Action::ArmWatchdog => {
                // A device that stops on close is closed again at once: nothing keeps running,
                // so no pending reset can be extended (S3 is about a running timer).
                if !self.hosts[h].wd_stops_on_close || self.o.arm_stop_on_close {
                    self.check_pet(h, now, "ArmWatchdog (opening the device pings it)");
                }
                let b = self.boot_idx(h);
                let had_marker = std::mem::replace(&mut self.hosts[h].boots[b].armed_marker, true);
                let broken = self.hosts[h].proc.as_ref().is_some_and(|p| p.broken_watchdog);
                if broken {
                    self.hlog(h, "ArmWatchdog: device busy".into());
                    self.hosts[h].boots[b].armed_marker = had_marker;
                    return Some(Input::WatchdogArmed(Err("Device or resource busy".into())));
                }
                if self.hosts[h].wd_stops_on_close && !self.o.arm_stop_on_close {
                    self.hosts[h].boots[b].armed_marker = false;
                    // Opening started the timer, closing it again stopped it: nothing runs.
                    self.hlog(
                        h,
                        "ArmWatchdog: the driver stops the timer on close: unguarded".into(),
                    );
                    return Some(Input::WatchdogUnguarded(
                        "no WDIOF_MAGICCLOSE and nowayout off: the timer stops when the device is closed".into(),
                    ));
                }
                self.hlog(h, "ArmWatchdog".into());
                self.hosts[h].boots[b].armed_ever = true;
                if let Some(p) = self.hosts[h].proc.as_mut() {
                    p.holds_watchdog = true;
                }
                self.pet_hw(h, now);
                Some(Input::WatchdogArmed(Ok(())))
            }
            Action::Pet => {
                self.stats.pets += 1;
                self.hlog(h, "Pet".into());
                self.check_pet(h, now, "Pet");
                self.pet_hw(h, now);
                None
            }
            Action::DisarmWatchdog => {
                self.hlog(h, "DisarmWatchdog (magic close)".into());
                if let Some(p) = self.hosts[h].proc.as_mut() {
                    p.holds_watchdog = false;
                }
                let b = self.boot_idx(h);
                self.hosts[h].boots[b].armed_marker = false;
                let wd = &mut self.hosts[h].wd;
                wd.running = false;
                wd.token += 1;
                None
            }
            Action::MarkDoomed => {
                self.hlog(h, "MarkDoomed (runtime marker written)".into());
                let b = self.boot_idx(h);
                let boot = &mut self.hosts[h].boots[b];
                boot.marker = true;
                boot.lease_lost.get_or_insert_with(|| format!("doomed at t={}", fmt_t(self.t)));
                None
            }
            Action::SelfFence { kind, reason } => {
                self.count(format!("self-fence: {}", reason.as_str()));
                self.hlog(h, format!("SelfFence {kind:?} ({})", reason.as_str()));
                if let Some(b) = &self.blip {
                    if b.short
                        && self.t >= b.from
                        && self.t <= b.until
                        && reason == DoomReason::LeaseExpired
                    {
                        let msg = format!(
                            "host {} self-fences (lease expired) during a short storage-wide blip of {} ms (lease_timeout {} ms)",
                            self.hosts[h].id,
                            b.dur / MS,
                            self.timing.lease_timeout_ms
                        );
                        self.violate("S4", msg);
                    }
                }
                if reason == DoomReason::PendingFromEarlierRun {
                    // KNOWN CORE BUG (report B7): the probe takes any own record of this boot
                    // older than lease_timeout for an expired lease, even one written by an
                    // agent that never armed the watchdog (it failed to open it, exit 69, and
                    // was started again later): nothing is pending, yet the host is reset.
                    if self.hosts[h].proc.as_ref().is_some_and(|p| p.clean_boot) {
                        let id = self.hosts[h].id;
                        self.violate(
                            "SPURIOUS",
                            format!("host {id} self-fences for \"an earlier agent on this boot\", but no agent ever armed the watchdog or lost its lease on this boot"),
                        );
                    }
                }
                if !self.hosts[h].sysrq_ok {
                    self.hlog(h, "sysrq trigger failed: the watchdog will reset this host".into());
                    return None;
                }
                let d = self.hosts[h].self_fence_delay;
                if d == 0 {
                    self.self_fence_exec(h, kind);
                } else {
                    let boot = self.boot_idx(h);
                    self.after(d, Ev::SelfFenceNow { h, boot, kind });
                }
                None
            }
            Action::StartFence { peer } => {
                self.start_fence(h, peer);
                None
            }
            Action::AnswerPeer { peer, token, claim, members_epoch, no_permit_ms } => {
                let to = peer as usize - 1;
                let p = self.hosts[h].proc.as_ref()?;
                let (inc, boot_id) = (p.inc, self.hosts[h].boots.last().expect("boot").boot_id);
                let nonce = u64::from_le_bytes(token.nonce[..8].try_into().expect("16 bytes"));
                let from = self.hosts[h].id;
                let no_permit_ms = no_permit_ms.min(u64::from(NO_PERMIT_MAX_MS));
                let msg = NetMsg::Answer {
                    from,
                    nonce,
                    claim,
                    epoch: members_epoch,
                    no_permit_ms,
                    boot_id,
                    inc,
                };
                self.net_send(h, to, msg);
                None
            }
            Action::PowerOn { peer } => {
                let target = peer as usize - 1;
                self.hlog(h, format!("PowerOn host {peer}"));
                if matches!(self.hosts[target].bmc, Bmc::Confirm | Bmc::Flaky) {
                    let d = self.rng.range(500 * MS, 3 * SEC);
                    self.after(d, Ev::BmcOn { target });
                }
                None
            }
            Action::Event(e) => {
                if self.forged_at.get(&e.host).is_some_and(|&f| f + 5 * self.u >= self.t)
                    && !matches!(
                        e.kind,
                        EventKind::ClusterSeen | EventKind::HostUp | EventKind::CoordinatorChanged
                    )
                {
                    self.count(format!(
                        "forged record: event {} about the host within 5 intervals",
                        e.kind.as_str()
                    ));
                }
                self.hlog(
                    h,
                    format!(
                        "Event {} host {}{}{}",
                        e.kind.as_str(),
                        e.host,
                        e.method.map(|m| format!(" method {}", m.as_str())).unwrap_or_default(),
                        if e.detail.is_empty() { String::new() } else { format!(": {}", e.detail) }
                    ),
                );
                let me = self.hosts[h].id;
                if e.kind == EventKind::Fenced {
                    self.fenced_event_at.insert(e.host, self.t);
                }
                if e.host != me
                    && matches!(
                        e.kind,
                        EventKind::HostSuspect | EventKind::FenceStarted | EventKind::Fenced
                    )
                {
                    self.check_healthy(h, e.host, e.kind.as_str());
                }
                None
            }
            Action::Ready => {
                self.hlog(h, "Ready".into());
                if let Some(p) = self.hosts[h].proc.as_mut() {
                    p.ready_at.get_or_insert(self.t);
                }
                None
            }
            Action::Exit { code, message } => {
                self.count(
                    format!("agent exit {code}: {message}").chars().take(60).collect::<String>(),
                );
                self.hlog(h, format!("Exit {code}: {message}"));
                self.process_gone(h);
                let p = self.hosts[h].proc.as_mut().expect("running");
                p.exited = true;
                let inc = p.inc;
                if code == 0 && matches!(before, Phase::Leaving) {
                    // A host whose heartbeat had already stopped for about suspect_after
                    // before its `leaving` record landed may be suspected (and fenced) by a
                    // coordinator that had no chance to read that record yet: that is the
                    // design's suspicion, not a judgement about a host that left.
                    let gap = self.landed.get(&inc).map_or(0, |e| e.1 - e.2);
                    let t = self.timing;
                    if gap + t.interval_ms * MS < t.suspect_after_ms * MS {
                        self.left_clean.insert(inc);
                        let leaving_landed = self.landed.get(&inc).map_or(self.t, |e| e.1);
                        if self.fence_started_at.get(&inc).is_some_and(|&f| f < leaving_landed) {
                            self.left_during_fencing.insert(inc);
                        }
                    } else {
                        self.count("left after a heartbeat gap (not checked as LEFT)");
                    }
                }
                let id = self.hosts[h].id;
                // Also after the episode's deadline: the record named is a twin's write started
                // while this agent ran, and a storage outage held it back (seed 1964490: the
                // twin's write stalled 217 s and landed after the operator powered it off).
                let named = message
                    .split("incarnation ")
                    .nth(1)
                    .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse::<u64>().ok());
                let started = self.hosts[h].proc.as_ref().map_or(0, |p| p.started);
                let twin_wrote_meanwhile = named.is_some_and(|other| {
                    self.twins.iter().any(|tw| tw.id == id && tw.incs.contains(&other))
                        && self.last_write_started.get(&other).is_some_and(|&t| t >= started)
                });
                let twin = twin_wrote_meanwhile
                    || self.twins.iter().any(|tw| tw.id == id && self.t <= tw.until);
                let forged = self.forged_at.get(&id).is_some_and(|&f| f + 4 * self.u >= self.t);
                if code == EXIT_HOST_ID_IN_USE && twin {
                    self.count("collision detected (exit 76) with a real second writer");
                } else if code == EXIT_HOST_ID_IN_USE && forged {
                    self.count("collision exit 76 after a forged record in the own block");
                } else if message.contains("in use by another writer")
                    || code == EXIT_HOST_ID_IN_USE
                {
                    // Outside a twin episode the simulation never runs two agents with one host
                    // id (a restart replaces the process), so this is a false alarm, and a
                    // costly one: systemd does not restart on exit 76, the host stays
                    // unprotected.
                    // KNOWN CORE BUGS (report B5, fixed in 13f019e: with 2-3 volumes the probe
                    // compared reads of different volumes, whose copies of the own block
                    // legitimately differ after a crash or power loss in the middle of a
                    // cycle; B5b, open: a write of the killed predecessor, stalled up to
                    // io_timeout, lands during the restarted agent's probe; its record carries
                    // this host's own boot id, so it cannot be another host).
                    self.violate(
                        "COLLISION",
                        format!("host {id}: false host-id collision: {message}"),
                    );
                }
                None
            }
        }
    }

    /// S3: a pet (or arming, which pings) only while the own lease is valid, never on a boot
    /// whose lease was lost or that was doomed.
    fn check_pet(&mut self, h: usize, now: Now, what: &str) {
        let p = self.hosts[h].proc.as_ref().expect("running");
        // The lease, or while surviving an outage the permits of a majority (issue 13).
        let surviving = p.agent.surviving_since().is_some();
        let lease = if surviving { p.agent.guard_expiry() } else { p.agent.lease_expiry() };
        let b = self.boot_idx(h);
        let lost = self.hosts[h].boots[b].lease_lost.clone();
        let id = self.hosts[h].id;
        // Arming only needs "no expired lease": with 2 or 3 volumes the core arms after the
        // first verified write on one volume, before a write quorum gave it a lease (reported
        // as questionable, not an S3 breach: no lease has expired).
        let arming = what.starts_with("Arm");
        let ok = if arming {
            lease.is_none_or(|e| now.mono < e)
        } else {
            lease.is_some_and(|e| now.mono < e)
        };
        // The same in true time: with a clock that stops in suspend the local check passes.
        let true_exp = lease.map(|e| {
            if surviving {
                self.agent_true_at(h, e)
            } else {
                self.lease_true_expiry(h, e)
            }
        });
        let resumed_fenced = self.hosts[h].boots[b].fenced_while_suspended.clone();
        if !ok {
            self.violate(
                "S3",
                format!("host {id} {what} at local {} ms with lease expiry {lease:?}", now.mono),
            );
        } else if !arming && true_exp.is_some_and(|e| self.t >= e) {
            self.violate(
                "S3",
                format!(
                    "host {id} {what}: its lease expired at t={} in true time (boot clock; the agent's clock says {} ms, expiry {lease:?})",
                    fmt_t(true_exp.unwrap_or(0)),
                    now.mono
                ),
            );
        } else if !resumed_fenced.is_empty() {
            self.violate(
                "S1-RESUME",
                format!("host {id} {what} after resuming, but incarnation(s) {resumed_fenced:?} of this boot were declared fenced while it was suspended"),
            );
        } else if let Some(why) = lost {
            self.violate(
                "S3",
                format!("host {id} {what} on a boot whose lease was already lost ({why}): a restarted agent extends a pending reset"),
            );
        }
    }

    /// The watchdog fired on a host whose agent runs, was never stopped or suspended since
    /// its last pet could be due, is armed and not doomed, and holds a guard (lease or
    /// permits) for one more watchdog period: it was entitled to pet and did not (its pet
    /// cadence or its deadlines are wrong). The daemon wakes on time here, so this never
    /// happens to a correct agent.
    fn check_missed_pets(&mut self, h: usize) {
        let b = self.boot_idx(h);
        let boot = &self.hosts[h].boots[b];
        if boot.suspended.is_some() || boot.resumed_ms.is_some() {
            return;
        }
        let Some(p) = self.hosts[h].proc.as_ref() else { return };
        if p.paused || p.exited || !p.agent.watchdog_armed() {
            return;
        }
        if matches!(p.agent.phase(), Phase::Doomed { .. } | Phase::Exited) {
            return;
        }
        let now = self.now_for(h).mono;
        let wd = self.timing.watchdog_timeout_ms;
        if p.agent.guard_expiry().is_some_and(|e| e >= now + wd) {
            let id = self.hosts[h].id;
            self.violate(
                "SPURIOUS",
                format!("host {id}: the watchdog fired at local {now} ms while the agent ran with a guard until {:?} ms: it missed its pets", p.agent.guard_expiry()),
            );
        }
    }

    fn pet_hw(&mut self, h: usize, _now: Now) {
        let at = self.wd_from_now(h);
        self.set_wd(h, at);
    }

    /// A full watchdog period from now, on the host's own (boot) clock.
    fn wd_from_now(&self, h: usize) -> u64 {
        let c = self.hosts[h].boots.last().expect("boot").clock;
        c.true_at(c.local_ms(self.t) + self.timing.watchdog_timeout_ms)
    }

    fn set_wd(&mut self, h: usize, at: u64) {
        let boot = self.boot_idx(h);
        let wd = &mut self.hosts[h].wd;
        wd.running = true;
        wd.token += 1;
        wd.expires = at;
        let token = wd.token;
        self.at(at, Ev::WdExpire { h, boot, token });
    }

    /// The agent process is gone without a magic close (crash, kill, non-zero exit): the
    /// kernel pings a timer that keeps running once more ("watchdog did not stop!"); a
    /// driver that stops on close leaves the host unguarded.
    fn process_gone(&mut self, h: usize) {
        let held =
            self.hosts[h].proc.as_mut().is_some_and(|p| std::mem::take(&mut p.holds_watchdog));
        if !held || !self.hosts[h].wd.running || !self.hosts[h].alive() {
            return;
        }
        if self.hosts[h].wd_stops_on_close {
            self.count("agent died: watchdog timer stopped on close (host unguarded)");
            self.hlog(h, "watchdog: device closed, the driver stops the timer".into());
            let wd = &mut self.hosts[h].wd;
            wd.running = false;
            wd.token += 1;
        } else {
            self.count("agent died: kernel keepalive ping on close");
            let b = self.boot_idx(h);
            if self.hosts[h].boots[b].resumed_ms.is_some() {
                self.hosts[h].boots[b].close_ping_after_resume = true;
            }
            let at = self.wd_from_now(h);
            self.hlog(
                h,
                format!("watchdog did not stop! (kernel ping on close; fires at t={})", fmt_t(at)),
            );
            self.set_wd(h, at);
        }
    }

    /// After every `handle`: S3 (an expired lease dooms at once) and S1 (every `fenced` verdict
    /// the host holds is about a dead boot).
    fn check_agent(&mut self, h: usize, now: Now) {
        let p = self.hosts[h].proc.as_ref().expect("running");
        let phase = p.agent.phase();
        let lease = p.agent.guard_expiry();
        let b = self.boot_idx(h);
        let boot = &mut self.hosts[h].boots[b];
        // Decided by the first agent step after the resume that leaves the probe: a probing
        // agent has read nothing yet and never pets (seed 137829: an agent started at the
        // wake-up, doomed by its first read 6 ms later, was taken for "not doomed").
        if boot.resumed_ms.is_some()
            && boot.doomed_on_resume.is_none()
            && !matches!(phase, Phase::Probing { .. })
        {
            boot.doomed_on_resume = Some(matches!(phase, Phase::Doomed { .. }));
        }
        let p = self.hosts[h].proc.as_ref().expect("running");
        let fenced: Vec<(u32, u64, FenceMethodKind)> = p
            .agent
            .verdicts()
            .values()
            .filter(|v| v.kind == VerdictKind::Fenced)
            .map(|v| (v.host_id, v.incarnation, v.method))
            .collect();
        if matches!(phase, Phase::Running | Phase::Leaving) && lease.is_some_and(|e| now.mono >= e)
        {
            let id = self.hosts[h].id;
            self.violate(
                "S3",
                format!(
                    "host {id} lease expired at {lease:?} but agent still {phase:?} at {}",
                    now.mono
                ),
            );
        }
        let id = self.hosts[h].id;
        for (peer, inc, method) in fenced {
            self.check_fenced(peer, inc, method, Some(h), &format!("host {id}'s verdict table"));
        }
    }

    fn check_fenced(
        &mut self,
        peer: u32,
        inc: u64,
        method: FenceMethodKind,
        holder: Option<usize>,
        source: &str,
    ) {
        self.first_in_table.entry(inc).or_insert(self.t);
        let Some(&(ph, pb)) = self.incs.get(&inc) else {
            if inc != 0 {
                self.violate(
                    "S1",
                    format!(
                        "{source}: fenced verdict for host {peer} about unknown incarnation {inc}"
                    ),
                );
            }
            return;
        };
        if ph >= self.n && matches!(method, FenceMethodKind::Ipmi | FenceMethodKind::Agent) {
            // A misconfigured twin machine has no BMC of its own: the BMC of its host id
            // powers off the original machine. The operator's S6 breach, not the core's
            // judgement (the core's part is detecting the collision: COLLISION-DETECT).
            if !self.first_fenced.contains_key(&inc) {
                self.first_fenced.insert(inc, self.t);
                self.count("BMC verdict about a twin's incarnation (the original was powered off)");
            }
            return;
        }
        let host = &self.hosts[ph];
        if host.id != peer {
            self.violate(
                "S1",
                format!(
                    "{source}: verdict for host {peer} names incarnation {inc} of host {}",
                    host.id
                ),
            );
            return;
        }
        // S1. KNOWN CORE BUG (report B3, fixed in 13f019e): a confirm-off was applied to
        // whatever incarnation the coordinator saw (not the one the operator named), and
        // mailbox nonces were compared with the last one read on any volume, so volumes holding
        // different messages replayed the older one: a rebooted, running host got `fenced
        // (manual)`, and a replayed `clear` kept a dead host from ever being fenced (LIVENESS).
        if host.boots[pb].dead_at.is_none() {
            if host.boots[pb].fenced_while_suspended.contains(&inc) {
                // Judged by S1-RESUME: it must never act again.
                return;
            }
            // A confirm-off for a host whose heartbeat had stopped (stopped, hung or suspended:
            // seed 135796, suspended for less than its lease) is the operator's error, whatever
            // the host does after (its manual verdict is withdrawn when it writes again).
            if method == FenceMethodKind::Manual && self.fenced_by_operator_error.contains(&inc) {
                return;
            }
            if method == FenceMethodKind::Manual
                && !self.landed_within(peer, self.timing.suspect_after_ms * MS)
            {
                // The operator confirmed the power-off of a host whose heartbeat had stopped
                // (it is stopped or hung): the operator's error, not the core's.
                self.fenced_by_operator_error.insert(inc);
                if !self.first_fenced.contains_key(&inc) {
                    self.first_fenced.insert(inc, self.t);
                    self.count(
                        "confirm-off obeyed for a silent host that is up (operator's error)",
                    );
                }
                return;
            }
            // Every agent of the boot since its resume is doomed: the one that was running
            // found its lease gone at its first step, a restarted one found the doom marker.
            let doomed_since_resume = host.boots[pb].doomed_on_resume == Some(true)
                && host
                    .proc
                    .as_ref()
                    .is_none_or(|p| matches!(p.agent.phase(), Phase::Doomed { .. }));
            // No agent has run on the boot since its resume (seed 1702105: killed before the
            // suspend, not restarted): nothing can self-fence it, and its watchdog, frozen
            // while it slept, runs out after the resume. The same known limit (design.md: a
            // host that resumes without a working self-fence runs for its watchdog's remaining
            // time) and the same S1-RESUME rules.
            let agentless_since_resume = host.boots[pb].resumed_ms.is_some()
                && host.boots[pb].doomed_on_resume.is_none()
                && host.proc.is_none();
            let doomed_since_resume = doomed_since_resume || agentless_since_resume;
            if doomed_since_resume {
                // Judged on evidence from before its suspend and reached right after the resume,
                // while its own self-fence runs (or, with sysrq broken, its watchdog's remaining
                // time, one more period if its agent died meanwhile): the same S1-RESUME rules
                // apply (design.md, known limits), and it must be gone by then.
                let first = host.boots[pb].fenced_while_suspended.is_empty();
                self.hosts[ph].boots[pb].fenced_while_suspended.push(inc);
                self.count("fenced verdict about a host doomed since its resume (S1-RESUME)");
                if first {
                    let wd = &self.hosts[ph].wd;
                    let at = if wd.running { wd.expires.max(self.t) } else { self.t };
                    let suspends = self.hosts[ph].boots[pb].suspends;
                    self.at(at + 10 * MS, Ev::ResumeDeadline { h: ph, boot: pb, suspends });
                }
                return;
            }
            if host.boots[pb].suspended.is_some() {
                // Frozen, it runs no VM: acceptable if it never acts after resuming.
                self.hosts[ph].boots[pb].fenced_while_suspended.push(inc);
                self.count("fenced verdict about a suspended host (S1-RESUME watches it)");
                self.log(format!("check: {source}: host {peer} incarnation {inc} declared fenced (method {}) while suspended: on resume it must never pet or write active, and must die at once", method.as_str()));
                return;
            }
            let state = match &host.proc {
                Some(p) if p.inc == inc => format!(
                    "its agent is running, phase {:?}, paused {}",
                    p.agent.phase(),
                    p.paused
                ),
                Some(p) => format!("a later agent (incarnation {}) runs on that boot", p.inc),
                None => "no agent runs, but the host is up".into(),
            };
            self.violate(
                "S1",
                format!("{source}: host {peer} incarnation {inc} declared fenced (method {}), but that boot is alive: {state}", method.as_str()),
            );
            return;
        }
        // KNOWN CORE BUGS (report B4, B6): a stop that races an in-flight `active` write
        // disarms the watchdog without a `leaving` record on the volume, and peers then reach
        // the watchdog bound for a host that is up and unguarded (S1 too, unless it reboots
        // first); a volume that missed the `leaving` write brings the earlier `active` record
        // back as a "new incarnation", which is then judged (and fenced).
        // (An operator may confirm the power-off of a host that left and then lost power:
        // that is the operator's statement, not the core's judgement.)
        // A power-off started (on a suspicion HEALTHY judges) before the host's `leaving` record
        // landed cannot be called back, and once its BMC confirmed the power off, `fenced` is
        // the truth about that incarnation (S1, S8); `left` would show a powered-off host ALIVE
        // (seed 42068: a 1.6 s stall with suspect_after 924 ms, then a clean stop 0.7 s into
        // the attempt). Fencing started after the leave, or a verdict by another method, is
        // still LEFT.
        let confirmed_off = matches!(method, FenceMethodKind::Ipmi | FenceMethodKind::Agent);
        if confirmed_off && self.left_during_fencing.contains(&inc) {
            if !self.first_fenced.contains_key(&inc) {
                self.count("fenced by a power-off under way when the host left cleanly");
            }
        } else if self.left_clean.contains(&inc)
            && method != FenceMethodKind::Manual
            && !self.left_unknowable(holder, peer, inc)
        {
            self.violate(
                "LEFT",
                format!(
                    "{source}: host {peer} incarnation {inc} left cleanly but is declared fenced"
                ),
            );
            return;
        }
        if !self.first_fenced.contains_key(&inc) {
            self.first_fenced.insert(inc, self.t);
            self.stats.fenced_verdicts += 1;
            *self.stats.fenced_by.entry(method.as_str()).or_default() += 1;
            self.log(format!("check: first fenced verdict for host {peer} incarnation {inc} (method {}) in {source}", method.as_str()));
            self.on_first_fenced(inc, method);
        }
    }

    /// Did a whole heartbeat record of host `id` land on any volume within `d` before now?
    /// Whether the judge (the agent process of host index `judge`) could not know that host
    /// `id`'s incarnation `inc` left: none of its reads returned that `leaving` record, and
    /// writes of another run of the host (whole or torn) have overwritten it on every volume,
    /// so it never can. The host's state is then the later run's, and suspecting it is a
    /// judgement about that run, which HEALTHY checks (soak seeds 501814 and 500506: an
    /// observer suspended through the leave and the restart found the block torn by the later
    /// runs on every volume). Once granted for a judge, mirrors of its verdict are exempt too.
    fn left_unknowable(&mut self, judge: Option<usize>, id: u32, inc: u64) -> bool {
        if self.left_unknowable.contains(&inc) {
            return true;
        }
        let overwritten = self
            .block_writer
            .get(id as usize - 1)
            .is_some_and(|vols| vols.iter().all(|&w| w != inc && w != 0));
        let judge_read_it = judge
            .and_then(|j| self.hosts[j].proc.as_ref())
            .is_none_or(|p| p.read_leaving.contains(&inc));
        if overwritten && !judge_read_it {
            self.left_unknowable.insert(inc);
            self.count("judged after later runs overwrote an unread leaving record everywhere");
            return true;
        }
        false
    }

    fn landed_within(&self, id: u32, d: u64) -> bool {
        self.landings
            .get(id as usize - 1)
            .is_some_and(|vs| vs.iter().any(|l| l.last().is_some_and(|x| x.0 + d > self.t)))
    }

    fn on_first_fenced(&mut self, inc: u64, method: FenceMethodKind) {
        if let Some(b) = &self.blip {
            if b.short && self.t >= b.from && self.t <= b.until {
                let msg = format!(
                    "incarnation {inc} declared fenced during a short storage-wide blip of {} ms",
                    b.dur / MS
                );
                self.violate("S4", msg);
            }
        }
        let seed = self.o.seed;
        for d in &mut self.deaths {
            if d.inc == inc && !d.done {
                d.done = true;
                let ms = (self.t - d.at) / MS;
                let ft = FenceTime { seed, ms, bound_ms: d.bound_ms, method };
                let (worst, closest) = if d.path == "bmc" {
                    (&mut self.stats.worst_bmc, &mut self.stats.closest_bmc)
                } else {
                    (&mut self.stats.worst_wd, &mut self.stats.closest_wd)
                };
                if closest.as_ref().is_none_or(|w| ft.margin() < w.margin()) {
                    *closest = Some(ft.clone());
                }
                if worst.as_ref().is_none_or(|w| ms > w.ms) {
                    *worst = Some(ft);
                }
            }
        }
    }

    // ----- I/O -----

    fn start_next_io(&mut self, h: usize, v: usize) {
        let (pid, req) = {
            let p = self.hosts[h].proc.as_mut().expect("running");
            let Some(req) = p.io_queue[v].pop_front() else { return };
            p.io_busy[v] = true;
            (p.pid, req)
        };
        let t0 = self.t;
        let cap = self.io_cap(t0);
        let boot = self.boot_idx(h);
        let mut read_start = t0;
        let mut write = None;
        if let Some(rec) = req.record {
            let base = self.link_latency(h, v);
            let plan = {
                let wins: [&[Window]; 2] = [&self.link_win[h][v], &self.vol_win[v]];
                plan_op(&mut self.rng, &wins, t0, base, true, cap)
            };
            if let Some((lt, torn)) = plan.land {
                let data = Rc::new(format::encode_heartbeat(&rec).expect("encodes"));
                let block = self.geo.heartbeat_block(rec.host_id) as usize;
                let writer = Some((h, boot));
                let inc = rec.incarnation;
                if !torn && self.rng.chance(30) && lt > t0 + 200 {
                    // A read racing the write may see it half done.
                    let early = self.rng.range(t0.max(lt - 2 * MS), lt - 100);
                    self.at(
                        early,
                        Ev::Land { writer, vol: v, block, data: Rc::clone(&data), torn: true, inc },
                    );
                }
                self.at(lt, Ev::Land { writer, vol: v, block, data, torn, inc });
            }
            write = Some((plan.ok, plan.end));
            read_start = plan.end;
        }
        // The I/O thread sleeps until the agent's clock shows `read_at` (the write's read-back
        // half an interval later on the regular cadence), unless the write failed.
        if write.is_none_or(|(ok, _)| ok) {
            read_start = read_start.max(self.agent_true_at(h, req.read_at));
        }
        let base = self.link_latency(h, v);
        let rplan = {
            let wins: [&[Window]; 2] = [&self.link_win[h][v], &self.vol_win[v]];
            plan_op(&mut self.rng, &wins, read_start, base, false, cap)
        };
        let e = IoDoneEv {
            h,
            pid,
            vol: v,
            cycle: req.cycle,
            started: req.started,
            write,
            read_lo: rplan.data_from,
            read_ok: rplan.ok,
        };
        self.at(rplan.end, Ev::IoDone(Box::new(e)));
    }

    /// How far behind volume `v` returns content at `t` (a stale replica).
    fn lag_at(&self, v: usize, t: u64) -> u64 {
        self.lag_win[v].iter().filter(|w| w.0 <= t && t < w.1).map(|w| w.2).max().unwrap_or(0)
    }

    fn io_done_event(&mut self, e: IoDoneEv) {
        let Some(p) = self.hosts[e.h].proc.as_mut() else { return };
        if p.pid != e.pid {
            return;
        }
        if p.paused {
            p.pending.push(Pending::Io(e));
            return;
        }
        self.deliver_io(e, false);
    }

    /// The I/O thread sends its result; `deferred`: the process was stopped when the I/O ended,
    /// so the read happens (and the times are taken) now.
    fn deliver_io(&mut self, e: IoDoneEv, deferred: bool) {
        let h = e.h;
        let (lo, hi) = if deferred { (self.t, self.t) } else { (e.read_lo.min(self.t), self.t) };
        // A lagging volume returns what it held `lag` ago (never older than a landing it
        // already returned is not guaranteed: a stale replica is just that).
        let lag = self.lag_at(e.vol, self.t);
        let (lo, hi) = (lo.saturating_sub(lag), hi.saturating_sub(lag));
        let read = if e.read_ok {
            let mut raw = std::mem::take(&mut self.raw);
            self.vols[e.vol].read(&mut self.rng, lo, hi, &mut raw);
            let view = decode_view(&raw, self.geo, &self.cluster);
            self.raw = raw;
            if let Some(p) = self.hosts[h].proc.as_mut() {
                for slot in &view.slots {
                    if let Slot::Record(r) = slot {
                        if r.state == format::HostState::Leaving {
                            p.read_leaving.insert(r.incarnation);
                        }
                    }
                }
            }
            Ok((self.local_ms_at(h, self.t), view))
        } else {
            Err("Input/output error (os error 5)".to_string())
        };
        let write = e.write.map(|(ok, end)| {
            if ok {
                Ok(self.local_ms_at(h, end.min(self.t)))
            } else {
                Err("Input/output error (os error 5)".to_string())
            }
        });
        let v = e.vol;
        if let Some(p) = self.hosts[h].proc.as_mut() {
            p.io_busy[v] = false;
        }
        // Block 0 as the read returned it: the latest epoch written before `hi`.
        let shown = self.members_bumps.iter().rev().find(|&&(t, _)| t <= hi).map(|&(_, e)| e);
        if let (true, Some(epoch), Some(nt)) = (read.is_ok(), shown, self.net.as_ref()) {
            let membership = Membership { epoch, ..nt.membership.clone() };
            // Every rewrite carries the memberships it replaced, as `hbfence members` writes.
            let first = self.members_bumps[0].1 - 1;
            let earlier = (first..epoch)
                .rev()
                .take(format::EARLIER_MEMBERSHIPS)
                .map(|epoch| Membership { epoch, ..nt.membership.clone() })
                .collect();
            if let Some(p) = self.hosts[h].proc.as_mut().filter(|p| p.header_epochs[v] < epoch) {
                p.header_epochs[v] = epoch;
                self.feed(h, Input::MembershipRead { volume: v, membership, earlier });
            }
        }
        self.feed(h, Input::IoDone { volume: v, cycle: e.cycle, started: e.started, write, read });
        if self.proc_is(h, e.pid) && !self.hosts[h].proc.as_ref().is_some_and(|p| p.io_busy[v]) {
            self.start_next_io(h, v);
        }
    }

    fn land(
        &mut self,
        writer: Option<(usize, usize)>,
        vol: usize,
        block: usize,
        data: Rc<format::Block>,
        torn: bool,
        inc: u64,
    ) {
        if let Some((h, b)) = writer {
            if let Some(dead) = self.hosts[h].boots[b].dead_at {
                match self.o.inflight {
                    Inflight::DiscardOnDeath => {
                        self.stats.stale_writes_discarded += 1;
                        return;
                    }
                    Inflight::LandWithinIoTimeout => {
                        // Which fenced verdicts about this boot were already given?
                        let fenced_before: Vec<(u64, u64)> = self
                            .incs
                            .iter()
                            .filter(|(_, hb)| **hb == (h, b))
                            .filter_map(|(i, _)| self.first_fenced.get(i).map(|t| (*i, *t)))
                            .collect();
                        if let Some((i, ft)) = fenced_before.first() {
                            let id = self.hosts[h].id;
                            self.violate(
                                "S1",
                                format!("a write of host {id} (boot dead since t={}) lands on volume {vol} after incarnation {i} was declared fenced at t={}", fmt_t(dead), fmt_t(*ft)),
                            );
                            return;
                        }
                    }
                }
            }
        }
        if writer.is_some() && (1..=self.block_writer.len()).contains(&block) {
            self.block_writer[block - 1][vol] = inc;
        }
        let data = if torn {
            self.stats.torn_landings += 1;
            if self.o.full_trace && (1..=self.spoiled_at.len()).contains(&block) {
                self.log(format!("landed torn: block of host {block} on volume {vol}"));
            }
            if (1..=self.spoiled_at.len()).contains(&block) {
                self.spoiled_at[block - 1][vol].push(self.t);
            }
            let mut b = *self.vols[vol].current(block);
            b[..512].copy_from_slice(&data[..512]);
            Rc::new(b)
        } else {
            // The coordinator table on the volume must hold no false "fenced" either.
            if let format::Decoded::Heartbeat(hb) = format::decode(&data[..]) {
                let t = self.t;
                let e = self.landed.entry(hb.incarnation).or_insert((0, t, t));
                if hb.seq > e.0 {
                    *e = (hb.seq, t, e.1);
                }
                if let Some(l) = self.landings.get_mut(hb.host_id as usize - 1) {
                    l[vol].push((t, hb.incarnation, hb.seq));
                }
                if self.o.full_trace {
                    self.log(format!(
                        "landed: host {} seq {} {} on volume {vol}",
                        hb.host_id,
                        hb.seq,
                        hb.state.as_str()
                    ));
                }
                self.last_state.insert(hb.host_id, hb.state);
                let prev = self.inc_changed.get(&hb.host_id).copied();
                if prev.is_none_or(|(i, _)| i != hb.incarnation) {
                    self.inc_changed.insert(hb.host_id, (hb.incarnation, t));
                }
                if let Some((wh, wb)) = writer {
                    let boot = &self.hosts[wh].boots[wb];
                    if boot.suspended.is_none()
                        && boot.resumed_ms.is_some_and(|r| hb.mono_ms >= r)
                        && !boot.fenced_while_suspended.is_empty()
                        && matches!(
                            hb.state,
                            format::HostState::Active | format::HostState::Starting
                        )
                    {
                        self.violate(
                            "S1-RESUME",
                            format!("host {} resumed and wrote an {} record (seq {}) of incarnation {} on a boot whose incarnation(s) {:?} were declared fenced", hb.host_id, hb.state.as_str(), hb.seq, hb.incarnation, boot.fenced_while_suspended),
                        );
                    }
                }
                let fenced: Vec<_> = hb
                    .verdicts
                    .iter()
                    .filter(|v| v.kind == VerdictKind::Fenced)
                    .map(|v| (v.host_id, v.incarnation, v.method))
                    .collect();
                if !fenced.is_empty() {
                    let src =
                        format!("host {}'s block on volume {vol} (incarnation {inc})", hb.host_id);
                    for (peer, i, m) in fenced {
                        self.check_fenced(peer, i, m, writer.map(|w| w.0), &src);
                    }
                }
            }
            data
        };
        self.vols[vol].write(self.t, block, data);
    }

    // ----- fencing -----

    fn start_fence(&mut self, h: usize, peer: u32) {
        let target = peer as usize - 1;
        let pid = self.hosts[h].proc.as_ref().expect("running").pid;
        let believed = self.hosts[h]
            .proc
            .as_ref()
            .and_then(|p| p.agent.peer_views().into_iter().find(|v| v.id == peer))
            .map(|v| v.incarnation)
            .unwrap_or(0);
        let mut mode = self.hosts[target].bmc;
        self.count(format!("fence attempt, BMC {mode:?}"));
        if mode == Bmc::Flaky {
            mode = [Bmc::Confirm, Bmc::Fail, Bmc::Lie, Bmc::Unreachable]
                [self.rng.weighted(&[50, 20, 15, 15])];
        }
        self.hlog(
            h,
            format!(
                "StartFence host {peer} (believed incarnation {believed}); its BMC will: {mode:?}"
            ),
        );
        self.check_healthy(h, peer, "starts fencing");
        self.fence_started_at.entry(believed).or_insert(self.t);
        if self.left_clean.contains(&believed) && !self.left_unknowable(Some(h), peer, believed) {
            self.violate(
                "LEFT",
                format!(
                    "host {} starts fencing host {peer} incarnation {believed}, which left cleanly",
                    self.hosts[h].id
                ),
            );
            return;
        }
        // KNOWN CORE BUGS (report B2, and suspect_after = 2*interval): a resumed agent, or
        // plain read/write phase jitter, makes a healthy host look stale.
        if let Some(q) = &self.quiet {
            if self.t <= q.until && q.victim != target {
                let msg = format!(
                    "host {} starts fencing host {peer} on a settled, fault-free cluster (only host {} died)",
                    self.hosts[h].id,
                    q.victim + 1
                );
                self.violate("QUIET", msg);
                return;
            }
        }
        // S4. KNOWN CORE BUGS (report B1, B2; fixed in 13f019e, at a liveness cost, see the
        // LIVENESS check): an own I/O that is slow but not yet failed
        // (in flight < io_timeout), or a stopped agent process, is not "trouble": peer timers
        // keep running and the observer suspects and fences everyone; and suspect_after may be
        // 2*interval, which read/write phase jitter alone can exceed.
        if let Some(b) = &self.blip {
            if self.t >= b.from && self.t <= b.until {
                // Judged about the incarnation the coordinator means: fencing a host that
                // already rebooted (unknown to the coordinator yet) is not an S4 matter.
                let target_ok = self.hosts[target].alive()
                    && self.hosts[target].proc.as_ref().is_some_and(|p| {
                        p.inc == believed && !matches!(p.agent.phase(), Phase::Doomed { .. })
                    });
                if b.short || target_ok {
                    let msg = format!(
                        "host {} starts fencing host {peer} during a storage-wide blip of {} ms ({}; lease_timeout {} ms); the target is {}",
                        self.hosts[h].id,
                        b.dur / MS,
                        if b.short { "short: no lease can expire" } else { "shorter than lease_timeout" },
                        self.timing.lease_timeout_ms,
                        if target_ok { "alive and not doomed" } else { "doomed or down" }
                    );
                    self.violate("S4", msg);
                    return;
                }
            }
        }
        match mode {
            Bmc::Confirm | Bmc::Flaky => {
                let off = self.rng.range(50 * MS, 1500 * MS);
                let confirm = off + self.rng.range(50 * MS, 1000 * MS);
                self.after(off, Ev::BmcOff { target });
                self.after(confirm, Ev::BmcConfirm { h, pid, peer, target });
                self.power_off_pending_until = self.power_off_pending_until.max(self.t + off);
            }
            Bmc::Fail => {
                let d = self.rng.range(100 * MS, 2 * SEC);
                self.after(
                    d,
                    Ev::FenceResult {
                        h,
                        pid,
                        peer,
                        result: Err(
                            "ipmitool: Error: Unable to establish IPMI v2 / RMCP+ session".into()
                        ),
                    },
                );
            }
            Bmc::Lie => {
                // "Chassis Power Control: Down/Off" but the power stays on: the driver's status
                // check sees "on" and reports a failure (S8 is the driver's job).
                let d = self.rng.range(500 * MS, 3 * SEC);
                self.after(
                    d,
                    Ev::FenceResult {
                        h,
                        pid,
                        peer,
                        result: Err("power off acknowledged but chassis power is still on".into()),
                    },
                );
            }
            Bmc::Unreachable => {
                let d = self.rng.range(3 * SEC, 8 * SEC);
                self.after(
                    d,
                    Ev::FenceResult {
                        h,
                        pid,
                        peer,
                        result: Err("timeout: BMC unreachable".into()),
                    },
                );
            }
            Bmc::None => {
                // The daemon does nothing when no method is configured; the agent never asks.
                self.violate(
                    "INTERNAL",
                    format!("StartFence for host {peer} which has no fence method configured"),
                );
            }
        }
    }

    // ----- faults -----

    fn fault(&mut self, f: Fault) {
        let name = match &f {
            Fault::Crash { restart_after: Some(_), .. } => "fault: agent killed, restarted".into(),
            Fault::Crash { .. } => "fault: agent killed".into(),
            Fault::Pause { .. } => "fault: agent stopped (SIGSTOP)".into(),
            Fault::Stop { .. } => "fault: clean stop".into(),
            Fault::PowerLoss { .. } => "fault: power loss".into(),
            Fault::Mailbox { cmd, .. } => format!("operator: {}", cmd.as_str()),
            Fault::WallJump { .. } => "fault: wall clock jump".into(),
            Fault::Kill { how, .. } => format!("quiet death: {how:?}"),
            Fault::Suspend { dur, .. } => {
                let t = self.timing;
                let d = dur / MS;
                format!(
                    "fault: host suspended {}",
                    if d < t.suspect_after_ms {
                        "(< suspect_after)"
                    } else if d < t.dead_after_ms() {
                        "(< dead_after)"
                    } else {
                        "(> dead_after)"
                    }
                )
            }
            Fault::OperatorOff { .. } => "operator: powers a host off, then confirm-off".into(),
            Fault::Reboot { clean: true, .. } => "fault: clean reboot".into(),
            Fault::Reboot { .. } => "fault: reset (reboot)".into(),
            Fault::Twin { .. } => "fault: second writer with the same host id".into(),
            Fault::Forge { .. } => "fault: forged record far ahead".into(),
        };
        self.count(name);
        let frozen = match &f {
            Fault::Crash { h, .. }
            | Fault::Pause { h, .. }
            | Fault::Stop { h, .. }
            | Fault::Reboot { h, .. }
            | Fault::Twin { h }
            | Fault::Kill { h, .. } => self.frozen(*h),
            _ => false,
        };
        if frozen {
            self.count("fault skipped: the host is suspended");
            return;
        }
        match f {
            Fault::Suspend { h, dur } => self.suspend(h, dur),
            Fault::OperatorOff { h, confirm_after } => {
                if self.hosts[h].power_on {
                    self.hlog(h, "operator: powers the host off out of band".into());
                    self.hosts[h].hold_until = self.t + confirm_after + 2 * self.u;
                    self.kill(h, "powered off by an operator", true);
                    self.after(
                        confirm_after,
                        Ev::Fault(Fault::Mailbox { h, cmd: Command::ConfirmOff }),
                    );
                }
            }
            Fault::Reboot { h, clean } => {
                if !self.hosts[h].alive() {
                    return;
                }
                if clean && self.hosts[h].proc.is_some() {
                    self.hlog(h, "fault: reboot: systemd stops the agent (SIGTERM)".into());
                    let paused = self.hosts[h].proc.as_ref().is_some_and(|p| p.paused);
                    if paused {
                        if let Some(p) = self.hosts[h].proc.as_mut() {
                            p.pending.push(Pending::Input(Input::StopRequested));
                        }
                    } else {
                        self.feed(h, Input::StopRequested);
                    }
                    let d = self.rng.range(self.u, 3 * self.u);
                    self.after(d, Ev::Fault(Fault::Reboot { h, clean: false }));
                } else {
                    self.process_gone(h);
                    self.kill(h, "reboot", false);
                }
            }
            Fault::Twin { h } => self.twin(h),
            Fault::Forge { h, v } => {
                let id = self.hosts[h].id;
                let block = self.geo.heartbeat_block(id) as usize;
                let running = self.hosts[h].proc.as_ref().map(|p| p.inc);
                if let format::Decoded::Heartbeat(mut hb) =
                    format::decode(self.vols[v].current(block))
                {
                    if Some(hb.incarnation) == running {
                        hb.seq += self.rng.range(1_000, 1_000_000);
                        let data = Rc::new(format::encode_heartbeat(&hb).expect("encodes"));
                        self.vols[v].write(self.t, block, data);
                        self.forged_at.insert(id, self.t);
                        self.spoiled_at[id as usize - 1][v].push(self.t);
                        self.hlog(
                            h,
                            format!(
                                "fault: FORGED record on volume {v}: incarnation {} seq {}",
                                hb.incarnation, hb.seq
                            ),
                        );
                    }
                }
            }
            Fault::Crash { h, restart_after } => {
                let Some(p) = self.hosts[h].proc.as_ref() else { return };
                let now = self.now_for(h);
                let expired = matches!(p.agent.phase(), Phase::Running | Phase::Leaving)
                    && p.agent.lease_expiry().is_some_and(|e| now.mono >= e);
                if expired {
                    // It was stopped past its lease: that lease is lost for the whole boot.
                    let b = self.boot_idx(h);
                    self.hosts[h].boots[b].lease_lost.get_or_insert_with(|| {
                        format!(
                            "lease expired while the agent was stopped, killed at t={}",
                            fmt_t(self.t)
                        )
                    });
                }
                self.process_gone(h);
                self.hosts[h].proc = None;
                self.hlog(
                    h,
                    format!(
                        "fault: agent process killed (SIGKILL){}",
                        match restart_after {
                            Some(d) => format!("; systemd restarts it in {} ms", d / MS),
                            None => "; not restarted".into(),
                        }
                    ),
                );
                if let Some(d) = restart_after {
                    let boot = self.boot_idx(h);
                    self.hosts[h].agent_start_pending = true;
                    self.after(d, Ev::AgentStart { h, boot });
                }
            }
            Fault::Pause { h, dur } => {
                let Some(p) = self.hosts[h].proc.as_mut() else { return };
                if p.paused {
                    return;
                }
                p.paused = true;
                p.pause_token += 1;
                let (pid, token) = (p.pid, p.pause_token);
                if let Some(d) = dur {
                    self.extend_twin_watch(h, d);
                }
                self.hlog(
                    h,
                    format!(
                        "fault: agent SIGSTOPped{}",
                        match dur {
                            Some(d) => format!(" for {} ms", d / MS),
                            None => " for good".into(),
                        }
                    ),
                );
                if let Some(d) = dur {
                    self.after(d, Ev::Resume { h, pid, token });
                }
            }
            Fault::Stop { h, restart_after } => {
                let Some(p) = self.hosts[h].proc.as_mut() else { return };
                let paused = p.paused;
                self.hlog(
                    h,
                    format!("fault: clean stop (SIGTERM); restart in {} ms", restart_after / MS),
                );
                if paused {
                    if let Some(p) = self.hosts[h].proc.as_mut() {
                        p.pending.push(Pending::Input(Input::StopRequested));
                    }
                } else {
                    self.feed(h, Input::StopRequested);
                }
                let boot = self.boot_idx(h);
                self.after(restart_after, Ev::AgentStart { h, boot });
            }
            Fault::PowerLoss { h, on_after } => {
                self.hlog(h, "fault: POWER LOSS".into());
                self.kill(h, "power loss", true);
                if let Some(d) = on_after {
                    self.after(d, Ev::BmcOn { target: h });
                }
            }
            Fault::Mailbox { h, cmd } => self.operator(h, cmd),
            Fault::WallJump { h, delta_ms } => {
                if self.o.wall_clocks {
                    self.hosts[h].wall_jump_ms += delta_ms;
                }
                self.hlog(h, format!("fault: wall clock jumps by {delta_ms} ms"));
            }
            Fault::Kill { h, how, bound_ms, path } => {
                let inc = match self.hosts[h].proc.as_ref() {
                    Some(p)
                        if self.hosts[h].alive()
                            && !self.frozen(h)
                            && !p.paused
                            && matches!(p.agent.phase(), Phase::Running) =>
                    {
                        p.inc
                    }
                    _ => {
                        self.log(format!(
                            "episode: victim host {} no longer running; no liveness check",
                            h + 1
                        ));
                        return;
                    }
                };
                self.hosts[h].hold_until = self.t + (bound_ms + 5000) * MS;
                self.deaths.push(DeathWatch { h, inc, at: self.t, bound_ms, path, done: false });
                let idx = self.deaths.len() - 1;
                self.log(format!(
                    "episode: host {} dies ({how:?}); must be fenced within {bound_ms} ms via {path}",
                    h + 1
                ));
                match how {
                    DeathHow::PowerLoss => self.kill(h, "power loss", true),
                    DeathHow::Crash => {
                        self.process_gone(h);
                        self.hosts[h].proc = None;
                        self.hlog(h, "fault: agent process killed, not restarted".into());
                    }
                    DeathHow::Hang => {
                        if let Some(p) = self.hosts[h].proc.as_mut() {
                            p.paused = true;
                            p.pause_token += 1;
                        }
                        self.hlog(h, "fault: host hangs (agent stopped for good)".into());
                    }
                }
                self.after(bound_ms * MS + MS, Ev::Deadline { idx });
            }
        }
    }

    /// The generation of the newest verdict table on the volumes an operator's command can read
    /// now (every volume when none answers: the model writes the command anyway), as the CLI
    /// takes it from its read quorum.
    fn operator_seen_verdict_gen(&self) -> u32 {
        let t = self.t;
        let readable = |v: usize| {
            !self.vol_win[v].iter().any(|w| {
                w.start <= t && t < w.end && matches!(w.kind, WinKind::Stall | WinKind::Eio)
            })
        };
        let vols: Vec<usize> = (0..self.vols.len()).filter(|&v| readable(v)).collect();
        let vols = if vols.is_empty() { (0..self.vols.len()).collect() } else { vols };
        let mut best: Option<(u32, Reverse<u32>)> = None;
        for v in vols {
            for id in 1..=self.max_hosts {
                if let format::Decoded::Heartbeat(hb) =
                    format::decode(self.vols[v].current(self.geo.heartbeat_block(id) as usize))
                {
                    if hb.cluster == self.cluster && hb.verdict_gen > 0 {
                        best = best.max(Some((hb.verdict_gen, Reverse(hb.verdict_author))));
                    }
                }
            }
        }
        best.map_or(0, |b| b.0)
    }

    /// `hbfence fence/clear/...` run by an operator: a mailbox block written to every volume
    /// (each write may fail or land late on its own).
    fn operator(&mut self, h: usize, cmd: Command) {
        let id = self.hosts[h].id;
        let block = self.geo.heartbeat_block(id) as usize;
        let incarnation = match format::decode(self.vols[0].current(block)) {
            format::Decoded::Heartbeat(r) => r.incarnation,
            _ => 0,
        };
        if cmd == Command::ConfirmOff && self.hosts[h].power_on {
            // An honest operator confirms a power-off only when the power is off; a wrong one
            // types it for a host that is up (the core must refuse while it is not suspect).
            if self.rng.chance(600) {
                return;
            }
            self.count("operator: confirm-off for a host that is up (operator wrong)");
        }
        self.op_cmd_at.insert(id, self.t);
        let target_incarnation = match self.rng.below(10) {
            0 => 0,
            1 => self.rng.next_u64() & 0xffff,
            _ => incarnation,
        };
        let nonce = self.rng.next_u64().max(1);
        // As `hbfence` does: the message names the verdict table generation the operator read
        // (no random draw: the trajectories of older seeds stay); one in ten is written by an
        // hbfence before that field (zeros: unknown).
        let seen_verdict_gen = (nonce % 10 != 0).then(|| self.operator_seen_verdict_gen());
        let m = Mailbox {
            cluster: self.cluster,
            host_id: id,
            nonce,
            command: cmd,
            sender: 0,
            wall_ms: 1_700_000_000_000 + self.t / MS,
            target_incarnation,
            sender_name: "operator".into(),
            seen_verdict_gen,
        };
        if cmd == Command::Clear {
            self.op_clear_at.insert(id, (self.t, seen_verdict_gen));
        }
        let data = Rc::new(format::encode_mailbox(&m));
        let mblock = self.geo.mailbox_block(id) as usize;
        let mut landed = Vec::new();
        for v in 0..self.vols.len() {
            let cap = self.io_cap(self.t);
            let plan = {
                let wins: [&[Window]; 1] = [&self.vol_win[v]];
                plan_op(&mut self.rng, &wins, self.t, MS, true, cap)
            };
            let fails = self.rng.chance(100);
            if let (Some((lt, torn)), false) = (plan.land, fails) {
                landed.push(v);
                self.at(
                    lt,
                    Ev::Land {
                        writer: None,
                        vol: v,
                        block: mblock,
                        data: Rc::clone(&data),
                        torn,
                        inc: 0,
                    },
                );
            }
        }
        self.log(format!(
            "operator: {} host {id} (target incarnation {target_incarnation}, nonce {nonce}) written to volumes {landed:?}",
            cmd.as_str()
        ));
    }

    fn frozen(&self, h: usize) -> bool {
        self.hosts[h].boots.last().is_some_and(|b| b.suspended.is_some())
    }

    // ----- a second writer with one host id -----

    /// A second machine configured with host h's id boots; h's agent is killed, and both
    /// agents start at the same instant.
    fn twin(&mut self, h: usize) {
        if self.twins.iter().any(|t| self.t <= t.until)
            || !self.hosts[h].alive()
            || self.frozen(h)
            || self.hosts[h].proc.is_none()
        {
            return;
        }
        let tw = self.hosts.len();
        let id = self.hosts[h].id;
        let nvol = self.vols.len();
        let base_lat = (0..nvol).map(|_| self.rng.range(200, 20 * MS)).collect();
        let src = &self.hosts[h];
        let twin = Host {
            id,
            ppm: self.rng.signed(1000),
            bmc: Bmc::None,
            eligible: src.eligible,
            sysrq_ok: true,
            self_fence: SelfFenceKind::Reboot,
            self_fence_delay: 0,
            base_lat,
            power_on: true,
            boot_token: 0,
            boots: Vec::new(),
            proc: None,
            wd: Wd::default(),
            wall_jump_ms: 0,
            hold_until: 0,
            agent_start_pending: true,
            wd_stops_on_close: false,
        };
        self.hosts.push(twin);
        self.link_win.push(vec![Vec::new(); nvol]);
        self.new_boot(tw);
        self.hosts[tw].agent_start_pending = true;
        self.process_gone(h);
        self.hosts[h].proc = None;
        self.hosts[h].agent_start_pending = true;
        self.hlog(
            h,
            "fault: a second machine is configured with this host id; both agents start at once"
                .into(),
        );
        let d = self.rng.range(200 * MS, SEC);
        self.after(d, Ev::TwinStart { h, tw });
    }

    fn twin_start(&mut self, h: usize, tw: usize) {
        self.hosts[h].agent_start_pending = false;
        self.hosts[tw].agent_start_pending = false;
        let mut incs = Vec::new();
        for x in [h, tw] {
            if self.hosts[x].alive() && self.hosts[x].proc.is_none() && !self.frozen(x) {
                self.start_agent(x);
                if let Some(p) = &self.hosts[x].proc {
                    incs.push(p.inc);
                }
            }
        }
        self.count("twin episode: both agents started");
        let t = self.timing;
        // The probe (1.5 intervals), a few write/read cycles, and late writes (io_timeout); a
        // probe that watches a run's changes allows the lag it assumes plus one read (seed
        // 2015748: since COLLISION 1956477 one interval more than before).
        let detect = self.t + 15 * self.u / 10 + 7 * self.u + t.io_timeout_ms * MS;
        self.twins.push(TwinWatch {
            id: self.hosts[h].id,
            h,
            tw,
            incs,
            until: detect + 10 * self.u + t.io_timeout_ms * MS,
            from: self.t,
            frozen: 0,
            moved: 0,
        });
        let idx = self.twins.len() - 1;
        self.at(detect, Ev::TwinDeadline { idx });
    }

    /// A host of a twin episode frozen for `dur` (suspend, SIGSTOP) may notice the other writer
    /// that much later: its collision exit is still expected.
    fn extend_twin_watch(&mut self, h: usize, dur: u64) {
        let t = self.t;
        for w in self.twins.iter_mut().filter(|w| (w.h == h || w.tw == h) && t <= w.until) {
            w.until += dur;
            w.frozen += dur;
        }
    }

    /// How long, between `from` and `to`, host a or b could not read a read quorum: too many
    /// of its volumes stalled, failed (EIO) or answered slower than io_timeout (a failed read
    /// too; seed 1626893: 2.1 s reads, io_timeout 1.6 s) for it. Such a read gap is not
    /// watched time for a twin's probe (seed 35659's rule), and no cycle's read shows it the
    /// other writer.
    fn io_trouble(&self, a: usize, b: usize, from: u64, to: u64) -> u64 {
        let nvol = self.vols.len();
        let (_, r) = Agent::quorums(nvol);
        let failing = self.timing.io_timeout_ms * MS;
        // A write cycle is one I/O to the core: the write, the read-back at half an interval
        // (or when the write returns), each slowed by `extra` (seed 2023222: writes and reads
        // 4.7 s slower, io_timeout 8.3 s, interval 4.8 s: every cycle failed).
        let troubled = move |x: usize, v: usize| {
            let slack = 4 * self.hosts[x].base_lat[v];
            self.vol_win[v].iter().chain(&self.link_win[x][v]).filter(move |w| match w.kind {
                WinKind::Stall | WinKind::Eio => true,
                WinKind::Slow(extra) => extra + extra.max(self.u / 2) + slack >= failing,
                WinKind::Torn => false,
            })
        };
        let mut edges: Vec<u64> = vec![from, to];
        for x in [a, b] {
            for v in 0..nvol {
                for w in troubled(x, v) {
                    edges.extend([w.start, w.end].into_iter().filter(|&e| from < e && e < to));
                }
            }
        }
        edges.sort_unstable();
        edges.dedup();
        edges
            .windows(2)
            .filter(|span| {
                let t = span[0];
                [a, b].iter().any(|&x| {
                    let down = (0..nvol)
                        .filter(|&v| troubled(x, v).any(|w| w.start <= t && t < w.end))
                        .count();
                    nvol - down < r
                })
            })
            .map(|span| span[1] - span[0])
            .sum()
    }

    /// How long the twins' records stayed at or below the highest sequence an earlier run of
    /// their id had landed, from the first of them: those are history to the other agent's
    /// probe and reads (the probe counts only records past what it has seen; seed 1586198: a
    /// lagging volume gave one twin a sequence 6 writes below the former run's last, and its
    /// writes were taken for history for 31 s). Until a twin's record passes it, all of the
    /// time since the first.
    fn twin_history(&self, idx: usize) -> u64 {
        let w = &self.twins[idx];
        let landed = || self.landings[w.id as usize - 1].iter().flatten();
        let Some(old_max) = landed().filter(|l| l.0 < w.from).map(|l| l.2).max() else {
            return 0;
        };
        let twins = || landed().filter(|l| l.0 >= w.from && w.incs.contains(&l.1));
        let Some(first) = twins().map(|l| l.0).min() else { return 0 };
        let passed = twins().filter(|l| l.2 > old_max).map(|l| l.0).min();
        passed.unwrap_or(self.t).saturating_sub(first)
    }

    /// COLLISION-DETECT: a real second writer is noticed within a few intervals: at most one
    /// of the two agents is still running.
    fn twin_deadline(&mut self, idx: usize) {
        // Storage trouble and freezes of either twin delay the detection by as much (seeds
        // 1200466, 1201533: a 37.9 s stall of a probe's first read; an episode that began in
        // a 21.4 s stall); the operator's power-off of the twin machine waits as long.
        let w = &self.twins[idx];
        // A probe still watching takes a run whose changes outlast the lag it allows (L +
        // interval, L = io_timeout + 3·interval) for a second writer, counted from the first
        // change it saw: the deadline is never before the first twin write plus that and one
        // read (seed 2266848: a lagging volume held both probes for 6 intervals, io_timeout
        // 139 s against an interval of 7.9 s; the other twin refused the first at that bound,
        // 12 s after the usual deadline).
        let first_write = self.landings[w.id as usize - 1]
            .iter()
            .flatten()
            .filter(|l| l.0 >= w.from && w.incs.contains(&l.1))
            .map(|l| l.0)
            .min();
        let probe_bound = first_write.map(|f| f + self.timing.io_timeout_ms * MS + 5 * self.u);
        if let Some(bound) = probe_bound.filter(|&b| b > self.t) {
            self.count(
                "twin episode: deadline moved (a probe's lag allowance from the first twin write)",
            );
            let late = bound + 10 * self.u + self.timing.io_timeout_ms * MS;
            let w = &mut self.twins[idx];
            w.until = w.until.max(late);
            self.at(bound, Ev::TwinDeadline { idx });
            return;
        }
        let w = &self.twins[idx];
        let owed = self.io_trouble(w.h, w.tw, w.from, self.t) + w.frozen + self.twin_history(idx);
        if owed > w.moved {
            let (more, first) = (owed - w.moved, w.moved == 0);
            if first {
                self.count("twin episode: deadline moved (storage trouble, a freeze, records taken for history)");
            }
            let late = self.t + more + 10 * self.u + self.timing.io_timeout_ms * MS;
            let w = &mut self.twins[idx];
            w.moved = owed;
            w.until = w.until.max(late);
            self.after(more, Ev::TwinDeadline { idx });
            return;
        }
        self.after(4 * self.u, Ev::TwinOff { tw: w.tw });
        let tw = &self.twins[idx];
        let running: Vec<u64> = [tw.h, tw.tw]
            .iter()
            .filter_map(|&x| self.hosts[x].proc.as_ref())
            // A doomed agent writes no more (S3) and waits for its reset; it reports a second
            // writer as an alarm instead of exiting (doom wins; seed 1581332: its sysrq failed,
            // and the watchdog came after the deadline).
            .filter(|p| {
                tw.incs.contains(&p.inc)
                    && !matches!(p.agent.phase(), Phase::Exited | Phase::Doomed { .. })
            })
            .map(|p| p.inc)
            .collect();
        if running.len() > 1 {
            let id = tw.id;
            self.violate(
                "COLLISION-DETECT",
                format!("two agents with host id {id} (incarnations {running:?}) have both been running for {} ms without noticing each other ({} ms of it frozen or in storage trouble)", (15 * self.u / 10 + 7 * self.u + self.timing.io_timeout_ms * MS + tw.moved) / MS, tw.moved / MS),
            );
        } else {
            self.count("twin episode: the collision was resolved in time");
        }
    }

    // ----- readers of the verdict tables (VERDICTS) -----

    /// The incarnation of host `id`'s record with the highest sequence on volumes `vols` (what a
    /// reader of them takes for the host's current run).
    fn newest_record_on(&self, id: u32, vols: &[usize]) -> Option<u64> {
        vols.iter()
            .filter_map(|&v| {
                match format::decode(self.vols[v].current(self.geo.heartbeat_block(id) as usize)) {
                    format::Decoded::Heartbeat(hb) if hb.cluster == self.cluster => Some(hb),
                    _ => None,
                }
            })
            .max_by_key(|hb| hb.seq)
            .map(|hb| hb.incarnation)
    }

    /// A torn landing (or forged record) in some host block of volume `v` since `t`: the
    /// replica it hit may have carried the newest table, and a restart of its writer that
    /// could not read it overwrites it with a record without that table (seed 4859).
    fn torn_landing_since(&self, v: usize, t: u64) -> bool {
        self.spoiled_at
            .iter()
            .any(|per_vol| per_vol.get(v).is_some_and(|s| s.iter().any(|&x| x >= t)))
    }

    /// Notes which running agents hold the verdict now; true once one that held it at an
    /// earlier check dropped it while still running.
    fn update_holders(&mut self, id: u32, inc: u64) -> bool {
        let now: Vec<(u64, bool)> = self
            .hosts
            .iter()
            .filter_map(|host| host.proc.as_ref().filter(|p| !p.exited))
            .map(|p| (p.pid, p.agent.holds_fenced_verdict(id, inc)))
            .collect();
        let e = self.holders.entry((id, inc)).or_default();
        if e.0.iter().any(|pid| now.iter().any(|&(p, holds)| p == *pid && !holds)) {
            e.1 = true;
        }
        e.0 = now.iter().filter(|x| x.1).map(|x| x.0).collect();
        e.1
    }

    /// Every copy of a `fenced` verdict is gone: no block on any volume carries it (every
    /// replica torn: a failing write or a power loss half-way), no volume serves older content,
    /// no write of it is still to land, and no agent process holds it to publish again. Then
    /// nobody can show it until a coordinator judges the host again (seeds 103055, 147335,
    /// 166819: the only replicas torn during an outage, their writers rebooted).
    fn no_copy_left(&self, id: u32, inc: u64) -> bool {
        let c = self.copies(id, inc);
        !(c.on_a_volume || c.lagging || c.to_land || c.held)
    }

    /// Where copies of a `fenced` verdict are now (see [`World::no_copy_left`]).
    fn copies(&self, id: u32, inc: u64) -> Copies {
        let carries = |data: &format::Block| match format::decode(data) {
            format::Decoded::Heartbeat(hb) => hb
                .verdicts
                .iter()
                .any(|v| v.host_id == id && v.incarnation == inc && v.kind == VerdictKind::Fenced),
            _ => false,
        };
        let t = self.t;
        let on_a_volume = (0..self.vols.len()).any(|v| {
            (1..=self.max_hosts)
                .any(|b| carries(self.vols[v].current(self.geo.heartbeat_block(b) as usize)))
        });
        let lagging = self.lag_win.iter().flatten().any(|w| w.0 <= t && t < w.1);
        let to_land = self
            .q
            .iter()
            .any(|Reverse(q)| matches!(&q.ev, Ev::Land { data, torn: false, .. } if carries(data)));
        let held = self.hosts.iter().any(|host| {
            host.proc.as_ref().is_some_and(|p| !p.exited && p.agent.holds_fenced_verdict(id, inc))
        });
        Copies { on_a_volume, lagging, to_land, held }
    }

    fn torn_host_block(&self, v: usize) -> bool {
        (1..=self.max_hosts).any(|id| {
            matches!(
                format::decode(self.vols[v].current(self.geo.heartbeat_block(id) as usize)),
                format::Decoded::BadCrc | format::Decoded::Malformed(_)
            )
        })
    }

    fn torn_block_of_a_running_host(&self, v: usize) -> bool {
        self.hosts.iter().any(|host| {
            host.proc.as_ref().is_some_and(|p| !p.exited)
                && matches!(
                    format::decode(
                        self.vols[v].current(self.geo.heartbeat_block(host.id) as usize)
                    ),
                    format::Decoded::BadCrc | format::Decoded::Malformed(_)
                )
        })
    }

    /// What `check`/`status` would take from each read quorum of volumes right now: per volume
    /// the record carrying the highest (verdict_gen, lowest author) table, then the highest of
    /// those. A `fenced` verdict every quorum showed must not go missing from a
    /// quorum's table (for more than a torn block's interval) while its boot is dead, nobody
    /// cleared it and the host did not rejoin; a verdict withdrawn from every quorum must not
    /// come back.
    fn reader_check(&mut self) {
        let nvol = self.vols.len();
        let (_, r) = Agent::quorums(nvol);
        // Every table-carrying record per volume: a reader picks the newest table of a quorum
        // and takes a later-stamped `fenced` entry of a concurrent one of its generation
        // (`view::take_later_fenced`, as `merge_views` does).
        let per_vol: Vec<Vec<format::Heartbeat>> = (0..nvol)
            .map(|v| {
                (1..=self.max_hosts)
                    .filter_map(|id| {
                        match format::decode(
                            self.vols[v].current(self.geo.heartbeat_block(id) as usize),
                        ) {
                            format::Decoded::Heartbeat(hb)
                                if hb.cluster == self.cluster && hb.verdict_gen > 0 =>
                            {
                                Some(hb)
                            }
                            _ => None,
                        }
                    })
                    .collect()
            })
            .collect();
        let quorums: Vec<Vec<usize>> = match (nvol, r) {
            (1, _) => vec![vec![0]],
            (2, 2) => vec![vec![0, 1]],
            (3, 2) => vec![vec![0, 1], vec![0, 2], vec![1, 2]],
            _ => (0..nvol).map(|v| vec![v]).collect(),
        };
        // A volume that stalls or fails for every host right now answers no reader: a quorum
        // with it gives no answer at all, never the old or torn content it holds (seed
        // 105544: volume 1 stalled for 44 s and volume 0 failing showed only a table from
        // before the verdict; a reader would have refused).
        let t = self.t;
        let unreadable = |v: usize| {
            self.vol_win[v].iter().any(|w| {
                w.start <= t && t < w.end && matches!(w.kind, WinKind::Stall | WinKind::Eio)
            })
        };
        let table_of = |q: Vec<usize>| -> QuorumTable {
            let read = || q.iter().flat_map(|&v| &per_vol[v]);
            // As readers order tables (`view::table_order`, lineages included).
            let best = read().max_by_key(|hb| table_order(hb));
            let set = best
                .map(|b| {
                    let mut verdicts = b.verdicts.clone();
                    take_later_fenced(&mut verdicts, b.verdict_gen, read());
                    verdicts
                        .iter()
                        .filter(|v| v.kind == VerdictKind::Fenced)
                        .map(|v| (v.host_id, v.incarnation))
                        .collect()
                })
                .unwrap_or_default();
            let at = best.map(|b| (b.verdict_gen, b.verdict_author));
            (q, at, set)
        };
        // What every quorum's content shows, unreadable volumes included: a verdict on a write
        // quorum of volumes. Only such a verdict is durable: a coordinator that dies before its
        // table reached a second volume of three leaves it on one, and once a stalled volume
        // answers again a quorum without that one shows the older table (seed 1763425: shown
        // by the only readable quorum {0, 1} while volume 2 stalled, on volume 1 alone).
        let durable: HashSet<(u32, u64)> = quorums
            .iter()
            .map(|q| table_of(q.clone()).2)
            .reduce(|a, b| a.intersection(&b).copied().collect())
            .unwrap_or_default();
        let quorums: Vec<Vec<usize>> =
            quorums.into_iter().filter(|q| !q.iter().any(|&v| unreadable(v))).collect();
        if quorums.is_empty() {
            return;
        }
        let tables: Vec<QuorumTable> = quorums.into_iter().map(table_of).collect();
        let t = self.t;
        let all: HashSet<(u32, u64)> = tables
            .iter()
            .map(|x| x.2.clone())
            .reduce(|a, b| a.intersection(&b).copied().collect())
            .unwrap_or_default();
        let any: HashSet<(u32, u64)> = tables.iter().flat_map(|x| x.2.iter().copied()).collect();
        for &(id, inc) in &any {
            let Some(rv) = self.reader.get(&(id, inc)).copied() else { continue };
            if let Some(gone) = rv.gone {
                let cleared = self.op_cmd_at.get(&id).is_some_and(|&c| c >= gone);
                let rejoined = self.inc_changed.get(&id).is_some_and(|&(i, _)| i != inc);
                // A coordinator judged it again (a twin's incarnation powered off once more):
                // a new verdict, not a withdrawn one coming back.
                let judged_again = self.fenced_event_at.get(&id).is_some_and(|&f| f >= gone);
                if judged_again {
                    self.count("reader: a withdrawn verdict was reached again");
                } else if rejoined && !cleared {
                    self.count("reader: a withdrawn verdict about an old incarnation is back (host rejoined)");
                } else if !cleared {
                    let q: Vec<_> = tables
                        .iter()
                        .filter(|x| x.2.contains(&(id, inc)))
                        .map(|x| (x.0.clone(), x.1))
                        .collect();
                    self.violate(
                        "VERDICTS",
                        format!("the withdrawn fenced verdict about host {id} incarnation {inc} (gone from every read quorum since t={}) is back in the table a reader picks from volumes {q:?} (gen, author)", fmt_t(gone)),
                    );
                    return;
                }
                self.reader.remove(&(id, inc));
            }
        }
        for &k in &all {
            if !durable.contains(&k) && !self.reader.contains_key(&k) {
                self.count("reader: a fenced verdict shown by every readable quorum, not yet on a write quorum");
                continue;
            }
            self.reader
                .entry(k)
                .or_insert(ReaderVerdict {
                    since: t,
                    missing: 0,
                    all_missing: 0,
                    all_missing_since: t,
                    gone: None,
                    newest: (0, 0),
                    stamp: u32::MAX,
                })
                .missing = 0;
        }
        // Stamps are copied unchanged by merges and republishing; the lowest is the verdict
        // as first reached (a later confirm-off restamps it).
        for hb in per_vol.iter().flatten() {
            for v in hb.verdicts.iter().filter(|v| v.kind == VerdictKind::Fenced) {
                if let Some(rv) = self.reader.get_mut(&(v.host_id, v.incarnation)) {
                    rv.stamp = rv.stamp.min(v.changed_gen);
                }
            }
        }
        for x in &tables {
            if let Some(at) = x.1 {
                for k in &x.2 {
                    if let Some(rv) = self.reader.get_mut(k) {
                        if newer(at, rv.newest) {
                            rv.newest = at;
                        }
                    }
                }
            }
        }
        let keys: Vec<(u32, u64)> =
            self.reader.iter().filter(|(_, v)| v.gone.is_none()).map(|(k, _)| *k).collect();
        for (id, inc) in keys {
            self.update_holders(id, inc);
        }
        let tracked: Vec<((u32, u64), ReaderVerdict)> = self
            .reader
            .iter()
            .filter(|(k, v)| v.gone.is_none() && !all.contains(k))
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((id, inc), rv) in tracked {
            let dead =
                self.incs.get(&inc).is_some_and(|&(h, b)| self.hosts[h].boots[b].dead_at.is_some());
            // A clear written after the verdict first appeared in a coordinator's table, but
            // before every quorum showed it, still applies when the coordinator reads it, if
            // its issuer could have seen it: it names a table generation at least as new as
            // the verdict's stamp (either unknown: any clear after it). One written while the
            // power-off was under way does not end the verdict reached after it (1640719).
            let judged_at = self.first_in_table.get(&inc).copied().unwrap_or(rv.since);
            let cleared = self.op_clear_at.get(&id).is_some_and(|&(c, seen)| {
                c >= judged_at.min(rv.since)
                    && (rv.stamp == 0 || seen.is_none_or(|g| g >= rv.stamp))
            });
            // Whenever it rejoined: a coordinator that had not read the new incarnation yet
            // may publish the verdict after the rejoin, and rightly drops it once it has.
            let rejoined = self.inc_changed.get(&id).is_some_and(|&(i, _)| i != inc);
            // Every volume of some quorum lacking it has a torn block of a running host
            // (its write failed half-way and is not redone during an outage): the newest
            // replica may be there, and no reader can see it.
            // Or the quorum can read only a table older than the newest that showed it, and
            // torn blocks are on its volumes: the replicas carrying the newest table were torn
            // by a power loss or a failing write (for good when their hosts are dead; every
            // replica can be lost that way). A table older than the newest is not a
            // withdrawal, and one newer that lacks it still fails the rule.
            let lost_replicas = tables.iter().filter(|x| !x.2.contains(&(id, inc))).all(|x| {
                x.1.is_none_or(|at| newer(rv.newest, at))
                    && x.0
                        .iter()
                        .all(|&v| self.torn_host_block(v) || self.torn_landing_since(v, rv.since))
            });
            let dropped_by_an_agent = self.holders.get(&(id, inc)).is_some_and(|h| h.1);
            if dead && !cleared && !rejoined && !dropped_by_an_agent && self.no_copy_left(id, inc) {
                // Information lost, not withdrawn: a coordinator that judges the host again
                // makes a new verdict, tracked afresh once every quorum shows it.
                self.count("reader: every copy of a fenced verdict torn (information lost)");
                self.reader.remove(&(id, inc));
                self.holders.remove(&(id, inc));
                continue;
            }
            // No replica on any volume and no agent holding it, and no agent dropped it: the
            // only copies are writes still in flight (or a lagging volume's), which no reader
            // sees until they land (seed 2229731: the only replica torn by its writer's failing
            // writes in an outage, the writer killed, its last write stuck in a stall).
            let copies = self.copies(id, inc);
            let unseen = !dropped_by_an_agent && !copies.on_a_volume && !copies.held;
            let blind = lost_replicas
                || unseen
                || tables
                    .iter()
                    .filter(|x| !x.2.contains(&(id, inc)))
                    .all(|x| x.0.iter().all(|&v| self.torn_block_of_a_running_host(v)));
            if blind && dead && !cleared && !rejoined && rv.missing + 1 >= 3 {
                self.count("reader: the newest table is in torn blocks only");
                continue;
            }
            // Every quorum lacking it holds a `fenced` verdict about another run of the host,
            // dead too, whose record is the one its readers take for current (the highest
            // sequence there): that verdict answers them. Sequences order a host's runs only as
            // far as each run read the other's writes (seed 2080753: run B started while
            // volume 0 stalled, continued from volume 1's older value and wrote 60-62 there;
            // volume 0 kept the older run A's 63; B was fenced, and the coordinator's next run
            // saw A's record as the later one and fenced it: readers show FENCED either way).
            let covered = tables.iter().filter(|x| !x.2.contains(&(id, inc))).all(|x| {
                x.2.iter().any(|&(h, other)| {
                    h == id
                        && other != inc
                        && self
                            .incs
                            .get(&other)
                            .is_some_and(|&(oh, ob)| self.hosts[oh].boots[ob].dead_at.is_some())
                        && self.newest_record_on(id, &x.0) == Some(other)
                })
            });
            if covered && dead && !cleared && !rejoined {
                self.count("reader: a fenced verdict replaced by one about another dead run that readers take for current");
                self.reader.remove(&(id, inc));
                continue;
            }
            let missing = rv.missing + 1;
            if dead && !cleared && !rejoined && missing >= 3 {
                let q: Vec<_> = tables
                    .iter()
                    .filter(|x| !x.2.contains(&(id, inc)))
                    .map(|x| (x.0.clone(), x.1))
                    .collect();
                self.violate(
                    "VERDICTS",
                    format!("the fenced verdict about host {id} incarnation {inc} (still dead, not cleared, not rejoined; shown by every read quorum since t={}) is missing from the table a reader picks from volumes {q:?} (gen, author) for {missing} checks", fmt_t(rv.since)),
                );
                return;
            }
            if missing == 2 && dead && !cleared && !rejoined {
                self.count(
                    "reader: a fenced verdict missing from a quorum's table for a moment (flap)",
                );
            }
            // Withdrawn means a table newer than every one that showed it lacks it, in every
            // quorum: a quorum with no readable table (every coordinator block torn), or one
            // that can read only an older table (a dead former coordinator's block) while the
            // newest are torn, withdrew nothing; the verdict reappearing when a block heals
            // is not a comeback.
            let withdrawn_everywhere = tables
                .iter()
                .all(|x| x.1.is_some_and(|at| newer(at, rv.newest)) && !x.2.contains(&(id, inc)));
            let all_missing = if any.contains(&(id, inc)) {
                0
            } else if withdrawn_everywhere {
                rv.all_missing + 1
            } else {
                rv.all_missing
            };
            if let Some(e) = self.reader.get_mut(&(id, inc)) {
                e.missing = missing;
                if all_missing == 1 && e.all_missing == 0 {
                    e.all_missing_since = t;
                }
                e.all_missing = all_missing;
                if all_missing >= 3 {
                    e.gone = Some(e.all_missing_since);
                }
            }
        }
    }

    // ----- liveness of a healthy host (HEALTHY) -----

    /// Landing times of host `id` on volume `v` as readers see them first (a lagging volume
    /// shows a landing late; one that landed before the lag began was visible at once, and a
    /// reader may have seen it then).
    fn visible_landings(&self, id: u32, v: usize) -> Vec<(u64, u64, u64)> {
        self.landings[id as usize - 1][v]
            .iter()
            .map(|&(x, inc, seq)| {
                let t = self.lag_win[v]
                    .iter()
                    .filter(|&&(s, e, _)| x >= s && x < e)
                    .map(|&(_, e, lag)| (x + lag).min(e))
                    .max()
                    .unwrap_or(x);
                (t, inc, seq)
            })
            .collect()
    }

    /// HEALTHY: observer `h` (about to suspect, fence or declare fenced host `id`) may do so
    /// only if some read quorum saw a gap of at least suspect_after (less a clock-rate
    /// allowance) between host `id`'s landings, or since its last one, since `h` started.
    fn check_healthy(&mut self, h: usize, id: u32, what: &str) {
        let Some(started) = self.hosts[h].proc.as_ref().map(|p| p.started) else { return };
        if id as usize > self.n || self.twins.iter().any(|t| t.id == id && self.t <= t.until) {
            return;
        }
        if matches!(
            self.last_state.get(&id),
            Some(format::HostState::SelfFencing | format::HostState::Leaving) | None
        ) {
            return;
        }
        let limit = self.timing.suspect_after_ms * MS * 997 / 1000;
        let nvol = self.vols.len();
        let (_, r) = Agent::quorums(nvol);
        let quorums: Vec<Vec<usize>> = match (nvol, r) {
            (2, 2) => vec![vec![0, 1]],
            (3, 2) => vec![vec![0, 1], vec![0, 2], vec![1, 2]],
            _ => (0..nvol).map(|v| vec![v]).collect(),
        };
        let mut worst = 0;
        // A torn write is a failed write, and a forged record hides what landed before it: a
        // host whose block was spoiled within the last suspect_after (plus a read period) may
        // look stale there.
        let torn_since = self.t.saturating_sub(limit + 2 * self.timing.interval_ms * MS);
        for q in &quorums {
            if q.iter()
                .any(|&v| self.spoiled_at[id as usize - 1][v].iter().any(|&x| x >= torn_since))
            {
                return;
            }
            let mut all: Vec<(u64, u64, u64)> =
                q.iter().flat_map(|&v| self.visible_landings(id, v)).collect();
            all.sort_unstable();
            // Only a value newer than any seen before on these volumes is progress.
            let mut newest: HashMap<u64, u64> = HashMap::new();
            let times: Vec<u64> = all
                .into_iter()
                .filter(|&(_, inc, seq)| {
                    let n = newest.entry(inc).or_insert(0);
                    let progress = seq > *n;
                    *n = (*n).max(seq);
                    progress
                })
                .map(|x| x.0)
                .collect();
            let before = times.iter().rposition(|&x| x <= started);
            let from = before.unwrap_or(0);
            let seq = &times[from.min(times.len())..];
            let Some(&first) = seq.first() else { return };
            let mut gap = self.t - seq.last().copied().unwrap_or(first);
            for w in seq.windows(2) {
                gap = gap.max(w[1] - w[0]);
            }
            worst = worst.max(gap);
            if gap >= limit {
                return;
            }
        }
        let oid = self.hosts[h].id;
        self.violate(
            "HEALTHY",
            format!("host {oid} {what} host {id}, whose heartbeat landed at most {} ms apart on every read quorum since host {oid} started (suspect_after {} ms)", worst / MS, self.timing.suspect_after_ms),
        );
    }

    // ----- episodes -----

    /// All hosts up, agents running with armed watchdogs and healthy storage, every agent sees
    /// every other one alive in its current incarnation, one agreed coordinator, no faults.
    fn settled(&self) -> bool {
        let t = self.t;
        // With outage survival, the watchdog bound also needs every judge's evidence that
        // enough members granted no permit for the permits' window: a cluster is settled for a
        // death episode only once that window has passed since the last trouble and start.
        let quiet = match &self.net {
            Some(_) => {
                let w = hbfence::core::agent::permit_lifetime_ms(&self.agent_timing)
                    + self.agent_timing.watchdog_timeout_ms
                    + self.agent_timing.margin_ms;
                (w * MS + 2 * self.u).max(2 * self.u)
            }
            None => 2 * self.u,
        };
        // A fencing attempt started before the cluster came back (on a host that rebooted
        // meanwhile, seed 22471) still powers its target off: not settled until it has.
        if self.faults_until + quiet > t || self.power_off_pending_until > t {
            return false;
        }
        if self
            .link_win
            .iter()
            .flatten()
            .flatten()
            .chain(self.vol_win.iter().flatten())
            .any(|w| w.end + quiet > t)
            || self.lag_win.iter().flatten().any(|w| w.1 + 2 * self.u > t)
            || self.twins.iter().any(|w| w.until > t)
            || self.net.as_ref().is_some_and(|nt| nt.wins.iter().any(|w| w.end + 2 * self.u > t))
        {
            return false;
        }
        let mut coord = None;
        for host in &self.hosts[..self.n] {
            let Some(p) = &host.proc else { return false };
            if !host.alive()
                || p.paused
                || !matches!(p.agent.phase(), Phase::Running)
                || !(p.agent.watchdog_armed() || p.agent.watchdog_unusable())
            {
                return false;
            }
            if p.ready_at.is_none_or(|r| r + (4 * self.u).max(quiet) > t) {
                return false;
            }
            if !(0..self.vols.len()).all(|v| p.agent.volume_healthy(v)) {
                return false;
            }
            let views = p.agent.peer_views();
            for other in &self.hosts[..self.n] {
                if other.id == host.id {
                    continue;
                }
                let inc = other.proc.as_ref().map(|o| o.inc);
                if !views.iter().any(|v| {
                    v.id == other.id && v.status == PeerStatus::Alive && Some(v.incarnation) == inc
                }) {
                    return false;
                }
            }
            if p.agent.verdicts().values().any(|v| {
                self.hosts.iter().any(|o| o.proc.as_ref().is_some_and(|op| op.inc == v.incarnation))
            }) {
                return false;
            }
            match (coord, p.agent.coordinator()) {
                (_, None) => return false,
                (None, c) => coord = c,
                (Some(a), Some(b)) if a != b => return false,
                _ => {}
            }
        }
        true
    }

    /// Brings every host back: powers on, restarts agents that stopped.
    fn recover(&mut self) {
        for h in 0..self.n {
            if self.hosts[h].hold_until > self.t {
                continue;
            }
            if !self.hosts[h].power_on {
                self.power_on(h, "recovery");
            } else if self.hosts[h].alive()
                && self.hosts[h].proc.is_none()
                && !self.hosts[h].agent_start_pending
            {
                let boot = self.boot_idx(h);
                self.hosts[h].agent_start_pending = true;
                let d = self.rng.range(100 * MS, SEC);
                self.after(d, Ev::AgentStart { h, boot });
            } else if let Some(p) = self.hosts[h].proc.as_ref() {
                if p.paused {
                    let (pid, token) = (p.pid, p.pause_token);
                    self.after(0, Ev::Resume { h, pid, token });
                } else if matches!(p.agent.phase(), Phase::Doomed { fenced: true, .. })
                    && !self.hosts[h].wd.running
                {
                    // sysrq failed and no watchdog runs: only a person can reset it.
                    self.count("operator resets a host stuck doomed without a watchdog");
                    self.hlog(h, "operator: hard reset of a host stuck self-fencing".into());
                    self.kill(h, "reset by an operator", false);
                }
            }
        }
    }

    fn episode(&mut self, attempt: u32) {
        if self.t + 15 * self.u > self.end {
            return;
        }
        self.blip = None;
        self.quiet = None;
        if let Some(o) = self.outage.take() {
            self.check_outage_end(o);
        }
        let settled = self.settled();
        if !settled && attempt < 40 {
            self.recover();
            self.after(self.u.max(SEC / 2), Ev::Episode { attempt: attempt + 1 });
            return;
        }
        let survival = self.o.focus == Focus::Survival;
        let (outage_share, partial_share) = if survival { (0, 900) } else { (250, 200) };
        if settled
            && self.net.as_mut().is_some_and(|nt| nt.rng.chance(outage_share))
            && self.outage_episode()
        {
            return;
        }
        if settled
            && self.net.as_mut().is_some_and(|nt| nt.rng.chance(partial_share))
            && self.partial_outage_episode()
        {
            return;
        }
        let weights = if self.o.focus == Focus::Blip { [10, 80, 10] } else { [35, 25, 40] };
        let kind = if settled { self.rng.weighted(&weights) } else { 2 };
        match kind {
            0 => self.death_episode(),
            1 => self.blip_episode(),
            _ => self.chaos_episode(),
        }
    }

    fn death_episode(&mut self) {
        let t = self.timing;
        let n = self.n;
        let victim = self.rng.below(n as u64) as usize;
        let others_eligible =
            self.hosts[..n].iter().enumerate().any(|(i, h)| i != victim && h.eligible);
        let guarded = self.hosts[victim].proc.as_ref().is_some_and(|p| p.agent.watchdog_armed());
        if !others_eligible || (self.hosts[victim].bmc != Bmc::Confirm && !guarded) {
            // Nobody could judge it, or nothing can fence it (no BMC, no guarding watchdog).
            self.chaos_episode();
            return;
        }
        let how = [DeathHow::PowerLoss, DeathHow::Crash, DeathHow::Hang]
            [self.rng.weighted(&[40, 30, 30])];
        // Staleness counts from evidence only (the start of the latest timely read that showed
        // no progress): the verdict may come up to two intervals after the brief's bound (one
        // for the observer's read phase, one for evidence that is up to a cycle old).
        let slack = |b: u64| b + 2 * t.interval_ms + liveness_slack_ms() + b / 500;
        let (bound_ms, path) = if self.hosts[victim].bmc == Bmc::Confirm {
            (slack(t.suspect_after_ms + BMC_CONFIRM_MAX_MS), "bmc")
        } else {
            (slack(t.dead_after_ms()), "watchdog")
        };
        let at = self.rng.range(500 * MS, 1500 * MS);
        self.after(at, Ev::Fault(Fault::Kill { h: victim, how, bound_ms, path }));
        self.stats.quiet_deaths += 1;
        let until = self.t + at + bound_ms * MS + 3 * self.u;
        self.quiet = Some(QuietWatch { until, victim });
        self.at(until, Ev::Episode { attempt: 0 });
    }

    fn deadline(&mut self, idx: usize) {
        let d = &self.deaths[idx];
        if d.done {
            return;
        }
        let (h, inc, bound, path) = (d.h, d.inc, d.bound_ms, d.path);
        let rejoined = self.hosts[h].proc.as_ref().is_some_and(|p| p.inc != inc);
        if rejoined {
            self.stats.quiet_deaths_rejoined += 1;
            self.log(format!(
                "check: host {} came back before being fenced; no liveness verdict",
                h + 1
            ));
            return;
        }
        // KNOWN CORE BUG (report L1): since 13f019e staleness only counts up to the start of
        // the latest timely read cycle, which lags the clock by up to an interval plus a
        // cycle: verdicts come up to about one interval later than the brief's bound.
        self.violate(
            "LIVENESS",
            format!("host {} (incarnation {inc}) died quietly but was not declared fenced within {bound} ms ({path} path)", h + 1),
        );
    }

    fn blip_episode(&mut self) {
        let t = self.timing;
        let nvol = self.vols.len();
        let vols: Vec<usize> = if nvol == 1 || self.rng.chance(600) {
            (0..nvol).collect()
        } else {
            let picked: Vec<usize> = (0..nvol).filter(|_| self.rng.chance(500)).collect();
            if picked.is_empty() {
                vec![0]
            } else {
                picked
            }
        };
        // The lease's own length less the last renewal's distance from the blip's start (one
        // interval and a half: a write is read back half an interval after it) and a retry.
        let short_max = t.lease_timeout_ms - 2 * t.interval_ms - t.interval_ms / 2 - 300;
        let short = self.rng.chance(700);
        let dur = if short {
            self.rng.range(200, short_max)
        } else {
            self.rng.range(short_max, t.lease_timeout_ms - 100)
        } * MS;
        let kind = if self.rng.chance(600) { WinKind::Stall } else { WinKind::Eio };
        let from = self.t + self.rng.range(self.u, 2 * self.u);
        for &v in &vols {
            self.vol_win[v].push(Window { start: from, end: from + dur, kind });
        }
        if short {
            self.stats.short_blips += 1;
        } else {
            self.stats.medium_blips += 1;
        }
        let until = from + dur + t.dead_after_ms() * MS + 3 * self.u;
        self.blip = Some(BlipWatch { from, until, short, dur });
        self.at(
            from,
            Ev::Note(format!(
                "fault: storage-wide blip ({kind:?}) on volumes {vols:?} for every host until t={} ({} ms, {})",
                fmt_t(from + dur),
                dur / MS,
                if short { "short: no lease may expire, nobody may be fenced" } else { "below lease_timeout: no live host may be fenced" }
            )),
        );
        self.at(until, Ev::Episode { attempt: 0 });
    }

    /// A host for a fault: often the acting coordinator (its pauses, restarts and suspends
    /// are the interesting ones).
    fn pick_host(&mut self) -> usize {
        if self.rng.chance(300) {
            let c = self.hosts[..self.n]
                .iter()
                .filter_map(|h| h.proc.as_ref().and_then(|p| p.agent.coordinator()))
                .next();
            if let Some(c) = c {
                return c as usize - 1;
            }
        }
        self.rng.below(self.n as u64) as usize
    }

    fn chaos_episode(&mut self) {
        self.stats.chaos_episodes += 1;
        let u = self.u;
        let t = self.timing;
        let nvol = self.vols.len();
        let start = self.t + u;
        let len = self.rng.range(10 * u, 30 * u);
        let k = self.rng.range(2, 10);
        self.log(format!("episode: chaos for {} ms, {k} faults", len / MS));
        let mut weights = [10, 8, 6, 5, 6, 8, 8, 5, 5, 8, 3, 3, 3, 3, 5, 4, 4, 3, 3, 4, 2, 3, 4];
        match self.o.focus {
            Focus::Suspend => weights[14] = 60,
            Focus::StopOnClose => weights[5] = 40,
            Focus::Survival | Focus::Blip | Focus::None => {}
        }
        if self.net.is_some() {
            self.network_chaos(start, len);
        }
        for _ in 0..k {
            let at = start + self.rng.below(len);
            let h = self.pick_host();
            let v = self.rng.below(nvol as u64) as usize;
            match self.rng.weighted(&weights) {
                0 => {
                    let d = self.rng.range(u / 2, 8 * u);
                    self.link_window(h, v, at, d, WinKind::Stall);
                }
                1 => {
                    let d = self.rng.range(u / 5, 5 * u);
                    self.link_window(h, v, at, d, WinKind::Eio);
                }
                2 => {
                    let d = self.rng.range(u, 10 * u);
                    let extra = self.rng.range(u / 5, 5 * u / 2);
                    self.link_window(h, v, at, d, WinKind::Slow(extra));
                }
                3 => {
                    let d = self.rng.range(u, 6 * u);
                    self.link_window(h, v, at, d, WinKind::Torn);
                }
                4 => {
                    let d = self.rng.range(u / 5, 10 * u);
                    let kind = if self.rng.chance(500) { WinKind::Stall } else { WinKind::Eio };
                    self.vol_win[v].push(Window { start: at, end: at + d, kind });
                    self.at(
                        at,
                        Ev::Note(format!(
                            "fault: volume {v} {kind:?} for every host until t={}",
                            fmt_t(at + d)
                        )),
                    );
                }
                5 => {
                    let restart_after = self.rng.chance(700).then(|| self.rng.range(u / 5, 5 * u));
                    self.chaos_at(at, Ev::Fault(Fault::Crash { h, restart_after }));
                }
                6 => {
                    let dur = Some(self.rng.range(u / 5, 6 * u));
                    self.chaos_at(at, Ev::Fault(Fault::Pause { h, dur }));
                }
                7 => {
                    let restart_after = self.rng.range(u, 10 * u);
                    self.chaos_at(at, Ev::Fault(Fault::Stop { h, restart_after }));
                }
                8 => {
                    let on_after = self.rng.chance(800).then(|| self.rng.range(2 * u, 20 * u));
                    self.chaos_at(at, Ev::Fault(Fault::PowerLoss { h, on_after }));
                }
                9 => {
                    let count = self.rng.range(1, 3);
                    let mut tt = at;
                    for _ in 0..count {
                        let cmd = [
                            Command::Reset,
                            Command::PowerOff,
                            Command::Test,
                            Command::Clear,
                            Command::ConfirmOff,
                        ][self.rng.weighted(&[30, 10, 25, 15, 20])];
                        self.chaos_at(tt, Ev::Fault(Fault::Mailbox { h, cmd }));
                        tt += self.rng.range(3 * u / 10, 5 * u);
                    }
                }
                10 => {
                    let delta_ms = self.rng.pick(&[
                        -3_600_000i64,
                        3_600_000,
                        -600_000,
                        86_400_000,
                        -5_000,
                        5_000,
                    ]);
                    self.chaos_at(at, Ev::Fault(Fault::WallJump { h, delta_ms }));
                }
                11 => {
                    // A pause, then the stopped agent is killed and restarted (its lease may
                    // have expired meanwhile: S3 across restarts).
                    let dur = Some(self.rng.range(2 * u, 8 * u));
                    self.chaos_at(at, Ev::Fault(Fault::Pause { h, dur }));
                    let restart_after = Some(self.rng.range(u / 10, 2 * u));
                    let c = at + self.rng.range(u / 2, 7 * u);
                    self.chaos_at(c, Ev::Fault(Fault::Crash { h, restart_after }));
                }
                12 => {
                    // A fence request, and the agent is killed and restarted right after it
                    // obeyed: the restarted agent must find the doomed marker (S3).
                    self.chaos_at(at, Ev::Fault(Fault::Mailbox { h, cmd: Command::Reset }));
                    let restart_after = Some(self.rng.range(u / 20, 8 * u / 10));
                    let c = at + self.rng.range(0, 3 * u / 2);
                    self.chaos_at(c, Ev::Fault(Fault::Crash { h, restart_after }));
                }
                13 => {
                    // The host loses every volume (its lease expires), and its agent is killed
                    // and restarted around the expiry.
                    let d = self.rng.range(4 * u, 10 * u).max(t.lease_timeout_ms * MS + u);
                    for v in 0..nvol {
                        self.link_window(h, v, at, d, WinKind::Stall);
                    }
                    let lease = t.lease_timeout_ms * MS;
                    let c = at + lease.saturating_sub(self.rng.range(0, 3 * u / 2));
                    let restart_after = Some(self.rng.range(u / 20, 3 * u / 2));
                    self.chaos_at(c, Ev::Fault(Fault::Crash { h, restart_after }));
                }
                14 => {
                    // Suspend: short (below suspect_after), around the lease, or longer than
                    // dead_after.
                    let dur = match self.rng.below(3) {
                        0 => self.rng.range(u / 5, t.suspect_after_ms * MS),
                        1 => {
                            self.rng.range(t.lease_timeout_ms * MS / 2, 2 * t.lease_timeout_ms * MS)
                        }
                        _ => self.rng.range(t.dead_after_ms() * MS, 2 * t.dead_after_ms() * MS),
                    };
                    self.chaos_at(at, Ev::Fault(Fault::Suspend { h, dur }));
                }
                15 => {
                    // SIGSTOP just under suspect_after (HEALTHY: the gap between landings is
                    // this plus up to one interval).
                    let s = t.suspect_after_ms * MS;
                    let dur = Some(
                        self.rng
                            .range(s.saturating_sub(16 * u / 10), s.saturating_sub(6 * u / 10))
                            .max(u / 10),
                    );
                    self.chaos_at(at, Ev::Fault(Fault::Pause { h, dur }));
                }
                16 => {
                    // Stopped near the end of its lease (storage gone), then killed within
                    // watchdog_timeout: the kernel's ping on close postpones the reset.
                    let lease = t.lease_timeout_ms * MS;
                    for v in 0..nvol {
                        self.link_window(h, v, at, lease + 4 * u, WinKind::Stall);
                    }
                    let p = at + lease.saturating_sub(self.rng.range(u / 10, u));
                    self.chaos_at(p, Ev::Fault(Fault::Pause { h, dur: None }));
                    let wd = t.watchdog_timeout_ms * MS;
                    let c = p + self.rng.range(wd / 2, wd.saturating_sub(10 * MS));
                    let restart_after = self.rng.chance(500).then(|| self.rng.range(u / 10, u));
                    self.chaos_at(c, Ev::Fault(Fault::Crash { h, restart_after }));
                }
                17 => {
                    let confirm_after = self.rng.range(u / 2, 3 * u);
                    self.chaos_at(at, Ev::Fault(Fault::OperatorOff { h, confirm_after }));
                }
                18 => {
                    // A volume that returns old content for a while (a stale replica).
                    let d = self.rng.range(2 * u, 10 * u);
                    let lag = self.rng.range(u / 2, MAX_LAG * u);
                    self.lag_win[v].push((at, at + d, lag));
                    self.at(
                        at,
                        Ev::Note(format!(
                            "fault: volume {v} returns content {} ms old until t={}",
                            lag / MS,
                            fmt_t(at + d)
                        )),
                    );
                }
                19 => {
                    let clean = self.rng.chance(500);
                    self.chaos_at(at, Ev::Fault(Fault::Reboot { h, clean }));
                }
                20 => self.chaos_at(at, Ev::Fault(Fault::Twin { h })),
                21 => self.chaos_at(at, Ev::Fault(Fault::Forge { h, v })),
                _ => {
                    // Restart without reboot of the coordinator (or the only eligible host).
                    let restart_after = Some(self.rng.range(u / 10, 3 * u));
                    let h = self.hosts[..self.n].iter().position(|x| x.eligible).unwrap_or(h);
                    let h = if self.rng.chance(500) { self.pick_host() } else { h };
                    self.chaos_at(at, Ev::Fault(Fault::Crash { h, restart_after }));
                }
            }
        }
        let next = start + len + self.rng.range(2 * u, 5 * u);
        self.at(next, Ev::Episode { attempt: 0 });
    }

    fn chaos_at(&mut self, at: u64, ev: Ev) {
        self.faults_until = self.faults_until.max(at);
        self.at(at, ev);
    }

    fn link_window(&mut self, h: usize, v: usize, at: u64, d: u64, kind: WinKind) {
        self.link_win[h][v].push(Window { start: at, end: at + d, kind });
        self.at(
            at,
            Ev::Note(format!(
                "fault: volume {v} {kind:?} for host {} until t={}",
                h + 1,
                fmt_t(at + d)
            )),
        );
    }
}

/// (true time µs, host id) of one decision.
pub type DecisionAt = Option<(u64, u32)>;

/// Used by the S2 comparison: the first point where two decision streams differ.
pub fn first_difference(
    a: &[(u64, u32, u64)],
    b: &[(u64, u32, u64)],
) -> Option<(usize, DecisionAt, DecisionAt)> {
    let n = a.len().max(b.len());
    (0..n)
        .find(|&i| a.get(i) != b.get(i))
        .map(|i| (i, a.get(i).map(|x| (x.0, x.1)), b.get(i).map(|x| (x.0, x.1))))
}

// ----- the peer channel and outage survival (issue 13) -----

impl World {
    /// The agent's network thread: every period it challenges every other host (as the daemon's
    /// `hbfence-net`, which runs while the core is busy but stops with the process).
    fn net_timer(&mut self, h: usize, pid: u64) {
        let Some(period) = self.net.as_ref().map(|nt| nt.period_ms) else { return };
        if !self.proc_is(h, pid) || !self.hosts[h].alive() {
            return;
        }
        let now = self.now_for(h).mono;
        if self.net_thread_runs(h) {
            if let Some(p) = self.hosts[h].proc.as_mut() {
                p.book.retain(|_, e| e.1 + 3 * period >= now);
            }
            for to in 0..self.n {
                if to != h {
                    self.challenge(h, to, now);
                }
            }
            let retry = self.agent_true_at(h, now + hbfence::net::retry_after_ms(period));
            self.at(retry, Ev::NetRetry { h, pid });
        }
        let at = self.agent_true_at(h, now + period);
        self.at(at, Ev::NetTimer { h, pid });
    }

    fn net_thread_runs(&self, h: usize) -> bool {
        let frozen = self.hosts[h].boots.last().is_some_and(|b| b.suspended.is_some());
        let paused = self.hosts[h].proc.as_ref().is_some_and(|p| p.paused);
        !frozen && !paused
    }

    /// As the daemon's network thread: a peer whose answer to the latest challenge has not
    /// arrived is challenged again once.
    fn net_retry(&mut self, h: usize, pid: u64) {
        if !self.proc_is(h, pid) || !self.hosts[h].alive() || !self.net_thread_runs(h) {
            return;
        }
        let now = self.now_for(h).mono;
        for to in 0..self.n {
            let peer = self.hosts[to].id;
            let awaiting = self.hosts[h].proc.as_ref().is_some_and(|p| {
                p.book
                    .values()
                    .filter(|e| e.0 == peer)
                    .max_by_key(|e| (e.1, e.2))
                    .is_some_and(|e| !e.2)
            });
            if to != h && awaiting {
                self.challenge(h, to, now);
            }
        }
    }

    fn challenge(&mut self, h: usize, to: usize, now: u64) {
        let nonce = match self.net.as_mut() {
            Some(nt) => {
                nt.next_nonce += 1;
                nt.next_nonce
            }
            None => return,
        };
        let peer = self.hosts[to].id;
        if let Some(p) = self.hosts[h].proc.as_mut() {
            p.book.insert(nonce, (peer, now, false));
        }
        let me = self.hosts[h].id;
        self.net_send(h, to, NetMsg::Challenge { from: me, nonce });
    }

    fn net_send(&mut self, from: usize, to: usize, msg: NetMsg) {
        let t = self.t;
        let Some(nt) = self.net.as_mut() else { return };
        for d in nt.fate(t, from, to) {
            self.after(d, Ev::NetArrive { to, msg: msg.clone() });
        }
    }

    /// A datagram reaches host index `to`: its agent (if running, not stopped or frozen) gets
    /// a challenge to answer, or an answer that its replay book accepts (a challenge it sent
    /// to that peer within 3 periods, not answered before).
    fn net_arrive(&mut self, to: usize, msg: NetMsg) {
        let Some(period) = self.net.as_ref().map(|nt| nt.period_ms) else { return };
        if !self.hosts[to].alive()
            || self.hosts[to].boots.last().is_some_and(|b| b.suspended.is_some())
        {
            return;
        }
        let Some(p) = self.hosts[to].proc.as_ref() else { return };
        if p.paused || p.exited {
            return;
        }
        match msg {
            NetMsg::Challenge { from, nonce } => {
                let mut n = [0u8; 16];
                n[..8].copy_from_slice(&nonce.to_le_bytes());
                self.feed(
                    to,
                    Input::PeerChallenge { peer: from, token: ChallengeToken { nonce: n } },
                );
            }
            NetMsg::Answer { from, nonce, claim, epoch, no_permit_ms, boot_id, inc } => {
                let now = self.now_for(to).mono;
                let Some(p) = self.hosts[to].proc.as_mut() else { return };
                let accepted = match p.book.get_mut(&nonce) {
                    Some(e) if e.0 == from && !e.2 && now.saturating_sub(e.1) <= 3 * period => {
                        e.2 = true;
                        Some(e.1)
                    }
                    _ => None,
                };
                let Some(sent) = accepted else {
                    self.count("peer channel: answer dropped (replayed, stale or unknown nonce)");
                    return;
                };
                let answer = PeerAnswer {
                    claim,
                    challenge_sent_at: sent,
                    received_at: now,
                    boot_id,
                    incarnation: inc,
                    members_epoch: epoch,
                    no_permit_ms,
                };
                self.feed(to, Input::PeerAnswer { peer: from, answer });
            }
        }
    }

    fn net_win(&mut self, start: u64, end: u64, fault: NetFault) {
        self.at(start, Ev::Note(format!("fault: peer channel {fault:?} until t={}", fmt_t(end))));
        if let Some(nt) = self.net.as_mut() {
            nt.wins.push(NetWin { start, end, fault });
        }
    }

    /// Network faults within a chaos episode: partitions of any subset, loss (up to a
    /// blackout), delay (reordering, answers older than their challenge's age), duplication,
    /// and cluster-wide storage outages of any length.
    fn network_chaos(&mut self, start: u64, len: u64) {
        let (u, n, nvol) = (self.u, self.n, self.vols.len());
        let lease = self.timing.lease_timeout_ms * MS;
        let Some(nt) = self.net.as_mut() else { return };
        let period = nt.period_ms * MS;
        let k = nt.rng.range(1, 5);
        let mut planned = Vec::new();
        for _ in 0..k {
            let at = start + nt.rng.below(len);
            let d = nt.rng.range(u / 5, 10 * u);
            let fault = match nt.rng.weighted(&[35, 20, 20, 10, 15]) {
                0 => Some(NetFault::Partition((0..n).map(|_| nt.rng.chance(500)).collect())),
                1 => Some(NetFault::Loss(nt.rng.range(100, 1001))),
                2 => Some(NetFault::Delay(0, nt.rng.range(MS, 4 * period))),
                3 => Some(NetFault::Dup(nt.rng.range(100, 1000))),
                _ => None,
            };
            let outage = nt.rng.range(u, 6 * lease);
            let kind = if nt.rng.chance(500) { WinKind::Stall } else { WinKind::Eio };
            planned.push((at, d, fault, outage, kind));
        }
        for (at, d, fault, outage, kind) in planned {
            match fault {
                Some(f) => self.net_win(at, at + d, f),
                None => {
                    self.count("chaos: cluster-wide storage outage");
                    for v in 0..nvol {
                        self.vol_win[v].push(Window { start: at, end: at + outage, kind });
                    }
                    self.at(
                        at,
                        Ev::Note(format!(
                            "fault: cluster-wide storage outage ({kind:?}, every volume) until t={}",
                            fmt_t(at + outage)
                        )),
                    );
                }
            }
        }
    }

    /// SURVIVAL: on a settled cluster every volume stalls or fails for every host, for any
    /// length (half a lease to six), while the peer channel connects everybody or all but a
    /// minority (with a little loss, delay and duplication). Nobody of the connected majority
    /// may die, and each must run on with a lease once storage is back.
    fn outage_episode(&mut self) -> bool {
        let t = self.timing;
        let (u, n, nvol) = (self.u, self.n, self.vols.len());
        let lease = t.lease_timeout_ms * MS;
        let settle = lease + t.dead_after_ms() * MS + 4 * u;
        let Some(nt) = self.net.as_mut() else { return false };
        let dur = nt.rng.range(lease / 2, 6 * lease);
        let from = self.t + nt.rng.range(u, 2 * u);
        if from + dur + settle + 15 * u > self.end {
            return false;
        }
        let mut side = vec![false; n];
        // At most (n - 1) / 2 cut off: the others are a strict majority of the members.
        let minority = if nt.rng.chance(500) { nt.rng.range(1, (n as u64 - 1) / 2) } else { 0 };
        while (side.iter().filter(|&&s| s).count() as u64) < minority {
            side[nt.rng.below(n as u64) as usize] = true;
        }
        let loss = nt.rng.range(0, 30);
        let delay = nt.rng.range(0, nt.period_ms * MS / 2);
        let dup = nt.rng.range(0, 300);
        let kind = if nt.rng.chance(500) { WinKind::Stall } else { WinKind::Eio };
        let end = from + dur;
        if minority > 0 {
            self.net_win(from, end, NetFault::Partition(side.clone()));
        }
        self.net_win(from, end, NetFault::Loss(loss));
        self.net_win(from, end, NetFault::Delay(0, delay));
        self.net_win(from, end, NetFault::Dup(dup));
        for v in 0..nvol {
            self.vol_win[v].push(Window { start: from, end, kind });
        }
        self.count(format!(
            "outage episode ({})",
            if minority > 0 { "a minority cut off" } else { "everyone connected" }
        ));
        let boots = (0..n).map(|h| self.boot_idx(h)).collect();
        let until = end + settle;
        self.outage = Some(OutageWatch {
            from,
            storage_back: end,
            until,
            protected: side.iter().map(|s| !s).collect(),
            boots,
        });
        self.at(
            from,
            Ev::Note(format!(
                "episode: cluster-wide storage outage ({kind:?}) of {} ms until t={}, {} of {n} hosts cut off the peer channel: nobody else may die",
                dur / MS,
                fmt_t(end),
                minority
            )),
        );
        self.at(until, Ev::Episode { attempt: 0 });
        true
    }

    /// A strict majority loses storage (every volume) while the others keep it and everyone
    /// stays connected, sometimes with answers delayed close to the age the asker accepts;
    /// later all but one of them get storage back, the last one much later. The majority
    /// survives on permits; once the others are back the last one has no majority and must
    /// be dead before a judge on storage applies the watchdog bound (S1 checks every verdict).
    fn partial_outage_episode(&mut self) -> bool {
        let t = self.timing;
        let (u, n, nvol) = (self.u, self.n, self.vols.len());
        let lease = t.lease_timeout_ms * MS;
        let dead = t.dead_after_ms() * MS;
        let Some(nt) = self.net.as_mut() else { return false };
        let size = nt.rng.range(n as u64 / 2 + 1, n as u64 - 1) as usize;
        if size >= n || size <= n / 2 {
            return false;
        }
        let mut group = vec![false; n];
        while group.iter().filter(|&&g| g).count() < size {
            group[nt.rng.below(n as u64) as usize] = true;
        }
        let members: Vec<usize> = (0..n).filter(|&h| group[h]).collect();
        let last = members[nt.rng.below(members.len() as u64) as usize];
        let from = self.t + nt.rng.range(u, 2 * u);
        let back = from + dead + nt.rng.range(u, 2 * lease);
        let last_back = back + nt.rng.range(lease, 3 * lease);
        let until = last_back + dead + 4 * u;
        if until + 15 * u > self.end {
            return false;
        }
        let p = nt.period_ms * MS;
        let late = if self.o.focus == Focus::Survival { 1000 } else { 500 };
        let (lo, hi) =
            if nt.rng.chance(late) { (14 * p / 10, 15 * p / 10 - MS) } else { (0, p / 2) };
        let mut kind = if nt.rng.chance(500) { WinKind::Stall } else { WinKind::Eio };
        if self.o.focus == Focus::Survival {
            // EIO writes may land (whole or torn): each landing restarts the judges' bound,
            // so only a stall leaves the permits alone to decide when the last host dies.
            kind = WinKind::Stall;
        }
        if self.o.focus == Focus::Survival {
            // Only the last host's link is slow: its permits arrive as late as the asker
            // accepts, while the judges' own round trips (their proof that the others are on
            // storage) stay short.
            let only_last = (0..n).map(|h| h == last).collect();
            self.net_win(from, last_back, NetFault::DelayFor(only_last, lo, hi));
        } else {
            self.net_win(from, last_back, NetFault::Delay(lo, hi));
        }
        for &h in &members {
            let end = if h == last { last_back } else { back };
            for v in 0..nvol {
                self.link_window(h, v, from, end - from, kind);
            }
        }
        self.count("partial outage episode (a majority without storage)");
        self.at(
            from,
            Ev::Note(format!(
                "episode: hosts {:?} lose storage ({kind:?}) until t={}, host {} until t={}; answers delayed {}..{} µs",
                members.iter().map(|h| h + 1).collect::<Vec<_>>(),
                fmt_t(back),
                last + 1,
                fmt_t(last_back),
                lo,
                hi
            )),
        );
        self.at(until, Ev::Episode { attempt: 0 });
        true
    }

    /// The end of an outage episode: every host of the connected majority runs on the boot it
    /// had, with a lease.
    fn check_outage_end(&mut self, o: OutageWatch) {
        for h in 0..self.n {
            if !o.protected[h] {
                continue;
            }
            let host = &self.hosts[h];
            let now = self.now_for(h).mono;
            let fine = host.alive()
                && host.boots.len() - 1 == o.boots[h]
                && host.proc.as_ref().is_some_and(|p| {
                    matches!(p.agent.phase(), Phase::Running) && p.agent.lease_valid(now)
                });
            if !fine {
                let id = host.id;
                self.violate(
                    "SURVIVAL",
                    format!("host {id} of the connected majority does not run on with a lease after the outage (storage back at t={})", fmt_t(o.storage_back)),
                );
            }
        }
    }
}
