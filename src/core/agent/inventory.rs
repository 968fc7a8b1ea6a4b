//! The VM inventory (issue 15): the own list (collected by the daemon's inventory thread,
//! published through the volumes only while the lease is valid), the peers' lists (fetched by
//! the I/O threads when a heartbeat names a new generation), what a `fenced` event carries,
//! and the `vm_duplicate` alarm.

use super::*;
use crate::core::format::{inventory_flags, Domain, Inventory};
use crate::core::inventory::{self, Collected, Duplicate, VmReport, VmsView};
use std::sync::Arc;

/// This host's own list, as collected.
#[derive(Clone, Debug, Default)]
pub(super) struct OwnInventory {
    /// +1 on every change of the list (0: none collected yet).
    gen: u32,
    domains: Vec<Domain>,
    overflow: bool,
    seen: u16,
    /// The latest collection failed; `domains` is the last good list.
    stale: Option<String>,
    collected_at: u64,
    collected_wall: u64,
}

/// What one volume holds (or is being sent) of the own inventory: generation, count, the
/// list's flags and which set of blocks.
pub(super) type OnVolume = (u32, u16, u16, bool);

/// The `vm_duplicate` state: which lists it was computed from, and the duplicates found.
#[derive(Clone, Debug, Default)]
pub(super) struct DuplicateWatch {
    inputs: Vec<(u32, u64, u32, u16)>,
    pub(super) current: Vec<Duplicate>,
}

impl Agent {
    /// The inventory thread's result. Without a source (`[inventory] source = "none"`) there
    /// is nothing to publish: the heartbeat says "no inventory", never "no VMs".
    pub(super) fn inventory_collected(&mut self, c: Collected) {
        if !self.p.inventory {
            return;
        }
        let own = &mut self.inventory;
        match c {
            Collected::Domains(all) => {
                let (list, overflow, seen) = inventory::bound(all);
                let seen = u16::try_from(seen).unwrap_or(u16::MAX);
                let newly_overflowing = overflow && !own.overflow;
                if own.gen == 0
                    || list != own.domains
                    || overflow != own.overflow
                    || seen != own.seen
                {
                    own.gen += 1;
                    own.domains = list;
                    own.overflow = overflow;
                    own.seen = seen;
                }
                own.stale = None;
                own.collected_at = self.now.mono;
                own.collected_wall = self.now.wall;
                if newly_overflowing {
                    let me = self.p.host_id;
                    self.event(
                        EventKind::Alarm,
                        me,
                        None,
                        format!(
                            "inventory overflow: {seen} domains run here, the volume holds {}; the published list is flagged incomplete",
                            format::MAX_DOMAINS
                        ),
                    );
                }
            }
            Collected::Failed(why) => own.stale = Some(why),
        }
    }

    /// The own list as `status` shows it.
    pub fn own_vms(&self) -> VmReport {
        let own = &self.inventory;
        if !self.p.inventory || own.gen == 0 {
            return VmReport { inventory: "none", ..VmReport::default() };
        }
        VmReport {
            inventory: inventory::inventory_word(self.own_list_flags()),
            age_ms: Some(self.now.mono.saturating_sub(own.collected_at)),
            domains: own.domains.clone(),
        }
    }

    /// Why the latest collection failed, if it did.
    pub fn inventory_error(&self) -> Option<&str> {
        self.inventory.stale.as_deref()
    }

    fn own_list_flags(&self) -> u16 {
        let own = &self.inventory;
        let mut f = inventory_flags::PUBLISHED;
        if own.overflow {
            f |= inventory_flags::OVERFLOW;
        }
        if own.stale.is_some() {
            f |= inventory_flags::STALE;
        }
        f
    }

    /// Fills `record`'s inventory fields for volume `v`: the current list when the volume
    /// holds it or may get it now (with the list attached for the I/O thread to write into
    /// the set the volume's heartbeat does not name), else what the volume holds. Written only
    /// while running with a valid lease, so a fenced host's last list is what it ran.
    pub(super) fn attach_inventory(&mut self, v: usize, record: &mut Heartbeat) {
        self.vols[v].inventory_in_flight = None;
        let own = &self.inventory;
        if !self.p.inventory || own.gen == 0 {
            return;
        }
        let count = own.domains.len() as u16;
        let list_flags = if own.overflow { inventory_flags::OVERFLOW } else { 0 };
        let on_volume = self.vols[v].inventory_on_volume;
        let age = self.now.mono.saturating_sub(own.collected_at);
        let live = self.own_list_flags() & inventory_flags::STALE;
        let (gen, count, flags, set_1) = match on_volume {
            Some((gen, ..)) if gen == own.gen => on_volume.unwrap_or_default(),
            _ if self.phase == Phase::Running && self.lease_valid(self.now.mono) => {
                let set_1 = !on_volume.is_some_and(|o| o.3);
                record.inventory.write = Some(Box::new(Inventory {
                    cluster: self.p.cluster,
                    host_id: self.p.host_id,
                    incarnation: self.p.incarnation,
                    gen: own.gen,
                    flags: list_flags,
                    seen: own.seen,
                    collected_wall_ms: own.collected_wall,
                    domains: own.domains.clone(),
                }));
                let sent = (own.gen, count, list_flags, set_1);
                self.vols[v].inventory_in_flight = Some(sent);
                sent
            }
            Some(held) => held,
            None => return,
        };
        record.inventory.gen = gen;
        record.inventory.count = count;
        record.inventory.flags = inventory_flags::PUBLISHED
            | flags
            | live
            | if set_1 { inventory_flags::SET_1 } else { 0 };
        record.inventory.age_ms = u32::try_from(age).unwrap_or(u32::MAX);
    }

    /// A verified write: the volume now holds what was sent with it.
    pub(super) fn inventory_written(&mut self, v: usize) {
        if let Some(sent) = self.vols[v].inventory_in_flight.take() {
            self.vols[v].inventory_on_volume = Some(sent);
        }
    }

    /// Keeps the peers' lists the I/O thread fetched: only one of a record's own incarnation,
    /// and never an older generation over a newer one.
    pub(super) fn take_inventories(&mut self, lists: &[Arc<Inventory>]) {
        for list in lists {
            let Some(peer) = self.peers.get_mut(&list.host_id) else { continue };
            let Some(r) = peer.record.as_ref() else { continue };
            if r.incarnation != list.incarnation || list.gen > r.inventory.gen {
                continue;
            }
            let newer = peer
                .inventory
                .as_ref()
                .is_none_or(|have| have.incarnation != list.incarnation || have.gen < list.gen);
            if newer {
                peer.inventory = Some(Arc::clone(list));
                self.duplicates_due = true;
            }
        }
    }

    /// A peer's list as this host knows it now.
    pub fn peer_vms(&self, id: u32) -> VmReport {
        self.peers
            .get(&id)
            .map(|p| self.vms_view(p).report())
            .unwrap_or_else(|| VmReport { inventory: "none", ..VmReport::default() })
    }

    pub(super) fn vms_view(&self, p: &Peer) -> VmsView {
        let none = VmsView { inventory: "none", ..VmsView::default() };
        let Some(r) = p.record.as_ref() else { return none };
        let info = &r.inventory;
        let word = inventory::inventory_word(info.flags);
        if word == "none" {
            return none;
        }
        // Its age at the host's last heartbeat, plus the time since this host read that
        // heartbeat (each measured on one host's own clock: S2).
        let age_ms = Some(u64::from(info.age_ms) + self.now.mono.saturating_sub(p.last_change));
        match &p.inventory {
            Some(l) if l.incarnation == r.incarnation && l.gen == info.gen => {
                VmsView { inventory: word, age_ms, list: Some(Arc::clone(l)) }
            }
            _ if info.count == 0 => VmsView { inventory: word, age_ms, list: None },
            _ => VmsView { inventory: "unread", age_ms, list: None },
        }
    }

    /// The VMs a `fenced` event carries for `host`.
    pub(super) fn vms_for_event(&self, host: u32) -> VmReport {
        if host == self.p.host_id {
            self.own_vms()
        } else {
            self.peer_vms(host)
        }
    }

    /// The domains running on two live hosts now (the `vm_duplicate` alarm's state).
    pub fn vm_duplicates(&self) -> &[Duplicate] {
        &self.duplicates.current
    }

    /// `vm_duplicate`: a UUID in the lists of two hosts alive now (this host, and peers judged
    /// alive without a `fenced` verdict about their current incarnation: a fenced host's last
    /// list is what it ran, and its VMs are expected to start elsewhere). Recomputed only when
    /// a list or the set of live hosts changed; each new duplicate is one event, raised by the
    /// hosts running the domain and by the coordinator.
    pub(super) fn check_duplicates(&mut self) {
        // A cluster without inventories (no source here, no peer list) has nothing to compare:
        // no allocation on every step.
        if self.inventory.gen == 0
            && self.duplicates.current.is_empty()
            && self.peers.values().all(|p| p.inventory.is_none())
        {
            return;
        }
        let mut inputs = Vec::new();
        if self.p.inventory && self.inventory.gen > 0 {
            inputs.push((self.p.host_id, self.p.incarnation, self.inventory.gen, 0));
        }
        for (&id, p) in &self.peers {
            let (Some(r), Some(list)) = (p.record.as_ref(), p.inventory.as_ref()) else { continue };
            let fenced = self
                .verdicts
                .get(&id)
                .is_some_and(|v| v.kind == VerdictKind::Fenced && v.incarnation == r.incarnation);
            if p.status == Some(PeerStatus::Alive) && !fenced && list.incarnation == r.incarnation {
                inputs.push((id, list.incarnation, list.gen, 1));
            }
        }
        if inputs == self.duplicates.inputs && !std::mem::take(&mut self.duplicates_due) {
            return;
        }
        self.duplicates_due = false;
        let own: &[Domain] = &self.inventory.domains;
        let lists = inputs.iter().filter_map(|&(id, _, _, peer)| {
            if peer == 0 {
                Some((id, own))
            } else {
                self.peers
                    .get(&id)
                    .and_then(|p| p.inventory.as_deref())
                    .map(|l| (id, &l.domains[..]))
            }
        });
        let found = inventory::duplicates(lists);
        let new: Vec<Duplicate> =
            found.iter().filter(|d| !self.duplicates.current.contains(d)).cloned().collect();
        self.duplicates = DuplicateWatch { inputs, current: found };
        let me = self.p.host_id;
        for d in new {
            let involved = d.hosts.iter().any(|h| h.0 == me);
            if !involved && !self.is_coordinator() {
                continue;
            }
            let hosts: Vec<String> = d
                .hosts
                .iter()
                .map(|(id, name, state)| {
                    let host_name = if *id == me {
                        self.p.name.clone()
                    } else {
                        self.peers
                            .get(id)
                            .and_then(|p| p.record.as_ref())
                            .map(|r| r.name.clone())
                            .unwrap_or_default()
                    };
                    format!("host {id} ({host_name}) as {name:?} {}", state.as_str())
                })
                .collect();
            let about = d.hosts.iter().map(|h| h.0).find(|&h| h != me).unwrap_or(me);
            let detail = format!(
                "domain {} runs on {} hosts at once: {}",
                format::uuid_string(&d.uuid),
                d.hosts.len(),
                hosts.join(", ")
            );
            let domains = d
                .hosts
                .first()
                .map(|(_, name, state)| {
                    vec![Domain { uuid: d.uuid, name: name.clone(), state: *state }]
                })
                .unwrap_or_default();
            self.event_with_vms(
                EventKind::VmDuplicate,
                about,
                detail,
                VmReport { inventory: "complete", age_ms: None, domains },
            );
        }
    }
}
