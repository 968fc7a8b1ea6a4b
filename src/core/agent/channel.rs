//! The peer channel as the core sees it (issue 13, part 1): what this host claims about its own
//! lease when a peer challenges it, and what each peer last answered to this host's own
//! challenges. The driver (`crate::net`) authenticates, de-duplicates and times the packets;
//! the core only answers from its live state and keeps the latest answer per peer. Nothing
//! here changes a lease, doom, pet or fencing decision.

use super::*;

/// What a host says about its own lease when challenged, computed by its decision core at the
/// moment it answers (a hung core answers nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Probing the volume, or running without having held a lease yet.
    Starting,
    /// The own lease is valid for this long after the answer was made, on the answerer's own
    /// clock (a duration, never a point in time: S2).
    LeaseValid { remaining_ms: u64 },
    /// The own lease expired and the host is not (yet) doomed.
    LeaseExpired,
    /// Resetting itself: it never pets again (S3).
    Doomed,
    /// Outage survival: the own lease has less than `grant_below_ms` left (or none), so the
    /// asker may count this answer towards its majority (a permit). `remaining_ms` as in
    /// `LeaseValid` (0 once expired).
    Permit { remaining_ms: u64 },
    /// Stopping cleanly (writing `leaving`).
    Leaving,
}

impl Claim {
    pub fn as_str(self) -> &'static str {
        match self {
            Claim::Starting => "starting",
            Claim::LeaseValid { .. } => "lease-valid",
            Claim::LeaseExpired => "lease-expired",
            Claim::Doomed => "doomed",
            Claim::Leaving => "leaving",
            Claim::Permit { .. } => "permit",
        }
    }
}

/// What the driver needs to answer a challenge: opaque to the core, handed back unchanged in
/// [`Action::AnswerPeer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChallengeToken {
    pub nonce: [u8; 16],
}

/// `[network]` as the core needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelParams {
    /// How often the driver challenges every peer.
    pub challenge_every_ms: u64,
}

/// A peer is reachable while it answered a challenge sent within this many challenge periods:
/// two lost datagrams in a row do not make it unreachable, a third does.
pub const REACHABLE_PERIODS: u64 = 3;

/// The latest accepted answer of a peer to one of this host's challenges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAnswer {
    pub claim: Claim,
    /// When this host sent the challenge answered (local CLOCK_BOOTTIME): freshness counts
    /// from here, so a delayed answer cannot look younger than the question.
    pub challenge_sent_at: u64,
    pub received_at: u64,
    /// The answering agent's boot id and incarnation (a restart is a new incarnation).
    pub boot_id: BootId,
    pub incarnation: u64,
    /// The members epoch the answering agent holds.
    pub members_epoch: u32,
    /// With `LeaseValid`: for how long before answering its lease had at least
    /// `grant_below_ms` left without a break (it granted no permit then), on its clock.
    pub no_permit_ms: u64,
}

#[derive(Clone, Debug, Default)]
pub(super) struct ChannelPeer {
    pub(super) last: Option<PeerAnswer>,
    /// Reachable as last evaluated.
    pub(super) reachable: bool,
    /// It was reachable once in this run: from then on every change is news.
    pub(super) answered_once: bool,
}

/// A peer's state on the channel, for status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelView {
    pub reachable: bool,
    pub last: Option<PeerAnswer>,
}

impl Agent {
    /// What this host answers a challenge with right now (see [`Claim`]).
    pub fn peer_claim(&self, now: u64) -> Claim {
        match self.phase {
            Phase::Probing { .. } => Claim::Starting,
            Phase::Leaving | Phase::Exited => Claim::Leaving,
            Phase::Doomed { .. } => Claim::Doomed,
            Phase::Running => self.running_claim(now),
        }
    }

    /// How long after the challenge it answered a peer stays reachable.
    fn reachable_window(&self) -> Option<u64> {
        self.p.peer_channel.map(|c| REACHABLE_PERIODS * c.challenge_every_ms)
    }

    pub(super) fn peer_challenged(&mut self, peer: u32, token: ChallengeToken) {
        // Without [network] nothing challenges; an input the driver should not send is ignored.
        if self.p.peer_channel.is_none() || self.phase == Phase::Exited {
            return;
        }
        let claim = self.peer_claim(self.now.mono);
        // The membership followed now, not the one at start: an asker counts only permits of
        // its own epoch.
        let members_epoch = self.membership.epoch;
        let no_permit_ms = self.no_permit_ms(claim);
        self.actions.push(Action::AnswerPeer { peer, token, claim, members_epoch, no_permit_ms });
    }

    pub(super) fn peer_answered(&mut self, peer: u32, answer: PeerAnswer) {
        if self.p.peer_channel.is_none() {
            return;
        }
        self.note_evidence(peer, &answer);
        let entry = self.channel.entry(peer).or_default();
        // Datagrams may be reordered: the answer to the newest challenge is the one that counts.
        if entry.last.is_none_or(|l| answer.challenge_sent_at >= l.challenge_sent_at) {
            entry.last = Some(answer);
        }
    }

    fn channel_reachable_now(&self, peer: &ChannelPeer, now: u64) -> bool {
        match (peer.last, self.reachable_window()) {
            (Some(a), Some(w)) => now < a.challenge_sent_at.saturating_add(w),
            _ => false,
        }
    }

    /// Transitions of reachability become events, except a peer's first answer in this run:
    /// silence before it (agents starting one after the other, a peer not yet up) and the
    /// first answer itself are start-up noise (a cluster of 250 would otherwise start with
    /// 249 events per host), as `cluster_seen` spares `host_up`.
    pub(super) fn update_channel(&mut self) {
        let now = self.now.mono;
        let changes: Vec<(u32, bool)> = self
            .channel
            .iter()
            .filter_map(|(&id, p)| {
                let r = self.channel_reachable_now(p, now);
                (r != p.reachable).then_some((id, r))
            })
            .collect();
        for (id, reachable) in changes {
            let window = self.reachable_window().unwrap_or(0);
            let entry = self.channel.entry(id).or_default();
            entry.reachable = reachable;
            let first_answer = !std::mem::replace(&mut entry.answered_once, true);
            let age = entry.last.map_or(0, |a| now.saturating_sub(a.received_at));
            if first_answer {
                continue;
            }
            if reachable {
                self.event(
                    EventKind::PeerReachable,
                    id,
                    None,
                    "answers this host's challenges on the peer channel".into(),
                );
            } else {
                self.event(
                    EventKind::PeerUnreachable,
                    id,
                    None,
                    format!(
                        "no answer on the peer channel to a challenge of the last {window} ms (last answer {age} ms ago)"
                    ),
                );
            }
        }
    }

    /// When the next reachable peer turns unreachable unless it answers again.
    pub(super) fn channel_deadline(&self) -> Option<u64> {
        let w = self.reachable_window()?;
        self.channel
            .values()
            .filter(|p| p.reachable)
            .filter_map(|p| p.last.map(|a| a.challenge_sent_at.saturating_add(w)))
            .min()
    }

    /// Every peer that ever answered on the channel, with its reachability now.
    pub fn channel_views(&self) -> BTreeMap<u32, ChannelView> {
        self.channel
            .iter()
            .map(|(&id, p)| (id, ChannelView { reachable: p.reachable, last: p.last }))
            .collect()
    }

    /// Partial blip (issue 13): until when `peer`'s run `incarnation` may still hold a valid
    /// lease by its own live core's word, if it is reachable and said so. Its lease ends at the
    /// latest `remaining_ms` after the answer was received (it was computed before); `margin`
    /// covers the two clocks' rate difference. A peer silent on the channel claims nothing.
    pub(super) fn lease_claimed_until(&self, peer: u32, incarnation: u64, now: u64) -> Option<u64> {
        let p = self.channel.get(&peer)?;
        let a = p.last?;
        if a.incarnation != incarnation || !self.channel_reachable_now(p, now) {
            return None;
        }
        match a.claim {
            Claim::LeaseValid { remaining_ms } | Claim::Permit { remaining_ms }
                if remaining_ms > 0 =>
            {
                Some(a.received_at + remaining_ms + self.p.timing.margin_ms)
            }
            _ => None,
        }
    }

    /// How long ago `peer`'s live core last answered, if it answers on the channel now as
    /// this `incarnation`: an authenticated answer proves the host is powered on.
    pub(super) fn answering_now(&self, peer: u32, incarnation: u64, now: u64) -> Option<u64> {
        let p = self.channel.get(&peer)?;
        let a = p.last?;
        (a.incarnation == incarnation && self.channel_reachable_now(p, now))
            .then(|| now.saturating_sub(a.received_at))
    }

    /// The latest accepted answer of `peer`, if any (what outage survival and the partial-blip
    /// rule build on).
    pub fn peer_answer(&self, peer: u32) -> Option<PeerAnswer> {
        self.channel.get(&peer).and_then(|p| p.last)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::params;
    use super::*;

    const PERIOD: u64 = 500;

    fn agent() -> Agent {
        let p = AgentParams {
            peer_channel: Some(ChannelParams { challenge_every_ms: PERIOD }),
            ..params(1)
        };
        Agent::new(p, Now { mono: 1_000, wall: 0 })
    }

    fn at(mono: u64) -> Now {
        Now { mono, wall: 0 }
    }

    fn answer(sent: u64, received: u64, claim: Claim) -> Input {
        Input::PeerAnswer {
            peer: 2,
            answer: PeerAnswer {
                claim,
                challenge_sent_at: sent,
                received_at: received,
                boot_id: [7; 16],
                incarnation: 9,
                members_epoch: 0,
                no_permit_ms: 0,
            },
        }
    }

    fn channel_events(actions: &[Action]) -> Vec<EventKind> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event(e)
                    if matches!(e.kind, EventKind::PeerReachable | EventKind::PeerUnreachable) =>
                {
                    Some(e.kind)
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_challenge_is_answered_from_the_live_phase() {
        let mut a = agent();
        let token = ChallengeToken { nonce: [3; 16] };
        let out = a.handle(at(1_010), Input::PeerChallenge { peer: 2, token });
        assert!(
            out.contains(&Action::AnswerPeer {
                peer: 2,
                token,
                claim: Claim::Starting,
                members_epoch: 0,
                no_permit_ms: 0,
            }),
            "a probing host says it is starting: {out:?}"
        );
        assert_eq!(a.peer_claim(1_010), Claim::Starting);
    }

    #[test]
    fn without_a_network_section_nothing_is_answered() {
        let mut a = Agent::new(params(1), at(1_000));
        let out = a.handle(
            at(1_010),
            Input::PeerChallenge { peer: 2, token: ChallengeToken { nonce: [1; 16] } },
        );
        assert!(!out.iter().any(|a| matches!(a, Action::AnswerPeer { .. })), "{out:?}");
        a.handle(at(1_020), answer(1_000, 1_010, Claim::Starting));
        assert!(a.channel_views().is_empty());
    }

    #[test]
    fn reachability_changes_are_events_and_the_start_is_not() {
        let mut a = agent();
        // Long silence before any answer, and the first answer: no event.
        let out = a.handle(at(10_000), Input::Tick);
        assert!(channel_events(&out).is_empty(), "{out:?}");
        let out = a.handle(at(10_020), answer(10_000, 10_010, Claim::Starting));
        assert!(channel_events(&out).is_empty(), "{out:?}");
        assert!(a.channel_views()[&2].reachable);
        // Answers keep it reachable; no repeated event.
        let out = a.handle(at(10_520), answer(10_500, 10_510, Claim::Starting));
        assert!(channel_events(&out).is_empty(), "{out:?}");
        // Reachable until 3 periods after the newest challenge answered, not after the answer.
        assert_eq!(a.channel_deadline(), Some(10_500 + REACHABLE_PERIODS * PERIOD));
        assert!(a.next_deadline() <= 10_500 + REACHABLE_PERIODS * PERIOD);
        let out = a.handle(at(11_999), Input::Tick);
        assert!(channel_events(&out).is_empty(), "{out:?}");
        let out = a.handle(at(12_000), Input::Tick);
        assert_eq!(channel_events(&out), vec![EventKind::PeerUnreachable]);
        assert!(!a.channel_views()[&2].reachable);
        let out = a.handle(at(12_100), Input::Tick);
        assert!(channel_events(&out).is_empty(), "reported once: {out:?}");
        let out = a.handle(at(13_020), answer(13_000, 13_010, Claim::Starting));
        assert_eq!(channel_events(&out), vec![EventKind::PeerReachable]);
    }

    #[test]
    fn a_late_answer_to_an_old_challenge_neither_replaces_a_newer_one_nor_revives_a_peer() {
        let mut a = agent();
        a.handle(at(10_020), answer(10_000, 10_010, Claim::LeaseValid { remaining_ms: 5_000 }));
        a.handle(at(10_030), answer(9_500, 10_025, Claim::LeaseExpired));
        let last = a.peer_answer(2).unwrap();
        assert_eq!(last.challenge_sent_at, 10_000);
        assert_eq!(last.claim, Claim::LeaseValid { remaining_ms: 5_000 });
        a.handle(at(12_000), Input::Tick);
        assert!(!a.channel_views()[&2].reachable);
        // An answer received now to a challenge sent long ago does not make it reachable.
        let out = a.handle(at(12_100), answer(10_400, 12_090, Claim::Starting));
        assert!(channel_events(&out).is_empty(), "{out:?}");
        assert!(!a.channel_views()[&2].reachable);
    }
}
