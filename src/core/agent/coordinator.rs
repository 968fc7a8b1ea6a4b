//! Coordinator election and the verdict table (S1, S8): who may fence, when a peer is declared
//! `fenced`, and how tables pass from one coordinator to the next.

use super::*;
use crate::core::view::{carries_table, order_of, TableOrder};

impl Agent {
    /// A host that starts adopts the newest verdict table on the volume, its own block
    /// included: the only eligible coordinator restarting continues its table. Only a newer
    /// one than it holds: the tables read while probing may be newer than what the first read
    /// after it shows (soak seed 505614: an outage tore the other blocks, and the own former
    /// run's older table replaced the newest one, `fenced` verdict and all).
    pub(super) fn inherit_verdicts(&mut self, view: &VolumeView) {
        self.inherited = true;
        let held = self.mirror_order();
        if let Some(r) = newest_table_record(view, None).filter(|r| table_order(r) > held) {
            self.adopt_verdicts(r);
        }
    }

    /// Whether this run may write its block on volume `v`: only once it has read that volume
    /// (a timely read, the probe's included). Before, the block may hold the only copy of a
    /// former run's last table (an early publish reaches one volume: soak seed 1529382, a
    /// withdrawal after an operator's `clear`), and a write that fails with EIO may still land
    /// over it. Costs no lease: a write is verified only by reading it back, so a volume that
    /// cannot be read never renewed it anyway.
    pub(super) fn may_write_own_block(&self, v: usize) -> bool {
        self.vols.get(v).is_some_and(|vol| vol.own_block_floor.is_some())
    }

    pub(super) fn adopt_verdicts(&mut self, table: &Heartbeat) {
        self.verdicts = by_host(&table.verdicts);
        self.verdict_gen = table.verdict_gen;
        self.verdict_author = table.verdict_author;
        self.lineage = table.lineage;
        self.set_mirror(table);
    }

    fn mirror_order(&self) -> TableOrder {
        order_of(self.mirror_gen, self.mirror_author, self.mirror_lineage)
    }

    fn set_mirror(&mut self, table: &Heartbeat) {
        self.mirror.clone_from(&table.verdicts);
        self.mirror_gen = table.verdict_gen;
        self.mirror_author = table.verdict_author;
        self.mirror_lineage = table.lineage;
        self.max_gen_seen = self.max_gen_seen.max(table.verdict_gen);
    }

    /// Only the coordinator versions its table; elsewhere a change is a local correction that
    /// the next newer table replaces.
    pub(super) fn table_changed(&mut self) {
        if self.is_coordinator() {
            self.verdict_gen = self.verdict_gen.saturating_add(1);
            self.verdict_author = self.p.host_id;
        }
    }

    /// Tables are ordered by (generation, lower author): a non-coordinator adopts only a newer
    /// one than it holds (a lagging volume's older copy never brings back a withdrawn verdict
    /// or drops a new one), from whichever block holds it — every host republishes its table,
    /// so a coordinator that stepped down, left or whose block is torn does not take the
    /// table with it.
    ///
    /// A coordinator that reads another author's table newer than the one it continued from
    /// (a predecessor's last writes it had not read when it took over, or a second coordinator
    /// during a change) merges it three ways against that base: each side's changes survive,
    /// so a `fenced` verdict the other wrote is not lost and a verdict it withdrew does not
    /// come back; then its generation moves above, so readers never prefer either input.
    /// Every such table, not only the newest of the view: the copies of its own table that the
    /// other hosts republish would hide one of the same generation (two coordinators of a split
    /// each took over with `max_gen_seen + 1`, and readers prefer the lower author whatever it
    /// holds) or a former coordinator's table held out for a merge.
    pub(super) fn mirror_coordinator(&mut self, view: &VolumeView) {
        if !self.inherited && !matches!(self.phase, Phase::Probing { .. }) {
            self.inherit_verdicts(view);
        }
        let own = self.p.host_id;
        // Every table this run did not write: the own block counts as a former run left it (a
        // volume first read after the probe may hold that run's last table, seed 1529382).
        let not_ours = |r: &Heartbeat| {
            carries_table(r) && (r.host_id != own || r.incarnation != self.p.incarnation)
        };
        let tables = view.slots.iter().filter_map(|s| match s {
            Slot::Record(r) if not_ours(r) => Some(r),
            _ => None,
        });
        let Some(r) = tables.clone().max_by_key(|r| table_order(r)) else { return };
        self.max_gen_seen = self.max_gen_seen.max(r.verdict_gen);
        if self.is_coordinator() {
            // Copies of this run's own tables (republished by the others) are not merged.
            let mut others: Vec<&Heartbeat> =
                tables.filter(|r| r.verdict_author != own || r.host_id == own).collect();
            others.sort_by_key(|r| table_order(r));
            for r in others {
                if table_order(r) > self.mirror_order() {
                    self.merge_table(r);
                } else if r.verdict_gen >= self.mirror_gen {
                    self.take_fenced_of_concurrent(r);
                }
            }
            return;
        }
        if table_order(r) > self.mirror_order() && !self.holding_out_for_merge(r) {
            self.adopt_verdicts(r);
        }
    }

    /// Merges another author's table `r` into this coordinator's, against the table it
    /// continued from (see [`Agent::mirror_coordinator`]).
    fn merge_table(&mut self, r: &Heartbeat) {
        let own = self.p.host_id;
        let base = (self.mirror_author, self.mirror_lineage);
        let merged = merge_tables(&self.mirror, &self.verdicts, &r.verdicts, |stamp| {
            never_held(stamp, (r.verdict_author, r.lineage), base)
        });
        let theirs = by_host(&r.verdicts);
        let taken = merged.iter().filter(|(id, v)| self.verdicts.get(id) != Some(v));
        self.took_in(taken.map(|(_, v)| v.changed_gen).max().unwrap_or(0));
        let changed = merged != self.verdicts;
        // Readers must not prefer `r` while it lacks our changes; equal contents need no
        // new generation (two coordinators would otherwise outbid each other forever).
        let outbid = r.verdict_gen >= self.verdict_gen && merged != theirs;
        self.verdicts = merged;
        self.set_mirror(r);
        if changed || outbid {
            self.verdict_gen = self.verdict_gen.max(r.verdict_gen).saturating_add(1);
            self.verdict_author = own;
        }
    }

    /// A table of another author at the generation of the one this coordinator continued from
    /// that is not that one: written concurrently (two coordinators of a split each took over
    /// with `max_gen_seen + 1`), so no common base is known, and a three-way merge would take
    /// verdicts the other never had for withdrawals. Its `fenced` verdicts are facts another
    /// coordinator established (S1); this one takes them about peers it judges suspect itself
    /// (no progress in its own reads) or has no record of, unless an operator cleared that
    /// peer or it runs a later run; it never drops anything here. Readers prefer the lower
    /// author of a generation whatever it holds, so without this a `fenced` verdict of the
    /// higher author was lost (survival seed 2618's shape).
    fn take_fenced_of_concurrent(&mut self, r: &Heartbeat) {
        let mut changed = false;
        for v in r.verdicts.iter().filter(|v| v.kind == VerdictKind::Fenced) {
            if v.host_id == self.p.host_id
                || self.verdicts.get(&v.host_id).is_some_and(|o| {
                    o.kind == VerdictKind::Fenced || o.incarnation != v.incarnation
                })
            {
                continue;
            }
            let ended = self.peers.get(&v.host_id).is_some_and(|p| {
                p.record.as_ref().is_some_and(|rec| {
                    p.status != Some(PeerStatus::Suspect)
                        || p.cleared_at.is_some()
                        || p.runs_after(rec, v)
                })
            });
            if !ended {
                self.fences.remove(&v.host_id);
                self.verdicts.insert(v.host_id, *v);
                self.took_in(v.changed_gen);
                changed = true;
            }
        }
        if changed {
            self.table_changed();
        }
    }

    /// This coordinator's table took another table's entries, stamped up to `gen`: its chain
    /// may hold anything stamped up to there, and only what it stamped above is its own
    /// ([`Lineage`]). Only what it took counts: its own entries a merge kept stay its own.
    fn took_in(&mut self, gen: u32) {
        if let Some(l) = self.lineage.as_mut() {
            l.base_gen = l.base_gen.max(gen);
        }
    }

    /// A former coordinator whose last table holds `fenced` verdicts a newer table lacks (its
    /// successor took over while this host's block was unreadable, or from an older table)
    /// keeps republishing its own
    /// table, so the successor can read and merge it, instead of adopting the newer one and
    /// erasing the only replica. Bounded: after a few newer generations it gives way.
    fn holding_out_for_merge(&self, newer: &Heartbeat) -> bool {
        const GIVE_WAY_AFTER_GENERATIONS: u32 = 4;
        // A newer table of this host id is a later one of its own (a former run's last table,
        // seed 1529382): nothing to hold out against.
        if self.mirror_author != self.p.host_id
            || newer.verdict_author == self.p.host_id
            || newer.verdict_gen > self.mirror_gen.saturating_add(GIVE_WAY_AFTER_GENERATIONS)
        {
            return false;
        }
        self.mirror.iter().any(|v| {
            // A verdict about a former run of this host is history, nothing to hold out for.
            let current = if v.host_id == self.p.host_id {
                v.incarnation == self.p.incarnation
            } else {
                self.peers
                    .get(&v.host_id)
                    .and_then(|p| p.record.as_ref())
                    .is_none_or(|r| r.incarnation == v.incarnation)
            };
            // A successor that took over from a table of the time the fencing was under way
            // holds `fencing` about it: that lacks the verdict too.
            v.kind == VerdictKind::Fenced
                && current
                && !newer.verdicts.iter().any(|n| {
                    n.host_id == v.host_id
                        && n.incarnation == v.incarnation
                        && n.kind == VerdictKind::Fenced
                })
        })
    }

    pub(super) fn set_verdict(
        &mut self,
        id: u32,
        kind: VerdictKind,
        method: FenceMethodKind,
        incarnation: u64,
    ) {
        // The newest value this host read of that incarnation: what the verdict rests on.
        let seq = self
            .peers
            .get(&id)
            .and_then(|p| p.record.as_ref())
            .filter(|r| r.incarnation == incarnation)
            .map_or(0, |r| r.seq);
        let v = Verdict {
            host_id: id,
            kind,
            method,
            incarnation,
            wall_ms: self.now.wall,
            seq,
            changed_gen: 0,
        };
        let changed = self
            .verdicts
            .get(&id)
            .is_none_or(|o| o.kind != kind || o.method != method || o.incarnation != incarnation);
        if changed {
            // Stamped with the generation that publishes it; a host that is not coordinator
            // versions nothing, so its local correction has no stamp (never the later word).
            let changed_gen =
                if self.is_coordinator() { self.verdict_gen.saturating_add(1) } else { 0 };
            self.verdicts.insert(id, Verdict { changed_gen, ..v });
            self.table_changed();
        }
    }

    pub(super) fn elect(&mut self) {
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
                .is_some_and(|v| v.kind == VerdictKind::Fenced && !p.runs_after(r, v));
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
            let own = Some(self.p.host_id);
            if best == own {
                // Continue from the newest table seen (our mirror of the last one), with a
                // generation above every table on the volumes: readers pick the highest.
                self.verdict_gen = self.verdict_gen.max(self.max_gen_seen).saturating_add(1);
                self.verdict_author = self.p.host_id;
                // The chain holds the mirror's table; what it stamps from here on is its own.
                self.lineage = Some(Lineage {
                    base_gen: self.mirror_gen,
                    first_gen: self.verdict_gen,
                    author_incarnation: self.p.incarnation,
                });
            } else if was == own {
                // Stepping down: keep republishing the last table this host wrote.
                self.mirror = self.verdicts.values().copied().collect();
                self.mirror_gen = self.verdict_gen;
                self.mirror_author = self.verdict_author;
                self.mirror_lineage = self.lineage;
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
    pub(super) fn fence_if_needed(&mut self, id: u32) {
        let t = self.p.timing;
        let now = self.now.mono;
        let Some(p) = self.peers.get(&id) else { return };
        if p.status != Some(PeerStatus::Suspect) {
            return;
        }
        let Some(r) = p.record.clone() else { return };
        let stale = self.stale_ms(p);
        // A `fenced` run covers the runs before it (one machine, one run at a time): judging an
        // older run's last record would replace the verdict about the later one (seed 975920).
        if self
            .verdicts
            .get(&id)
            .is_some_and(|v| v.kind == VerdictKind::Fenced && !p.runs_after(&r, v))
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
            // With outage survival the watchdog may still be petted on permits: the bound
            // holds only if no majority of permits can have existed (a doomed host that
            // acknowledged a fence request never pets again, permits or not).
            let survival = if method == FenceMethodKind::Watchdog {
                self.survival_excluded(id, wd_ms)
            } else {
                Ok(())
            };
            if stale >= bound.saturating_sub(self.p.knobs.watchdog_bound_cut_ms) && survival.is_ok()
            {
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
        // The suspicion is re-checked right before a power-off: a read quorum that started
        // after the peer became suspect must still show no progress.
        if p.suspect_since.is_none_or(|since| self.evidence_until() < since) {
            return;
        }
        // A suspicion kept through a restart of the peer timers (S4: this host's own storage
        // trouble) starts no power-off until the evidence is whole again; an attempt under
        // way goes on (its result is taken whenever it comes).
        if stale < t.suspect_after_ms {
            return;
        }
        // A storage blip shorter than the peer's lease: it says on the peer channel that its
        // lease is still valid, so it is alive and will either write again or self-fence
        // when that lease runs out. Wait for that (a delay only: never a verdict).
        let claimed_until = self.lease_claimed_until(id, r.incarnation, now);
        let method = self.p.fence_methods.get(&id).copied();
        let job = self.fences.entry(id).or_default();
        if let Some(until) = claimed_until.filter(|&u| u > now && !job.in_flight) {
            job.next_attempt_at = job.next_attempt_at.max(until);
            if !job.deferred {
                job.deferred = true;
                let detail = format!(
                    "no progress for {stale} ms, but it says on the peer channel that its lease is valid for {} ms more: power-off held until then",
                    until - now
                );
                self.event(EventKind::FenceDeferred, id, None, detail);
            }
            return;
        }
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
    pub(super) fn fencing_changed(
        &mut self,
        methods: BTreeMap<u32, FenceMethodKind>,
        power_on_after: bool,
    ) {
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

    pub(super) fn fence_done(
        &mut self,
        id: u32,
        method: FenceMethodKind,
        result: Result<String, String>,
    ) {
        let incarnation =
            self.peers.get(&id).and_then(|p| p.record.as_ref()).map_or(0, |r| r.incarnation);
        let Some(job) = self.fences.get_mut(&id) else {
            // The attempt outlived its job (the watchdog bound gave the verdict meanwhile, a
            // clear or a reload ended it): a failure still says the BMC does not work (S8).
            if let Err(detail) = result {
                let now = self.verdicts.get(&id).map_or("none", |v| v.kind.as_str());
                self.event(
                    EventKind::FenceFailed,
                    id,
                    Some(method),
                    format!("{detail} (a late result; the verdict is {now} meanwhile)"),
                );
            }
            return;
        };
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
                    // It came back while the attempt ran: nothing to fence any more, but the
                    // BMC failed all the same.
                    self.fences.remove(&id);
                    if self.verdicts.get(&id).is_some_and(|v| v.kind != VerdictKind::Fenced) {
                        self.verdicts.remove(&id);
                        self.table_changed();
                    }
                    self.event(
                        EventKind::FenceFailed,
                        id,
                        Some(method),
                        format!("{detail} (the host made progress meanwhile: not fenced)"),
                    );
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

fn by_host(table: &[Verdict]) -> BTreeMap<u32, Verdict> {
    table.iter().map(|v| (v.host_id, *v)).collect()
}

/// Whether the chain of their table (author, lineage) never held a base entry stamped `stamp`
/// that their table lacks, so the lack is no withdrawal. Their chain held what it took in
/// (stamped up to its `base_gen`) and what it stamped itself (from its `first_gen` on). A
/// stamp between the two is another chain's. So is one above the base table's own intake
/// when the base has another author: the base's author stamped it (a former coordinator that
/// takes the role again merges a successor's table that took over from an older one; stamps
/// of concurrent tenures collide, so `first_gen` alone cannot tell).
/// Unknown (0) stamps and lineages (an older hbfence, a full block): it may have held it.
fn never_held(stamp: u32, theirs: (u32, Option<Lineage>), base: (u32, Option<Lineage>)) -> bool {
    let Some(t) = theirs.1 else { return false };
    let base_authors_own = base.0 != theirs.0 && base.1.is_some_and(|b| stamp > b.base_gen);
    stamp != 0 && stamp > t.base_gen && (stamp < t.first_gen || base_authors_own)
}

/// Three-way merge of verdict tables: per host, a side that changed its entry since `base`
/// wins; when both changed it, `fenced` wins (a true fact about an incarnation, S1), else the
/// larger entry, so two coordinators merging each other's tables reach the same result. An
/// entry of theirs stamped before the base's is no change since the base (see below). An
/// entry theirs lacks is a withdrawal unless `never_held` says their chain never had it
/// (stamp and [`Lineage`]): then it is no change of theirs either.
fn merge_tables(
    base: &[Verdict],
    ours: &BTreeMap<u32, Verdict>,
    theirs: &[Verdict],
    never_held: impl Fn(u32) -> bool,
) -> BTreeMap<u32, Verdict> {
    let find = |t: &[Verdict], id: u32| t.iter().find(|v| v.host_id == id).copied();
    let rank = |v: &Option<Verdict>| {
        v.map(|v| (v.kind == VerdictKind::Fenced, v.kind as u8, v.incarnation, v.method as u8))
    };
    let ids: std::collections::BTreeSet<u32> =
        ours.keys().copied().chain(theirs.iter().map(|v| v.host_id)).collect();
    let mut out = BTreeMap::new();
    // Their entry stamped before the base's was not changed from it: every change is stamped
    // above every table its coordinator took in. Their table did not descend from the base
    // (its author took over from an older table), so this is no change of theirs to win, only
    // another side: a conflict.
    let older_than = |t: Option<Verdict>, b: Option<Verdict>| match (t, b) {
        (Some(t), Some(b)) => t.changed_gen != 0 && t.changed_gen < b.changed_gen,
        _ => false,
    };
    for id in ids {
        let (b, o, t) = (find(base, id), ours.get(&id).copied(), find(theirs, id));
        let not_theirs = t.is_none() && b.is_some_and(|b| never_held(b.changed_gen));
        let pick = if o == b && !older_than(t, b) && !not_theirs {
            t
        } else if t == b || t == o {
            o
        } else if rank(&t) > rank(&o) {
            t
        } else {
            o
        };
        if let Some(v) = pick {
            out.insert(id, v);
        }
    }
    out
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    /// Without lineages: an entry theirs lacks is a withdrawal.
    fn merge(
        base: &[Verdict],
        ours: &BTreeMap<u32, Verdict>,
        theirs: &[Verdict],
    ) -> BTreeMap<u32, Verdict> {
        merge_tables(base, ours, theirs, |_| false)
    }

    fn v(id: u32, kind: VerdictKind, incarnation: u64) -> Verdict {
        Verdict {
            host_id: id,
            kind,
            method: FenceMethodKind::Ipmi,
            incarnation,
            wall_ms: 0,
            seq: 0,
            changed_gen: 0,
        }
    }

    #[test]
    fn each_sides_changes_survive_a_merge() {
        let base = [v(2, VerdictKind::Fencing, 20), v(3, VerdictKind::Fenced, 30)];
        // We withdrew 3 (it rejoined) and started fencing 4; they fenced 2 and kept 3.
        let ours = by_host(&[v(2, VerdictKind::Fencing, 20), v(4, VerdictKind::Fencing, 40)]);
        let theirs = [v(2, VerdictKind::Fenced, 20), v(3, VerdictKind::Fenced, 30)];
        let merged = merge(&base, &ours, &theirs);
        assert_eq!(
            merged.values().copied().collect::<Vec<_>>(),
            vec![v(2, VerdictKind::Fenced, 20), v(4, VerdictKind::Fencing, 40)],
            "their fenced verdict kept, our withdrawal not undone, our new entry kept"
        );
        // A withdrawal of theirs is not undone by our unchanged copy either.
        let merged = merge(&base, &by_host(&base), &[v(2, VerdictKind::Fencing, 20)]);
        assert_eq!(merged.values().copied().collect::<Vec<_>>(), vec![base[0]]);
    }

    /// An entry of theirs stamped before the base's one did not come from it: their table's
    /// author took over from an older table. It is a conflict, never a change that wins.
    #[test]
    fn an_entry_stamped_before_the_bases_is_no_change_since_the_base() {
        let stamped = |kind, gen| Verdict { changed_gen: gen, ..v(2, kind, 20) };
        let base = [stamped(VerdictKind::Fenced, 3)];
        let theirs = [stamped(VerdictKind::Fencing, 2)];
        let merged = merge(&base, &by_host(&base), &theirs);
        assert_eq!(merged[&2], base[0], "an older fencing entry replaced fenced");
        // Stamped after the base's: a change of theirs, which wins.
        let theirs = [stamped(VerdictKind::FenceFailed, 4)];
        assert_eq!(merge(&base, &by_host(&base), &theirs)[&2], theirs[0]);
        // Unknown stamps order nothing: the three-way rule as before.
        let theirs = [stamped(VerdictKind::Fencing, 0)];
        assert_eq!(merge(&base, &by_host(&base), &theirs)[&2], theirs[0]);
        // As a conflict, an older `fenced` of theirs still wins over ours.
        let base = [stamped(VerdictKind::FenceFailed, 3)];
        let theirs = [stamped(VerdictKind::Fenced, 2)];
        assert_eq!(merge(&base, &by_host(&base), &theirs)[&2], theirs[0]);
    }

    /// Their table lacks an entry of the base: a withdrawal if their chain could have held it,
    /// kept if its stamp is one their chain never took in nor stamped.
    #[test]
    fn a_lack_is_a_withdrawal_only_where_their_chain_could_have_held_the_entry() {
        let l = |base_gen, first_gen| Some(Lineage { base_gen, first_gen, author_incarnation: 7 });
        // Their chain took in up to 3, stamped from 9 on; the base (author 2) took in up to 0.
        let theirs = (1, l(3, 9));
        let base = (2, l(0, 1));
        assert!(never_held(5, theirs, base), "between their intake and their tenure");
        assert!(!never_held(3, theirs, base), "taken in with a table");
        assert!(!never_held(0, theirs, base), "unknown stamp");
        assert!(!never_held(5, (1, None), base), "unknown lineage (an older hbfence)");
        // Stamped in their tenure's numbers: the base's author's own if the base is another
        // author's and took in less; their own (withdrawn) if the base is theirs.
        assert!(never_held(10, theirs, base));
        assert!(!never_held(10, theirs, (1, l(0, 1))));
        assert!(!never_held(10, theirs, (2, l(10, 1))), "the base took it in: anybody's");
        assert!(!never_held(10, theirs, (2, None)));
        // In a merge: kept where never held, withdrawn where it could have been.
        let stamped = |gen| Verdict { changed_gen: gen, ..v(3, VerdictKind::Fenced, 30) };
        let b = [stamped(5)];
        let kept = merge_tables(&b, &by_host(&b), &[], |s| never_held(s, theirs, base));
        assert_eq!(kept.get(&3), Some(&b[0]));
        let b = [stamped(3)];
        let gone = merge_tables(&b, &by_host(&b), &[], |s| never_held(s, theirs, base));
        assert_eq!(gone.get(&3), None);
    }

    #[test]
    fn conflicting_changes_resolve_the_same_way_on_both_sides() {
        let base = [v(2, VerdictKind::Fencing, 20)];
        let a = [v(2, VerdictKind::FenceFailed, 20), v(5, VerdictKind::Fencing, 50)];
        let b = [v(2, VerdictKind::Fenced, 20), v(5, VerdictKind::FenceFailed, 50)];
        let ab = merge(&base, &by_host(&a), &b);
        let ba = merge(&base, &by_host(&b), &a);
        assert_eq!(ab, ba);
        assert_eq!(ab[&2].kind, VerdictKind::Fenced);
    }
}
