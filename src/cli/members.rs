//! `hbfence members` and `hbfence outage-survival`: change the membership and flags in the
//! header of every volume while the agents run. The agents adopt a header whose epoch is
//! higher and whose cluster, max_hosts and timing are unchanged (`core::header::check_header`).

use super::{CliError, CliResult};
use crate::config::{Config, DEFAULT_CONFIG};
use crate::core::agent::{survival_unusable, ChannelParams};
use crate::core::format::{self, Decoded, Header, HostState};
use crate::core::header::{id_ranges, parse_id_ranges, same_parameters, Membership};
use crate::core::timing::format_secs;
use crate::volume::{Access, AlignedBuf, Volume};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn is_on(self) -> bool {
        self == OnOff::On
    }
}

/// Which volumes a command works on: `--volume` (repeat for every volume of the cluster), or
/// those of `--config`.
#[derive(clap::Args, Debug)]
pub struct Volumes {
    /// A volume of the cluster; repeat for every volume (all of them are rewritten).
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub volume: Vec<PathBuf>,
    /// Take the volumes from this configuration (default /etc/hbfence/hbfence.toml).
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembersAction {
    /// Add hosts (to an open membership: the list becomes exactly these hosts, and every
    /// running host must be among them).
    Add,
    /// Remove hosts (refused for a host whose heartbeat advances, unless --force).
    Remove,
    /// Print the membership of every volume.
    List,
    /// Make the membership open again: any id within max_hosts may join.
    Open,
}

#[derive(clap::Args, Debug)]
#[command(long_about = "Changes who may run in the cluster, in the header (block 0) of every \
volume, while the agents run: each change raises the membership epoch, and every running agent \
adopts the new header within one interval (event membership_changed). With a list, an agent \
reads only the members' heartbeats, and an agent whose id is not a member refuses to start.\n\n\
`add` on an open membership turns it into a list: every host whose heartbeat advances must be \
in it, or nothing is written. `remove` watches the heartbeats for 1.5 intervals and refuses to \
remove a host that is running unless --force. A volume that cannot be written is named with what \
to do; the agents adopt a change once a read quorum of the volumes holds it.")]
pub struct MembersArgs {
    #[arg(value_enum)]
    pub action: MembersAction,
    /// Host ids: `1-3,7` or `1 2 3 7`.
    pub ids: Vec<String>,
    #[command(flatten)]
    pub volumes: Volumes,
    /// Remove a host even though its heartbeat advances, or turn an open membership into a
    /// list that leaves out a running host (it keeps running, unwatched, until restarted).
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchAction {
    On,
    Off,
    Show,
}

#[derive(clap::Args, Debug)]
#[command(long_about = "Sets or shows the cluster-wide outage-survival switch (issue 13) in \
the header of every volume; the running agents adopt it within one interval.")]
pub struct OutageSurvivalArgs {
    #[arg(value_enum)]
    pub action: SwitchAction,
    #[command(flatten)]
    pub volumes: Volumes,
}

/// (incarnation, sequence, state) of every heartbeat record of one volume.
type Records = BTreeMap<u32, (u64, u64, HostState)>;

/// The cluster's volumes, opened, with the header each holds.
struct Opened {
    volumes: Vec<(Volume, Header)>,
}

impl Opened {
    fn open(v: &Volumes, access: Access) -> Result<Opened, CliError> {
        let paths = if v.volume.is_empty() {
            let path = v.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            Config::load(&path)?.volumes.into_iter().map(|v| v.path).collect()
        } else {
            v.volume.clone()
        };
        let mut volumes: Vec<(Volume, Header)> = Vec::new();
        for path in paths {
            let vol = Volume::open(&path, access)?;
            let h = vol.read_header()?;
            if let Some((first, fh)) = volumes.first() {
                if !same_parameters(fh, &h) {
                    return Err(CliError::new(format!(
                        "{} and {} do not belong to one cluster (cluster, max_hosts or timing differ); nothing was written",
                        first.path().display(),
                        path.display()
                    )));
                }
            }
            volumes.push((vol, h));
        }
        Ok(Opened { volumes })
    }

    /// The membership with the highest epoch, and whether every volume holds it.
    fn newest(&self) -> (Membership, bool) {
        let all: Vec<Membership> = self.volumes.iter().map(|(_, h)| Membership::of(h)).collect();
        let newest = all.iter().max_by_key(|m| m.epoch).cloned().unwrap_or_default();
        let agree = all.iter().all(|m| *m == newest);
        (newest, agree)
    }

    /// What a change replaces: the newest membership and the ones before it, newest first, as
    /// many as a header carries (a judge that missed a change still knows each epoch).
    fn earlier_memberships(&self) -> Vec<Membership> {
        let Some((_, newest)) = self.volumes.iter().max_by_key(|(_, h)| h.members_epoch) else {
            return Vec::new();
        };
        let mut earlier = vec![Membership::of(newest)];
        earlier.extend(newest.earlier_memberships.iter().cloned());
        earlier.truncate(format::EARLIER_MEMBERSHIPS);
        earlier
    }

    fn header(&self) -> &Header {
        &self.volumes[0].1
    }

    fn print(&self) {
        for (vol, h) in &self.volumes {
            println!("{}: members {}", vol.path().display(), Membership::of(h).describe());
        }
    }

    /// Hosts whose heartbeat advances on any volume within 1.5 intervals (as `init --force`
    /// watches), leaving hosts excepted.
    fn running_hosts(&self) -> Result<BTreeSet<u32>, CliError> {
        let wait = Duration::from_millis(self.header().timing.interval_ms * 3 / 2);
        eprintln!(
            "hbfence: watching the heartbeats for {} to see which hosts run...",
            format_secs(wait.as_millis() as u64)
        );
        let read = || -> Result<Vec<Records>, CliError> {
            self.volumes
                .iter()
                .map(|(vol, h)| {
                    let geo = h.geometry();
                    let mut buf = AlignedBuf::new(geo.max_hosts as usize)?;
                    vol.read_blocks(1, &mut buf)?;
                    Ok((1..=geo.max_hosts)
                        .filter_map(|id| match format::decode(buf.block(id as usize - 1)) {
                            Decoded::Heartbeat(hb) if hb.cluster == h.cluster => {
                                Some((id, (hb.incarnation, hb.seq, hb.state)))
                            }
                            _ => None,
                        })
                        .collect())
                })
                .collect()
        };
        let before = read()?;
        std::thread::sleep(wait);
        let after = read()?;
        let mut running = BTreeSet::new();
        for (b, a) in before.iter().zip(&after) {
            for (id, now) in a {
                if b.get(id) != Some(now) && now.2 != HostState::Leaving {
                    running.insert(*id);
                }
            }
        }
        Ok(running)
    }

    /// Writes `m` with the next epoch into every volume's header and reads it back.
    ///
    /// There is no lock across hosts (the volumes are shared storage), so two operators'
    /// changes can meet: a header that changed since this command read it is not overwritten,
    /// and every header is read again after the writes, so a change that another one overwrote
    /// is reported instead of lost silently.
    fn write(&self, m: &Membership) -> CliResult {
        self.unchanged_since_open()?;
        let epoch = self.newest().0.epoch + 1;
        let earlier = self.earlier_memberships();
        let mut failed = Vec::new();
        let mut written = Vec::new();
        for (vol, h) in &self.volumes {
            let new = Header {
                members: m.members.clone(),
                members_epoch: epoch,
                outage_survival: m.outage_survival,
                earlier_memberships: earlier.clone(),
                ..h.clone()
            };
            match write_header(vol, &new) {
                Ok(()) => written.push((vol, new)),
                Err(e) => failed.push(format!("{}: {e}", vol.path().display())),
            }
        }
        still_holds(&written)?;
        let written = Membership { epoch, ..m.clone() };
        let ok = self.volumes.len() - failed.len();
        println!(
            "members {} written to {ok} of {} volume(s); running agents adopt it within one interval (event membership_changed)",
            written.describe(),
            self.volumes.len()
        );
        if failed.is_empty() {
            return Ok(());
        }
        let (_, r) = crate::core::agent::Agent::quorums(self.volumes.len());
        Err(CliError::new(format!(
            "not written: {}. The agents adopt the change only once {r} of the {} volumes hold it: fix the storage and run the same command again (it rewrites every volume with a higher epoch)",
            failed.join("; "),
            self.volumes.len()
        )))
    }
}

impl Opened {
    /// Refuses when a volume's header is no longer the one `open` read.
    fn unchanged_since_open(&self) -> CliResult {
        if let Some(first) = changed(self.volumes.iter().map(|(vol, h)| (vol, h))).next() {
            let (vol, now) = first?;
            return Err(CliError::new(format!(
                "the header of {} changed while this command ran (now members {}; another `hbfence members` or `hbfence outage-survival` at the same time?): nothing was written; check with `hbfence members list` and run the command again",
                vol.path().display(),
                Membership::of(&now).describe()
            )));
        }
        Ok(())
    }
}

/// The volumes whose header is no longer the one expected, with what each holds now, read one
/// after the other as the caller goes on.
fn changed<'a>(
    expected: impl IntoIterator<Item = (&'a Volume, &'a Header)>,
) -> impl Iterator<Item = Result<(&'a Volume, Header), CliError>> {
    expected.into_iter().filter_map(|(vol, h)| match vol.read_header() {
        Ok(now) if now == *h => None,
        Ok(now) => Some(Ok((vol, now))),
        Err(e) => Some(Err(e.into())),
    })
}

/// Reads every written header again after all the writes: another change that met this one
/// overwrote some of them.
fn still_holds(written: &[(&Volume, Header)]) -> CliResult {
    let lost = changed(written.iter().map(|(vol, h)| (*vol, h)))
        .map(|c| {
            c.map(|(vol, now)| {
                format!(
                    "{} now holds members {}",
                    vol.path().display(),
                    Membership::of(&now).describe()
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if lost.is_empty() {
        return Ok(());
    }
    Err(CliError::new(format!(
        "another change was written at the same time and overwrote this one: {}. Check with `hbfence members list` and run the change again (it rewrites every volume with a higher epoch)",
        lost.join("; ")
    )))
}

/// Rewrites block 0 and reads it back: the write counts only if the volume returns it.
fn write_header(vol: &Volume, h: &Header) -> CliResult {
    let mut buf = AlignedBuf::new(1)?;
    let block = format::encode_header(h);
    buf.block_mut(0).copy_from_slice(&block);
    vol.write_blocks(0, &buf)?;
    let mut back = AlignedBuf::new(1)?;
    vol.read_blocks(0, &mut back)?;
    if back.block(0) != block.as_slice() {
        return Err(CliError::new("block 0 read back differs from what was written"));
    }
    Ok(())
}

pub fn members(a: &MembersArgs) -> CliResult {
    let access = if a.action == MembersAction::List { Access::ReadOnly } else { Access::ReadWrite };
    let v = Opened::open(&a.volumes, access)?;
    let (current, agree) = v.newest();
    let max_hosts = v.header().max_hosts;
    let ids = if a.ids.is_empty() {
        Vec::new()
    } else {
        parse_id_ranges(&a.ids.join(","), max_hosts)
            .map_err(|e| CliError::new(format!("{e}; nothing was written")))?
    };
    let needs_ids = matches!(a.action, MembersAction::Add | MembersAction::Remove);
    if needs_ids == ids.is_empty() {
        return Err(CliError::new(if needs_ids {
            "give the host ids to add or remove (e.g. `hbfence members add 4` or `1-3,7`)"
        } else {
            "`list` and `open` take no host ids"
        }));
    }
    let mut next = current.clone();
    match a.action {
        MembersAction::List => {
            v.print();
            if !agree {
                println!("the volumes disagree: an earlier change was not written everywhere; run it again");
            }
            return Ok(());
        }
        MembersAction::Open => next.members.clear(),
        MembersAction::Add => {
            let mut set: BTreeSet<u32> = next.members.iter().copied().collect();
            set.extend(&ids);
            next.members = set.into_iter().collect();
        }
        MembersAction::Remove => {
            if current.is_open() {
                return Err(CliError::new(
                    "the membership is open (any id may join): there is no list to remove from; make one with `hbfence members add LIST` naming every host; nothing was written",
                ));
            }
            let absent: Vec<u32> =
                ids.iter().copied().filter(|id| !current.members.contains(id)).collect();
            if !absent.is_empty() {
                return Err(CliError::new(format!(
                    "not a member: {}; the members are {}; nothing was written",
                    id_ranges(&absent),
                    id_ranges(&current.members)
                )));
            }
            next.members.retain(|id| !ids.contains(id));
            if next.members.is_empty() {
                return Err(CliError::new(
                    "that would remove every member (an empty list means open membership): use `hbfence members open` to let any id join; nothing was written",
                ));
            }
        }
    }
    if next == current && agree {
        println!("nothing to change: members {}", current.describe());
        return Ok(());
    }
    // Hosts that run and would not be members after the change.
    let leaves_out: Vec<u32> = match (a.action, current.is_open()) {
        (MembersAction::Remove, _) => ids.clone(),
        (MembersAction::Add, true) => (1..=max_hosts).filter(|id| !next.admits(*id)).collect(),
        _ => Vec::new(),
    };
    if !leaves_out.is_empty() {
        let running = v.running_hosts()?;
        let outside: Vec<u32> =
            leaves_out.iter().copied().filter(|id| running.contains(id)).collect();
        if !outside.is_empty() {
            let what = format!(
                "host(s) {} write their heartbeat and would not be members of {}",
                id_ranges(&outside),
                id_ranges(&next.members)
            );
            if !a.force {
                return Err(CliError::new(format!(
                    "{what}: nobody would watch or fence them. Stop hbfence on them first (or add them to the list); --force removes them anyway; nothing was written"
                )));
            }
            eprintln!("hbfence: warning: {what} (--force): they keep running unwatched and refuse to start again");
        }
    }
    v.write(&next)
}

pub fn outage_survival(a: &OutageSurvivalArgs) -> CliResult {
    let access = if a.action == SwitchAction::Show { Access::ReadOnly } else { Access::ReadWrite };
    let v = Opened::open(&a.volumes, access)?;
    let (current, agree) = v.newest();
    let on = match a.action {
        SwitchAction::Show => {
            for (vol, h) in &v.volumes {
                let state = if h.outage_survival { "on" } else { "off" };
                println!(
                    "{}: outage-survival {state} (epoch {})",
                    vol.path().display(),
                    h.members_epoch
                );
            }
            // With this host's configuration: whether survival can work here.
            if a.volumes.volume.is_empty() {
                let path =
                    a.volumes.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
                let config = Config::load(&path)?;
                let timing = &v.header().timing;
                let channel = config.network.as_ref().map(|n| ChannelParams {
                    challenge_every_ms: n.challenge_every_ms(timing.interval_ms),
                });
                match survival_unusable(&current, config.host.id, channel.as_ref(), timing) {
                    Some(w) => println!("WARNING: {w}"),
                    None if current.survival_on(timing) => println!(
                        "this host (id {}, {}): the peer channel can carry its permits",
                        config.host.id,
                        path.display()
                    ),
                    None => {}
                }
            }
            return Ok(());
        }
        SwitchAction::On => true,
        SwitchAction::Off => false,
    };
    if on {
        // With this timing no agent of this version could start (nor keep survival on).
        let timing = v.header().timing;
        super::init::check_survival_timing(
            &timing,
            "this volume's timing cannot change, so keep survival off, or move the cluster to volumes initialised with --lease-timeout {lease} or more",
        )?;
    }
    if current.outage_survival == on && agree {
        println!("nothing to change: outage-survival is already {}", if on { "on" } else { "off" });
        return Ok(());
    }
    v.write(&Membership { outage_survival: on, ..current })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::format::Geometry;
    use crate::core::timing::Timing;

    /// A volume file in `dir` whose block 0 holds a header with members 1-3 (epoch 1).
    fn volume(dir: &std::path::Path, name: &str) -> (PathBuf, Header) {
        let path = dir.join(name);
        let header = Header {
            cluster: [7; 16],
            max_hosts: 8,
            timing: Timing::default(),
            created_wall_ms: 0,
            created_by: String::new(),
            members: vec![1, 2, 3],
            members_epoch: 1,
            outage_survival: false,
            earlier_memberships: Vec::new(),
        };
        let bytes = Geometry { max_hosts: 8 }.total_blocks() * format::BLOCK_SIZE as u64;
        std::fs::File::create(&path).unwrap().set_len(bytes).unwrap();
        write_header(&Volume::open(&path, Access::ReadWrite).unwrap(), &header).unwrap();
        (path, header)
    }

    /// Two volumes of one cluster (members 1-3, epoch 1) in a fresh directory.
    fn two_volumes() -> (tempfile::TempDir, PathBuf, PathBuf, Header) {
        let dir = tempfile::tempdir().unwrap();
        let (a, header) = volume(dir.path(), "a.vol");
        let (b, _) = volume(dir.path(), "b.vol");
        (dir, a, b, header)
    }

    fn read(path: &std::path::Path) -> Header {
        Volume::open(path, Access::ReadOnly).unwrap().read_header().unwrap()
    }

    fn opened(paths: &[&PathBuf]) -> Opened {
        let volumes =
            Volumes { volume: paths.iter().map(|p| p.to_path_buf()).collect(), config: None };
        Opened::open(&volumes, Access::ReadWrite).unwrap()
    }

    /// Two operators: the second command read the headers before the first one's change
    /// landed. Writing its own list with the same next epoch would replace the first change
    /// (the agents would see other contents under one epoch, or lose it unseen).
    #[test]
    fn a_header_changed_since_the_command_read_it_is_not_overwritten() {
        let (_dir, a, b, header) = two_volumes();
        let late = opened(&[&a, &b]);
        let first = Header { members: vec![1, 2, 3, 4], members_epoch: 2, ..header.clone() };
        for p in [&a, &b] {
            write_header(&Volume::open(p, Access::ReadWrite).unwrap(), &first).unwrap();
        }
        let err = late
            .write(&Membership { members: vec![1, 2, 3, 5], ..Membership::of(&header) })
            .unwrap_err();
        assert!(err.message.contains("changed while this command ran"), "{err}");
        assert!(err.message.contains("1-4 (epoch 2)"), "{err}");
        assert_eq!(read(&a), first);
        assert_eq!(read(&b), first);
    }

    /// A change overwritten by another one after it was written and read back is reported,
    /// naming what the volume holds now.
    #[test]
    fn a_change_overwritten_after_its_write_is_reported() {
        let (_dir, a, b, header) = two_volumes();
        let (va, vb) = (
            Volume::open(&a, Access::ReadWrite).unwrap(),
            Volume::open(&b, Access::ReadWrite).unwrap(),
        );
        let mine = Header { members: vec![1, 2, 3, 4], members_epoch: 2, ..header.clone() };
        let theirs = Header { members: vec![1, 2, 3, 5], members_epoch: 2, ..header };
        write_header(&va, &mine).unwrap();
        write_header(&vb, &mine).unwrap();
        assert!(still_holds(&[(&va, mine.clone()), (&vb, mine.clone())]).is_ok());
        write_header(&vb, &theirs).unwrap();
        let err = still_holds(&[(&va, mine.clone()), (&vb, mine)]).unwrap_err();
        assert!(err.message.contains("overwrote this one"), "{err}");
        assert!(err.message.contains("b.vol now holds members 1-3,5 (epoch 2)"), "{err}");
        assert!(!err.message.contains("a.vol"), "{err}");
    }

    /// Without a meeting change, the command writes every volume, with the memberships it
    /// replaced, newest first, as many as a header carries.
    #[test]
    fn a_change_alone_is_written_to_every_volume() {
        let (_dir, a, b, header) = two_volumes();
        let v = opened(&[&a, &b]);
        v.write(&Membership { members: vec![1, 2], ..Membership::of(&header) }).unwrap();
        let earlier = vec![Membership::of(&header)];
        for p in [&a, &b] {
            let expected = Header {
                members: vec![1, 2],
                members_epoch: 2,
                earlier_memberships: earlier.clone(),
                ..header.clone()
            };
            assert_eq!(read(p), expected);
        }
        for _ in 0..format::EARLIER_MEMBERSHIPS + 3 {
            let v = opened(&[&a, &b]);
            let (m, _) = v.newest();
            v.write(&Membership { outage_survival: !m.outage_survival, ..m }).unwrap();
        }
        let last = read(&a);
        assert_eq!(last.members_epoch, 2 + format::EARLIER_MEMBERSHIPS as u32 + 3);
        let epochs: Vec<u32> = last.earlier_memberships.iter().map(|m| m.epoch).collect();
        let newest_first: Vec<u32> =
            (0..format::EARLIER_MEMBERSHIPS as u32).map(|i| last.members_epoch - 1 - i).collect();
        assert_eq!(epochs, newest_first);
        assert_eq!(read(&b), last);
    }
}
