//! On-disk format of the heartbeat volume: explicit little-endian encode/decode, no I/O.
//!
//! Every block is [`BLOCK_SIZE`] bytes. Block 0 is the volume header, block `h` is host `h`'s
//! heartbeat (written only by host `h`), block `max_hosts + h` is host `h`'s mailbox (written only
//! by others), and after the mailboxes each host has [`Geometry::pages_per_host`] verdict pages
//! (written only by that host) for the part of its verdict table that does not fit in its
//! heartbeat block. Every block starts with a common prefix and ends with a CRC-32 of everything
//! before it, so a torn write (part old, part new) is detected. `docs/design.md` has the tables.

use super::header::Membership;
use super::timing::Timing;
use std::fmt;

pub const BLOCK_SIZE: usize = 4096;
pub const MAGIC: [u8; 8] = *b"HBFENCE\0";
/// 2: verdict pages, verdict table author and sequence. 3: membership and cluster flags in the
/// header, VM inventory blocks and the inventory fields of the heartbeat. A volume of an older
/// format is refused with the way out.
pub const FORMAT_VERSION: u16 = 3;
pub const MAX_HOSTS_LIMIT: u32 = 2000;
pub const DEFAULT_MAX_HOSTS: u32 = 255;
pub const NAME_LEN: usize = 64;

const CRC_OFFSET: usize = BLOCK_SIZE - 4;

// Common prefix.
const OFF_MAGIC: usize = 0;
const OFF_KIND: usize = 8;
const OFF_VERSION: usize = 10;
const OFF_HOST_ID: usize = 12;
const OFF_CLUSTER: usize = 16;

// Header.
const OFF_MAX_HOSTS: usize = 32;
const OFF_BLOCK_SIZE: usize = 36;
const OFF_INTERVAL: usize = 40;
const OFF_IO_TIMEOUT: usize = 44;
const OFF_LEASE_TIMEOUT: usize = 48;
const OFF_WATCHDOG_TIMEOUT: usize = 52;
const OFF_SUSPECT_AFTER: usize = 56;
const OFF_MARGIN: usize = 60;
const OFF_CREATED_WALL: usize = 64;
const OFF_CREATED_BY: usize = 72;
const OFF_MEMBERS_EPOCH: usize = 136;
const OFF_FLAGS: usize = 140;
const OFF_MEMBERS: usize = 144;
/// One bit per possible host id (bit `id - 1`).
const MEMBERS_BYTES: usize = (MAX_HOSTS_LIMIT as usize).div_ceil(8);
/// Header flag bit 0: the cluster-wide outage-survival switch (issue 13).
const FLAG_OUTAGE_SURVIVAL: u32 = 1;
/// The memberships before the current one (newest first): a count, then entries of epoch,
/// flags and member bitmap. Bytes an older hbfence zero-fills and never reads, under the CRC
/// in every version: no format bump, and an older CLI's change simply carries no history.
const OFF_EARLIER_COUNT: usize = 400;
const OFF_EARLIER: usize = 404;
const EARLIER_ENTRY: usize = 8 + MEMBERS_BYTES;
/// How many earlier memberships a header carries.
pub const EARLIER_MEMBERSHIPS: usize = 12;

// Heartbeat.
const OFF_INCARNATION: usize = 32;
const OFF_SEQ: usize = 40;
const OFF_WALL: usize = 48;
const OFF_MONO: usize = 56;
const OFF_BOOT_ID: usize = 64;
const OFF_STATE: usize = 80;
const OFF_WD_TIMEOUT_S: usize = 82;
const OFF_CAPS: usize = 84;
const OFF_ACK_NONCE: usize = 88;
const OFF_COORDINATOR: usize = 96;
const OFF_VERDICT_GEN: usize = 100;
const OFF_NAME: usize = 104;
const OFF_VERDICT_COUNT: usize = 168;
const OFF_VERDICT_TOTAL: usize = 170;
const OFF_VERDICT_AUTHOR: usize = 172;
const OFF_VERDICTS: usize = 176;
const VERDICT_SIZE: usize = 32;
/// How many verdicts the heartbeat block itself carries; the rest go into verdict pages.
pub const MAX_VERDICTS: usize = (OFF_INV_GEN - OFF_VERDICTS) / VERDICT_SIZE;
// Heartbeat: the VM inventory this host published (in the bytes behind the verdicts).
const OFF_INV_GEN: usize = 4080;
const OFF_INV_COUNT: usize = 4084;
const OFF_INV_FLAGS: usize = 4086;
const OFF_INV_AGE: usize = 4088;

// Inventory block.
const OFF_INVB_INCARNATION: usize = 32;
const OFF_INVB_GEN: usize = 40;
const OFF_INVB_INDEX: usize = 44;
const OFF_INVB_COUNT: usize = 46;
const OFF_INVB_TOTAL: usize = 48;
const OFF_INVB_FLAGS: usize = 50;
const OFF_INVB_COLLECTED: usize = 56;
const OFF_INVB_DOMAINS: usize = 64;
const DOMAIN_SIZE: usize = 64;
/// Bytes of a domain name kept on the volume (NUL-padded; longer names are cut on a character
/// boundary: the UUID is the domain's identity).
pub const DOMAIN_NAME_LEN: usize = DOMAIN_SIZE - 17;
/// Domains per inventory block.
pub const INVENTORY_PER_BLOCK: usize = (CRC_OFFSET - OFF_INVB_DOMAINS) / DOMAIN_SIZE;
/// Inventory blocks of one list: a host writes a new list into the one of its two sets of this
/// many blocks that its heartbeat on that volume does not name (`inventory_flags::SET_1`), so
/// a write torn by a crash never damages the list its heartbeat still names.
pub const INVENTORY_SET: usize = 4;
/// Inventory blocks per host (K): two sets.
pub const INVENTORY_BLOCKS: u64 = 2 * INVENTORY_SET as u64;
/// The most domains one host's list holds (248); more is flagged as an overflow.
pub const MAX_DOMAINS: usize = INVENTORY_SET * INVENTORY_PER_BLOCK;

// Verdict page.
const OFF_PAGE_GEN: usize = 32;
const OFF_PAGE_AUTHOR: usize = 36;
const OFF_PAGE_INDEX: usize = 40;
const OFF_PAGE_COUNT: usize = 42;
const OFF_PAGE_VERDICTS: usize = 48;
/// How many verdicts one verdict page carries.
pub const PAGE_VERDICTS: usize = (CRC_OFFSET - OFF_PAGE_VERDICTS) / VERDICT_SIZE;

// Mailbox.
const OFF_NONCE: usize = 32;
const OFF_COMMAND: usize = 40;
const OFF_SENDER: usize = 44;
const OFF_MSG_WALL: usize = 48;
const OFF_TARGET_INCARNATION: usize = 56;
const OFF_SENDER_NAME: usize = 64;
/// Behind the sender name, in bytes a decoder before this field never looked at (the CRC covers
/// them whatever the version): what the issuer saw, `seen_verdict_gen + 1` (0: unknown).
const OFF_SEEN_VERDICT_GEN: usize = OFF_SENDER_NAME + NAME_LEN;

pub type Block = [u8; BLOCK_SIZE];
pub type ClusterId = [u8; 16];
pub type BootId = [u8; 16];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum BlockKind {
    Header = 1,
    Heartbeat = 2,
    Mailbox = 3,
    VerdictPage = 4,
    Inventory = 5,
}

/// Where each block of a volume lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub max_hosts: u32,
}

impl Geometry {
    pub fn total_blocks(&self) -> u64 {
        let n = u64::from(self.max_hosts);
        1 + 2 * n + n * self.pages_per_host() + n * INVENTORY_BLOCKS
    }
    /// Block index of inventory block `k` (0..[`INVENTORY_BLOCKS`]) of host `id`: after the
    /// verdict pages.
    pub fn inventory_block(&self, id: u32, k: u64) -> u64 {
        let n = u64::from(self.max_hosts);
        1 + 2 * n + n * self.pages_per_host() + u64::from(id - 1) * INVENTORY_BLOCKS + k
    }
    /// First block of host `id`'s inventory set 0 or 1 (`inventory_flags::SET_1`).
    pub fn inventory_set(&self, id: u32, set_1: bool) -> u64 {
        self.inventory_block(id, u64::from(set_1) * INVENTORY_SET as u64)
    }
    /// Verdict pages per host: enough for a table about every other host (`max_hosts - 1`).
    /// None up to 123 hosts.
    pub fn pages_per_host(&self) -> u64 {
        let beyond = (self.max_hosts.saturating_sub(1) as usize).saturating_sub(MAX_VERDICTS);
        beyond.div_ceil(PAGE_VERDICTS) as u64
    }
    /// Block index of page `page` of host `id`'s verdict pages.
    pub fn page_block(&self, id: u32, page: u64) -> u64 {
        let n = u64::from(self.max_hosts);
        1 + 2 * n + u64::from(id - 1) * self.pages_per_host() + page
    }
    /// How many verdicts one host's table can hold (heartbeat block and pages).
    pub fn table_capacity(&self) -> usize {
        MAX_VERDICTS + self.pages_per_host() as usize * PAGE_VERDICTS
    }
    pub fn total_bytes(&self) -> u64 {
        self.total_blocks() * BLOCK_SIZE as u64
    }
    /// Block index of host `id`'s heartbeat; `id` in 1..=max_hosts.
    pub fn heartbeat_block(&self, id: u32) -> u64 {
        u64::from(id)
    }
    pub fn mailbox_block(&self, id: u32) -> u64 {
        u64::from(self.max_hosts) + u64::from(id)
    }
    pub fn contains_host(&self, id: u32) -> bool {
        id >= 1 && id <= self.max_hosts
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub cluster: ClusterId,
    pub max_hosts: u32,
    pub timing: Timing,
    pub created_wall_ms: u64,
    pub created_by: String,
    /// Sorted, unique ids; EMPTY = open membership (any id may join).
    pub members: Vec<u32>,
    /// +1 on every change by an operator command; 0 at init if open.
    pub members_epoch: u32,
    /// The cluster-wide switch of issue 13 (default off).
    pub outage_survival: bool,
    /// The memberships this one replaced, newest first (at most `EARLIER_MEMBERSHIPS`, epochs
    /// falling, below `members_epoch`): a judge that missed a change still knows what each
    /// epoch counted (docs/design.md, "Memberships").
    pub earlier_memberships: Vec<Membership>,
}

impl Header {
    pub fn geometry(&self) -> Geometry {
        Geometry { max_hosts: self.max_hosts }
    }
    /// Whether `id` may run in this cluster: any id within max_hosts while the membership is
    /// open, else only a listed one.
    pub fn admits(&self, id: u32) -> bool {
        self.geometry().contains_host(id)
            && (self.members.is_empty() || self.members.binary_search(&id).is_ok())
    }
}

/// What a host says about itself in its heartbeat record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HostState {
    /// Running, watchdog not armed yet.
    Starting = 1,
    Active = 2,
    /// Stopped cleanly: never fenced.
    Leaving = 3,
    /// Lease expired or fence request: resetting itself.
    SelfFencing = 4,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Starting => "starting",
            HostState::Active => "active",
            HostState::Leaving => "leaving",
            HostState::SelfFencing => "self-fencing",
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => HostState::Starting,
            2 => HostState::Active,
            3 => HostState::Leaving,
            4 => HostState::SelfFencing,
            _ => return None,
        })
    }
}

/// Capability bits of a heartbeat record.
pub mod caps {
    /// The writer's hardware watchdog is armed with the advertised timeout (S1 (b)).
    pub const WATCHDOG_ARMED: u32 = 1 << 0;
    /// The writer may act as coordinator.
    pub const COORDINATOR_ELIGIBLE: u32 = 1 << 1;
    /// The writer currently acts as coordinator; its verdict table is authoritative.
    pub const COORDINATOR: u32 = 1 << 2;
    /// The writer's own storage I/O is healthy (S4): it judges peers.
    pub const IO_HEALTHY: u32 = 1 << 3;
    pub const ALL: u32 = WATCHDOG_ARMED | COORDINATOR_ELIGIBLE | COORDINATOR | IO_HEALTHY;

    pub fn names(bits: u32) -> Vec<&'static str> {
        let mut v = Vec::new();
        if bits & WATCHDOG_ARMED != 0 {
            v.push("watchdog");
        }
        if bits & COORDINATOR_ELIGIBLE != 0 {
            v.push("eligible");
        }
        if bits & COORDINATOR != 0 {
            v.push("coordinator");
        }
        if bits & IO_HEALTHY != 0 {
            v.push("io-ok");
        }
        v
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum VerdictKind {
    /// The coordinator is powering the peer off.
    Fencing = 1,
    /// The peer is certainly off (S1).
    Fenced = 2,
    /// Fencing did not succeed yet; alert raised.
    FenceFailed = 3,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Fencing => "fencing",
            VerdictKind::Fenced => "fenced",
            VerdictKind::FenceFailed => "fence-failed",
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => VerdictKind::Fencing,
            2 => VerdictKind::Fenced,
            3 => VerdictKind::FenceFailed,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FenceMethodKind {
    None = 0,
    Ipmi = 1,
    Agent = 2,
    Watchdog = 3,
    /// The peer acknowledged a fence request and reset itself.
    Request = 4,
    /// An operator confirmed the power-off by hand.
    Manual = 5,
}

impl FenceMethodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FenceMethodKind::None => "none",
            FenceMethodKind::Ipmi => "ipmi",
            FenceMethodKind::Agent => "agent",
            FenceMethodKind::Watchdog => "watchdog",
            FenceMethodKind::Request => "request",
            FenceMethodKind::Manual => "manual",
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => FenceMethodKind::None,
            1 => FenceMethodKind::Ipmi,
            2 => FenceMethodKind::Agent,
            3 => FenceMethodKind::Watchdog,
            4 => FenceMethodKind::Request,
            5 => FenceMethodKind::Manual,
            _ => return None,
        })
    }
}

/// The coordinator's verdict about one peer incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verdict {
    pub host_id: u32,
    pub kind: VerdictKind,
    pub method: FenceMethodKind,
    /// The incarnation the verdict applies to: a new incarnation is a rejoin.
    pub incarnation: u64,
    /// Wall time of the verdict, for people.
    pub wall_ms: u64,
    /// The heartbeat sequence number of `incarnation` the verdict was reached on: only a
    /// record beyond it (and beyond one write that was in flight) contradicts a `fenced`
    /// verdict; a lagging volume showing an older value late does not.
    pub seq: u64,
    /// The table generation in which this entry last changed (set by the coordinator that
    /// changed it, copied unchanged by merges and republishing); 0: unknown (written by an
    /// hbfence before this field, or too old to encode). Of two tables that differ about one
    /// incarnation, the later-stamped entry is the later word on it (`view::merge_views`).
    pub changed_gen: u32,
}

impl Verdict {
    /// What a verdict entry holds in the 2 bytes an older hbfence left zero: how many
    /// generations before the table's own it last changed, plus 1 (0: unknown).
    fn age_in(&self, table_gen: u32) -> u16 {
        match table_gen.checked_sub(self.changed_gen) {
            Some(age) if self.changed_gen != 0 && age < u32::from(u16::MAX) => age as u16 + 1,
            _ => 0,
        }
    }

    fn changed_gen_from(age: u16, table_gen: u32) -> u32 {
        match age {
            0 => 0,
            a => table_gen.saturating_sub(u32::from(a) - 1),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub cluster: ClusterId,
    pub host_id: u32,
    pub incarnation: u64,
    pub seq: u64,
    pub wall_ms: u64,
    pub mono_ms: u64,
    pub boot_id: BootId,
    pub state: HostState,
    pub watchdog_timeout_s: u16,
    pub caps: u32,
    pub ack_nonce: u64,
    /// Whom the writer believes is coordinator (0: none known).
    pub coordinator: u32,
    /// Bumped by a coordinator on every change of its verdict table; a new coordinator
    /// inherits the table with the highest generation. 0: this block carries no table.
    pub verdict_gen: u32,
    /// The coordinator that wrote generation `verdict_gen` of the table. Every host
    /// republishes the newest table it holds, so the table outlives its coordinator's block;
    /// (generation, author) orders tables, the lower author winning a tie.
    pub verdict_author: u32,
    pub name: String,
    /// The verdict table. Encoded: the first [`MAX_VERDICTS`] in the block, the rest in
    /// verdict pages ([`encode_verdict_pages`]). Decoded: the ones in the block.
    pub verdicts: Vec<Verdict>,
    /// Decoded: how many verdicts of the table are in pages, not (yet) in `verdicts`
    /// (`view::complete_tables` reads them). Ignored when encoding.
    pub verdicts_in_pages: u32,
    /// The writer's VM inventory: which generation its inventory blocks hold.
    pub inventory: InventoryInfo,
}

impl Clone for Heartbeat {
    fn clone(&self) -> Heartbeat {
        let inventory = InventoryInfo { write: self.inventory.write.clone(), ..self.inventory };
        Heartbeat { name: self.name.clone(), verdicts: self.verdicts.clone(), inventory, ..*self }
    }

    /// Field by field, reusing the name's and the table's buffers: an agent keeps a copy of
    /// every peer's newest record, and replacing it every cycle should not allocate (issue 12).
    fn clone_from(&mut self, source: &Heartbeat) {
        let mut name = std::mem::take(&mut self.name);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        name.clone_from(&source.name);
        verdicts.clone_from(&source.verdicts);
        let inventory = InventoryInfo { write: source.inventory.write.clone(), ..source.inventory };
        *self = Heartbeat { name, verdicts, inventory, ..*source };
    }
}

/// What a heartbeat says about its writer's VM inventory (`core::inventory`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventoryInfo {
    /// Generation of the list, +1 on every change of its content (per incarnation; 0: none
    /// published yet). Readers fetch the inventory blocks only when it changes.
    pub gen: u32,
    /// Domains in the list (at most [`MAX_DOMAINS`]).
    pub count: u16,
    /// [`inventory_flags`].
    pub flags: u16,
    /// How old the list was at this write, on the writer's clock (ms, saturated).
    pub age_ms: u32,
    /// Encoding only: the list to write into the inventory set of `gen` before this heartbeat
    /// (the core attaches it while the volume does not hold that generation yet).
    pub write: Option<Box<Inventory>>,
}

/// Bits of [`InventoryInfo::flags`] and [`Inventory::flags`].
pub mod inventory_flags {
    /// The host has an inventory source and collected a list: without it the host publishes
    /// "no inventory", never "no VMs".
    pub const PUBLISHED: u16 = 1 << 0;
    /// More domains ran than the list holds ([`super::MAX_DOMAINS`]): the list is incomplete.
    pub const OVERFLOW: u16 = 1 << 1;
    /// The latest collection failed (libvirt unreadable, command failed or timed out): the list
    /// is the last one collected, `age_ms` says how old.
    pub const STALE: u16 = 1 << 2;
    /// The list is in the host's second set of inventory blocks.
    pub const SET_1: u16 = 1 << 3;
    pub const ALL: u16 = PUBLISHED | OVERFLOW | STALE | SET_1;
}

/// What libvirt (or the inventory command) says a domain is doing. A migration shows the domain
/// on two hosts at once: [`DomainState::MigratingIn`] and [`DomainState::MigratingOut`] are not
/// counted by the duplicate-VM alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DomainState {
    Running = 1,
    Paused = 2,
    /// The destination of a migration (libvirt: paused with reason `migration`, or an
    /// incoming migration job).
    MigratingIn = 3,
    /// The source of a migration (libvirt: an outgoing migration job).
    MigratingOut = 4,
    /// Anything else (shutting down, crashed, suspended, unknown).
    Other = 5,
}

impl DomainState {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::MigratingIn => "migrating-in",
            DomainState::MigratingOut => "migrating-out",
            DomainState::Other => "other",
        }
    }
    pub fn parse(s: &str) -> Option<DomainState> {
        Some(match s {
            "running" => DomainState::Running,
            "paused" => DomainState::Paused,
            "migrating-in" => DomainState::MigratingIn,
            "migrating-out" => DomainState::MigratingOut,
            "other" => DomainState::Other,
            _ => return None,
        })
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => DomainState::Running,
            2 => DomainState::Paused,
            3 => DomainState::MigratingIn,
            4 => DomainState::MigratingOut,
            5 => DomainState::Other,
            _ => return None,
        })
    }
    /// Part of a migration in flight: the domain may show on two hosts.
    pub fn migrating(self) -> bool {
        matches!(self, DomainState::MigratingIn | DomainState::MigratingOut)
    }
}

/// One running domain of a host's inventory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain {
    pub uuid: [u8; 16],
    pub name: String,
    pub state: DomainState,
}

/// A host's VM inventory as written into its inventory blocks (one set of
/// [`INVENTORY_SET`] blocks per generation, [`INVENTORY_PER_BLOCK`] domains each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    pub cluster: ClusterId,
    pub host_id: u32,
    /// The incarnation of the agent that wrote it (generations count per incarnation).
    pub incarnation: u64,
    pub gen: u32,
    /// [`inventory_flags`] of the list itself (overflow).
    pub flags: u16,
    /// Domains the source reported (more than `domains.len()` on an overflow; saturated).
    pub seen: u16,
    /// Wall time of the collection (for people only).
    pub collected_wall_ms: u64,
    /// Sorted by UUID, at most [`MAX_DOMAINS`].
    pub domains: Vec<Domain>,
}

/// One inventory block, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryBlock {
    pub cluster: ClusterId,
    pub host_id: u32,
    pub incarnation: u64,
    pub gen: u32,
    pub index: u16,
    /// Domains of the whole list.
    pub total: u16,
    pub flags: u16,
    pub seen: u16,
    pub collected_wall_ms: u64,
    pub domains: Vec<Domain>,
}

/// The part of a host's verdict table beyond its heartbeat block: page `index` of table
/// (`verdict_gen`, `verdict_author`). Only a page of the same table as the heartbeat counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictPage {
    pub cluster: ClusterId,
    pub host_id: u32,
    pub verdict_gen: u32,
    pub verdict_author: u32,
    pub index: u16,
    pub verdicts: Vec<Verdict>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    None = 0,
    /// Acknowledge the nonce; nothing else.
    Test = 1,
    /// Poison pill: self-fence with reboot.
    Reset = 2,
    /// Poison pill: self-fence with power off.
    PowerOff = 3,
    /// Operator: forget the verdict about this host.
    Clear = 4,
    /// Operator: this host is confirmed off by hand.
    ConfirmOff = 5,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::None => "none",
            Command::Test => "test",
            Command::Reset => "reset",
            Command::PowerOff => "poweroff",
            Command::Clear => "clear",
            Command::ConfirmOff => "confirm-off",
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Command::None,
            1 => Command::Test,
            2 => Command::Reset,
            3 => Command::PowerOff,
            4 => Command::Clear,
            5 => Command::ConfirmOff,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub cluster: ClusterId,
    /// The host this mailbox belongs to.
    pub host_id: u32,
    pub nonce: u64,
    pub command: Command,
    /// 0: an operator command, not a host.
    pub sender: u32,
    pub wall_ms: u64,
    /// Only this incarnation obeys (0: any): a rebooted host ignores a stale poison pill.
    pub target_incarnation: u64,
    pub sender_name: String,
    /// The generation of the verdict table the issuer read (from a read quorum) before it wrote
    /// the message; `None`: unknown (an hbfence before this field wrote zeros there). A `clear`
    /// ends only a `fenced` verdict its issuer could have seen: one stamped at or before this
    /// generation (`Verdict::changed_gen`).
    pub seen_verdict_gen: Option<u32>,
}

/// How a block read from the volume decodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// All zeros: never written.
    Empty,
    /// Not an hbfence block (another program's data, random bytes).
    Foreign,
    /// hbfence magic but the CRC does not match: torn or corrupt. "No news" (S5).
    BadCrc,
    /// Written by a newer format this agent cannot read.
    Unsupported {
        version: u16,
    },
    /// CRC correct but a field is out of range.
    Malformed(String),
    Header(Header),
    Heartbeat(Heartbeat),
    Mailbox(Mailbox),
    VerdictPage(VerdictPage),
    Inventory(InventoryBlock),
}

impl Decoded {
    /// The CRC state shown by `dump`.
    pub fn crc_state(&self) -> &'static str {
        match self {
            Decoded::Empty => "empty",
            Decoded::Foreign => "foreign",
            Decoded::BadCrc => "bad-crc",
            Decoded::Unsupported { .. } => "unsupported-version",
            Decoded::Malformed(_) => "malformed",
            Decoded::Header(_)
            | Decoded::Heartbeat(_)
            | Decoded::Mailbox(_)
            | Decoded::VerdictPage(_)
            | Decoded::Inventory(_) => "ok",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    TooManyVerdicts(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooManyVerdicts(n) => {
                write!(f, "{n} verdicts do not fit in a verdict table (at most {})", u16::MAX)
            }
        }
    }
}

fn put_u16(b: &mut Block, off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut Block, off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Block, off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn put_name(b: &mut Block, off: usize, name: &str) {
    let name = truncate_name(name);
    b[off..off + NAME_LEN].fill(0);
    b[off..off + name.len()].copy_from_slice(name.as_bytes());
}
fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
fn get_16(b: &[u8], off: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[off..off + 16]);
    a
}
fn get_name(b: &[u8], off: usize) -> String {
    let mut name = String::new();
    get_name_into(b, off, &mut name);
    name
}

/// `get_name` into `name`, reusing its buffer.
fn get_name_into(b: &[u8], off: usize, name: &mut String) {
    let raw = &b[off..off + NAME_LEN];
    let end = raw.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
    name.clear();
    name.push_str(&String::from_utf8_lossy(&raw[..end]));
}

/// Longest prefix of `name` that fits the name field (at most 63 bytes, whole characters).
pub fn truncate_name(name: &str) -> &str {
    let mut end = name.len().min(NAME_LEN - 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn prefix(b: &mut Block, kind: BlockKind, host_id: u32, cluster: &ClusterId) {
    b[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&MAGIC);
    put_u16(b, OFF_KIND, kind as u16);
    put_u16(b, OFF_VERSION, FORMAT_VERSION);
    put_u32(b, OFF_HOST_ID, host_id);
    b[OFF_CLUSTER..OFF_CLUSTER + 16].copy_from_slice(cluster);
}

fn seal(b: &mut Block) {
    let crc = crc32fast::hash(&b[..CRC_OFFSET]);
    put_u32(b, CRC_OFFSET, crc);
}

fn ms32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub fn encode_header(h: &Header) -> Block {
    let mut b = [0u8; BLOCK_SIZE];
    prefix(&mut b, BlockKind::Header, 0, &h.cluster);
    put_u32(&mut b, OFF_MAX_HOSTS, h.max_hosts);
    put_u32(&mut b, OFF_BLOCK_SIZE, BLOCK_SIZE as u32);
    let t = &h.timing;
    put_u32(&mut b, OFF_INTERVAL, ms32(t.interval_ms));
    put_u32(&mut b, OFF_IO_TIMEOUT, ms32(t.io_timeout_ms));
    put_u32(&mut b, OFF_LEASE_TIMEOUT, ms32(t.lease_timeout_ms));
    put_u32(&mut b, OFF_WATCHDOG_TIMEOUT, ms32(t.watchdog_timeout_ms));
    put_u32(&mut b, OFF_SUSPECT_AFTER, ms32(t.suspect_after_ms));
    put_u32(&mut b, OFF_MARGIN, ms32(t.margin_ms));
    put_u64(&mut b, OFF_CREATED_WALL, h.created_wall_ms);
    put_name(&mut b, OFF_CREATED_BY, &h.created_by);
    put_u32(&mut b, OFF_MEMBERS_EPOCH, h.members_epoch);
    put_u32(&mut b, OFF_FLAGS, if h.outage_survival { FLAG_OUTAGE_SURVIVAL } else { 0 });
    put_members(&mut b[OFF_MEMBERS..OFF_MEMBERS + MEMBERS_BYTES], &h.members);
    let earlier = &h.earlier_memberships[..h.earlier_memberships.len().min(EARLIER_MEMBERSHIPS)];
    put_u32(&mut b, OFF_EARLIER_COUNT, earlier.len() as u32);
    for (i, m) in earlier.iter().enumerate() {
        let at = OFF_EARLIER + i * EARLIER_ENTRY;
        put_u32(&mut b, at, m.epoch);
        put_u32(&mut b, at + 4, if m.outage_survival { FLAG_OUTAGE_SURVIVAL } else { 0 });
        put_members(&mut b[at + 8..at + EARLIER_ENTRY], &m.members);
    }
    seal(&mut b);
    b
}

/// One bit per host id (bit `id - 1`).
fn put_members(bitmap: &mut [u8], members: &[u32]) {
    for &id in members {
        if (1..=MAX_HOSTS_LIMIT).contains(&id) {
            let bit = (id - 1) as usize;
            bitmap[bit / 8] |= 1 << (bit % 8);
        }
    }
}

fn get_members(bitmap: &[u8]) -> Vec<u32> {
    let mut members = Vec::new();
    for (byte, &bits) in bitmap.iter().enumerate() {
        for bit in 0..8 {
            if bits & (1 << bit) != 0 {
                members.push((byte * 8 + bit) as u32 + 1);
            }
        }
    }
    members
}

pub fn encode_heartbeat(h: &Heartbeat) -> Result<Block, EncodeError> {
    let mut b = [0u8; BLOCK_SIZE];
    encode_heartbeat_into(h, &mut b)?;
    Ok(b)
}

/// Encodes into a caller-owned buffer: the agent's steady-state loop does not allocate.
pub fn encode_heartbeat_into(h: &Heartbeat, b: &mut Block) -> Result<(), EncodeError> {
    if h.verdicts.len() > usize::from(u16::MAX) {
        return Err(EncodeError::TooManyVerdicts(h.verdicts.len()));
    }
    b.fill(0);
    prefix(b, BlockKind::Heartbeat, h.host_id, &h.cluster);
    put_u64(b, OFF_INCARNATION, h.incarnation);
    put_u64(b, OFF_SEQ, h.seq);
    put_u64(b, OFF_WALL, h.wall_ms);
    put_u64(b, OFF_MONO, h.mono_ms);
    b[OFF_BOOT_ID..OFF_BOOT_ID + 16].copy_from_slice(&h.boot_id);
    b[OFF_STATE] = h.state as u8;
    put_u16(b, OFF_WD_TIMEOUT_S, h.watchdog_timeout_s);
    put_u32(b, OFF_CAPS, h.caps);
    put_u64(b, OFF_ACK_NONCE, h.ack_nonce);
    put_u32(b, OFF_COORDINATOR, h.coordinator);
    put_u32(b, OFF_VERDICT_GEN, h.verdict_gen);
    put_u32(b, OFF_VERDICT_AUTHOR, h.verdict_author);
    put_name(b, OFF_NAME, &h.name);
    let inline = &h.verdicts[..h.verdicts.len().min(MAX_VERDICTS)];
    put_u16(b, OFF_VERDICT_COUNT, inline.len() as u16);
    put_u16(b, OFF_VERDICT_TOTAL, h.verdicts.len() as u16);
    put_verdicts(b, OFF_VERDICTS, inline, h.verdict_gen);
    put_u32(b, OFF_INV_GEN, h.inventory.gen);
    put_u16(b, OFF_INV_COUNT, h.inventory.count);
    put_u16(b, OFF_INV_FLAGS, h.inventory.flags);
    put_u32(b, OFF_INV_AGE, h.inventory.age_ms);
    seal(b);
    Ok(())
}

/// The blocks of `inv` (`ceil(domains / INVENTORY_PER_BLOCK)`, none for an empty list), to be
/// written from [`Geometry::inventory_set`] on, before the heartbeat that names `inv.gen` and
/// the set.
pub fn encode_inventory(inv: &Inventory) -> Vec<Block> {
    let domains = &inv.domains[..inv.domains.len().min(MAX_DOMAINS)];
    domains
        .chunks(INVENTORY_PER_BLOCK)
        .enumerate()
        .map(|(index, chunk)| {
            let mut b = [0u8; BLOCK_SIZE];
            prefix(&mut b, BlockKind::Inventory, inv.host_id, &inv.cluster);
            put_u64(&mut b, OFF_INVB_INCARNATION, inv.incarnation);
            put_u32(&mut b, OFF_INVB_GEN, inv.gen);
            put_u16(&mut b, OFF_INVB_INDEX, index as u16);
            put_u16(&mut b, OFF_INVB_COUNT, chunk.len() as u16);
            put_u16(&mut b, OFF_INVB_TOTAL, domains.len() as u16);
            put_u16(&mut b, OFF_INVB_FLAGS, inv.flags);
            put_u16(&mut b, OFF_INVB_FLAGS + 2, inv.seen);
            put_u64(&mut b, OFF_INVB_COLLECTED, inv.collected_wall_ms);
            for (i, d) in chunk.iter().enumerate() {
                let o = OFF_INVB_DOMAINS + i * DOMAIN_SIZE;
                b[o..o + 16].copy_from_slice(&d.uuid);
                b[o + 16] = d.state as u8;
                let name = truncate_to(&d.name, DOMAIN_NAME_LEN);
                b[o + 17..o + 17 + name.len()].copy_from_slice(name.as_bytes());
            }
            seal(&mut b);
            b
        })
        .collect()
}

/// Longest prefix of `s` of at most `max` bytes, on a character boundary.
pub fn truncate_to(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Assembles host `host_id`'s list (incarnation, generation, `count` domains) from `raw`, the
/// blocks of its set as read. Anything torn, missing, or of another list (rewritten meanwhile)
/// gives `None`: never part of a list.
pub fn assemble_inventory(
    raw: &[u8],
    cluster: &ClusterId,
    host_id: u32,
    incarnation: u64,
    gen: u32,
    count: usize,
) -> Option<Inventory> {
    if count > MAX_DOMAINS {
        return None;
    }
    let blocks = count.div_ceil(INVENTORY_PER_BLOCK);
    let mut inv = Inventory {
        cluster: *cluster,
        host_id,
        incarnation,
        gen,
        flags: 0,
        seen: count as u16,
        collected_wall_ms: 0,
        domains: Vec::with_capacity(count),
    };
    for index in 0..blocks {
        let block = raw.get(index * BLOCK_SIZE..(index + 1) * BLOCK_SIZE)?;
        match decode(block) {
            Decoded::Inventory(b)
                if &b.cluster == cluster
                    && b.host_id == host_id
                    && b.incarnation == incarnation
                    && b.gen == gen
                    && usize::from(b.index) == index
                    && usize::from(b.total) == count =>
            {
                inv.flags = b.flags;
                inv.seen = b.seen;
                inv.collected_wall_ms = b.collected_wall_ms;
                inv.domains.extend(b.domains);
            }
            _ => return None,
        }
    }
    (inv.domains.len() == count).then_some(inv)
}

fn put_verdicts(b: &mut Block, at: usize, verdicts: &[Verdict], table_gen: u32) {
    for (i, v) in verdicts.iter().enumerate() {
        let o = at + i * VERDICT_SIZE;
        put_u32(b, o, v.host_id);
        b[o + 4] = v.kind as u8;
        b[o + 5] = v.method as u8;
        put_u16(b, o + 6, v.age_in(table_gen));
        put_u64(b, o + 8, v.incarnation);
        put_u64(b, o + 16, v.wall_ms);
        put_u64(b, o + 24, v.seq);
    }
}

fn get_verdicts(b: &[u8], at: usize, count: usize, table_gen: u32) -> Result<Vec<Verdict>, String> {
    let mut verdicts = Vec::with_capacity(count);
    get_verdicts_into(b, at, count, table_gen, &mut verdicts)?;
    Ok(verdicts)
}

/// `get_verdicts` into `verdicts`, reusing its buffer.
fn get_verdicts_into(
    b: &[u8],
    at: usize,
    count: usize,
    table_gen: u32,
    verdicts: &mut Vec<Verdict>,
) -> Result<(), String> {
    verdicts.clear();
    for i in 0..count {
        let o = at + i * VERDICT_SIZE;
        let (Some(kind), Some(method)) =
            (VerdictKind::from_u8(b[o + 4]), FenceMethodKind::from_u8(b[o + 5]))
        else {
            return Err(format!("verdict {i} has an unknown kind or method"));
        };
        verdicts.push(Verdict {
            host_id: get_u32(b, o),
            kind,
            method,
            incarnation: get_u64(b, o + 8),
            wall_ms: get_u64(b, o + 16),
            seq: get_u64(b, o + 24),
            changed_gen: Verdict::changed_gen_from(get_u16(b, o + 6), table_gen),
        });
    }
    Ok(())
}

/// The verdict pages of `h`'s table: the verdicts beyond the first [`MAX_VERDICTS`], in pages of
/// [`PAGE_VERDICTS`]. Written before the heartbeat block that names their table.
pub fn encode_verdict_pages(h: &Heartbeat) -> Vec<Block> {
    let rest = h.verdicts.get(MAX_VERDICTS..).unwrap_or(&[]);
    rest.chunks(PAGE_VERDICTS)
        .enumerate()
        .map(|(index, chunk)| {
            let mut b = [0u8; BLOCK_SIZE];
            prefix(&mut b, BlockKind::VerdictPage, h.host_id, &h.cluster);
            put_u32(&mut b, OFF_PAGE_GEN, h.verdict_gen);
            put_u32(&mut b, OFF_PAGE_AUTHOR, h.verdict_author);
            put_u16(&mut b, OFF_PAGE_INDEX, index as u16);
            put_u16(&mut b, OFF_PAGE_COUNT, chunk.len() as u16);
            put_verdicts(&mut b, OFF_PAGE_VERDICTS, chunk, h.verdict_gen);
            seal(&mut b);
            b
        })
        .collect()
}

pub fn encode_mailbox(m: &Mailbox) -> Block {
    let mut b = [0u8; BLOCK_SIZE];
    prefix(&mut b, BlockKind::Mailbox, m.host_id, &m.cluster);
    put_u64(&mut b, OFF_NONCE, m.nonce);
    b[OFF_COMMAND] = m.command as u8;
    put_u32(&mut b, OFF_SENDER, m.sender);
    put_u64(&mut b, OFF_MSG_WALL, m.wall_ms);
    put_u64(&mut b, OFF_TARGET_INCARNATION, m.target_incarnation);
    put_name(&mut b, OFF_SENDER_NAME, &m.sender_name);
    let seen = m.seen_verdict_gen.map_or(0, |g| g.saturating_add(1));
    put_u32(&mut b, OFF_SEEN_VERDICT_GEN, seen);
    seal(&mut b);
    b
}

/// What every format version keeps at the same offsets (the common prefix; a header's max_hosts
/// and interval; a heartbeat's incarnation and sequence), read from a block with the magic and a
/// correct CRC whatever its version: `init --force` watches a volume of another format for live
/// writers with it. `None` for anything else. Never panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnyVersion {
    Header { version: u16, max_hosts: u32, interval_ms: u64 },
    Heartbeat { version: u16, host_id: u32, incarnation: u64, seq: u64 },
}

pub fn decode_any_version(buf: &[u8]) -> Option<AnyVersion> {
    let b = buf.get(..BLOCK_SIZE)?;
    if b[OFF_MAGIC..OFF_MAGIC + 8] != MAGIC
        || crc32fast::hash(&b[..CRC_OFFSET]) != get_u32(b, CRC_OFFSET)
    {
        return None;
    }
    let version = get_u16(b, OFF_VERSION);
    match get_u16(b, OFF_KIND) {
        1 => Some(AnyVersion::Header {
            version,
            max_hosts: get_u32(b, OFF_MAX_HOSTS),
            interval_ms: get_u32(b, OFF_INTERVAL).into(),
        }),
        2 => Some(AnyVersion::Heartbeat {
            version,
            host_id: get_u32(b, OFF_HOST_ID),
            incarnation: get_u64(b, OFF_INCARNATION),
            seq: get_u64(b, OFF_SEQ),
        }),
        _ => None,
    }
}

/// Classifies and decodes any block. Never panics, whatever the bytes (property-tested).
/// `buf` shorter than a block is `Foreign`.
pub fn decode(buf: &[u8]) -> Decoded {
    decode_reusing(buf, None)
}

/// [`decode`], with a heartbeat's name and verdict table decoded into the buffers of `spare`
/// (a record decoded earlier and done with): the I/O thread decodes every cycle and should
/// not allocate (issue 12).
pub fn decode_reusing(buf: &[u8], spare: Option<Heartbeat>) -> Decoded {
    if buf.len() < BLOCK_SIZE {
        return Decoded::Foreign;
    }
    let b = &buf[..BLOCK_SIZE];
    if b.iter().all(|&c| c == 0) {
        return Decoded::Empty;
    }
    if b[OFF_MAGIC..OFF_MAGIC + 8] != MAGIC {
        return Decoded::Foreign;
    }
    if crc32fast::hash(&b[..CRC_OFFSET]) != get_u32(b, CRC_OFFSET) {
        return Decoded::BadCrc;
    }
    let version = get_u16(b, OFF_VERSION);
    if version != FORMAT_VERSION {
        return Decoded::Unsupported { version };
    }
    let cluster = get_16(b, OFF_CLUSTER);
    let host_id = get_u32(b, OFF_HOST_ID);
    match get_u16(b, OFF_KIND) {
        1 => decode_header(b, cluster),
        2 => decode_heartbeat(b, cluster, host_id, spare),
        3 => decode_mailbox(b, cluster, host_id),
        4 => decode_verdict_page(b, cluster, host_id),
        5 => decode_inventory_block(b, cluster, host_id),
        k => Decoded::Malformed(format!("unknown block kind {k}")),
    }
}

fn decode_header(b: &[u8], cluster: ClusterId) -> Decoded {
    let block_size = get_u32(b, OFF_BLOCK_SIZE);
    if block_size as usize != BLOCK_SIZE {
        return Decoded::Malformed(format!("block size {block_size}, expected {BLOCK_SIZE}"));
    }
    let max_hosts = get_u32(b, OFF_MAX_HOSTS);
    if max_hosts == 0 || max_hosts > MAX_HOSTS_LIMIT {
        return Decoded::Malformed(format!(
            "max_hosts {max_hosts} is not in 1..={MAX_HOSTS_LIMIT}"
        ));
    }
    let timing = Timing {
        interval_ms: get_u32(b, OFF_INTERVAL).into(),
        io_timeout_ms: get_u32(b, OFF_IO_TIMEOUT).into(),
        lease_timeout_ms: get_u32(b, OFF_LEASE_TIMEOUT).into(),
        watchdog_timeout_ms: get_u32(b, OFF_WATCHDOG_TIMEOUT).into(),
        suspect_after_ms: get_u32(b, OFF_SUSPECT_AFTER).into(),
        margin_ms: get_u32(b, OFF_MARGIN).into(),
    };
    // A header that passes its CRC but holds unsafe timing was not written by `init`.
    if let Err(e) = timing.validate() {
        return Decoded::Malformed(format!("header timing: {e}"));
    }
    let flags = get_u32(b, OFF_FLAGS);
    if flags & !FLAG_OUTAGE_SURVIVAL != 0 {
        return Decoded::Malformed(format!("unknown header flags {flags:#x}"));
    }
    let members = get_members(&b[OFF_MEMBERS..OFF_MEMBERS + MEMBERS_BYTES]);
    if let Some(beyond) = members.iter().find(|&&id| id > max_hosts) {
        return Decoded::Malformed(format!("member {beyond} is beyond max_hosts {max_hosts}"));
    }
    let members_epoch = get_u32(b, OFF_MEMBERS_EPOCH);
    let earlier_memberships = match decode_earlier_memberships(b, max_hosts, members_epoch) {
        Ok(earlier) => earlier,
        Err(why) => return Decoded::Malformed(why),
    };
    Decoded::Header(Header {
        cluster,
        max_hosts,
        timing,
        created_wall_ms: get_u64(b, OFF_CREATED_WALL),
        created_by: get_name(b, OFF_CREATED_BY),
        members,
        members_epoch,
        outage_survival: flags & FLAG_OUTAGE_SURVIVAL != 0,
        earlier_memberships,
    })
}

fn decode_earlier_memberships(
    b: &[u8],
    max_hosts: u32,
    members_epoch: u32,
) -> Result<Vec<Membership>, String> {
    let count = get_u32(b, OFF_EARLIER_COUNT) as usize;
    if count > EARLIER_MEMBERSHIPS {
        return Err(format!("{count} earlier memberships (at most {EARLIER_MEMBERSHIPS})"));
    }
    let mut earlier: Vec<Membership> = Vec::with_capacity(count);
    for i in 0..count {
        let at = OFF_EARLIER + i * EARLIER_ENTRY;
        let epoch = get_u32(b, at);
        let below = earlier.last().map_or(members_epoch, |m| m.epoch);
        if epoch >= below {
            return Err(format!(
                "earlier membership {i} has epoch {epoch}, not below {below} (epochs fall)"
            ));
        }
        let flags = get_u32(b, at + 4);
        if flags & !FLAG_OUTAGE_SURVIVAL != 0 {
            return Err(format!("earlier membership {i} has unknown flags {flags:#x}"));
        }
        let members = get_members(&b[at + 8..at + EARLIER_ENTRY]);
        if let Some(beyond) = members.iter().find(|&&id| id > max_hosts) {
            return Err(format!(
                "member {beyond} of earlier membership {i} is beyond max_hosts {max_hosts}"
            ));
        }
        earlier.push(Membership {
            members,
            epoch,
            outage_survival: flags & FLAG_OUTAGE_SURVIVAL != 0,
        });
    }
    Ok(earlier)
}

fn decode_heartbeat(
    b: &[u8],
    cluster: ClusterId,
    host_id: u32,
    spare: Option<Heartbeat>,
) -> Decoded {
    let Some(state) = HostState::from_u8(b[OFF_STATE]) else {
        return Decoded::Malformed(format!("unknown host state {}", b[OFF_STATE]));
    };
    let count = get_u16(b, OFF_VERDICT_COUNT) as usize;
    if count > MAX_VERDICTS {
        return Decoded::Malformed(format!("verdict count {count} > {MAX_VERDICTS}"));
    }
    let total = get_u16(b, OFF_VERDICT_TOTAL) as usize;
    if total < count || (total > count && count < MAX_VERDICTS) {
        return Decoded::Malformed(format!(
            "verdict table of {total} with {count} in the block: pages are used only for a full block"
        ));
    }
    let (mut name, mut verdicts) = spare.map(|r| (r.name, r.verdicts)).unwrap_or_default();
    let table_gen = get_u32(b, OFF_VERDICT_GEN);
    if let Err(e) = get_verdicts_into(b, OFF_VERDICTS, count, table_gen, &mut verdicts) {
        return Decoded::Malformed(e);
    }
    get_name_into(b, OFF_NAME, &mut name);
    Decoded::Heartbeat(Heartbeat {
        cluster,
        host_id,
        incarnation: get_u64(b, OFF_INCARNATION),
        seq: get_u64(b, OFF_SEQ),
        wall_ms: get_u64(b, OFF_WALL),
        mono_ms: get_u64(b, OFF_MONO),
        boot_id: get_16(b, OFF_BOOT_ID),
        state,
        watchdog_timeout_s: get_u16(b, OFF_WD_TIMEOUT_S),
        caps: get_u32(b, OFF_CAPS),
        ack_nonce: get_u64(b, OFF_ACK_NONCE),
        coordinator: get_u32(b, OFF_COORDINATOR),
        verdict_gen: get_u32(b, OFF_VERDICT_GEN),
        verdict_author: get_u32(b, OFF_VERDICT_AUTHOR),
        name,
        verdicts,
        verdicts_in_pages: (total - count) as u32,
        inventory: InventoryInfo {
            gen: get_u32(b, OFF_INV_GEN),
            count: get_u16(b, OFF_INV_COUNT),
            flags: get_u16(b, OFF_INV_FLAGS),
            age_ms: get_u32(b, OFF_INV_AGE),
            write: None,
        },
    })
}

fn decode_inventory_block(b: &[u8], cluster: ClusterId, host_id: u32) -> Decoded {
    let count = usize::from(get_u16(b, OFF_INVB_COUNT));
    let total = get_u16(b, OFF_INVB_TOTAL);
    if count == 0 || count > INVENTORY_PER_BLOCK || usize::from(total) > MAX_DOMAINS {
        return Decoded::Malformed(format!(
            "inventory block of {count} domains (1..={INVENTORY_PER_BLOCK}) in a list of {total} (at most {MAX_DOMAINS})"
        ));
    }
    let mut domains = Vec::with_capacity(count);
    for i in 0..count {
        let o = OFF_INVB_DOMAINS + i * DOMAIN_SIZE;
        let Some(state) = DomainState::from_u8(b[o + 16]) else {
            return Decoded::Malformed(format!(
                "inventory domain {i} has unknown state {}",
                b[o + 16]
            ));
        };
        let raw = &b[o + 17..o + DOMAIN_SIZE];
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        domains.push(Domain {
            uuid: get_16(b, o),
            name: String::from_utf8_lossy(&raw[..end]).into_owned(),
            state,
        });
    }
    Decoded::Inventory(InventoryBlock {
        cluster,
        host_id,
        incarnation: get_u64(b, OFF_INVB_INCARNATION),
        gen: get_u32(b, OFF_INVB_GEN),
        index: get_u16(b, OFF_INVB_INDEX),
        total,
        flags: get_u16(b, OFF_INVB_FLAGS),
        seen: get_u16(b, OFF_INVB_FLAGS + 2),
        collected_wall_ms: get_u64(b, OFF_INVB_COLLECTED),
        domains,
    })
}

fn decode_verdict_page(b: &[u8], cluster: ClusterId, host_id: u32) -> Decoded {
    let count = get_u16(b, OFF_PAGE_COUNT) as usize;
    if count == 0 || count > PAGE_VERDICTS {
        return Decoded::Malformed(format!(
            "verdict page count {count} not in 1..={PAGE_VERDICTS}"
        ));
    }
    match get_verdicts(b, OFF_PAGE_VERDICTS, count, get_u32(b, OFF_PAGE_GEN)) {
        Ok(verdicts) => Decoded::VerdictPage(VerdictPage {
            cluster,
            host_id,
            verdict_gen: get_u32(b, OFF_PAGE_GEN),
            verdict_author: get_u32(b, OFF_PAGE_AUTHOR),
            index: get_u16(b, OFF_PAGE_INDEX),
            verdicts,
        }),
        Err(e) => Decoded::Malformed(e),
    }
}

fn decode_mailbox(b: &[u8], cluster: ClusterId, host_id: u32) -> Decoded {
    let Some(command) = Command::from_u8(b[OFF_COMMAND]) else {
        return Decoded::Malformed(format!("unknown mailbox command {}", b[OFF_COMMAND]));
    };
    Decoded::Mailbox(Mailbox {
        cluster,
        host_id,
        nonce: get_u64(b, OFF_NONCE),
        command,
        sender: get_u32(b, OFF_SENDER),
        wall_ms: get_u64(b, OFF_MSG_WALL),
        target_incarnation: get_u64(b, OFF_TARGET_INCARNATION),
        sender_name: get_name(b, OFF_SENDER_NAME),
        seen_verdict_gen: get_u32(b, OFF_SEEN_VERDICT_GEN).checked_sub(1),
    })
}

/// Canonical text form of a cluster UUID.
pub fn uuid_string(id: &[u8; 16]) -> String {
    let h: Vec<String> = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> Header {
        Header {
            cluster: [7; 16],
            max_hosts: 255,
            timing: Timing::default(),
            created_wall_ms: 1_700_000_000_000,
            created_by: "kvm01".into(),
            members: vec![1, 2, 3, 255],
            members_epoch: 4,
            outage_survival: true,
            earlier_memberships: vec![],
        }
    }

    fn heartbeat(seq: u64) -> Heartbeat {
        Heartbeat {
            cluster: [7; 16],
            host_id: 3,
            incarnation: 0xdead_beef,
            seq,
            wall_ms: 1_700_000_000_123,
            mono_ms: 42_000,
            boot_id: [9; 16],
            state: HostState::Active,
            watchdog_timeout_s: 10,
            caps: caps::WATCHDOG_ARMED | caps::IO_HEALTHY,
            ack_nonce: 17,
            coordinator: 1,
            verdict_gen: 4,
            verdict_author: 3,
            name: "kvm03".into(),
            verdicts: vec![Verdict {
                host_id: 2,
                kind: VerdictKind::Fenced,
                method: FenceMethodKind::Ipmi,
                incarnation: 5,
                wall_ms: 99,
                seq: 7,
                changed_gen: 3,
            }],
            verdicts_in_pages: 0,
            inventory: Default::default(),
        }
    }

    /// A kept copy of a record is replaced field by field, in the buffers it already has.
    #[test]
    fn clone_from_copies_every_field_and_reuses_the_buffers() {
        let mut held = heartbeat(1);
        held.name = "a-longer-name-than-kvm03".into();
        let (name_buf, table_buf) = (held.name.as_ptr(), held.verdicts.as_ptr());
        let mut newer = heartbeat(2);
        newer.inventory = InventoryInfo { gen: 3, count: 2, flags: 1, age_ms: 9, write: None };
        newer.verdicts[0].seq = 8;
        newer.state = HostState::Leaving;
        held.clone_from(&newer);
        assert_eq!(held, newer);
        assert_eq!(held.name.as_ptr(), name_buf, "the name's buffer was replaced");
        assert_eq!(held.verdicts.as_ptr(), table_buf, "the table's buffer was replaced");
        assert_eq!(newer.clone(), newer);
    }

    #[test]
    fn layout_fits_in_one_block() {
        assert_eq!(OFF_CREATED_BY + NAME_LEN, OFF_MEMBERS_EPOCH);
        assert_eq!(OFF_MEMBERS + MEMBERS_BYTES, 394);
        const { assert!(OFF_MEMBERS + MEMBERS_BYTES <= OFF_EARLIER_COUNT) };
        const { assert!(OFF_EARLIER + EARLIER_MEMBERSHIPS * EARLIER_ENTRY <= CRC_OFFSET) };
        assert_eq!(OFF_NAME + NAME_LEN, OFF_VERDICT_COUNT);
        const { assert!(OFF_VERDICT_COUNT + 2 <= OFF_VERDICT_AUTHOR) };
        const { assert!(OFF_VERDICT_AUTHOR + 4 <= OFF_VERDICTS) };
        const { assert!(OFF_SENDER_NAME + NAME_LEN <= OFF_SEEN_VERDICT_GEN) };
        const { assert!(OFF_SEEN_VERDICT_GEN + 4 <= CRC_OFFSET) };
        assert_eq!(MAX_VERDICTS, 122);
    }

    /// Issue 10 (soak seed 1640719): a mailbox message says which verdict table generation its
    /// issuer saw, in bytes an older hbfence wrote as zeros and never read: its messages decode
    /// as "unknown" (today's meaning), and the same format version reads both.
    #[test]
    fn a_mailbox_says_which_verdict_generation_its_issuer_saw_and_zeros_are_unknown() {
        let m = Mailbox {
            cluster: [3; 16],
            host_id: 4,
            nonce: 77,
            command: Command::Clear,
            sender: 0,
            wall_ms: 5,
            target_incarnation: 44,
            sender_name: "o".repeat(NAME_LEN - 1),
            seen_verdict_gen: Some(0),
        };
        let b = encode_mailbox(&m);
        assert_eq!(get_u32(&b, OFF_SEEN_VERDICT_GEN), 1, "generation 0 seen is not unknown");
        assert_eq!(decode(&b), Decoded::Mailbox(m.clone()));
        for seen in [Some(41), Some(u32::MAX - 1), None] {
            let m = Mailbox { seen_verdict_gen: seen, ..m.clone() };
            assert_eq!(decode(&encode_mailbox(&m)), Decoded::Mailbox(m));
        }
        // What an hbfence before the field wrote: zeros behind the (longest) sender name.
        let mut old = b;
        old[OFF_SEEN_VERDICT_GEN..OFF_SEEN_VERDICT_GEN + 4].fill(0);
        seal(&mut old);
        assert_eq!(get_u16(&old, OFF_VERSION), FORMAT_VERSION);
        assert_eq!(decode(&old), Decoded::Mailbox(Mailbox { seen_verdict_gen: None, ..m.clone() }));
        // The field is under the CRC: a torn or flipped byte there is no news, not a message.
        let mut flipped = b;
        flipped[OFF_SEEN_VERDICT_GEN] ^= 4;
        assert_eq!(decode(&flipped), Decoded::BadCrc);
    }

    #[test]
    fn torn_block_fails_its_crc() {
        let old = encode_heartbeat(&heartbeat(1)).unwrap();
        let new = encode_heartbeat(&heartbeat(2)).unwrap();
        let mut torn = old;
        torn[..512].copy_from_slice(&new[..512]);
        assert_eq!(decode(&torn), Decoded::BadCrc);
        // and the other way round
        let mut torn = new;
        torn[..512].copy_from_slice(&old[..512]);
        assert_eq!(decode(&torn), Decoded::BadCrc);
    }

    #[test]
    fn classifies_empty_foreign_newer() {
        assert_eq!(decode(&[0u8; BLOCK_SIZE]), Decoded::Empty);
        assert_eq!(decode(&[0xffu8; BLOCK_SIZE]), Decoded::Foreign);
        assert_eq!(decode(&[1u8; 100]), Decoded::Foreign);
        // Format 2 too: no membership, and its blocks sit where inventory blocks now go.
        for version in [1, FORMAT_VERSION - 1, FORMAT_VERSION + 1] {
            let mut b = encode_header(&header());
            put_u16(&mut b, OFF_VERSION, version);
            seal(&mut b);
            assert_eq!(decode(&b), Decoded::Unsupported { version });
        }
    }

    #[test]
    fn header_with_unsafe_timing_is_malformed() {
        let mut h = header();
        h.timing.lease_timeout_ms = 1000;
        assert!(matches!(decode(&encode_header(&h)), Decoded::Malformed(_)));
    }

    /// The memberships a header replaced travel in bytes an older hbfence zero-fills and never
    /// reads: with or without them, every byte it reads (all below `OFF_EARLIER_COUNT`, the CRC
    /// aside) is the same, and a header without them is the block it wrote.
    #[test]
    fn earlier_memberships_round_trip_in_bytes_an_older_hbfence_does_not_read() {
        let three = |epoch| Membership { members: vec![1, 2, 3], epoch, outage_survival: false };
        let with = Header { earlier_memberships: vec![three(3), three(1)], ..header() };
        let (a, b) = (encode_header(&with), encode_header(&header()));
        assert_eq!(a[..OFF_EARLIER_COUNT], b[..OFF_EARLIER_COUNT]);
        assert!(b[OFF_EARLIER_COUNT..CRC_OFFSET].iter().all(|&x| x == 0));
        assert_eq!(decode(&a), Decoded::Header(with.clone()));
        // Epochs must fall below the current one, members stay within max_hosts.
        let bad = |earlier: Vec<Membership>| {
            let h = Header { earlier_memberships: earlier, ..header() };
            match decode(&encode_header(&h)) {
                Decoded::Malformed(why) => why,
                d => panic!("accepted: {d:?}"),
            }
        };
        assert!(bad(vec![three(4)]).contains("not below 4"));
        assert!(bad(vec![three(2), three(2)]).contains("not below 2"));
        let narrow = Membership { members: vec![300], ..three(1) };
        assert!(bad(vec![narrow]).contains("member 300 of earlier membership 0"));
        let mut b = encode_header(&with);
        put_u32(&mut b, OFF_EARLIER_COUNT, EARLIER_MEMBERSHIPS as u32 + 1);
        seal(&mut b);
        assert!(matches!(decode(&b), Decoded::Malformed(why) if why.contains("at most")));
        // More than fit are cut to the newest.
        let many = (1..=20).rev().map(three).collect::<Vec<_>>();
        let long = Header { members_epoch: 21, earlier_memberships: many.clone(), ..header() };
        let Decoded::Header(d) = decode(&encode_header(&long)) else { panic!() };
        assert_eq!(d.earlier_memberships, many[..EARLIER_MEMBERSHIPS]);
    }

    #[test]
    fn header_membership_and_flags_are_checked() {
        let h = header();
        let Decoded::Header(d) = decode(&encode_header(&h)) else { panic!() };
        assert_eq!((d.members, d.members_epoch, d.outage_survival), (vec![1, 2, 3, 255], 4, true));
        assert!(h.admits(255) && !h.admits(4) && !h.admits(256) && !h.admits(0));
        let open = Header { members: vec![], ..h.clone() };
        assert!(open.admits(4) && open.admits(255) && !open.admits(256));
        // A member beyond max_hosts.
        let narrow = Header { max_hosts: 200, ..h.clone() };
        let e = decode(&encode_header(&narrow));
        assert!(matches!(&e, Decoded::Malformed(why) if why.contains("member 255")), "{e:?}");
        // An unknown flag bit.
        let mut b = encode_header(&h);
        put_u32(&mut b, OFF_FLAGS, 2);
        seal(&mut b);
        assert!(matches!(decode(&b), Decoded::Malformed(why) if why.contains("flags")));
        // The bitmap's last id.
        let wide = Header { max_hosts: MAX_HOSTS_LIMIT, members: vec![MAX_HOSTS_LIMIT], ..h };
        assert_eq!(decode(&encode_header(&wide)), Decoded::Header(wide));
    }

    #[test]
    fn names_are_truncated_on_char_boundaries() {
        let long = "é".repeat(40); // 80 bytes
        let t = truncate_name(&long);
        assert!(t.len() <= 63 && t.chars().all(|c| c == 'é'));
        let mut hb = heartbeat(1);
        hb.name = long.clone();
        let Decoded::Heartbeat(d) = decode(&encode_heartbeat(&hb).unwrap()) else { panic!() };
        assert_eq!(d.name, t);
    }

    #[test]
    fn too_many_verdicts_is_an_error() {
        let mut hb = heartbeat(1);
        hb.verdicts = vec![hb.verdicts[0]; usize::from(u16::MAX) + 1];
        assert_eq!(
            encode_heartbeat(&hb),
            Err(EncodeError::TooManyVerdicts(usize::from(u16::MAX) + 1))
        );
    }

    /// Issue 10 item 9: a table about every other host fits (heartbeat block plus pages),
    /// whatever max_hosts, and the page blocks follow the mailboxes without overlapping.
    #[test]
    fn pages_hold_a_verdict_for_every_other_host() {
        for max_hosts in [1, 2, 123, 124, 255, 1000, MAX_HOSTS_LIMIT] {
            let geo = Geometry { max_hosts };
            assert!(geo.table_capacity() >= max_hosts as usize - 1, "max_hosts {max_hosts}");
            let p = geo.pages_per_host();
            assert_eq!(p == 0, max_hosts as usize <= MAX_VERDICTS + 1);
            if p > 0 {
                assert_eq!(geo.page_block(1, 0), geo.mailbox_block(max_hosts) + 1);
                assert_eq!(geo.page_block(max_hosts, p - 1) + 1, geo.inventory_block(1, 0));
                assert_eq!(geo.page_block(2, 0), geo.page_block(1, p - 1) + 1);
            } else {
                assert_eq!(geo.inventory_block(1, 0), 1 + 2 * u64::from(max_hosts));
            }
            // The inventory blocks come last, K per host, without overlap.
            let k = INVENTORY_BLOCKS;
            assert_eq!(geo.inventory_block(max_hosts, k - 1), geo.total_blocks() - 1);
            assert_eq!(geo.inventory_block(2, 0), geo.inventory_block(1, k - 1) + 1);
            assert_eq!(
                geo.inventory_set(3, true),
                geo.inventory_set(3, false) + INVENTORY_SET as u64
            );
        }
    }

    #[test]
    fn a_table_beyond_the_block_goes_into_pages() {
        let mut hb = heartbeat(1);
        hb.verdicts = (0..(MAX_VERDICTS + PAGE_VERDICTS + 3) as u32)
            .map(|i| Verdict { host_id: i + 2, ..hb.verdicts[0] })
            .collect();
        let Decoded::Heartbeat(d) = decode(&encode_heartbeat(&hb).unwrap()) else { panic!() };
        assert_eq!(d.verdicts[..], hb.verdicts[..MAX_VERDICTS]);
        assert_eq!(d.verdicts_in_pages as usize, PAGE_VERDICTS + 3);
        let pages = encode_verdict_pages(&hb);
        assert_eq!(pages.len(), 2);
        let decoded: Vec<VerdictPage> = pages
            .iter()
            .map(|b| match decode(b) {
                Decoded::VerdictPage(p) => p,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!((decoded[0].index, decoded[1].index), (0, 1));
        assert!(decoded.iter().all(|p| (p.verdict_gen, p.verdict_author) == (4, 3)));
        let all: Vec<Verdict> =
            d.verdicts.iter().chain(decoded.iter().flat_map(|p| &p.verdicts)).copied().collect();
        assert_eq!(all, hb.verdicts);
        // A table that fits needs no page.
        assert!(encode_verdict_pages(&heartbeat(1)).is_empty());
    }

    #[test]
    fn uuid_text() {
        let id = [0x12u8; 16];
        assert_eq!(uuid_string(&id), "12121212-1212-1212-1212-121212121212");
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9.-]{0,63}"
    }

    fn arb_timing() -> impl Strategy<Value = Timing> {
        (100u64..10_000, 0u64..20_000, 0u64..20_000, 2u64..60, 0u64..10_000, 1_000u64..10_000)
            .prop_map(|(interval, io_extra, lease_extra, wd, susp_extra, margin)| {
                let io = interval + io_extra;
                Timing {
                    interval_ms: interval,
                    io_timeout_ms: io,
                    lease_timeout_ms: 2 * interval + io + lease_extra,
                    watchdog_timeout_ms: wd * 1000,
                    suspect_after_ms: 2 * interval + susp_extra,
                    margin_ms: margin,
                }
            })
            .prop_filter("valid", |t| t.validate().is_ok())
    }

    /// A verdict entry's stamp lives in 2 bytes an older hbfence left zero: relative to the
    /// table's generation, 0 meaning unknown (such a writer's entries, or a stamp outside the
    /// window: above the table's generation, or 65535 or more below it).
    #[test]
    fn a_verdict_stamp_round_trips_and_is_unknown_when_it_cannot_be_told() {
        let mut hb = heartbeat(1);
        let gen = 70_000;
        hb.verdict_gen = gen;
        let stamps = [gen, gen - 1, gen - 65_534, gen - 65_535, gen + 1, 0];
        hb.verdicts = stamps
            .iter()
            .enumerate()
            .map(|(i, &changed_gen)| Verdict {
                host_id: i as u32 + 2,
                changed_gen,
                ..hb.verdicts[0]
            })
            .collect();
        let Decoded::Heartbeat(d) = decode(&encode_heartbeat(&hb).unwrap()) else { panic!() };
        let got: Vec<u32> = d.verdicts.iter().map(|v| v.changed_gen).collect();
        assert_eq!(got, [gen, gen - 1, gen - 65_534, 0, 0, 0]);
        // What an older hbfence wrote: the two bytes zero.
        let mut b = encode_heartbeat(&hb).unwrap();
        b[OFF_VERDICTS + 6..OFF_VERDICTS + 8].fill(0);
        seal(&mut b);
        let Decoded::Heartbeat(d) = decode(&b) else { panic!() };
        assert_eq!(d.verdicts[0].changed_gen, 0);
    }

    fn arb_verdict() -> impl Strategy<Value = Verdict> {
        (1u32..=2000, 1u8..=3, 0u8..=5, any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(host_id, k, m, incarnation, wall_ms, seq)| Verdict {
                host_id,
                kind: VerdictKind::from_u8(k).unwrap(),
                method: FenceMethodKind::from_u8(m).unwrap(),
                incarnation,
                wall_ms,
                seq,
                changed_gen: 0,
            },
        )
    }

    #[test]
    fn the_prefix_of_any_version_is_read_for_init_force() {
        let mut b = encode_heartbeat(&heartbeat(42)).unwrap();
        for version in [1, FORMAT_VERSION, FORMAT_VERSION + 1] {
            put_u16(&mut b, OFF_VERSION, version);
            seal(&mut b);
            let want =
                AnyVersion::Heartbeat { version, host_id: 3, incarnation: 0xdead_beef, seq: 42 };
            assert_eq!(decode_any_version(&b), Some(want));
        }
        b[100] ^= 1; // torn: no news, even for the watch
        assert_eq!(decode_any_version(&b), None);
    }

    fn arb_domain() -> impl Strategy<Value = Domain> {
        (any::<[u8; 16]>(), "[a-zA-Z0-9._-]{0,47}", 1u8..=5).prop_map(|(uuid, name, s)| Domain {
            uuid,
            name,
            state: DomainState::from_u8(s).unwrap(),
        })
    }

    #[test]
    fn inventory_layout_and_capacity() {
        assert_eq!(OFF_INV_AGE + 4, CRC_OFFSET, "the inventory fields fill the heartbeat's tail");
        assert_eq!(OFF_VERDICTS + MAX_VERDICTS * VERDICT_SIZE, OFF_INV_GEN);
        assert_eq!(INVENTORY_PER_BLOCK, 62);
        assert_eq!(MAX_DOMAINS, 248);
        // Long names are cut on a character boundary; the UUID is the identity.
        let d = Domain { uuid: [1; 16], name: "é".repeat(40), state: DomainState::Running };
        let inv = Inventory {
            cluster: [7; 16],
            host_id: 3,
            incarnation: 9,
            gen: 1,
            flags: 0,
            seen: 1,
            collected_wall_ms: 5,
            domains: vec![d],
        };
        let back = assemble_inventory(&encode_inventory(&inv)[0], &[7; 16], 3, 9, 1, 1).unwrap();
        assert_eq!(back.domains[0].name, "é".repeat(23));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = decode(&bytes);
            let _ = decode_any_version(&bytes);
        }

        #[test]
        fn decode_never_panics_on_valid_prefix_and_crc(
            body in proptest::collection::vec(any::<u8>(), BLOCK_SIZE), kind in 0u16..6
        ) {
            // Random contents behind a correct magic, version, kind and CRC reach every decoder.
            let mut b = [0u8; BLOCK_SIZE];
            b.copy_from_slice(&body);
            b[..8].copy_from_slice(&MAGIC);
            put_u16(&mut b, OFF_KIND, kind);
            put_u16(&mut b, OFF_VERSION, FORMAT_VERSION);
            if kind == 2 {
                put_u16(&mut b, OFF_VERDICT_COUNT, body[0] as u16);
            }
            if kind == 5 {
                put_u16(&mut b, OFF_INVB_COUNT, u16::from(body[0] % 70));
            }
            seal(&mut b);
            let _ = decode(&b);
        }

        #[test]
        fn header_round_trips(
            cluster in any::<[u8; 16]>(), max_hosts in 1u32..=2000, timing in arb_timing(),
            created in any::<u64>(), by in arb_name(),
            ids in proptest::collection::btree_set(1u32..=2000, 0..40),
            members_epoch in any::<u32>(), outage_survival in any::<bool>(),
            earlier in proptest::collection::vec(
                (1u32..=5, proptest::collection::btree_set(1u32..=2000, 0..20), any::<bool>()),
                0..=EARLIER_MEMBERSHIPS,
            )
        ) {
            let members = ids.into_iter().filter(|&id| id <= max_hosts).collect();
            // Epochs falling from members_epoch, by 1 to 5 each.
            let mut epoch = members_epoch;
            let mut earlier_memberships = Vec::new();
            for (step, ids, outage_survival) in earlier {
                let Some(e) = epoch.checked_sub(step) else { break };
                epoch = e;
                let members = ids.into_iter().filter(|&id| id <= max_hosts).collect();
                earlier_memberships.push(Membership { members, epoch, outage_survival });
            }
            let h = Header {
                cluster, max_hosts, timing, created_wall_ms: created, created_by: by, members,
                members_epoch, outage_survival, earlier_memberships,
            };
            prop_assert_eq!(decode(&encode_header(&h)), Decoded::Header(h));
        }

        #[test]
        fn heartbeat_round_trips(
            cluster in any::<[u8; 16]>(), host_id in 1u32..=2000, incarnation in any::<u64>(),
            seq in any::<u64>(), wall in any::<u64>(), mono in any::<u64>(),
            boot in any::<[u8; 16]>(), state in 1u8..=4, wd in any::<u16>(), caps_bits in 0u32..16,
            ack in any::<u64>(), coord in any::<u32>(), gen in any::<u32>(), author in any::<u32>(),
            name in arb_name(),
            verdicts in proptest::collection::vec(arb_verdict(), 0..=MAX_VERDICTS),
            inv in (any::<u32>(), any::<u16>(), any::<u16>(), any::<u32>())
        ) {
            // Stamps within the encodable window of the table's generation (0 = unknown).
            let verdicts = verdicts
                .into_iter()
                .enumerate()
                .map(|(i, v)| Verdict { changed_gen: gen.saturating_sub(i as u32 % 5), ..v })
                .collect();
            let h = Heartbeat {
                cluster, host_id, incarnation, seq, wall_ms: wall, mono_ms: mono, boot_id: boot,
                state: HostState::from_u8(state).unwrap(), watchdog_timeout_s: wd, caps: caps_bits,
                ack_nonce: ack, coordinator: coord, verdict_gen: gen, verdict_author: author, name,
                verdicts,
                verdicts_in_pages: 0,
                inventory: InventoryInfo { gen: inv.0, count: inv.1, flags: inv.2, age_ms: inv.3, write: None },
            };
            prop_assert_eq!(decode(&encode_heartbeat(&h).unwrap()), Decoded::Heartbeat(h));
        }

        #[test]
        fn mailbox_round_trips(
            cluster in any::<[u8; 16]>(), host_id in 1u32..=2000, nonce in any::<u64>(),
            cmd in 0u8..=5, sender in any::<u32>(), wall in any::<u64>(), target in any::<u64>(),
            name in arb_name(), seen in proptest::option::of(0..u32::MAX)
        ) {
            let m = Mailbox {
                cluster, host_id, nonce, command: Command::from_u8(cmd).unwrap(), sender,
                wall_ms: wall, target_incarnation: target, sender_name: name,
                seen_verdict_gen: seen,
            };
            prop_assert_eq!(decode(&encode_mailbox(&m)), Decoded::Mailbox(m));
        }

        /// Issue 15: a list of any size up to the capacity round-trips through its blocks, in
        /// either set; a block of another generation, incarnation or host, a torn block, or a
        /// missing one gives no list at all (never part of one).
        #[test]
        fn inventory_round_trips_and_is_never_taken_in_part(
            cluster in any::<[u8; 16]>(), host_id in 1u32..=2000, incarnation in any::<u64>(),
            gen in 1u32..u32::MAX, flags in 0u16..4, seen in any::<u16>(), wall in any::<u64>(),
            domains in proptest::collection::vec(arb_domain(), 1..=MAX_DOMAINS),
            damage in 0usize..5, at in any::<usize>()
        ) {
            let inv = Inventory {
                cluster, host_id, incarnation, gen, flags, seen, collected_wall_ms: wall,
                domains: domains.clone(),
            };
            let blocks = encode_inventory(&inv);
            prop_assert_eq!(blocks.len(), domains.len().div_ceil(INVENTORY_PER_BLOCK));
            prop_assert!(blocks.len() <= INVENTORY_SET);
            let mut raw: Vec<u8> = blocks.iter().flat_map(|b| b.iter().copied()).collect();
            let back = assemble_inventory(&raw, &cluster, host_id, incarnation, gen, domains.len());
            prop_assert_eq!(back.as_ref(), Some(&inv));
            let victim = at % blocks.len();
            let n = domains.len();
            let broken = match damage {
                // Torn: part of the block is of another write.
                0 => { raw[victim * BLOCK_SIZE + 700] ^= 0x5a; assemble_inventory(&raw, &cluster, host_id, incarnation, gen, n) }
                1 => assemble_inventory(&raw, &cluster, host_id, incarnation, gen.wrapping_add(1), n),
                2 => assemble_inventory(&raw, &cluster, host_id, incarnation ^ 1, gen, n),
                3 => assemble_inventory(&raw, &cluster, host_id % 2000 + 1, incarnation, gen, n),
                // One block short (a shorter read).
                _ => assemble_inventory(&raw[..raw.len() - BLOCK_SIZE], &cluster, host_id, incarnation, gen, n),
            };
            prop_assert_eq!(broken, None);
        }

        #[test]
        fn any_torn_write_is_detected(seq_a in any::<u64>(), seq_b in any::<u64>(), sectors in 1usize..8) {
            prop_assume!(seq_a != seq_b);
            let a = encode_heartbeat(&heartbeat(seq_a)).unwrap();
            let b = encode_heartbeat(&heartbeat(seq_b)).unwrap();
            let mut torn = a;
            torn[..sectors * 512].copy_from_slice(&b[..sectors * 512]);
            prop_assert_eq!(decode(&torn), Decoded::BadCrc);
        }
    }
}
