//! The volume header after start: noticing that block 0 no longer holds the header this agent
//! runs with, adopting a membership an operator changed, and checking a header an operator
//! restores against what the host blocks say.
//!
//! Nobody but `init`, `members`/`outage-survival` and `restore-header` writes block 0 (S6: an
//! agent writes only its own blocks), so a running agent reports damage and never repairs it.

use super::format::{self, ClusterId, Decoded, Geometry, Header, BLOCK_SIZE};
use std::collections::BTreeMap;

/// Who may run in the cluster and the cluster-wide flags: the part of the header an operator
/// changes while agents run (`hbfence members`, `hbfence outage-survival`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Sorted, unique; empty: open (any id within max_hosts may join).
    pub members: Vec<u32>,
    pub epoch: u32,
    pub outage_survival: bool,
}

impl Membership {
    pub fn of(h: &Header) -> Membership {
        Membership {
            members: h.members.clone(),
            epoch: h.members_epoch,
            outage_survival: h.outage_survival,
        }
    }
    pub fn is_open(&self) -> bool {
        self.members.is_empty()
    }
    /// Whether host `id` may run (open: anyone).
    pub fn admits(&self, id: u32) -> bool {
        self.is_open() || self.members.binary_search(&id).is_ok()
    }
    /// For people: `1-3,7 (epoch 2)` or `open (epoch 0)`, and the flag when on.
    pub fn describe(&self) -> String {
        let who = if self.is_open() { "open".to_string() } else { id_ranges(&self.members) };
        let flag = if self.outage_survival { ", outage-survival on" } else { "" };
        format!("{who} (epoch {}{flag})", self.epoch)
    }
}

/// The membership a host with `volumes` follows: the highest epoch that a read quorum of the
/// volumes shows (`seen`: what each volume's block 0 showed last, None: not read yet). The
/// operator's command writes the volumes one after the other, so the `read_quorum`-th highest
/// epoch is on a read quorum and one volume with a stray header does not decide alone.
pub fn adopt<'a>(seen: &[Option<&'a Membership>], read_quorum: usize) -> Option<&'a Membership> {
    let mut epochs: Vec<u32> = seen.iter().flatten().map(|m| m.epoch).collect();
    if epochs.len() < read_quorum.max(1) {
        return None;
    }
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    let epoch = epochs[read_quorum.max(1) - 1];
    seen.iter().flatten().copied().find(|m| m.epoch == epoch)
}

/// What block 0, read by a running agent, says against the header it holds for that volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// The header the agent holds.
    Same,
    /// The operator changed the membership or flags (higher epoch, same cluster, max_hosts
    /// and timing): the agent takes it, and learns the memberships it replaced.
    Newer { membership: Membership, earlier: Vec<Membership> },
    /// Not the header the agent runs with (why, for people).
    Damaged(String),
}

/// Classifies block 0 against `current`: a membership change with a higher epoch is adopted,
/// anything else that differs in what the agents use is damage. The creation time and host are
/// informative only: a restored header differs there and is fine.
pub fn check_header(block: &[u8], current: &Header) -> HeaderCheck {
    if let Decoded::Header(h) = format::decode(block) {
        if same_parameters(&h, current) {
            let (now, held) = (Membership::of(&h), Membership::of(current));
            if now == held {
                return HeaderCheck::Same;
            }
            if now.epoch > held.epoch {
                return HeaderCheck::Newer { membership: now, earlier: h.earlier_memberships };
            }
            return HeaderCheck::Damaged(format!(
                "block 0 holds membership {}, not {} which this agent runs with: a membership changes only with a higher epoch (see `hbfence members list`, then repeat the last change: it rewrites every volume with the next epoch)",
                now.describe(),
                held.describe()
            ));
        }
    }
    match header_damage(block, current) {
        Some(why) => HeaderCheck::Damaged(why),
        None => HeaderCheck::Same,
    }
}

/// Why `block` (block 0 as read now) is not the header `expected` (its cluster, max_hosts and
/// timing), or None when it is.
pub fn header_damage(block: &[u8], expected: &Header) -> Option<String> {
    let what = match format::decode(block) {
        Decoded::Header(h) if same_parameters(&h, expected) => return None,
        Decoded::Header(h) if h.cluster != expected.cluster => format!(
            "block 0 now holds the header of another cluster ({}): the volume was re-initialised while this agent runs",
            format::uuid_string(&h.cluster)
        ),
        Decoded::Header(h) => format!(
            "block 0 holds other parameters (max_hosts {}, {:?}) than this agent started with (max_hosts {}, {:?})",
            h.max_hosts, h.timing, expected.max_hosts, expected.timing
        ),
        Decoded::Empty => "block 0 was zeroed".to_string(),
        Decoded::Foreign => "block 0 holds data that is not hbfence's (overwritten by another program?)".to_string(),
        Decoded::BadCrc => "block 0 fails its CRC (a torn or corrupt write, or storage corruption)".to_string(),
        Decoded::Unsupported { version } => format!("block 0 claims format version {version}"),
        Decoded::Malformed(why) => format!("block 0 is not a valid header: {why}"),
        Decoded::Heartbeat(_)
        | Decoded::Mailbox(_)
        | Decoded::VerdictPage(_)
        | Decoded::Inventory(_) => {
            "block 0 holds a host block instead of the header".to_string()
        }
    };
    Some(what)
}

pub fn same_parameters(a: &Header, b: &Header) -> bool {
    a.cluster == b.cluster && a.max_hosts == b.max_hosts && a.timing == b.timing
}

/// Sorted host ids as ranges: `[2, 3, 4, 7]` is `2-4,7`.
pub fn id_ranges(ids: &[u32]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if end == start { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    out.join(",")
}

/// Parses `1-3,7` (ids and inclusive ranges, comma-separated) into sorted, unique ids, each in
/// 1..=`max_hosts`. The error states the rule broken.
pub fn parse_id_ranges(text: &str, max_hosts: u32) -> Result<Vec<u32>, String> {
    let mut ids = std::collections::BTreeSet::new();
    let id = |s: &str| -> Result<u32, String> {
        let v: u32 = s
            .trim()
            .parse()
            .map_err(|_| format!("\"{}\" is not a host id (a list is like 1-3,7)", s.trim()))?;
        if v == 0 || v > max_hosts {
            return Err(format!(
                "host id {v} is not in 1..={max_hosts} (the volume's max_hosts; a larger cluster needs a volume created with a larger --max-hosts)"
            ));
        }
        Ok(v)
    };
    for part in text.split(',') {
        if part.trim().is_empty() {
            return Err(format!("\"{text}\" has an empty element (a list is like 1-3,7)"));
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (id(a)?, id(b)?);
                if a > b {
                    return Err(format!("range {a}-{b} is backwards"));
                }
                ids.extend(a..=b);
            }
            None => {
                ids.insert(id(part)?);
            }
        }
    }
    Ok(ids.into_iter().collect())
}

/// What the intact blocks after block 0 say about the volume they are on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Intact blocks (CRC correct, this format) per cluster id.
    pub clusters: BTreeMap<ClusterId, u64>,
    /// (block index, host id, advertised watchdog timeout in s) of every intact heartbeat.
    pub heartbeats: Vec<(u64, u32, u16)>,
    /// (block index, host id) of every intact mailbox.
    pub mailboxes: Vec<(u64, u32)>,
    /// Blocks that carry hbfence's magic but cannot be used (CRC, version, malformed).
    pub damaged: u64,
}

impl Census {
    /// Adds the blocks of `bytes`, the first of which is block `first` of the volume.
    pub fn add(&mut self, first: u64, bytes: &[u8]) {
        for (i, b) in bytes.chunks_exact(BLOCK_SIZE).enumerate() {
            let index = first + i as u64;
            match format::decode(b) {
                Decoded::Heartbeat(h) => {
                    *self.clusters.entry(h.cluster).or_default() += 1;
                    self.heartbeats.push((index, h.host_id, h.watchdog_timeout_s));
                }
                Decoded::Mailbox(m) => {
                    *self.clusters.entry(m.cluster).or_default() += 1;
                    self.mailboxes.push((index, m.host_id));
                }
                Decoded::VerdictPage(p) => *self.clusters.entry(p.cluster).or_default() += 1,
                Decoded::Inventory(i) => *self.clusters.entry(i.cluster).or_default() += 1,
                Decoded::BadCrc | Decoded::Unsupported { .. } | Decoded::Malformed(_) => {
                    self.damaged += 1
                }
                Decoded::Header(_) | Decoded::Empty | Decoded::Foreign => {}
            }
        }
    }

    pub fn intact(&self) -> u64 {
        self.clusters.values().sum()
    }

    /// The one cluster the intact blocks belong to, if they agree.
    pub fn cluster(&self) -> Result<Option<ClusterId>, String> {
        match self.clusters.len() {
            0 => Ok(None),
            1 => Ok(self.clusters.keys().next().copied()),
            _ => Err(format!(
                "the host blocks belong to {} clusters ({}): this is not one cluster's volume",
                self.clusters.len(),
                self.clusters.keys().map(format::uuid_string).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// Checks that `header` is the one the intact host blocks were written under: same cluster,
/// every block where this geometry puts it, the watchdog timeout every host advertises, and
/// room for the whole layout. The error names the mismatch and the option to correct.
pub fn check_restore(header: &Header, census: &Census, volume_blocks: u64) -> Result<(), String> {
    header.timing.validate().map_err(|e| format!("the timing options are not accepted: {e}"))?;
    let geo: Geometry = header.geometry();
    if volume_blocks < geo.total_blocks() {
        return Err(format!(
            "the volume has {volume_blocks} blocks, a header with --max-hosts {} needs {}: check --max-hosts",
            header.max_hosts,
            geo.total_blocks()
        ));
    }
    if let Some(found) = census.cluster()? {
        if found != header.cluster {
            return Err(format!(
                "the host blocks belong to cluster {}, not {}: check --cluster",
                format::uuid_string(&found),
                format::uuid_string(&header.cluster)
            ));
        }
    }
    for &(index, id, wd) in &census.heartbeats {
        if !geo.contains_host(id) || geo.heartbeat_block(id) != index {
            return Err(format!(
                "the heartbeat of host {id} is at block {index}, which --max-hosts {} does not put there: check --max-hosts",
                header.max_hosts
            ));
        }
        if u32::from(wd) != header.timing.watchdog_timeout_secs() {
            return Err(format!(
                "host {id} advertises a {wd} s watchdog timeout, not --watchdog-timeout {}: check the timing options",
                header.timing.watchdog_timeout_secs()
            ));
        }
    }
    for &(index, id) in &census.mailboxes {
        if !geo.contains_host(id) || geo.mailbox_block(id) != index {
            return Err(format!(
                "the mailbox of host {id} is at block {index}, so the volume was created with --max-hosts {}, not {}",
                index.saturating_sub(u64::from(id)),
                header.max_hosts
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::format::{
        encode_header, encode_heartbeat, encode_mailbox, Command, Heartbeat, Mailbox,
    };
    use crate::core::timing::Timing;

    fn header() -> Header {
        Header {
            cluster: [7; 16],
            max_hosts: 8,
            timing: Timing::default(),
            created_wall_ms: 1,
            created_by: "a".into(),
            members: vec![],
            members_epoch: 0,
            outage_survival: false,
            earlier_memberships: Vec::new(),
        }
    }

    fn record(cluster: ClusterId, id: u32) -> Heartbeat {
        Heartbeat {
            cluster,
            watchdog_timeout_s: 10,
            ..crate::core::view::merge_tests::hb(id, 1, 5)
        }
    }

    fn heartbeat(id: u32) -> format::Block {
        encode_heartbeat(&record([7; 16], id)).unwrap()
    }

    #[test]
    fn only_the_parameters_decide_whether_block_0_is_the_header() {
        let h = header();
        let restored = Header { created_wall_ms: 99, created_by: "b".into(), ..h.clone() };
        assert_eq!(header_damage(&encode_header(&restored), &h), None);
        let mut torn = encode_header(&h);
        torn[200] ^= 1;
        assert!(header_damage(&torn, &h).unwrap().contains("CRC"));
        assert!(header_damage(&[0; BLOCK_SIZE], &h).unwrap().contains("zeroed"));
        assert!(header_damage(&[0xab; BLOCK_SIZE], &h).unwrap().contains("not hbfence's"));
        let other = Header { cluster: [8; 16], ..h.clone() };
        assert!(header_damage(&encode_header(&other), &h).unwrap().contains("another cluster"));
        let wider = Header { max_hosts: 9, ..h.clone() };
        assert!(header_damage(&encode_header(&wider), &h).unwrap().contains("max_hosts 9"));
        assert!(header_damage(&heartbeat(1), &h).unwrap().contains("host block"));
    }

    #[test]
    fn a_membership_change_is_taken_only_with_a_higher_epoch() {
        let h = header();
        assert_eq!(check_header(&encode_header(&h), &h), HeaderCheck::Same);
        let open = Membership::of(&h);
        let listed = Header {
            members: vec![1, 2, 3],
            members_epoch: 1,
            earlier_memberships: vec![open.clone()],
            ..h.clone()
        };
        let HeaderCheck::Newer { membership: m, earlier } =
            check_header(&encode_header(&listed), &h)
        else {
            panic!()
        };
        assert_eq!(m, Membership { members: vec![1, 2, 3], epoch: 1, outage_survival: false });
        assert_eq!(earlier, vec![open]);
        assert_eq!(m.describe(), "1-3 (epoch 1)");
        // Going back to an older epoch, or other contents under the same epoch: damage.
        let HeaderCheck::Damaged(why) = check_header(&encode_header(&h), &listed) else { panic!() };
        assert!(why.contains("open (epoch 0)") && why.contains("1-3 (epoch 1)"), "{why}");
        let same_epoch = Header { outage_survival: true, ..listed.clone() };
        assert!(matches!(
            check_header(&encode_header(&same_epoch), &listed),
            HeaderCheck::Damaged(_)
        ));
        // A newer epoch with other timing is still damage, not a membership change.
        let slow = Timing { interval_ms: 2000, io_timeout_ms: 2000, ..Timing::default() };
        let retimed = Header { timing: slow, members_epoch: 5, ..listed.clone() };
        assert!(
            matches!(check_header(&encode_header(&retimed), &listed), HeaderCheck::Damaged(w) if w.contains("other parameters"))
        );
        assert!(
            matches!(check_header(&[0; BLOCK_SIZE], &h), HeaderCheck::Damaged(w) if w.contains("zeroed"))
        );
    }

    #[test]
    fn the_membership_of_a_read_quorum_is_adopted() {
        let m = |epoch| Membership { members: vec![epoch], epoch, outage_survival: false };
        let (a, b, c) = (m(5), m(6), m(7));
        assert_eq!(adopt(&[Some(&a)], 1), Some(&a));
        assert_eq!(adopt(&[None], 1), None);
        // Two volumes: both must show it.
        assert_eq!(adopt(&[Some(&b), Some(&a)], 2), Some(&a));
        assert_eq!(adopt(&[Some(&b), None], 2), None);
        // Three volumes, read quorum 2: the second highest epoch.
        assert_eq!(adopt(&[Some(&c), Some(&a), Some(&b)], 2), Some(&b));
        assert_eq!(adopt(&[Some(&c), Some(&c), Some(&a)], 2), Some(&c));
        assert_eq!(adopt(&[Some(&c), None, Some(&a)], 2), Some(&a));
    }

    #[test]
    fn id_lists_parse_and_print_as_ranges() {
        assert_eq!(parse_id_ranges("1-3,7", 255), Ok(vec![1, 2, 3, 7]));
        assert_eq!(parse_id_ranges(" 7, 2-3 ,3", 255), Ok(vec![2, 3, 7]));
        assert_eq!(id_ranges(&[7, 3, 2, 1]), "1-3,7");
        assert!(parse_id_ranges("0", 255).unwrap_err().contains("not in 1..=255"));
        assert!(parse_id_ranges("1-256", 255).unwrap_err().contains("max_hosts"));
        assert!(parse_id_ranges("5-3", 255).unwrap_err().contains("backwards"));
        assert!(parse_id_ranges("1,,2", 255).unwrap_err().contains("empty"));
        assert!(parse_id_ranges("kvm1", 255).unwrap_err().contains("not a host id"));
    }

    fn census_of(blocks: &[(u64, format::Block)]) -> Census {
        let mut c = Census::default();
        for (index, b) in blocks {
            c.add(*index, b);
        }
        c
    }

    #[test]
    fn a_restored_header_must_match_what_the_host_blocks_say() {
        let h = header();
        let mailbox = |id: u32| {
            encode_mailbox(&Mailbox {
                cluster: [7; 16],
                host_id: id,
                nonce: 1,
                command: Command::Test,
                sender: 0,
                wall_ms: 0,
                target_incarnation: 0,
                sender_name: String::new(),
                seen_verdict_gen: None,
            })
        };
        let census = census_of(&[(1, heartbeat(1)), (3, heartbeat(3)), (8 + 3, mailbox(3))]);
        assert_eq!(census.intact(), 3);
        assert_eq!(census.cluster(), Ok(Some([7; 16])));
        let blocks = h.geometry().total_blocks();
        assert_eq!(check_restore(&h, &census, blocks), Ok(()));

        let e = check_restore(&Header { cluster: [9; 16], ..h.clone() }, &census, blocks);
        assert!(e.unwrap_err().contains("check --cluster"));
        let e = check_restore(&Header { max_hosts: 6, ..h.clone() }, &census, blocks);
        assert!(e.unwrap_err().contains("created with --max-hosts 8, not 6"));
        let e = check_restore(&h, &census, blocks - 1);
        assert!(e.unwrap_err().contains("needs"));
        let slow = Timing { watchdog_timeout_ms: 5000, ..Timing::default() };
        let e = check_restore(&Header { timing: slow, ..h.clone() }, &census, blocks);
        assert!(e.unwrap_err().contains("10 s watchdog timeout"));
        // A heartbeat block out of place: a smaller max_hosts cannot hold host 3.
        let e = check_restore(&Header { max_hosts: 2, ..h.clone() }, &census, blocks);
        assert!(e.unwrap_err().contains("heartbeat of host 3"));
    }

    #[test]
    fn blocks_of_two_clusters_are_not_one_volume() {
        let other = encode_heartbeat(&record([9; 16], 2)).unwrap();
        let census = census_of(&[(1, heartbeat(1)), (2, other)]);
        assert!(census.cluster().unwrap_err().contains("2 clusters"));
        assert!(check_restore(&header(), &census, 100).is_err());
    }
}
