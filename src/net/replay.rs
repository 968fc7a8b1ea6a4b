//! Replay protection of the peer channel, pure (time is passed in).
//!
//! An answer is believed only if it echoes a nonce this host sent to that very peer, not yet
//! answered, at most `max_age_ms` ago: a captured answer replayed later finds its nonce used
//! or forgotten, and an answer to another host's challenge names another receiver (checked in
//! `wire::decode`). A challenge carries no time (clocks are never compared, S2), so a replayed
//! one cannot be told from a new one by age; it is recognised while its nonce is among the last
//! few seen from that peer, and otherwise costs one answer that goes to the configured address
//! of the peer it names, which discards it (its nonce is not pending there).

use std::collections::{BTreeMap, VecDeque};

/// Challenges remembered per peer (asker side) and challenge nonces remembered per peer
/// (answerer side).
const REMEMBERED: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerCheck {
    /// Fresh: the time its challenge was sent.
    Accepted { challenge_sent_at: u64 },
    /// The nonce was answered already: a replay (or a duplicated datagram).
    Replayed,
    /// The nonce was sent longer ago than the bound: too late to mean anything.
    Stale,
    /// Never sent to this peer (or forgotten): a replay from long ago, or meant for another.
    UnknownNonce,
}

#[derive(Clone, Copy, Debug)]
struct Sent {
    nonce: [u8; 16],
    at: u64,
    answered: bool,
}

/// The asker's side: the challenges sent to each peer.
#[derive(Debug)]
pub struct Challenges {
    max_age_ms: u64,
    sent: BTreeMap<u32, VecDeque<Sent>>,
}

impl Challenges {
    pub fn new(max_age_ms: u64) -> Challenges {
        Challenges { max_age_ms, sent: BTreeMap::new() }
    }

    /// Records a challenge sent to `peer` at `at`.
    pub fn sent(&mut self, peer: u32, nonce: [u8; 16], at: u64) {
        let q = self.sent.entry(peer).or_default();
        // Kept a little beyond the bound, so a late answer is told apart as stale.
        while q.front().is_some_and(|s| s.at.saturating_add(2 * self.max_age_ms) < at) {
            q.pop_front();
        }
        if q.len() >= REMEMBERED {
            q.pop_front();
        }
        q.push_back(Sent { nonce, at, answered: false });
    }

    /// The latest challenge sent to `peer` is still unanswered (its answer may have been lost).
    pub fn awaiting(&self, peer: u32) -> bool {
        self.sent.get(&peer).and_then(|q| q.back()).is_some_and(|s| !s.answered)
    }

    /// Checks an (authenticated) answer of `peer` echoing `nonce`, received at `now`; an
    /// accepted answer uses the nonce up.
    pub fn answer(&mut self, peer: u32, nonce: &[u8; 16], now: u64) -> AnswerCheck {
        let Some(s) =
            self.sent.get_mut(&peer).and_then(|q| q.iter_mut().find(|s| s.nonce == *nonce))
        else {
            return AnswerCheck::UnknownNonce;
        };
        if s.answered {
            return AnswerCheck::Replayed;
        }
        if now.saturating_sub(s.at) > self.max_age_ms {
            return AnswerCheck::Stale;
        }
        s.answered = true;
        AnswerCheck::Accepted { challenge_sent_at: s.at }
    }
}

/// The answerer's side: the challenge nonces recently seen from each peer.
#[derive(Debug, Default)]
pub struct SeenChallenges {
    seen: BTreeMap<u32, VecDeque<[u8; 16]>>,
}

impl SeenChallenges {
    /// True if this challenge is new (and remembers it); false for one seen recently.
    pub fn first_time(&mut self, peer: u32, nonce: [u8; 16]) -> bool {
        let q = self.seen.entry(peer).or_default();
        if q.contains(&nonce) {
            return false;
        }
        if q.len() >= REMEMBERED {
            q.pop_front();
        }
        q.push_back(nonce);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_counts_once_for_its_own_peer_within_the_bound() {
        let mut c = Challenges::new(1_000);
        c.sent(2, [1; 16], 100);
        c.sent(3, [2; 16], 100);
        assert_eq!(c.answer(3, &[1; 16], 150), AnswerCheck::UnknownNonce, "sent to host 2");
        assert_eq!(c.answer(2, &[1; 16], 150), AnswerCheck::Accepted { challenge_sent_at: 100 });
        assert_eq!(c.answer(2, &[1; 16], 160), AnswerCheck::Replayed);
        assert_eq!(c.answer(2, &[9; 16], 160), AnswerCheck::UnknownNonce, "never sent");
        assert_eq!(c.answer(3, &[2; 16], 1_101), AnswerCheck::Stale, "older than the bound");
        // A stale nonce stays unusable.
        assert_eq!(c.answer(3, &[2; 16], 1_102), AnswerCheck::Stale);
    }

    #[test]
    fn the_answer_to_an_older_challenge_keeps_its_own_send_time() {
        let mut c = Challenges::new(1_000);
        c.sent(2, [1; 16], 100);
        c.sent(2, [2; 16], 600);
        assert_eq!(c.answer(2, &[2; 16], 610), AnswerCheck::Accepted { challenge_sent_at: 600 });
        assert_eq!(c.answer(2, &[1; 16], 620), AnswerCheck::Accepted { challenge_sent_at: 100 });
    }

    #[test]
    fn memory_is_bounded_and_old_nonces_are_forgotten() {
        let mut c = Challenges::new(1_000);
        for i in 0..100u8 {
            c.sent(2, [i; 16], 10_000 + u64::from(i));
        }
        assert!(c.sent[&2].len() <= REMEMBERED);
        assert_eq!(c.answer(2, &[0; 16], 10_200), AnswerCheck::UnknownNonce);
        c.sent(2, [200; 16], 50_000);
        assert_eq!(c.sent[&2].len(), 1, "everything older than twice the bound is dropped");
    }

    #[test]
    fn a_peer_is_awaited_until_it_answers_the_latest_challenge() {
        let mut c = Challenges::new(1_000);
        assert!(!c.awaiting(2), "nothing sent");
        c.sent(2, [1; 16], 100);
        assert!(c.awaiting(2));
        assert_eq!(c.answer(2, &[1; 16], 110), AnswerCheck::Accepted { challenge_sent_at: 100 });
        assert!(!c.awaiting(2));
        c.sent(2, [2; 16], 600);
        c.sent(2, [3; 16], 700);
        assert!(c.answer(2, &[2; 16], 710) == AnswerCheck::Accepted { challenge_sent_at: 600 });
        assert!(c.awaiting(2), "an answer to an older challenge does not answer the latest");
    }

    #[test]
    fn a_repeated_challenge_is_recognised() {
        let mut s = SeenChallenges::default();
        assert!(s.first_time(2, [1; 16]));
        assert!(!s.first_time(2, [1; 16]));
        assert!(s.first_time(3, [1; 16]), "per peer");
        for i in 2..=(REMEMBERED as u8 + 1) {
            assert!(s.first_time(2, [i; 16]));
        }
        assert!(s.first_time(2, [1; 16]), "forgotten after {REMEMBERED} newer ones");
    }
}
