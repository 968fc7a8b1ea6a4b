//! Deterministic cluster simulation: N hosts (3..=16) run the real decision core
//! (`hbfence::core::agent::Agent`, exactly as `hbfence run` drives it) against simulated
//! monotonic and wall clocks, 1..=3 simulated volumes holding real encoded blocks, watchdogs,
//! BMCs, and a random fault schedule; every safety invariant is checked at every step.
//!
//! Run: `cargo test --release --test simulation`.
//! - `SIM_SEEDS=N` number of seeds (default [`DEFAULT_SEEDS`]), `SIM_FIRST_SEED=K` first seed;
//! - `SIM_SEED=K` replays one seed and prints its full trace;
//! - `SIM_KEEP_GOING=1` does not stop at the first failing seed (lists them all at the end);
//! - `SIM_S2_EVERY=K` re-runs every K-th seed with other wall clocks and compares every decision
//!   (S2; default 4, 0 = never);
//! - `SIM_COUNTS=1` prints how often each fault, fence attempt, self-fence and exit happened;
//! - `SIM_THREADS=N` seeds run on N threads (default: every core);
//! - `SIM_UNSAFE_TIMING=1`, `SIM_JUDGE_THROUGH_TROUBLE=1`, `SIM_WATCHDOG_ONLY=1`,
//!   `SIM_CLOCK_STOPS=1`, `SIM_ARM_STOP_ON_CLOSE=1` run the configurations of the checker
//!   tests (see below) through the normal loop;
//! - `SIM_SURVIVAL=1|0` forces the peer channel with outage survival on or off (default: half
//!   the seeds), `SIM_FOCUS=survival` more outages and short watchdog/margin timings,
//!   `SIM_JUDGE_IGNORES_SURVIVAL=1`, `SIM_PERMIT_FROM_ANSWER=1` the unsafe survival knobs;
//! - `SIM_LIVENESS_SLACK_MS=N` changes the liveness slack (to measure how late verdicts are);
//! - `SIM_INFLIGHT=land` lets in-flight writes of a dead host land (up to io_timeout after their
//!   start) instead of discarding them, and checks that none lands after a `fenced` verdict.
//!
//! `tests/sim-soak [N]` runs N seeds (default 100 000) and prints a summary.
//!
//! What a seed does (`sim/world.rs`): random cluster (hosts, volumes, max_hosts, a timing drawn
//! from the whole domain `Timing::validate` accepts — interval 0.1..10 s — per-host clock rates
//! ±0.1 %, BMC behaviour, watchdog drivers that stop on close, self-fence action, broken sysrq,
//! sometimes no BMC or no sysrq anywhere, sometimes one coordinator-eligible host), hosts boot
//! at random times, then a sequence of episodes over 60..120 intervals (longer when dead_after
//! needs it); every duration of the schedule is in intervals of the drawn timing:
//! - *quiet death*: on a settled cluster one host loses power, its agent is killed or the host
//!   hangs; it must be `fenced` within suspect_after + BMC time + 2 intervals + slack (working
//!   BMC) or dead_after + 2 intervals + slack (watchdog bound) — the liveness check. Two
//!   intervals: staleness counts from evidence only (the start of the latest timely read that
//!   showed no progress), so a verdict may come one interval later than with extrapolation;
//!   slack is 300 ms + 0.2 % of the bound (ticks, cycle latency, clock rates);
//! - *storage-wide blip*: one or all volumes stall or fail for every host at once; a blip too
//!   short for any lease to expire (< lease_timeout - 2 intervals - 0.3 s) must fence nobody and
//!   self-fence nobody; a longer one, still below lease_timeout, must not fence a live host (S4);
//! - *chaos*: link stalls, EIO, slow and torn writes, volume blips, agent crashes with and
//!   without restart (also of the coordinator or the only eligible host), SIGSTOP pauses (some
//!   just under suspect_after), clean stops and restarts, clean and unclean reboots, power
//!   losses, suspends (shorter than suspect_after, around the lease, longer than dead_after),
//!   stopped-then-killed agents near their lease's end (the kernel's ping on close), operator
//!   mailbox commands (reset, power-off, test, clear, confirm-off — also wrongly, for a host
//!   that is up — and power-off out of band followed by confirm-off), volumes unreadable at an
//!   agent's start, lagging volumes (old content for a while), a second machine starting an
//!   agent with the same host id, forged records far ahead, wall-clock jumps.
//!
//! - *peer channel and outage survival* (half the seeds, `SIM_SURVIVAL`): datagrams with
//!   delay, loss, duplication, reordering and partitions of any subset of hosts; cluster-wide
//!   storage outages of any length with everyone or a majority connected (SURVIVAL: nobody of
//!   the connected majority dies, each runs on with a lease afterwards); partial outages where a
//!   majority survives on permits while the others keep storage (S1 judges every verdict);
//!   up to two membership rewrites (a new members epoch in block 0, read by each host as its
//!   reads show it, a lagging volume later) at random moments, outages included.
//!
//! Always modelled: the agent's clock is CLOCK_BOOTTIME (a suspended host sees time jump on
//! resume; its hardware watchdog is frozen while suspended); an agent process that dies without
//! magic close makes the kernel ping its watchdog once (expiry = death + watchdog_timeout), or,
//! for a driver that stops on close, stops the timer — such a driver answers `ArmWatchdog` with
//! `WatchdogUnguarded`; the daemon wakes up every 100 ms or on time for the core's deadline.
//!
//! Checked at every step: S1 (every `fenced` verdict, in any agent's table and in every
//! coordinator block that lands on a volume, is about a boot that is dead at that instant; a
//! `manual` one for a live host only if its heartbeat had stopped landing for suspect_after —
//! the operator's error; a verdict about a *suspended* host is judged by S1-RESUME: on resume it
//! never pets, never lands an `active`/`starting` record of that incarnation and is dead
//! within max(its watchdog's remaining time, 0.5 s)), S3 (no pet or arming without a valid
//! lease — also in true time through the boot clock —, none on a boot whose lease was lost or
//! that was doomed, an expired lease dooms at once), S4 (above), no host that left cleanly is
//! fenced or has fencing started against it (LEFT; a BMC/agent power-off that started before
//! its `leaving` record landed may still confirm it off: `fenced`, seed 42068; a judge none of
//! whose reads returned that record, once later runs of the host overwrote it on every volume,
//! judges the later run: seeds 501814, 500506), during a quiet death no other host has
//! fencing started against it (QUIET), no false host-id collision (COLLISION: only a real
//! second writer, or a forged record in the own block, may cause exit 76), a real second writer
//! is noticed (COLLISION-DETECT: within 1.5 + 6 intervals + io_timeout at most one of the two
//! agents still runs, a doomed one counting as stopped; later by the time either twin was
//! frozen or could not read a read quorum, and by the time the twins' records stayed at or
//! below a former run's highest sequence), readers of verdict tables (VERDICTS: the table a reader picks from each
//! read quorum of volumes — highest verdict_gen, lowest author, from any block (every host republishes its table) — never loses a `fenced` verdict of a
//! still-dead incarnation without a clear or rejoin for 3 checks, one per interval, and never
//! shows a verdict again that every quorum had dropped for 3 checks), liveness of healthy hosts
//! (HEALTHY: no `host_suspect`, `fence_started`, `fenced` event or StartFence about a host whose
//! new heartbeat values became visible at most suspect_after − 0.3 % apart on every read quorum
//! since the observer started, and since the last one), liveness (above), S2 (a second run with
//! other wall clocks takes exactly the same decisions at the same instants).
//!
//! What the current core trips on: `tests/sim/FINDINGS.md`.
//!
//! Core bugs this suite found, all fixed (mechanism and seeds in the simulation work's report;
//! seeds depend on the core version; the checks that caught them carry a `KNOWN CORE BUG`
//! comment naming the bug): B1 (`S4`: an own I/O slow but not failed yet was not trouble),
//! B2 (`S4`/`LEFT`: a resumed SIGSTOPped agent fenced everyone), B3 (`S1`: mailbox nonces
//! compared across volumes replayed old commands; confirm-off ignored the incarnation), B5
//! (`COLLISION`: the start-up probe compared different volumes) — fixed in 13f019e; L1
//! (`LIVENESS`: staleness lagged one interval), B7 (`SPURIOUS`: an agent that never armed was
//! taken for an expired lease), B5b (`COLLISION`: a late write of the killed predecessor), B4
//! (`LEFT`/`S1`: a stop racing an in-flight write disarmed without `leaving` on the volume), B6
//! (`LEFT`/`S1`: a lagging volume brought back an old incarnation), and suspect_after =
//! 2*interval (now refused by `init`: read/write phase jitter alone exceeds it) — fixed in
//! fd4d1a7.

mod sim;

use sim::world::{self, Focus, Inflight, Options, Outcome, Stats, BMC_CONFIRM_MAX_MS};
use std::io::Write;

/// About two minutes in release mode on 2 cores.
const DEFAULT_SEEDS: u64 = 2000;
/// The deliberately unsafe configurations must be caught within this many seeds.
const UNSAFE_SEED_LIMIT: u64 = 200;

fn out(s: &str) {
    let _ = writeln!(std::io::stderr(), "{s}");
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Rules the seeds of the default run must never break.
const ENFORCED_RULES: &[&str] = &[
    "S1",
    "S1-RESUME",
    "S2",
    "S3",
    "S4",
    "LEFT",
    "QUIET",
    "SPURIOUS",
    "LIVENESS",
    "INTERNAL",
    "VERDICTS",
    "HEALTHY",
    "COLLISION",
    "COLLISION-DETECT",
    "SURVIVAL",
];
/// Rules of the fault model whose findings on the current core are still open (issue 10
/// stays open for them; tests/sim/FINDINGS.md lists the seeds). The default run traces their
/// violations as "(ignored)" and goes on checking the enforced rules; `SIM_ALL_RULES=1`
/// (also `SIM_ALL_RULES=1 tests/sim-soak`) counts them too. None at present: COLLISION-DETECT
/// was the last (enforced since its deadline counts storage trouble and freezes).
const OPEN_RULES: &[&str] = &[];

fn options(seed: u64) -> Options {
    let mut o = Options::new(seed);
    if !std::env::var("SIM_ALL_RULES").is_ok_and(|v| v != "0") {
        o.only_rules = Some(ENFORCED_RULES);
    }
    let _ = OPEN_RULES;
    if std::env::var("SIM_INFLIGHT").is_ok_and(|v| v == "land") {
        o.inflight = Inflight::LandWithinIoTimeout;
    }
    // For experiments: the deliberately unsafe configurations of the checker tests.
    o.unsafe_timing = std::env::var("SIM_UNSAFE_TIMING").is_ok_and(|v| v != "0");
    o.judge_through_trouble = std::env::var("SIM_JUDGE_THROUGH_TROUBLE").is_ok_and(|v| v != "0");
    o.watchdog_only = std::env::var("SIM_WATCHDOG_ONLY").is_ok_and(|v| v != "0");
    o.clock_stops_in_suspend = std::env::var("SIM_CLOCK_STOPS").is_ok_and(|v| v != "0");
    o.arm_stop_on_close = std::env::var("SIM_ARM_STOP_ON_CLOSE").is_ok_and(|v| v != "0");
    o.judge_ignores_survival = std::env::var("SIM_JUDGE_IGNORES_SURVIVAL").is_ok_and(|v| v != "0");
    o.permit_from_answer = std::env::var("SIM_PERMIT_FROM_ANSWER").is_ok_and(|v| v != "0");
    if let Ok(v) = std::env::var("SIM_SURVIVAL") {
        o.survival = Some(v != "0");
    }
    if std::env::var("SIM_FOCUS").is_ok_and(|v| v == "survival") {
        o.focus = Focus::Survival;
    }
    o
}

fn failure_report(seed: u64, o: &Outcome) -> String {
    let mut s = String::new();
    s.push_str(&format!("==== seed {seed} FAILED\n{}\n", o.summary));
    s.push_str(&format!("---- last {} trace lines:\n", o.trace.len()));
    for l in &o.trace {
        s.push_str(l);
        s.push('\n');
    }
    if let Some(v) = &o.violation {
        s.push_str(&format!("==== seed {seed}: {v}\n==== replay with SIM_SEED={seed}\n"));
    }
    s
}

/// S2: the same seed with other wall clocks (no origins, no jumps) must take exactly the same
/// decisions at the same instants.
fn check_s2(seed: u64, a: &Outcome) -> Option<String> {
    let mut o = options(seed);
    o.wall_clocks = false;
    o.digest = true;
    let b = world::run(o);
    let (i, x, y) = world::first_difference(&a.digest, &b.digest)?;
    Some(format!(
        "S2 violated: seed {seed} takes other decisions when only wall clocks differ; first difference at action #{i}: {x:?} vs {y:?} (t µs, host)"
    ))
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    sim_ms: u64,
    hosts: usize,
    s2_runs: u64,
    failed: Vec<(u64, String)>,
    worst_bmc: Option<world::FenceTime>,
    worst_wd: Option<world::FenceTime>,
    closest_bmc: Option<world::FenceTime>,
    closest_wd: Option<world::FenceTime>,
    quiet_deaths: usize,
    rejoined: usize,
    fenced: usize,
    fenced_by: std::collections::BTreeMap<&'static str, usize>,
    short_blips: usize,
    medium_blips: usize,
    chaos: usize,
    self_fences: usize,
    wd_resets: usize,
    bmc_offs: usize,
    starts: usize,
    pets: u64,
    io: u64,
    torn: u64,
    discarded: u64,
    counts: std::collections::BTreeMap<String, u64>,
}

impl Totals {
    fn add(&mut self, s: &Stats) {
        self.seeds += 1;
        self.sim_ms += s.sim_ms;
        self.hosts += s.hosts;
        for (mine, theirs) in
            [(&mut self.worst_bmc, &s.worst_bmc), (&mut self.worst_wd, &s.worst_wd)]
        {
            if let Some(t) = theirs {
                if mine.as_ref().is_none_or(|m| t.ms > m.ms) {
                    *mine = Some(t.clone());
                }
            }
        }
        for (mine, theirs) in
            [(&mut self.closest_bmc, &s.closest_bmc), (&mut self.closest_wd, &s.closest_wd)]
        {
            if let Some(t) = theirs {
                if mine.as_ref().is_none_or(|m| t.margin() < m.margin()) {
                    *mine = Some(t.clone());
                }
            }
        }
        self.quiet_deaths += s.quiet_deaths;
        self.rejoined += s.quiet_deaths_rejoined;
        self.fenced += s.fenced_verdicts;
        for (k, v) in &s.fenced_by {
            *self.fenced_by.entry(k).or_default() += v;
        }
        self.short_blips += s.short_blips;
        self.medium_blips += s.medium_blips;
        self.chaos += s.chaos_episodes;
        self.self_fences += s.self_fences;
        self.wd_resets += s.watchdog_resets;
        self.bmc_offs += s.bmc_power_offs;
        self.starts += s.agent_starts;
        self.pets += s.pets;
        self.io += s.io_cycles;
        self.torn += s.torn_landings;
        self.discarded += s.stale_writes_discarded;
        for (k, v) in &s.counts {
            *self.counts.entry(k.clone()).or_default() += v;
        }
    }

    fn print(&self) {
        let fmt = |w: &Option<world::FenceTime>| match w {
            Some(f) => format!(
                "{} ms (bound {} ms, method {}, seed {})",
                f.ms,
                f.bound_ms,
                f.method.as_str(),
                f.seed
            ),
            None => "none observed".into(),
        };
        out(&format!(
            "simulated {} seeds ({} s of cluster time, {} hosts in all, {} S2 re-runs)",
            self.seeds,
            self.sim_ms / 1000,
            self.hosts,
            self.s2_runs
        ));
        out(&format!(
            "worst time to fenced after a quiet death: with a working BMC {}; through the watchdog bound {} (slack {} ms, BMC confirm ≤ {} ms)",
            fmt(&self.worst_bmc),
            fmt(&self.worst_wd),
            world::liveness_slack_ms(),
            BMC_CONFIRM_MAX_MS
        ));
        out(&format!(
            "closest to the bound: with a working BMC {}; through the watchdog bound {}",
            fmt(&self.closest_bmc),
            fmt(&self.closest_wd)
        ));
        out(&format!(
            "episodes: {} quiet deaths ({} came back first), {} short and {} medium storage-wide blips, {} chaos; {} fenced verdicts {:?}; {} self-fences, {} watchdog resets, {} BMC power-offs, {} agent starts, {} pets, {} I/O cycles, {} torn landings, {} writes of dead hosts discarded",
            self.quiet_deaths,
            self.rejoined,
            self.short_blips,
            self.medium_blips,
            self.chaos,
            self.fenced,
            self.fenced_by,
            self.self_fences,
            self.wd_resets,
            self.bmc_offs,
            self.starts,
            self.pets,
            self.io,
            self.torn,
            self.discarded
        ));
        if std::env::var("SIM_COUNTS").is_ok_and(|v| v != "0") {
            for (k, v) in &self.counts {
                out(&format!("  {v:>8}  {k}"));
            }
        }
    }
}

#[test]
fn simulation() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let mut o = options(seed);
        o.full_trace = true;
        o.digest = true;
        let r = world::run(o);
        let mut totals = Totals::default();
        totals.add(&r.stats);
        totals.print();
        if let Some(v) = &r.violation {
            panic!("seed {seed}: {v}");
        }
        if let Some(msg) = check_s2(seed, &r) {
            panic!("{msg}");
        }
        return;
    }
    let n = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(1);
    let s2_every = env_u64("SIM_S2_EVERY").unwrap_or(4);
    let keep_going = std::env::var("SIM_KEEP_GOING").is_ok_and(|v| v != "0");
    let threads = env_u64("SIM_THREADS")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
    // Seeds are independent: run them on every core, then report in seed order.
    let next = std::sync::atomic::AtomicU64::new(first);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..threads.max(1) {
            sc.spawn(|| loop {
                use std::sync::atomic::Ordering::SeqCst;
                let seed = next.fetch_add(1, SeqCst);
                if seed >= first + n || stop.load(SeqCst) {
                    break;
                }
                let s2 = s2_every > 0 && seed % s2_every == 0;
                let mut o = options(seed);
                o.digest = s2;
                let mut r = world::run(o);
                let mut failure = r.violation.as_ref().map(|v| format!("{v}"));
                let s2_ran = failure.is_none() && s2;
                if s2_ran {
                    failure = check_s2(seed, &r);
                }
                if failure.is_none() {
                    r.trace = Vec::new();
                } else if !keep_going {
                    stop.store(true, SeqCst);
                }
                r.digest = Vec::new();
                results
                    .lock()
                    .expect("no panics while holding it")
                    .push((seed, r, failure, s2_ran));
            });
        }
    });
    let mut results = results.into_inner().expect("no panics while holding it");
    results.sort_by_key(|x| x.0);
    let mut totals = Totals::default();
    for (seed, r, failure, s2_ran) in &results {
        totals.add(&r.stats);
        totals.s2_runs += u64::from(*s2_ran);
        if let Some(f) = failure {
            if keep_going {
                out(&format!("seed {seed}: {f}"));
            } else {
                out(&failure_report(*seed, r));
                totals.print();
                panic!("seed {seed}: {f}\nreplay with SIM_SEED={seed}");
            }
            totals.failed.push((*seed, f.clone()));
        }
    }
    totals.print();
    if !totals.failed.is_empty() {
        let mut by_rule: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for (seed, f) in &totals.failed {
            by_rule.entry(f.split(' ').next().unwrap_or("?").to_string()).or_default().push(*seed);
        }
        panic!("{} of {} seeds failed: {by_rule:?}", totals.failed.len(), totals.seeds);
    }
}

/// The permit rule under the schedule that catches its unsafe knob (the checker proof's
/// configuration with the knob off): partial outages where the last host's storage stalls and
/// only its own link is slow, watchdogs as the only guarantee. With the knob on, 19 of these
/// 300 seeds fail. `SIM_FOCUS_SEEDS=N` (default 300).
#[test]
fn outage_survival_holds_where_late_permits_matter() {
    let n = env_u64("SIM_FOCUS_SEEDS").unwrap_or(300);
    let mut failed = Vec::new();
    for seed in 1..=n {
        let mut o = Options::new(seed);
        o.only_rules = Some(ENFORCED_RULES);
        o.survival = Some(true);
        o.watchdog_only = true;
        o.focus = Focus::Survival;
        if let Some(v) = world::run(o).violation {
            failed.push(format!("seed {seed}: {v}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} seeds failed (replay: SIM_SEED=K SIM_SURVIVAL=1 SIM_WATCHDOG_ONLY=1 SIM_FOCUS=survival):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Runs seeds until the checker reports a violation of one of `rules` (other rules are
/// ignored, so that bugs the normal suite reports do not hide this one) that the same seed in
/// the normal configuration does not show (no violation of those rules, or a later one): the
/// failure is the configuration's. Returns it.
fn search(
    what: &str,
    limit: u64,
    rules: &'static [&'static str],
    make: impl Fn(u64) -> Options,
) -> (u64, world::Violation) {
    for seed in 1..=limit {
        let mut o = make(seed);
        o.only_rules = Some(rules);
        let r = world::run(o);
        let Some(v) = r.violation else { continue };
        let mut normal = make(seed).normal();
        normal.only_rules = Some(rules);
        let baseline = world::run(normal);
        if baseline.violation.as_ref().is_some_and(|b| b.t <= v.t) {
            continue;
        }
        out(&format!(
            "{what}: the checker reports, at seed {seed} ({}):\n  {v}\n  (the normal configuration: {})",
            r.summary,
            baseline.violation.map_or("no violation".to_string(), |b| format!("later {b}"))
        ));
        return (seed, v);
    }
    panic!("{what}: no violation found within {limit} seeds; the checker cannot see this failure");
}

/// The checker can fail: agents whose watchdog bound lacks its lease and io terms (the
/// `watchdog_bound_cut_ms` knob) declare hosts fenced while their lease may still be valid.
#[test]
fn checker_catches_unsafe_timing() {
    // Without BMCs and without sysrq the watchdog is the only guarantee, so every expired
    // lease exercises the bound (the normal suite has such clusters too, less often).
    search("unsafe timing", UNSAFE_SEED_LIMIT, &["S1"], |seed| {
        let mut o = Options::new(seed);
        o.unsafe_timing = true;
        o.watchdog_only = true;
        o
    });
}

/// The checker can fail: with S4 disabled through the core's own knob, a storage-wide blip
/// makes the coordinator fence live hosts. `Focus::Blip` makes most episodes blips: judging
/// from evidence only already keeps a judge that reads nothing from suspecting anyone, so
/// the blips that catch it are rare (1 seed in 828 without the focus).
#[test]
fn checker_catches_judging_through_trouble() {
    search("judge_through_trouble", 5 * UNSAFE_SEED_LIMIT, &["S4", "S1"], |seed| {
        let mut o = Options::new(seed);
        o.judge_through_trouble = true;
        o.focus = Focus::Blip;
        o
    });
}

/// The checker can fail: an agent whose clock stops while its host is suspended (today's
/// CLOCK_MONOTONIC daemon) still finds its lease valid on resume and pets, after its peers
/// may have declared it fenced.
#[test]
fn checker_catches_clock_that_stops_in_suspend() {
    search("clock_stops_in_suspend", UNSAFE_SEED_LIMIT, &["S3", "S1-RESUME"], |seed| {
        let mut o = Options::new(seed);
        o.clock_stops_in_suspend = true;
        o.focus = Focus::Suspend;
        o
    });
}

/// The checker can fail: a watchdog whose timer stops on close, advertised as armed (today's
/// driver), leaves a host whose agent died alive and unguarded while peers declare it fenced
/// by the watchdog bound.
#[test]
fn checker_catches_watchdog_that_stops_on_close() {
    search("arm_stop_on_close", UNSAFE_SEED_LIMIT, &["S1"], |seed| {
        let mut o = Options::new(seed);
        o.arm_stop_on_close = true;
        o.watchdog_only = true;
        o.focus = Focus::StopOnClose;
        o
    });
}

/// The checker can fail: a judge that uses the watchdog bound without the outage-survival rule
/// declares hosts fenced that survive a storage outage on their majority's permits.
#[test]
fn checker_catches_a_judge_ignoring_outage_survival() {
    search("judge_ignores_survival", UNSAFE_SEED_LIMIT, &["S1"], |seed| {
        let mut o = Options::new(seed);
        o.survival = Some(true);
        o.judge_ignores_survival = true;
        o.watchdog_only = true;
        o.focus = Focus::Survival;
        o
    });
}

/// The checker can fail: permits whose lifetime counts from the answer's arrival instead of
/// the challenge let a host that lost its majority pet on past the judge's window, and a
/// judge on storage declares it fenced while it is up. `Focus::Survival` lines it up: partial
/// outages where the last host's storage stalls (EIO writes may land and restart the bound)
/// and only its own link is slow, so its permits arrive as late as the asker accepts (3
/// challenge periods) while the judges' proof that the others are back on storage does not.
#[test]
fn checker_catches_permits_counted_from_the_answer() {
    search("permit_from_answer", UNSAFE_SEED_LIMIT, &["S1"], |seed| {
        let mut o = Options::new(seed);
        o.survival = Some(true);
        o.permit_from_answer = true;
        o.watchdog_only = true;
        o.focus = Focus::Survival;
        o
    });
}
