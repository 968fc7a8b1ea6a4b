//! Outage survival (issue 13, amends S3 and S1): a host whose lease ran out because storage is
//! gone for everybody keeps petting while a strict majority of the members (itself included)
//! says on the peer channel that their leases are running out too (*permits*); a judge uses
//! the watchdog bound only when enough members were provably on storage that no such majority
//! can have existed. The argument is in docs/design.md, "Outage survival".

use super::*;

/// What survival needs of the header's membership (`core::header::Membership`).
impl Membership {
    /// Survival needs an explicit membership (an open one has no majority to count) and a
    /// timing that keeps a healthy host above the permit threshold
    /// (`Timing::validate_outage_survival`). Every agent of this version decides it alike
    /// from the header; an agent does not start with survival on under such a timing
    /// (daemon), so an older agent that would act on it is never judged by one that ignores it.
    pub fn survival_on(&self, t: &Timing) -> bool {
        self.survival_requested() && self.survival_timing_error(t).is_none()
    }

    /// Switched on with an explicit membership: what the operator asked for, before the timing
    /// is looked at.
    fn survival_requested(&self) -> bool {
        self.outage_survival && !self.members.is_empty()
    }

    /// The timing rule that makes every agent of this version ignore a requested survival. The
    /// one place that decides it: `survival_on`, the warning, the daemon's refusal to start
    /// and the alarm on a runtime switch all ask here.
    pub fn survival_timing_error(&self, t: &Timing) -> Option<TimingError> {
        if !self.survival_requested() {
            return None;
        }
        t.validate_outage_survival().err()
    }

    pub fn contains(&self, id: u32) -> bool {
        self.members.binary_search(&id).is_ok()
    }

    /// Permits from other members a member needs: with its own vote, a strict majority.
    pub fn permits_needed(&self) -> usize {
        self.members.len() / 2
    }

    /// Members other than a judged host that must be provably on storage so that it cannot
    /// hold a majority of permits: ceil(n / 2).
    pub fn blockers_needed(&self) -> usize {
        self.members.len().div_ceil(2)
    }
}

/// How long a permit counts, on the asker's clock from when it sent the challenge. A cluster
/// constant (header timing only), so a judge computes it for every peer: one watchdog period
/// (a pet needs one more period under it) plus two intervals for the next challenges.
pub fn permit_lifetime_ms(t: &Timing) -> u64 {
    t.watchdog_timeout_ms + 2 * t.interval_ms
}

/// A member grants permits while its own lease has less than this left (or none). Not only
/// once it expired: leases of a cluster-wide outage end up to one interval apart, and the
/// first host to run out needs its permits before its watchdog fires, from hosts whose leases
/// still run. A healthy host, whose renewal is confirmed half an interval after each write (the
/// cycle's read), keeps at least `2·interval + watchdog − latency` (the rule `lease ≥
/// 3.5·interval + watchdog`), so it never grants unless a cycle took more than half an interval
/// beyond that.
pub fn grant_below_ms(t: &Timing) -> u64 {
    t.watchdog_timeout_ms + t.interval_ms + t.interval_ms / 2
}

/// Why outage survival, switched on in the header, cannot work on host `host_id` with this
/// peer channel (None: it can, or it is off, or the host is no member). Such a host is doomed
/// in a cluster-wide outage exactly as without survival (safe), but the operator believes it is
/// protected: the daemon warns at start and in `status`, `outage-survival show` too.
pub fn survival_unusable(
    m: &Membership,
    host_id: u32,
    channel: Option<&ChannelParams>,
    t: &Timing,
) -> Option<String> {
    if !m.outage_survival {
        return None;
    }
    if m.members.is_empty() {
        return Some("outage survival is on in the volume header, but the membership is open (no majority to count), so it is ignored: list the members with `hbfence members add IDS` (every running host among them)".to_string());
    }
    if let Some(e) = m.survival_timing_error(t) {
        return Some(format!(
            "outage survival is on in the volume header, but the volume's timing breaks the rule \"{}\" ({}), so every agent ignores it and a storage outage longer than the lease reboots hosts as without survival; agents of this version refuse to start like this. Switch it off (`hbfence outage-survival off`), or move the cluster to a volume initialised with --lease-timeout {} or more",
            e.rule,
            e.detail,
            t.outage_survival_min_lease_ms() / 1000
        ));
    }
    if !m.contains(host_id) {
        return None;
    }
    let most = t.interval_ms / 2;
    match channel {
        None => Some(format!(
            "outage survival is on in the volume header, but this host (id {host_id}) has no [network] section: it cannot ask its peers for permits, so a storage outage longer than the lease reboots it as without survival (and its peers get no permit from it). Add [network] listen = \"ADDR:PORT\" and key_file (the cluster key, `hbfence keygen`), an address for every [[peer]], and restart the agent (docs/operations.md)"
        )),
        Some(c) if c.challenge_every_ms > most => Some(format!(
            "outage survival is on in the volume header, but [network] interval_ms = {} is above half the heartbeat interval ({most} ms): permits (each valid {} ms from its challenge) would not be renewed in time, so a storage outage longer than the lease reboots this host as without survival. Set interval_ms to at most {most} or remove it (default: half the interval), and restart the agent",
            c.challenge_every_ms,
            permit_lifetime_ms(t)
        )),
        Some(_) => None,
    }
}

/// A duration measured on a peer's clock, read on ours: 0.2 % (and 1 ms) less. Clock rates
/// differ by well under 0.1 %; the simulation draws them within ±0.1 % each.
fn rate_safe(ms: u64) -> u64 {
    ms.saturating_sub(ms / 500 + 1)
}

/// A peer's answers as evidence for the judge rule.
#[derive(Clone, Debug, Default)]
pub(super) struct PeerEvidence {
    /// The peer's lease had at least `grant_below_ms` left throughout [from, until) on this
    /// host's clock (so it granted no permit then), from a chain of its `LeaseValid` answers.
    pub(super) covered: Option<(u64, u64)>,
    /// Incarnation the chain is about (a restart breaks it).
    pub(super) incarnation: u64,
    /// Every members epoch the peer stated, with the first time one was received (rising).
    pub(super) epochs: Vec<(u32, u64)>,
    /// Its latest permit: (challenge sent at, received at, epoch).
    pub(super) permit: Option<(u64, u64, u32)>,
}

impl Agent {
    /// This host may survive an outage: the switch is on, the membership explicit and this
    /// host in it.
    pub(super) fn survival_enabled(&self) -> bool {
        let m = &self.membership;
        m.survival_on(&self.p.timing) && m.contains(self.p.host_id)
    }

    /// Why outage survival cannot work on this host with the membership it follows now.
    pub fn survival_warning(&self) -> Option<String> {
        survival_unusable(
            &self.membership,
            self.p.host_id,
            self.p.peer_channel.as_ref(),
            &self.p.timing,
        )
    }

    /// The claim this host answers with while running with a lease: a permit once the lease
    /// has less than `grant_below_ms` left, if it may survive; its lease otherwise.
    pub(super) fn running_claim(&self, now: u64) -> Claim {
        match self.lease_expiry() {
            None => Claim::Starting,
            Some(e) => {
                let remaining = e.saturating_sub(now);
                if self.survival_enabled() && remaining < grant_below_ms(&self.p.timing) {
                    Claim::Permit { remaining_ms: remaining }
                } else if remaining > 0 {
                    Claim::LeaseValid { remaining_ms: remaining }
                } else {
                    Claim::LeaseExpired
                }
            }
        }
    }

    /// Until when fresh permits of a strict majority of the members cover this host (None:
    /// no such majority, or survival off). A permit counts from when its challenge was sent.
    pub fn survival_until(&self) -> Option<u64> {
        if !self.survival_enabled() || self.doomed() {
            return None;
        }
        let m = &self.membership;
        let need = m.permits_needed();
        if need == 0 {
            return Some(u64::MAX);
        }
        let life = permit_lifetime_ms(&self.p.timing);
        let mut ends: Vec<u64> = self
            .evidence
            .iter()
            .filter(|(&id, _)| id != self.p.host_id && m.contains(id))
            .filter_map(|(_, e)| e.permit)
            .map(|(sent, received, _)| {
                let from = if self.p.knobs.permit_from_answer { received } else { sent };
                from.saturating_add(life)
            })
            .collect();
        if ends.len() < need {
            return None;
        }
        ends.sort_unstable_by(|a, b| b.cmp(a));
        Some(ends[need - 1])
    }

    /// What guards this host's pets: its lease, or while surviving the permits.
    pub fn guard_expiry(&self) -> Option<u64> {
        match (self.lease_expiry(), self.survival_until()) {
            (Some(l), Some(s)) => Some(l.max(s)),
            (l, None) => l,
            // Survival extends a lease; a host that never had one has nothing to extend.
            (None, Some(_)) => None,
        }
    }

    pub fn surviving_since(&self) -> Option<u64> {
        self.surviving_since
    }

    /// Survivals started and ended since this agent started (for metrics).
    pub fn survivals(&self) -> (u64, u64) {
        self.survivals
    }

    /// The `mono_ms` of the own record: the start of the verified cycle the current lease
    /// counts from (the cycle's start before the first lease). An agent restarted on this
    /// boot takes `mono_ms + lease_timeout` for the end of the lease its predecessor may still
    /// hold; a record that lands unverified (a write stuck until storage returns, seed 561;
    /// one written while surviving, seed 949) must not claim more than the lease that writer
    /// really held, or a restart would extend a reset that is due (S3).
    pub(super) fn record_mono_ms(&self) -> u64 {
        match self.lease_expiry() {
            Some(e) => e.saturating_sub(self.p.timing.lease_timeout_ms),
            None => self.now.mono,
        }
    }

    /// Survival starts when the lease runs out under permits and ends when a verified write
    /// renews the lease (storage is back) or the host is doomed.
    pub(super) fn update_survival(&mut self) {
        let now = self.now.mono;
        let surviving = matches!(self.phase, Phase::Running | Phase::Leaving)
            && !self.lease_valid(now)
            && self.guard_expiry().is_some_and(|g| now < g);
        match (self.surviving_since, surviving) {
            (None, true) => {
                self.surviving_since = Some(now);
                self.survivals.0 += 1;
                let m = &self.membership;
                let detail = format!(
                    "lease expired, surviving a cluster-wide outage: fresh permits from a majority of the {} members (epoch {})",
                    m.members.len(),
                    m.epoch
                );
                self.event(EventKind::SurvivalStarted, self.p.host_id, None, detail);
            }
            (Some(since), false) => {
                self.surviving_since = None;
                self.survivals.1 += 1;
                let how = if self.lease_valid(now) {
                    "storage is back: a verified write renewed the lease"
                } else {
                    "no fresh permits from a majority of the members: self-fencing"
                };
                let detail = format!("{how} (survived {} ms)", now.saturating_sub(since));
                self.event(EventKind::SurvivalEnded, self.p.host_id, None, detail);
            }
            _ => {}
        }
    }

    /// Evidence from one authenticated answer of `peer` (see `PeerEvidence`).
    pub(super) fn note_evidence(&mut self, peer: u32, a: &PeerAnswer) {
        let below = grant_below_ms(&self.p.timing);
        let e = self.evidence.entry(peer).or_default();
        if e.epochs.last().is_none_or(|&(last, _)| a.members_epoch > last) {
            e.epochs.push((a.members_epoch, a.received_at));
        }
        if let Claim::Permit { .. } = a.claim {
            if e.permit.is_none_or(|(sent, _, _)| a.challenge_sent_at > sent) {
                e.permit = Some((a.challenge_sent_at, a.received_at, a.members_epoch));
            }
        }
        // Answered at some instant in [sent, received] with `remaining` on its clock: at
        // least `below` left for `remaining - below` of its time after that instant, and
        // (its word) for `no_permit_ms` before it.
        let covered = match a.claim {
            Claim::LeaseValid { remaining_ms } if remaining_ms > below => {
                let until = a.challenge_sent_at + rate_safe(remaining_ms - below);
                let from = a.received_at.saturating_sub(rate_safe(a.no_permit_ms));
                (until > a.received_at).then_some((from, until))
            }
            _ => None,
        };
        e.covered = match (e.covered, covered) {
            (Some((from, until)), Some((f, u)))
                if e.incarnation == a.incarnation && f <= until && from <= u =>
            {
                Some((from.min(f), until.max(u)))
            }
            (_, c) => c,
        };
        e.incarnation = a.incarnation;
    }

    /// How long the own lease has had at least `grant_below_ms` left without a break, said
    /// with a `LeaseValid` claim (a judge's proof that this host granted no permit then).
    pub(super) fn no_permit_ms(&self, claim: Claim) -> u64 {
        let now = self.now.mono;
        let below = grant_below_ms(&self.p.timing);
        match claim {
            Claim::LeaseValid { remaining_ms } if remaining_ms >= below => {
                now.saturating_sub(self.lease_short_at)
            }
            _ => 0,
        }
    }

    /// The own lease had at least `grant_below_ms` left since `since` (no permit granted
    /// since). Called before a renewal moves the lease end from `old`.
    pub(super) fn note_renewal(&mut self, old: Option<u64>) {
        let below = grant_below_ms(&self.p.timing);
        if old.is_none_or(|e| e < self.now.mono + below) {
            self.lease_short_at = self.now.mono;
        }
    }

    /// The judge rule (amends S1): with survival on, `peer` may be declared fenced by the
    /// watchdog bound only if, in every membership it may hold, enough other members were
    /// provably on storage (granting no permit) throughout the window in which permits
    /// could have kept it alive. Err says why not.
    pub(super) fn survival_excluded(&self, peer: u32, peer_watchdog_ms: u64) -> Result<(), String> {
        if self.p.knobs.judge_ignores_survival {
            return Ok(());
        }
        // The newest membership any volume showed: a peer cannot hold a later one.
        let cur = self.memberships.keys().next_back().copied().unwrap_or(self.membership.epoch);
        let t = self.p.timing;
        let evidence = self.evidence_until();
        let window_from =
            evidence.saturating_sub(permit_lifetime_ms(&t) + peer_watchdog_ms + t.margin_ms);
        // The peer's epoch at the permits' time is at least what it stated in an answer
        // received before then; without one, the oldest membership this host knows.
        let oldest = self.memberships.keys().next().copied().unwrap_or(cur);
        let lowest = self
            .evidence
            .get(&peer)
            .and_then(|e| {
                e.epochs
                    .iter()
                    .rev()
                    .find(|&&(_, at)| at <= evidence.saturating_sub(2 * peer_watchdog_ms))
            })
            .map_or(oldest, |&(epoch, _)| epoch);
        if lowest > cur {
            return Err(format!("it stated members epoch {lowest}, newer than this host's {cur}"));
        }
        let now = self.now.mono;
        let below = grant_below_ms(&t);
        let own_covered = self.lease_short_at < window_from
            && self.lease_expiry().is_some_and(|e| e >= now + below);
        for epoch in lowest.max(oldest)..=cur {
            let Some(m) = self.memberships.get(&epoch) else {
                return Err(format!("members epoch {epoch} is unknown to this host"));
            };
            if !m.survival_on(&t) || !m.contains(peer) {
                continue;
            }
            let mut blockers: Vec<u32> = Vec::new();
            if own_covered && m.contains(self.p.host_id) {
                blockers.push(self.p.host_id);
            }
            for (&id, e) in &self.evidence {
                if id != peer
                    && m.contains(id)
                    && e.covered.is_some_and(|(from, until)| from <= window_from && until > now)
                {
                    blockers.push(id);
                }
            }
            if blockers.len() < m.blockers_needed() {
                return Err(format!(
                    "outage survival is on: only {} of the {} members of epoch {epoch} were provably on storage since {} ms ago (needs {}): it may be surviving on permits",
                    blockers.len(),
                    m.members.len(),
                    now.saturating_sub(window_from),
                    m.blockers_needed()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod warning_tests {
    use super::*;

    fn members(ids: &[u32], on: bool) -> Membership {
        Membership { members: ids.to_vec(), epoch: 1, outage_survival: on }
    }

    #[test]
    fn survival_that_cannot_work_on_this_host_is_named_with_what_to_set() {
        let t = Timing::default();
        let half = ChannelParams { challenge_every_ms: t.interval_ms / 2 };
        let slow = ChannelParams { challenge_every_ms: t.interval_ms / 2 + 1 };
        let three = members(&[1, 2, 3], true);
        // Survival on, a member, a channel fast enough: nothing to say.
        assert_eq!(survival_unusable(&three, 2, Some(&half), &t), None);
        // Off, or not a member: nothing either.
        assert_eq!(survival_unusable(&members(&[1, 2, 3], false), 2, None, &t), None);
        assert_eq!(survival_unusable(&three, 4, None, &t), None);
        let w = survival_unusable(&three, 2, None, &t).expect("no [network]");
        assert!(w.contains("no [network] section") && w.contains("listen"), "{w}");
        let w = survival_unusable(&three, 2, Some(&slow), &t).expect("interval_ms too long");
        assert!(w.contains(&format!("at most {}", t.interval_ms / 2)), "{w}");
        let w = survival_unusable(&members(&[], true), 2, Some(&half), &t).expect("open");
        assert!(w.contains("membership is open"), "{w}");
        // A timing that keeps a healthy host's lease over the permit threshold only without
        // survival (issue 12's one-read cycle): ignored by every host, and said so.
        let short = Timing { io_timeout_ms: 5_000, lease_timeout_ms: 25_000, ..t };
        short.validate().unwrap();
        assert!(three.survival_on(&t) && !three.survival_on(&short));
        let w = survival_unusable(&three, 2, Some(&half), &short).expect("timing");
        assert!(
            w.contains(crate::core::timing::OUTAGE_SURVIVAL_RULE)
                && w.contains("--lease-timeout 28 or more"),
            "{w}"
        );
    }
}
