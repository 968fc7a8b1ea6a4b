//! Volume I/O cycles and the health of this host's own storage (S4): what is written, when a
//! cycle counts as failed, and when own trouble restarts every peer timer.

use super::*;

impl Agent {
    pub(super) fn check_stuck_io(&mut self, now: u64) {
        let limit = self.p.timing.io_timeout_ms;
        let mut changed = false;
        for v in &mut self.vols {
            if let Some(io) = v.in_flight {
                if now >= io.started + limit && v.healthy {
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

    /// S4: an own I/O cycle whose read is still running one interval after it was due to start
    /// (`read_at`) is not a failure yet (that takes io_timeout from the cycle's start), but this
    /// host observes nobody meanwhile, and its peers' writes were most likely held up by the
    /// same stall: while fewer than a read quorum of volumes are healthy and timely, peer
    /// timers stay restarted.
    pub(super) fn check_overdue_io(&mut self, now: u64) {
        if self.p.knobs.judge_through_trouble {
            return;
        }
        let (_, r) = Self::quorums(self.vols.len());
        let interval = self.p.timing.interval_ms;
        let timely = self
            .vols
            .iter()
            .filter(|v| v.healthy && v.in_flight.is_none_or(|io| now < io.read_at + interval))
            .count();
        if timely < r {
            self.judge_from = now;
        }
    }

    /// S4: any change of the own storage health restarts every peer timer.
    pub(super) fn volume_health_changed(&mut self) {
        if !self.p.knobs.judge_through_trouble {
            self.judge_from = self.now.mono;
        }
    }

    pub(super) fn healthy_volumes(&self) -> usize {
        self.vols.iter().filter(|v| v.healthy).count()
    }

    /// True while this host may judge peers (S4): a read quorum of healthy volumes.
    pub(super) fn can_judge(&self) -> bool {
        let (_, r) = Self::quorums(self.vols.len());
        self.p.knobs.judge_through_trouble || self.healthy_volumes() >= r
    }

    pub(super) fn io_healthy(&self) -> bool {
        let (w, r) = Self::quorums(self.vols.len());
        self.p.knobs.judge_through_trouble || self.healthy_volumes() >= w.max(r)
    }

    pub(super) fn update_storage_state(&mut self) {
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

    pub(super) fn schedule_io(&mut self, now: u64) {
        if self.phase == Phase::Exited {
            return;
        }
        let due = now >= self.next_cycle_at;
        // A suspicion is confirmed by a read that starts now.
        let recheck = std::mem::take(&mut self.recheck);
        // A coordinator publishes a changed verdict table at once, not an interval later, on
        // each volume as soon as that volume is free: a volume still busy with its previous
        // cycle when the table changed takes it when that cycle ends (soak seed 1763425: the
        // coordinator died before its next regular cycle, its `fenced` verdict on one volume
        // of three).
        let publishing = self.is_coordinator() && self.phase == Phase::Running;
        let publish = |v: usize, vol: &Vol| {
            recheck
                || (publishing
                    && vol.published_gen != self.verdict_gen
                    && self.may_write_own_block(v))
        };
        // A volume whose last cycle failed is retried early: a short storage blip then costs
        // the lease only its own length, not an extra interval.
        let retry: Vec<usize> = (0..self.vols.len())
            .filter(|&v| {
                let vol = &self.vols[v];
                vol.in_flight.is_none()
                    && (publish(v, vol) || vol.retry_at.is_some_and(|t| now >= t))
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
        // A stuck I/O is never queued behind: such a volume skips the cycle.
        let starts = |vol: &Vol, v: usize| vol.in_flight.is_none() && (due || retry.contains(&v));
        // Sequence numbers count writes: a cycle that no volume takes a write in uses none
        // (soak seed 1882270: cycles on a volume not writable yet used up 232 in half a
        // second, and the peers took the jump for a forged record).
        let writes_somewhere =
            (0..self.vols.len()).any(|v| starts(&self.vols[v], v) && self.may_write_own_block(v));
        let write = write.filter(|_| writes_somewhere);
        if write.is_some() {
            self.report_unpublished_verdicts();
        }
        // The regular cycle reads half an interval after its write. That read is the write's
        // read-back (the renewal) and the twin check: a twin of this host id writing at the
        // same cadence lands either before it (seen here) or after it, and then its own read,
        // half an interval after its write, comes after this host's next write and shows it
        // (COLLISION-DETECT; design.md "One I/O cycle"). Reads that are not on the cadence (a
        // retry, a table to publish, a suspicion to confirm), on a volume whose last cycle
        // failed (the lease waits for its first renewal after a blip: soak seed 1701140 of
        // this change), and the last records of a run (`leaving`, the acknowledgement of a
        // fence request) do not wait.
        let on_cadence = due && !recheck;
        let wait = match write {
            Some(HostState::Active | HostState::Starting) if on_cadence => {
                self.p.timing.interval_ms / 2
            }
            _ => 0,
        };
        // A volume still busy with its previous cycle takes the `leaving` record as soon as it
        // is done, not an interval later.
        if due && self.phase == Phase::Leaving {
            for vol in self.vols.iter_mut().filter(|vol| vol.in_flight.is_some()) {
                vol.retry_at = Some(now);
            }
        }
        let record = write.map(|state| {
            self.seq += 1;
            if state == HostState::Leaving && self.leave_seq.is_none() {
                self.leave_seq = Some(self.seq);
            }
            match self.spare_records.pop() {
                Some(mut spare) => {
                    let (name, verdicts) =
                        (std::mem::take(&mut spare.name), std::mem::take(&mut spare.verdicts));
                    *spare = self.record_reusing(state, name, verdicts);
                    spare
                }
                None => Box::new(self.record(state)),
            }
        });
        let written = record.as_ref().map(|r| r.seq);
        let last = (0..self.vols.len()).rev().find(|&v| starts(&self.vols[v], v));
        let mut record = record;
        for v in 0..self.vols.len() {
            if !starts(&self.vols[v], v) {
                continue;
            }
            self.vols[v].retry_at = None;
            let written = written.filter(|_| self.may_write_own_block(v));
            // A volume not read yet in this run takes no write, so nothing waits for a
            // read-back there: its first read comes at once.
            let read_at = if self.vols[v].healthy && written.is_some() { now + wait } else { now };
            if written.is_some() {
                self.vols[v].published_gen = self.verdict_gen;
            }
            self.vols[v].in_flight =
                Some(InFlight { cycle: self.cycle, started: now, written, read_at });
            // The last volume takes the record itself, the others a copy.
            let mut write = match (&record, Some(v) == last) {
                _ if written.is_none() => None,
                (_, true) => record.take(),
                (Some(r), false) => Some(match self.spare_records.pop() {
                    Some(mut copy) => {
                        copy.clone_from(r);
                        copy
                    }
                    None => r.clone(),
                }),
                (None, false) => None,
            };
            if let Some(r) = write.as_mut() {
                self.attach_inventory(v, r);
            }
            self.actions.push(Action::StartIo { volume: v, cycle: self.cycle, write, read_at });
        }
    }

    /// How many verdicts this host's table can publish (heartbeat block and verdict pages):
    /// one about every other host the volume has room for.
    pub(super) fn table_capacity(&self) -> usize {
        format::Geometry { max_hosts: self.p.max_hosts }.table_capacity()
    }

    /// The verdicts that fit in the table, `fenced` ones first (they are what management acts
    /// on), and the hosts left out (only verdicts about ids beyond the volume's max_hosts).
    pub(super) fn publishable_verdicts(&self) -> (Vec<Verdict>, Vec<u32>) {
        let mut all: Vec<Verdict> = self.verdicts.values().copied().collect();
        all.sort_by_key(|v| (v.kind != VerdictKind::Fenced, v.host_id));
        let capacity = self.table_capacity();
        let left_out = all.iter().skip(capacity).map(|v| v.host_id).collect();
        all.truncate(capacity);
        (all, left_out)
    }

    /// A verdict that cannot be stored is an error event, never silence.
    pub(super) fn report_unpublished_verdicts(&mut self) {
        if !self.is_coordinator() {
            return;
        }
        let (_, left_out) = self.publishable_verdicts();
        if left_out != self.unpublished {
            if !left_out.is_empty() {
                self.event(
                    EventKind::Alarm,
                    self.p.host_id,
                    None,
                    format!(
                        "verdict table full: {} verdicts, {} fit in the table; not published for hosts {:?}",
                        self.verdicts.len(),
                        self.table_capacity(),
                        left_out
                    ),
                );
            }
            self.unpublished = left_out;
        }
    }

    pub(super) fn record(&self, state: HostState) -> Heartbeat {
        self.record_reusing(state, String::new(), Vec::new())
    }

    /// [`Agent::record`] with the name and verdict table in the buffers given.
    fn record_reusing(
        &self,
        state: HostState,
        mut name: String,
        mut table: Vec<Verdict>,
    ) -> Heartbeat {
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
        // Every host republishes the table it holds (S8: the table outlives its coordinator's
        // block); only the coordinator's own is its working copy.
        let (verdict_gen, verdict_author, lineage) = if self.is_coordinator() {
            table.clear();
            if !self.verdicts.is_empty() {
                table.extend(self.publishable_verdicts().0);
            }
            (self.verdict_gen, self.verdict_author, self.lineage)
        } else {
            table.clone_from(&self.mirror);
            (self.mirror_gen, self.mirror_author, self.mirror_lineage)
        };
        name.clone_from(&self.p.name);
        Heartbeat {
            cluster: self.p.cluster,
            host_id: self.p.host_id,
            incarnation: self.p.incarnation,
            seq: self.seq,
            wall_ms: self.now.wall,
            mono_ms: self.record_mono_ms(),
            boot_id: self.p.boot_id,
            state,
            watchdog_timeout_s: if self.armed { self.p.watchdog_timeout_s } else { 0 },
            caps: c,
            ack_nonce: self.ack_nonce,
            coordinator: self.coordinator.unwrap_or(0),
            verdict_gen,
            verdict_author,
            name,
            verdicts: table,
            verdicts_in_pages: 0,
            lineage,
            inventory: Default::default(),
        }
    }

    /// A record an I/O thread has written, handed back: the next cycle's record reuses it.
    pub fn recycle_record(&mut self, record: Box<Heartbeat>) {
        if self.spare_records.len() < self.vols.len() {
            self.spare_records.push(record);
        }
    }

    /// A view the core is done with, for an I/O thread to decode the next read into
    /// (`VolumeView::recycle`); None before the first read.
    pub fn take_spare_view(&mut self) -> Option<VolumeView> {
        self.spare_views.pop()
    }

    pub(super) fn io_done(
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
        // The start of the read: the I/O thread reads no earlier than `read_at`, so what the
        // read does not show had not landed before then (evidence, S1). After a failed write
        // it reads at once (and the failed cycle is no evidence: `read_ok_start` stays).
        let mut read_from = started;
        if let Some(io) = self.vols[v].in_flight {
            if io.cycle == cycle {
                self.vols[v].in_flight = None;
                written_seq = io.written;
                if !matches!(write, Some(Err(_))) {
                    read_from = started.max(io.read_at);
                }
            }
        }
        let limit = self.p.timing.io_timeout_ms;
        let read_ok_before = self.vols[v].read_ok_start;
        let mut failure: Option<String> = None;
        let mut late = false;
        if let Some(Err(e)) = &write {
            failure = Some(format!("write failed: {e}"));
        }
        let view = match read {
            Ok((finished, view)) => {
                // The whole cycle counts as one I/O: slower than io_timeout is a failure, even
                // if it completed (a late success must not renew the lease).
                if finished > started + limit {
                    late = true;
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
        if let Some((_, view)) = &view {
            self.note_own_block_floor(v, view);
        }
        // The read right after one that showed the past may be the first to show what the lag
        // hid: records that landed long before it appear as new (survival seed 7343).
        let past = view.as_ref().is_some_and(|(_, view)| self.read_shows_past(view));
        let vol = &mut self.vols[v];
        vol.shows_past = past || (view.is_some() && vol.read_showed_past);
        if view.is_some() {
            vol.read_showed_past = past;
        }
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
                        self.vols[v].own_write_seen = true;
                    }
                    Some(r) if self.is_foreign_writer(v, r) => {
                        let (inc, seq) = (r.incarnation, r.seq);
                        self.collision(inc, seq);
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
                // A cycle that came back late (storage answering again) is retried at once if
                // the usual pause would reach the self-fence: an outage that ends just before
                // it is survived. Once per late cycle, which took io_timeout already: never a
                // tight loop (retries every 10 ms in the last half second tore the only replica
                // of a verdict table in the simulation, seed 1266 of that version).
                let mut wait = RETRY_MS.min(self.p.timing.interval_ms);
                if late && self.doom_at().is_some_and(|d| self.now.mono + wait >= d) {
                    wait = 0;
                }
                self.vols[v].retry_at = Some(self.now.mono + wait);
            }
            None => {
                if renewed {
                    let before = self.lease_expiry();
                    self.note_renewal(before);
                    self.vols[v].last_ok_start = Some(started);
                    self.vols[v].last_ok_seq = written_seq;
                }
                if view.is_some() {
                    self.vols[v].read_ok_start = Some(read_from);
                }
                self.vols[v].healthy = true;
            }
        }
        if was_healthy != self.vols[v].healthy {
            self.volume_health_changed();
        }
        if renewed {
            self.inventory_written(v);
            self.after_renewal();
        }
        match view {
            Some((finished, view)) => {
                if matches!(self.phase, Phase::Probing { .. }) {
                    self.probe(v, finished, &view);
                }
                self.vols[v].new_since = if self.vols[v].read_continuous {
                    finished
                } else {
                    read_ok_before.unwrap_or(self.started_at).min(finished)
                };
                let judged = self.observe(v, finished, &view);
                self.note_own_block_history(view.record(self.p.host_id));
                if judged {
                    self.vols[v].read_continuous = true;
                    self.take_inventories(&view.inventories);
                } else {
                    // Not looked at (another writer of the own id): no evidence about anyone
                    // (S4), or a host resuming from a pause would judge its peers stale by
                    // the time it did not read them.
                    self.vols[v].read_ok_start = read_ok_before;
                    self.vols[v].read_continuous = false;
                }
                if self.spare_views.len() < self.vols.len() {
                    self.spare_views.push(view);
                }
            }
            None => self.vols[v].read_continuous = false,
        }
    }
}
