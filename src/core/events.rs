//! Events the core reports; drivers send them to syslog, the JSON-lines log and hooks.

use super::format::FenceMethodKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The first judgement of a starting agent: every peer it found, in one event (the
    /// `host` is this host). Later arrivals are `HostUp`, one each.
    ClusterSeen,
    /// A peer seen for the first time after the first judgement, or a new incarnation of a
    /// peer already reported.
    HostUp,
    HostSuspect,
    HostRecovered,
    HostLeft,
    FenceStarted,
    Fenced,
    FenceFailed,
    SelfFence,
    CoordinatorChanged,
    StorageDegraded,
    StorageLost,
    StorageRestored,
    /// Block 0 of a volume no longer holds the cluster's header: the next start of an agent
    /// would fail until an operator restores it (`hbfence restore-header`).
    HeaderDamaged,
    HeaderRestored,
    /// Something the safety argument says cannot happen was seen (a sequence number ahead of
    /// what time allows, a second writer of a host id): an operator must look.
    Alarm,
    /// A peer that answered on the peer channel stopped answering (see `channel::REACHABLE_PERIODS`).
    PeerUnreachable,
    /// A peer that was unreachable answers on the peer channel again (its first answer in a
    /// run is not an event).
    PeerReachable,
    /// The coordinator holds the power-off of a suspect peer that says on the peer channel,
    /// from its live core, that its own lease is still valid (a storage blip it may survive).
    FenceDeferred,
    /// The membership or cluster flags this host follows changed (`hbfence members`,
    /// `hbfence outage-survival`): old -> new.
    MembershipChanged,
    /// One domain UUID in the VM lists of two live hosts (issue 15): split-brain disk
    /// corruption in progress unless an operator acts.
    VmDuplicate,
    /// This host's lease ran out, and fresh permits of a majority of the members keep it
    /// petting: a cluster-wide storage outage, survived without a reboot.
    SurvivalStarted,
    /// Survival is over: storage is back (a verified write renewed the lease) or the majority
    /// of permits is gone (the host self-fences).
    SurvivalEnded,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ClusterSeen => "cluster_seen",
            EventKind::HostUp => "host_up",
            EventKind::HostSuspect => "host_suspect",
            EventKind::HostRecovered => "host_recovered",
            EventKind::HostLeft => "host_left",
            EventKind::FenceStarted => "fence_started",
            EventKind::Fenced => "fenced",
            EventKind::FenceFailed => "fence_failed",
            EventKind::SelfFence => "self_fence",
            EventKind::CoordinatorChanged => "coordinator_changed",
            EventKind::StorageDegraded => "storage_degraded",
            EventKind::StorageLost => "storage_lost",
            EventKind::StorageRestored => "storage_restored",
            EventKind::HeaderDamaged => "volume_header_damaged",
            EventKind::HeaderRestored => "volume_header_restored",
            EventKind::Alarm => "alarm",
            EventKind::PeerUnreachable => "peer_unreachable",
            EventKind::PeerReachable => "peer_reachable",
            EventKind::FenceDeferred => "fence_deferred",
            EventKind::MembershipChanged => "membership_changed",
            EventKind::VmDuplicate => "vm_duplicate",
            EventKind::SurvivalStarted => "survival_started",
            EventKind::SurvivalEnded => "survival_ended",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The host the event is about (this host for self/storage events).
    pub host: u32,
    pub host_name: String,
    pub method: Option<FenceMethodKind>,
    /// Human-readable detail (the BMC's answer, the reason...).
    pub detail: String,
    /// Monotonic time of the event on the reporting host.
    pub mono_ms: u64,
    pub wall_ms: u64,
    /// `fenced`: the VMs the host ran at its last heartbeat; `vm_duplicate`: the domain.
    pub vms: Option<Box<super::inventory::VmReport>>,
}
