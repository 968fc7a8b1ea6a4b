//! Mailbox commands: fence requests to this host, operator `clear` / `confirm-off` for peers.

use super::*;

impl Agent {
    pub(super) fn mailboxes(&mut self, view: &VolumeView) {
        let own_id = self.p.host_id;
        let probing = matches!(self.phase, Phase::Probing { .. });
        let coordinator = self.is_coordinator();
        for m in &view.mailboxes {
            // Every volume may hold another message: remember each nonce, not just the last,
            // so a lagging volume never replays an old command. Messages already on any volume
            // while this agent probes are history and never obeyed.
            let seen = self.mailbox_seen.entry(m.host_id).or_default();
            if seen.contains(&m.nonce) {
                continue;
            }
            if seen.len() >= MAILBOX_HISTORY {
                seen.remove(0);
            }
            seen.push(m.nonce);
            if probing {
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
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let Some(current) = peer.record.as_ref().map(|r| (r.incarnation, r.seq)) else { return };
        // The operator named an incarnation: a host that rebooted since is another host now.
        if m.target_incarnation != 0 && m.target_incarnation != current.0 {
            return;
        }
        match m.command {
            Command::Clear => {
                peer.cleared_at = Some(current);
                self.fences.remove(&id);
                if self.verdicts.remove(&id).is_some() {
                    self.verdict_gen += 1;
                }
            }
            Command::ConfirmOff => {
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
