//! `hbfence init`: create a volume, refusing unsafe timing and never wiping a live cluster.

use super::{CliError, CliResult};
use crate::config::hostname;
use crate::core::format::{self, Decoded, Geometry, Header, MAX_HOSTS_LIMIT};
use crate::core::header::{parse_id_ranges, Membership};
use crate::core::timing::{format_secs, parse_secs, Timing};
use crate::sys;
use crate::volume::{Access, AlignedBuf, Volume};
use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Volume file (on NFS, ext4, ...) or block device.
    #[arg(long, value_name = "PATH")]
    pub volume: PathBuf,
    /// Highest host id the volume holds (1..=2000).
    #[arg(long, value_name = "N", default_value_t = format::DEFAULT_MAX_HOSTS, allow_negative_numbers = true)]
    pub max_hosts: u32,
    /// Seconds between heartbeat writes.
    #[arg(long, value_name = "S", default_value = "5", value_parser = parse_secs, allow_negative_numbers = true)]
    pub interval: u64,
    /// Seconds after which an I/O counts as failed.
    #[arg(long, value_name = "S", default_value = "10", value_parser = parse_secs, allow_negative_numbers = true)]
    pub io_timeout: u64,
    /// Seconds a host's lease lasts after the start of its last successful write.
    #[arg(long, value_name = "S", default_value = "30", value_parser = parse_secs, allow_negative_numbers = true)]
    pub lease_timeout: u64,
    /// Hardware watchdog timeout in whole seconds.
    #[arg(long, value_name = "S", default_value = "10", value_parser = parse_secs, allow_negative_numbers = true)]
    pub watchdog_timeout: u64,
    /// Seconds without progress before the coordinator starts BMC fencing.
    #[arg(long, value_name = "S", default_value = "15", value_parser = parse_secs, allow_negative_numbers = true)]
    pub suspect_after: u64,
    /// Host ids that may run in the cluster, e.g. `1-3,7` (each within --max-hosts). Without
    /// it the membership is open: any id may join (found by a slower scan of the volume).
    #[arg(long, value_name = "LIST")]
    pub members: Option<String>,
    /// The cluster-wide outage-survival switch (issue 13), stored in the header. On needs
    /// lease_timeout >= 3.5*interval + watchdog_timeout (the defaults satisfy it).
    #[arg(long, value_name = "on|off", value_enum, default_value_t = super::members::OnOff::Off)]
    pub outage_survival: super::members::OnOff,
    /// Re-create an existing volume (only if no host is writing to it).
    #[arg(long)]
    pub force: bool,
}

/// The options that set these timing parameters: "--io-timeout or --interval".
fn flags_of(params: &[&str]) -> String {
    let mut flags: Vec<String> = Vec::new();
    for p in params {
        // init derives the margin from the interval.
        let flag = if *p == "margin" {
            "--interval".to_string()
        } else {
            format!("--{}", p.replace('_', "-"))
        };
        if !flags.contains(&flag) {
            flags.push(flag);
        }
    }
    match flags.split_last() {
        None => "the timing options".to_string(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// `--max-hosts` of `init` and `restore-header`.
pub(super) fn check_max_hosts(max_hosts: u32) -> CliResult {
    if max_hosts == 0 || max_hosts > MAX_HOSTS_LIMIT {
        return Err(CliError::new(format!(
            "--max-hosts {max_hosts} is out of range: it must be 1..={MAX_HOSTS_LIMIT}; nothing was written"
        )));
    }
    Ok(())
}

/// Outage survival needs one timing rule more than `validate` (docs/design.md): refused
/// before anything is written. `remedy` says what to do instead; `{lease}` in it becomes the
/// smallest lease_timeout (seconds) the rule accepts.
pub(super) fn check_survival_timing(timing: &Timing, remedy: &str) -> CliResult {
    timing.validate_outage_survival().map_err(|e| {
        let lease = (timing.outage_survival_min_lease_ms() / 1000).to_string();
        CliError::new(format!(
            "outage survival needs the rule \"{}\" ({}): {}; nothing was written",
            e.rule,
            e.detail,
            remedy.replace("{lease}", &lease)
        ))
    })
}

pub fn run(a: &InitArgs) -> CliResult {
    let timing = Timing {
        interval_ms: a.interval,
        io_timeout_ms: a.io_timeout,
        lease_timeout_ms: a.lease_timeout,
        watchdog_timeout_ms: a.watchdog_timeout,
        suspect_after_ms: a.suspect_after,
        // One interval of slack (at least 1 s) for clock-rate differences and scheduling.
        margin_ms: a.interval.max(1000),
    };
    timing.validate().map_err(|e| {
        CliError::new(format!("{e}; change {}; nothing was written", flags_of(&e.params)))
    })?;
    check_max_hosts(a.max_hosts)?;
    if a.outage_survival.is_on() {
        check_survival_timing(
            &timing,
            "set --lease-timeout {lease} or more, or leave --outage-survival off",
        )?;
    }
    let members = match &a.members {
        Some(list) => parse_id_ranges(list, a.max_hosts)
            .map_err(|e| CliError::new(format!("--members {list}: {e}; nothing was written")))?,
        None => Vec::new(),
    };
    let geo = Geometry { max_hosts: a.max_hosts };
    let path = a.volume.as_path();

    let volume = match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.is_dir() {
                return Err(CliError::new(format!(
                    "{}: is a directory; give the path of a volume file inside it, e.g. {}/hbfence.vol",
                    path.display(),
                    path.display()
                )));
            }
            let volume = Volume::open(path, Access::ReadWrite)?;
            check_existing(&volume, a.force)?;
            if volume.size_bytes() < geo.total_bytes() {
                if meta.file_type().is_block_device() {
                    return Err(CliError::new(format!(
                        "{}: block device has {} bytes, a volume for {} hosts needs {}; use a larger device or a smaller --max-hosts",
                        path.display(),
                        volume.size_bytes(),
                        a.max_hosts,
                        geo.total_bytes()
                    )));
                }
                drop(volume);
                grow_file(path, geo.total_bytes())?;
                Volume::open(path, Access::ReadWrite)?
            } else {
                volume
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_file(path, geo.total_bytes())?;
            Volume::open(path, Access::ReadWrite)?
        }
        Err(e) => return Err(CliError::new(format!("{}: {e}", path.display()))),
    };

    let mut cluster = [0u8; 16];
    sys::random_bytes(&mut cluster)?;
    cluster[6] = (cluster[6] & 0x0f) | 0x40; // UUID version 4
    cluster[8] = (cluster[8] & 0x3f) | 0x80; // RFC 4122 variant
    let header = Header {
        cluster,
        max_hosts: a.max_hosts,
        timing,
        created_wall_ms: sys::wall_ms(),
        created_by: hostname(),
        // Epoch 0 is the open membership a volume starts with; a list starts at 1.
        members_epoch: u32::from(!members.is_empty()),
        members,
        outage_survival: a.outage_survival.is_on(),
        earlier_memberships: Vec::new(),
    };
    write_volume(&volume, &header)?;
    println!(
        "initialized {}: cluster {}, max_hosts {}, {} blocks ({} bytes)",
        path.display(),
        format::uuid_string(&cluster),
        a.max_hosts,
        geo.total_blocks(),
        geo.total_bytes()
    );
    println!(
        "timing: interval {}, io_timeout {}, lease_timeout {}, watchdog_timeout {}, suspect_after {}, dead_after {}",
        format_secs(timing.interval_ms),
        format_secs(timing.io_timeout_ms),
        format_secs(timing.lease_timeout_ms),
        format_secs(timing.watchdog_timeout_ms),
        format_secs(timing.suspect_after_ms),
        format_secs(timing.dead_after_ms())
    );
    println!("members: {}", Membership::of(&header).describe());
    Ok(())
}

/// Refuses to overwrite anything that is not blank unless --force, and never a live volume.
fn check_existing(volume: &Volume, force: bool) -> CliResult {
    if volume.blocks() == 0 {
        return Ok(());
    }
    let mut buf = AlignedBuf::new(1)?;
    volume.read_blocks(0, &mut buf)?;
    let path = volume.path().display();
    match format::decode(buf.block(0)) {
        Decoded::Empty => Ok(()),
        Decoded::Header(h) => {
            if !force {
                return Err(CliError::new(format!(
                    "{path}: already an hbfence volume (cluster {}, max_hosts {}); pass --force to re-create it (all hosts must be stopped); nothing was written",
                    format::uuid_string(&h.cluster),
                    h.max_hosts
                )));
            }
            watch_for_live_hosts(volume, h.max_hosts, h.timing.interval_ms)
        }
        other if force => {
            eprintln!("hbfence: warning: {path}: overwriting block 0 in state {} (--force)", other.crc_state());
            // The way out printed for another format version is `init --force`: its hosts keep
            // the common prefix, so they are watched all the same.
            match format::decode_any_version(buf.block(0)) {
                Some(format::AnyVersion::Header { max_hosts, interval_ms, .. }) => {
                    watch_for_live_hosts(volume, max_hosts, interval_ms)
                }
                _ => Ok(()),
            }
        }
        other => Err(CliError::new(format!(
            "{path}: holds data that is not an hbfence volume (block 0: {}); refusing to overwrite it. Check the path; pass --force to overwrite; nothing was written",
            other.crc_state()
        ))),
    }
}

/// Reads every heartbeat twice, one interval (and a half) apart: any change means a live host.
/// Heartbeats of any format version count (`decode_any_version`), and a header that is not
/// this version's is taken only within sane bounds.
fn watch_for_live_hosts(volume: &Volume, max_hosts: u32, interval_ms: u64) -> CliResult {
    let max_hosts = max_hosts.clamp(1, format::MAX_HOSTS_LIMIT);
    let slots = u64::from(max_hosts).min(volume.blocks().saturating_sub(1));
    if slots == 0 {
        return Ok(()); // a truncated volume has no readable heartbeats to protect
    }
    let interval_ms = interval_ms.clamp(100, crate::core::timing::MAX_PARAM_MS);
    let wait = Duration::from_millis(interval_ms * 3 / 2);
    eprintln!(
        "hbfence: watching {} for {} to make sure no host is writing to it...",
        volume.path().display(),
        format_secs(wait.as_millis() as u64)
    );
    let read = || -> Result<Vec<(u32, u64, u64)>, CliError> {
        let mut buf = AlignedBuf::new(slots as usize)?;
        volume.read_blocks(1, &mut buf)?;
        Ok((1..=slots as u32)
            .filter_map(|id| match format::decode_any_version(buf.block(id as usize - 1)) {
                Some(format::AnyVersion::Heartbeat { incarnation, seq, .. }) => {
                    Some((id, incarnation, seq))
                }
                _ => None,
            })
            .collect())
    };
    let before = read()?;
    std::thread::sleep(wait);
    let after = read()?;
    let live: Vec<String> = after
        .iter()
        .filter(|a| !before.contains(a))
        .map(|(id, _, seq)| format!("host {id} (seq {seq})"))
        .collect();
    if !live.is_empty() {
        return Err(CliError::new(format!(
            "{}: refusing to re-create a live volume: heartbeats moved while watching: {}. Stop hbfence on every host first; nothing was written",
            volume.path().display(),
            live.join(", ")
        )));
    }
    Ok(())
}

fn create_file(path: &Path, bytes: u64) -> CliResult {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            return Err(CliError::new(format!(
                "{}: directory {} does not exist (is the NFS share mounted?); nothing was written",
                path.display(),
                dir.display()
            )))
        }
        _ => {}
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| CliError::new(format!("{}: cannot create: {e}", path.display())))?;
    file.set_len(bytes).map_err(|e| {
        CliError::new(format!("{}: cannot size to {bytes} bytes: {e}", path.display()))
    })
}

fn grow_file(path: &Path, bytes: u64) -> CliResult {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| CliError::new(format!("{}: cannot open to resize: {e}", path.display())))?;
    file.set_len(bytes).map_err(|e| {
        CliError::new(format!("{}: cannot grow to {bytes} bytes: {e}", path.display()))
    })
}

/// Invalidates the old header first, zeroes every host block, then writes the new header.
fn write_volume(volume: &Volume, header: &Header) -> CliResult {
    let zero = AlignedBuf::new(1)?;
    volume.write_blocks(0, &zero)?;
    let total = header.geometry().total_blocks();
    const CHUNK: u64 = 256;
    let chunk = AlignedBuf::new(CHUNK as usize)?;
    let mut first = 1;
    while first < total {
        let n = CHUNK.min(total - first);
        if n == CHUNK {
            volume.write_blocks(first, &chunk)?;
        } else {
            let tail = AlignedBuf::new(n as usize)?;
            volume.write_blocks(first, &tail)?;
        }
        first += n;
    }
    let mut hbuf = AlignedBuf::new(1)?;
    hbuf.block_mut(0).copy_from_slice(&format::encode_header(header));
    volume.write_blocks(0, &hbuf)?;
    Ok(())
}
