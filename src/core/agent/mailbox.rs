//! Mailbox commands: fence requests to this host, operator `clear` / `confirm-off` for peers.

use super::*;
use crate::core::readplan::IdSet;

impl Agent {
    pub(super) fn mailboxes(&mut self, v: usize, view: &VolumeView) {
        let own_id = self.p.host_id;
        // Messages on a volume at its first successful read (whenever that happens: it may
        // have been unreadable at start) and messages seen while probing are history.
        let first_read = !std::mem::replace(&mut self.vols[v].mailbox_baseline, true);
        let probing = matches!(self.phase, Phase::Probing { .. }) || first_read;
        let coordinator = self.is_coordinator();
        let read_before = self.vols[v].mailboxes_read_before;
        for m in &view.mailboxes {
            // Every volume may hold another message: remember each nonce, not just the last,
            // so a lagging volume never replays an old command.
            let seen = self.mailbox_seen.entry(m.host_id).or_default();
            if seen.contains(&m.nonce) {
                continue;
            }
            if seen.len() >= MAILBOX_HISTORY {
                seen.remove(0);
            }
            seen.push(m.nonce);
            if probing || !read_before.contains(m.host_id) {
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
        // Only the mailboxes this read showed: one that drops out of the reads (the coordinator
        // reads a peer's only while it has business with it) is history again when it comes
        // back, or an old `clear` written meanwhile would cancel the fencing of a host that
        // stopped later, and an old `confirm-off` would declare it fenced (S1).
        let read_before = &mut self.vols[v].mailboxes_read_before;
        match &view.mailboxes_read {
            Some(read) => *read_before = **read,
            None => (1..=self.p.max_hosts).for_each(|id| read_before.insert(id)),
        }
    }

    /// The peers' mailboxes this host reads besides its own (`core::readplan`): as
    /// coordinator, those of the peers an operator's `clear` or `confirm-off` can concern, the
    /// ones it holds suspect, fences or has a verdict about (`confirm-off` is taken only for
    /// a suspect host, and `clear` changes nothing for a host that is alive and without a
    /// verdict: its next write ends a cleared state anyway). Everyone else's mailbox is not
    /// read, so a cluster without trouble costs the coordinator no more reads than any host.
    pub fn peer_mailboxes(&self) -> IdSet {
        let mut set = IdSet::default();
        if !self.is_coordinator() {
            return set;
        }
        for (&id, peer) in &self.peers {
            if peer.status == Some(PeerStatus::Suspect) {
                set.insert(id);
            }
        }
        self.verdicts.keys().chain(self.fences.keys()).for_each(|&id| set.insert(id));
        set
    }

    pub(super) fn own_message(&mut self, m: &format::Mailbox) {
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

    pub(super) fn operator_message(&mut self, m: &format::Mailbox) {
        let id = m.host_id;
        // Staleness by evidence now: a read that shows the peer's progress and the message
        // together must not find it "suspect" only because its status is updated later.
        let stale = self.peers.get(&id).map_or(0, |p| self.stale_ms(p));
        let suspect_after = self.p.timing.suspect_after_ms;
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let Some(current) = peer.record.as_ref().map(|r| (r.incarnation, r.seq)) else { return };
        // The operator named an incarnation: a host that rebooted since is another host now.
        if m.target_incarnation != 0 && m.target_incarnation != current.0 {
            return;
        }
        match m.command {
            Command::Clear => {
                // A clear ends only what its issuer could have seen: a `fenced` verdict stamped
                // after the table it read was reached after it was typed (a power-off confirmed
                // meanwhile, soak seed 1640719), and the host IS off. Unknown on either side
                // (an older hbfence's message, an unstamped entry): today's meaning.
                if let Some(v) = self.verdicts.get(&id).filter(|v| {
                    v.kind == VerdictKind::Fenced
                        && v.changed_gen != 0
                        && m.seen_verdict_gen.is_some_and(|seen| v.changed_gen > seen)
                }) {
                    let detail = format!(
                        "clear not applied: the fenced verdict ({}, generation {}) was reached after the command read the verdicts (generation {}); clear again to withdraw it",
                        v.method.as_str(),
                        v.changed_gen,
                        m.seen_verdict_gen.unwrap_or(0)
                    );
                    self.event(EventKind::Alarm, id, None, detail);
                    return;
                }
                peer.cleared_at = Some(current);
                self.fences.remove(&id);
                if self.verdicts.remove(&id).is_some() {
                    self.table_changed();
                }
            }
            Command::ConfirmOff => {
                // S1: an operator's word counts only for a host that stopped (suspect here);
                // a heartbeat that still advances proves the host is up, whatever was typed.
                if peer.status != Some(PeerStatus::Suspect) || stale < suspect_after {
                    let status = match peer.status {
                        Some(PeerStatus::Suspect) => "making progress again",
                        other => other.unwrap_or(PeerStatus::Absent).as_str(),
                    };
                    self.event(
                        EventKind::Alarm,
                        id,
                        None,
                        format!("confirm-off refused: the host is {status}, not suspect (its heartbeat advanced within suspect_after)"),
                    );
                    return;
                }
                // Its live core still answers on the peer channel: it is up, whatever was
                // typed (soak seed 105688: storage stalled, suspect, and running).
                if let Some(ago) = self.answering_now(id, current.0, self.now.mono) {
                    self.event(
                        EventKind::Alarm,
                        id,
                        None,
                        format!("confirm-off refused: the host answered on the peer channel {ago} ms ago, so it is running; power it off for real first (it then falls silent), or let the coordinator fence it"),
                    );
                    return;
                }
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
}
