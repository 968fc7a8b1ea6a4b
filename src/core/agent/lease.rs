//! This host's own safety (S3, S7): the lease renewed by verified writes, the watchdog and its
//! pets, doom and self-fence, the start-up probe for another writer of the same host id, and a
//! clean leave.

use super::*;

impl Agent {
    /// End of the own lease, if a write quorum of volumes ever renewed it.
    pub fn lease_expiry(&self) -> Option<u64> {
        let (w, _) = Self::quorums(self.vols.len());
        let lease = self.p.timing.lease_timeout_ms;
        kth_latest(self.vols.iter().filter_map(|v| v.last_ok_start.map(|s| s + lease)), w)
    }

    pub fn lease_valid(&self, now: u64) -> bool {
        self.lease_expiry().is_some_and(|e| now < e)
    }

    /// The watchdog period this host's hardware runs with.
    pub(super) fn own_watchdog_ms(&self) -> u64 {
        self.p.timing.watchdog_timeout_ms.max(u64::from(self.p.watchdog_timeout_s) * 1000)
    }

    /// How often the watchdog is petted: a quarter of the shorter of the two periods (the
    /// volume's and the driver's, equal once armed: `watchdog::arm` refuses any other).
    pub(super) fn pet_every_ms(&self) -> u64 {
        let hardware = u64::from(self.p.watchdog_timeout_s) * 1000;
        let timing = self.p.timing.watchdog_timeout_ms;
        let shortest = if hardware == 0 { timing } else { timing.min(hardware) };
        (shortest / PETS_PER_WATCHDOG).max(1)
    }

    /// The own lease lasts at least one more watchdog period: a ping (pet or arming) is safe.
    pub(super) fn lease_covers_watchdog(&self, now: u64) -> bool {
        self.lease_expiry().is_some_and(|e| now + self.own_watchdog_ms() <= e)
    }

    /// The own guard (lease, or permits while surviving) lasts at least one more watchdog
    /// period: a pet is safe.
    pub(super) fn guard_covers_watchdog(&self, now: u64) -> bool {
        self.guard_expiry().is_some_and(|e| now.saturating_add(self.own_watchdog_ms()) <= e)
    }

    /// When a guard that is not renewed dooms this host (slightly before it ends).
    pub(super) fn doom_at(&self) -> Option<u64> {
        let lead = DOOM_LEAD_MS.min(self.own_watchdog_ms() / 4);
        self.guard_expiry().map(|e| e.saturating_sub(lead))
    }

    pub(super) fn doomed(&self) -> bool {
        matches!(self.phase, Phase::Doomed { .. })
    }

    pub(super) fn self_fence_kind(&self) -> SelfFenceKind {
        self.pending_kind.unwrap_or(self.p.self_fence)
    }

    pub(super) fn maybe_pet(&mut self, now: u64) {
        // S3: never once doomed, and only while the lease holds for one more watchdog period:
        // if the agent is stopped after this pet and killed later, the kernel pings the timer
        // once more on close ("watchdog did not stop!"), so the reset can come up to two
        // periods after the pet: still within lease + watchdog_timeout of the bound.
        if !self.armed || self.doomed() || !self.guard_covers_watchdog(now) {
            return;
        }
        // One last pet exactly when the lease stops covering a watchdog period, so a storage
        // stall costs the lease only its own length, not another pet period.
        let last_at = self.last_pet_at();
        if self.last_pet.is_none_or(|t| {
            now >= t + self.pet_every_ms() || last_at.is_some_and(|l| t < l && now >= l)
        }) {
            self.last_pet = Some(now);
            self.actions.push(Action::Pet);
        }
    }

    /// When the last pet under the current lease is due: a little before the latest instant
    /// allowed, so a wake-up a few ms late still makes it.
    pub(super) fn last_pet_at(&self) -> Option<u64> {
        self.guard_expiry().and_then(|e| e.checked_sub(self.own_watchdog_ms() + LAST_PET_EARLY_MS))
    }

    /// The lease is gone: never pet again, mark the boot, reset the host (S3).
    pub(super) fn doom(&mut self, reason: DoomReason) {
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

    pub(super) fn stop_requested(&mut self) {
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
    pub(super) fn maybe_finish_leaving(&mut self) {
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

    pub(super) fn watchdog_armed_result(&mut self, r: Result<(), String>) {
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
    pub(super) fn watchdog_unguarded(&mut self, _why: String) {
        self.arming = false;
        self.unguarded = true;
        self.armed = false;
        self.next_cycle_at = self.now.mono;
    }

    /// Arming is over: either the watchdog guards this host or it cannot (and is not used).
    pub(super) fn watchdog_settled(&self) -> bool {
        self.armed || self.unguarded
    }

    pub fn watchdog_unusable(&self) -> bool {
        self.unguarded
    }

    pub(super) fn after_renewal(&mut self) {
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
            // Opening the device pings it: the same rule as a pet.
            if !self.watchdog_settled() && !self.arming && self.lease_covers_watchdog(self.now.mono)
            {
                self.arming = true;
                self.actions.push(Action::ArmWatchdog);
            }
            if self.watchdog_settled() && !self.ready_sent {
                self.ready_sent = true;
                self.actions.push(Action::Ready);
            }
        }
    }

    /// A record of another agent in this host's block that was written after this agent
    /// started: a second writer of this host id. Not one: a late write of this boot's earlier
    /// agent (started before this one and stuck in flight), or an older record of a former run
    /// that a lagging volume still shows (its sequence is not past the one continued from, nor
    /// past what this volume's first read showed).
    pub(super) fn is_foreign_writer(&self, v: usize, r: &Heartbeat) -> bool {
        if r.incarnation == self.p.incarnation {
            return false;
        }
        // Seen before, and not taken for a second writer then: a writer's sequence only rises.
        if self.own_block_history.iter().any(|&(inc, seq)| inc == r.incarnation && r.seq <= seq) {
            return false;
        }
        if r.boot_id == self.p.boot_id {
            return r.mono_ms >= self.started_at;
        }
        // A former run the probe found, or a later run of that run's boot (it may have
        // written past what a lagging volume showed the probe: soak seed 6046), on a volume
        // that has not shown one of this agent's writes yet: a volume lagging behind, catching
        // up with that boot's history. Once our write was read back there, that boot
        // overwriting it is a second writer.
        let probed_run = self.probe_found.contains(&r.incarnation)
            || self.probe_found_boots.contains(&r.boot_id);
        // The same for any run of another boot on a volume where the probe read the own block
        // torn: that is a run the probe found without learning which (soak seeds 1771016,
        // 1777841: a former run's last writes landed torn while the probe read, then a lagging
        // volume replayed its whole record after this agent's start). Until our write is read
        // back there, that volume renews nothing of our lease; from then on, records there
        // are judged as on any volume (and a twin reads our records in its own block too).
        let unknown_history = self.vols[v].probe_own_unreadable;
        if (probed_run || unknown_history) && !self.vols[v].own_write_seen {
            return false;
        }
        let floor = self.probe_seq.max(self.vols[v].own_block_floor.unwrap_or(0));
        if r.seq <= floor {
            return false;
        }
        // A run the probe never found, on a volume that shows the present: a second writer
        // (a twin started at the same instant as this agent is judged at its first sighting).
        // On a volume whose read shows the past, it may be a run of a boot between the one the
        // probe found and this one, dead by now, that a lagging replica shows late (soak seed
        // 985753), or shows in its first read of the present (survival seed 7343): judged like
        // a run the probe found.
        if !probed_run && !self.vols[v].shows_past {
            return true;
        }
        // A run the probe judged history (or an unknown one on a volume showing the past),
        // past the floor: one such record is what a volume gone back in time shows of writes
        // nobody read before (they landed while it was unreadable and were overwritten by
        // ours: soak seeds 177717, 182441). A writer goes on: it is a second writer once it
        // advanced past a sighting above the floor (the sighting was noted in the history; a
        // run not noted because the history is full is judged by the floor alone).
        match self.own_block_history.iter().find(|&&(inc, _)| inc == r.incarnation) {
            Some(&(_, seen)) => seen > floor,
            None => self.own_block_history.len() >= OWN_BLOCK_HISTORY_RUNS,
        }
    }

    /// Evidence that a read shows the volume's past (a replica lagging behind, or one gone
    /// back in time): every peer that wrote lately (a new value within two intervals) shows a
    /// record of its current run there at least two writes older than the one this agent has
    /// already taken (one write may still be in flight), and there is at least one such
    /// peer. A record of such a peer that is current, or of another of its runs, means the
    /// present.
    pub(super) fn read_shows_past(&self, view: &VolumeView) -> bool {
        let recent = self.now.mono.saturating_sub(2 * self.p.timing.interval_ms);
        let mut behind = false;
        for (i, slot) in view.slots.iter().enumerate() {
            let id = i as u32 + 1;
            let Slot::Record(r) = slot else { continue };
            if id == self.p.host_id {
                continue;
            }
            let Some(peer) =
                self.peers.get(&id).filter(|p| p.record.is_some() && p.last_change >= recent)
            else {
                continue;
            };
            match &peer.record {
                Some(p) if p.incarnation == r.incarnation && p.seq >= r.seq.saturating_add(2) => {
                    behind = true
                }
                _ => return false,
            }
        }
        behind
    }

    /// Remembers another incarnation's record in the own block once it has been judged (and
    /// was not a collision). At most `OWN_BLOCK_HISTORY_RUNS` runs; beyond that the other
    /// rules alone decide.
    pub(super) fn note_own_block_history(&mut self, record: Option<&Heartbeat>) {
        let Some(r) = record.filter(|r| r.incarnation != self.p.incarnation) else { return };
        if matches!(self.phase, Phase::Exited) {
            return;
        }
        let history = &mut self.own_block_history;
        if let Some((_, seq)) = history.iter_mut().find(|(inc, _)| *inc == r.incarnation) {
            *seq = (*seq).max(r.seq);
        } else if history.len() < OWN_BLOCK_HISTORY_RUNS {
            history.push((r.incarnation, r.seq));
        }
    }

    /// The first timely read of each volume sets its floor (see `Vol::own_block_floor`).
    pub(super) fn note_own_block_floor(&mut self, v: usize, view: &VolumeView) {
        if self.vols[v].own_block_floor.is_none() {
            let foreign = view
                .record(self.p.host_id)
                .filter(|r| r.incarnation != self.p.incarnation && r.boot_id != self.p.boot_id);
            self.vols[v].own_block_floor = Some(foreign.map_or(0, |r| r.seq));
        }
    }

    /// Every timely read, not only the read-back of a write, looks at the own block (a twin
    /// started at the same instant passes the probe too; the regular cycle's read, half an
    /// interval after its write, sees a twin writing at the same cadence: COLLISION-DETECT).
    pub(super) fn foreign_writer_in_own_block(&mut self, v: usize, view: &VolumeView) -> bool {
        if matches!(self.phase, Phase::Probing { .. } | Phase::Exited) {
            return false;
        }
        let record = view.record(self.p.host_id);
        let foreign = match record {
            Some(r) if self.is_foreign_writer(v, r) => Some((r.incarnation, r.seq)),
            _ => self.other_run_rises_late(v, record),
        };
        match foreign {
            Some((inc, seq)) => {
                self.collision(inc, seq);
                true
            }
            None => false,
        }
    }

    /// A run of another boot seen rising late is a second writer, even below the floor or a
    /// sequence seen before (the floor lies when the probe continued from a forged record that
    /// was the only trace of its run: a single sample, which nothing tells from a dead run's
    /// last write, and a twin below it is history to every other rule). A run over before this
    /// agent started (another boot: its machine rebooted) landed its last write by then plus
    /// io_timeout. A timely read shows content at most io_timeout (its duration) + L old, L =
    /// io_timeout + 3·interval (the lag the probe's rule allows): a sighting that did not show
    /// that last write yet finished before start + 2·io_timeout + L, and the next sighting,
    /// within one read gap (interval + io_timeout), before start + 2·io_timeout + L + gap.
    /// A run seen rising later wrote while this agent ran.
    fn other_run_rises_late(&mut self, v: usize, record: Option<&Heartbeat>) -> Option<(u64, u64)> {
        let t = self.p.timing;
        let now = self.now.mono;
        let r = record
            .filter(|r| r.incarnation != self.p.incarnation && r.boot_id != self.p.boot_id)?;
        let gap = t.interval_ms + t.io_timeout_ms;
        let lag = max_lag_ms(&t);
        let late = self.started_at + 2 * t.io_timeout_ms + lag + gap;
        let rose = self.vols[v].other_run_shown.is_some_and(|(inc, seq, at)| {
            inc == r.incarnation && r.seq > seq && now.saturating_sub(at) <= gap
        });
        self.vols[v].other_run_shown = Some((r.incarnation, r.seq, now));
        (rose && now > late).then_some((r.incarnation, r.seq))
    }

    /// Notes a record of the own block read by the probe (per run: its sequence and the
    /// writer's clock) and raises an alarm for a sequence its run's clock cannot explain:
    /// more writes than the time since the run's lowest record allows (as for peers, issue 10
    /// item 14: a run writes at most once per cycle, cycles are at least min(interval, retry
    /// pause) apart, a few more for each volume's retries). The lower record may be read
    /// after the forged one: every sample is judged again.
    fn probe_note_run(&mut self, v: usize, r: &Heartbeat) {
        let sample = (r.seq, r.mono_ms, v, r.caps & caps::IO_HEALTHY != 0);
        let run = match self.probe_runs.iter().position(|(inc, _)| *inc == r.incarnation) {
            Some(i) => i,
            None if self.probe_runs.len() < PROBE_RUNS => {
                self.probe_runs.push((r.incarnation, Vec::new()));
                self.probe_runs.len() - 1
            }
            None => {
                if r.seq < SEQ_BEYOND_ANY_LIFETIME {
                    self.probe_untracked_max = self.probe_untracked_max.max(r.seq);
                }
                return;
            }
        };
        let samples = &mut self.probe_runs[run].1;
        if samples.iter().any(|s| (s.0, s.1) == (r.seq, r.mono_ms)) {
            return;
        }
        if samples.len() >= PROBE_RUN_SAMPLES {
            // Keep the lowest, which the others are judged against.
            if let Some(i) = (0..samples.len()).max_by_key(|&i| samples[i].0) {
                samples.remove(i);
            }
        }
        samples.push(sample);
        let samples = samples.clone();
        let lowest = samples.iter().copied().min_by_key(|s| s.0);
        for &(seq, mono, on, healthy) in &samples {
            let key = (r.incarnation, seq);
            if self.probe_sample_explained((seq, mono, on, healthy), lowest)
                || self.probe_alarms.contains(&key)
            {
                continue;
            }
            self.probe_alarms.push(key);
            let allowed = match lowest {
                Some((low, ..)) if seq < SEQ_BEYOND_ANY_LIFETIME => {
                    format!("the time since its record {low} allows")
                }
                _ => "any run's lifetime allows".to_string(),
            };
            self.event(
                EventKind::Alarm,
                self.p.host_id,
                None,
                format!("volume {on}: the own block shows sequence number {seq} of run {}, more writes than {allowed}: ignored (forged or corrupted record)", r.incarnation),
            );
        }
    }

    /// Whether a run's own clock explains `sample` from its lowest record. A record's clock is
    /// the start of the cycle its lease counts from, not its write time: a writer whose I/O
    /// failed (no `IO_HEALTHY`) retries under one value until its lease ends (COLLISION
    /// 1956477: 32 to 95 under one clock value, taken for forged, and the probe continued
    /// from 32), so such a record may be up to lease_timeout later than its clock says.
    /// (Outage survival writes on under permits past that: a long outage's last records still
    /// raise this alarm, and the probe continues below them.)
    fn probe_sample_explained(&self, sample: ProbeSample, lowest: Option<ProbeSample>) -> bool {
        let (seq, mono, _, healthy) = sample;
        if seq >= SEQ_BEYOND_ANY_LIFETIME {
            return false;
        }
        let Some((low_seq, low_mono, _, _)) = lowest else { return true };
        let t = self.p.timing;
        let written_by = if healthy { mono } else { mono + t.lease_timeout_ms };
        let min_write_gap = RETRY_MS.min(t.interval_ms).max(1);
        let allowed = 16 + 8 * written_by.saturating_sub(low_mono) / min_write_gap;
        seq.saturating_sub(low_seq) <= allowed
    }

    /// The highest sequence of the own block the probe has seen that its run's clock explains.
    fn probe_credible_max(&self) -> u64 {
        let mut max = self.probe_untracked_max;
        for (_, samples) in &self.probe_runs {
            let lowest = samples.iter().copied().min_by_key(|s| s.0);
            for &s in samples {
                if self.probe_sample_explained(s, lowest) {
                    max = max.max(s.0);
                }
            }
        }
        max
    }

    pub(super) fn collision(&mut self, other_incarnation: u64, other_seq: u64) {
        if self.doomed() {
            // The pending self-fence still runs: exiting now would cancel it (S3).
            self.event(
                EventKind::Alarm,
                self.p.host_id,
                None,
                format!("another writer of this host id (incarnation {other_incarnation}, seq {other_seq}) while a self-fence is pending"),
            );
            return;
        }
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
    pub(super) fn probe(&mut self, v: usize, finished: u64, view: &VolumeView) {
        let own = view.record(self.p.host_id);
        let value = own.map(|r| (r.incarnation, r.seq));
        if let Some(r) = own.filter(|r| r.boot_id == self.p.boot_id) {
            self.probe_saw_this_boot = true;
            let expired = r.mono_ms + self.p.timing.lease_timeout_ms <= self.now.mono;
            // A `leaving` record of this boot on another volume makes an older active one
            // history (a volume that missed the last writes of a run that left cleanly).
            if r.state == HostState::Leaving {
                self.probe_left_seq = self.probe_left_seq.max(Some(r.seq));
                // A run that left cleanly disarmed the watchdog and removed the armed marker;
                // with the marker still there it was killed before that (soak seed 174235: a
                // `leaving` write stuck until after the kill), and its lease is what counts.
                if self.p.armed_marker && expired {
                    self.doom(DoomReason::PendingFromEarlierRun);
                    return;
                }
            } else if self.probe_left_seq.is_none_or(|left| r.seq > left) {
                // Only a run that armed the watchdog can leave a reset pending: a record of
                // one that never did (it could not open the device and exited) is history,
                // unless the marker says a run of this boot armed it.
                let armed = r.caps & caps::WATCHDOG_ARMED != 0 || self.p.armed_marker;
                if r.state == HostState::SelfFencing || (expired && armed) {
                    self.doom(DoomReason::PendingFromEarlierRun);
                    return;
                }
            }
        }
        // After a read gap (a read of the cadence failed or came late) a change may have
        // happened right after the read before it: the gap is no part of how long changes
        // went on (soak seed 35659: a lagging volume showed a former run change, failed for
        // 6 s, then showed one more of its old writes; 117875: a twin powered off during a
        // stall, its last write seen 84 s later).
        let t = self.p.timing;
        if let Some(prev) = self.vols[v].probe_last_read.replace(finished) {
            let gap = finished.saturating_sub(prev);
            if gap > t.interval_ms + t.io_timeout_ms {
                if let Some(since) = self.vols[v].probe_changing_since.as_mut() {
                    *since += gap;
                }
            }
        }
        if view.unreadable.iter().any(|&(id, _)| id == self.p.host_id) {
            self.vols[v].probe_own_unreadable = true;
        }
        // The highest sequence of the own block seen so far by this probe, on any volume.
        let seen_before = self.seq;
        if let Some(r) = own {
            self.probe_note_run(v, r);
        }
        if let Some(r) = own.filter(|r| r.boot_id != self.p.boot_id) {
            if !self.probe_found.contains(&r.incarnation) && self.probe_found.len() < 8 {
                self.probe_found.push(r.incarnation);
            }
            if !self.probe_found_boots.contains(&r.boot_id) && self.probe_found_boots.len() < 8 {
                self.probe_found_boots.push(r.boot_id);
            }
        }
        // Continue the sequence of an earlier run so observers see progress, not a rewind;
        // never from a value its run's clock cannot explain (soak seed 1674313: a forged 9259
        // made a twin's every write look like history, and it went unnoticed).
        self.seq = self.probe_credible_max();
        // Volumes may legitimately differ (one missed writes); only a change on the same
        // volume while nobody of ours writes is another writer.
        match self.vols[v].probe_first {
            None => self.vols[v].probe_first = Some((finished, value)),
            Some((first_at, first_value)) => {
                if value != first_value {
                    if let Some(r) = own {
                        // A write of this boot's own earlier agent, started before this agent
                        // existed and stuck in flight when it was killed, may land late (up to
                        // io_timeout): not another host, watch again. Anything written since
                        // this agent started is a live second writer.
                        if r.boot_id == self.p.boot_id && r.mono_ms >= self.started_at {
                            self.collision(r.incarnation, r.seq);
                            return;
                        }
                        // A record of another boot that changes may be a volume that lags
                        // behind, still showing former runs' last writes (the run the probe
                        // found advancing, or a later run of a boot in between: seed 12192,
                        // a host rebooted twice within the lag), which stops once it has caught
                        // up, or another machine writing (it goes on): watch again, and call it
                        // a second writer once the changes outlast what a lagging volume may
                        // show of runs that are over. Nothing is written meanwhile (S6).
                        // Not past what another volume already showed: that volume's
                        // history, not a write happening now.
                        if r.boot_id != self.p.boot_id && r.seq > seen_before {
                            let t = self.p.timing;
                            // From the read before the first change (one interval earlier
                            // at most), not from the first read: a volume unreadable in
                            // between (seed 26993: 63 s of EIO) shows one old change late,
                            // which is not changes that go on.
                            let before = first_at.max(finished.saturating_sub(t.interval_ms));
                            self.vols[v].probe_changing_since.get_or_insert(before);
                            // Since the first change on any volume: which volume shows a
                            // value first depends on how fast each is read (soak seed
                            // 1614178: after a switch the count began again, 2 s late).
                            let since = self
                                .vols
                                .iter()
                                .filter_map(|vol| vol.probe_changing_since)
                                .min()
                                .unwrap_or(before);
                            // A replay is seen until the lag ends and at the read after
                            // that: up to the lag plus one interval (COLLISION 1956477: a
                            // 24.07 s lag, seen for 24.37 s, was refused at io_timeout +
                            // 3·interval = 24.34 s).
                            if finished.saturating_sub(since) > max_lag_ms(&t) + t.interval_ms {
                                self.collision(r.incarnation, r.seq);
                                return;
                            }
                        }
                        self.vols[v].probe_first = Some((finished, value));
                        return;
                    }
                }
                let watched = finished.saturating_sub(first_at);
                if watched >= self.p.timing.interval_ms * 3 / 2 {
                    if self.p.armed_marker && !self.probe_saw_this_boot {
                        // A run of this boot left the watchdog running and no record shows
                        // its lease (its last writes landed torn: soak seeds 103647, 118389,
                        // 180520): a reset may be pending, and arming would extend it (S3).
                        self.doom(DoomReason::PendingFromEarlierRun);
                        return;
                    }
                    self.phase = Phase::Running;
                    self.probe_seq = self.seq;
                    // A volume's floor is its first read's foreign value: never a forged one.
                    for vol in &mut self.vols {
                        if let Some(floor) = vol.own_block_floor.as_mut() {
                            *floor = (*floor).min(self.probe_seq);
                        }
                    }
                    self.next_cycle_at = self.now.mono;
                    if !self.inherited {
                        self.inherit_verdicts(view);
                    }
                }
            }
        }
    }
}

/// The oldest content a volume may serve (a stale replica, a cache after a failover), as the
/// probe and the own-block rules assume it: io_timeout + 3·interval. A lag beyond it can make a
/// dead run's replay look like a second writer (exit 76: the host runs unguarded, never a false
/// `fenced`). The simulation draws lags up to 4 intervals, within it (io_timeout >= interval).
pub(super) fn max_lag_ms(t: &Timing) -> u64 {
    t.io_timeout_ms + 3 * t.interval_ms
}
