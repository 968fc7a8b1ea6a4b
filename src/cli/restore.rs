//! `hbfence restore-header`: rewrite a damaged block 0 from the parameters every host of the
//! cluster knows, checked against the host blocks, without touching any host block.

use super::{CliError, CliResult};
use crate::config::hostname;
use crate::core::format::{self, Decoded, Header};
use crate::core::header::{check_restore, id_ranges, parse_id_ranges};
use crate::core::timing::{format_secs, parse_secs, Timing};
use crate::sys;
use crate::volume::{Access, AlignedBuf, Volume};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(long_about = "Rewrites block 0 (the header) of a volume whose host blocks are intact, \
from the cluster's parameters: running agents print this exact command in their \
`volume_header_damaged` event and log line. Every parameter must be given: they cannot be read \
back from the host blocks, which are only used to check them (cluster id, max_hosts from the block \
positions, the watchdog timeout every host advertises). Nothing but block 0 is written; running \
agents report `volume_header_restored` within one interval. Refused when block 0 holds a valid \
header.")]
pub struct RestoreArgs {
    /// Volume file or block device.
    #[arg(long, value_name = "PATH")]
    pub volume: PathBuf,
    /// The cluster's UUID; may be omitted when intact host blocks name it.
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    pub cluster: Option<[u8; 16]>,
    /// Highest host id the volume was created for (`init --max-hosts`).
    #[arg(long, value_name = "N", required = true)]
    pub max_hosts: u32,
    #[arg(long, value_name = "S", value_parser = parse_secs, required = true)]
    pub interval: u64,
    #[arg(long, value_name = "S", value_parser = parse_secs, required = true)]
    pub io_timeout: u64,
    #[arg(long, value_name = "S", value_parser = parse_secs, required = true)]
    pub lease_timeout: u64,
    #[arg(long, value_name = "S", value_parser = parse_secs, required = true)]
    pub watchdog_timeout: u64,
    #[arg(long, value_name = "S", value_parser = parse_secs, required = true)]
    pub suspect_after: u64,
    /// Safety margin; `init` uses max(interval, 1 s), the default here too.
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    pub margin: Option<u64>,
    /// The membership list (`1-3,7`); omitted: open membership.
    #[arg(long, value_name = "LIST")]
    pub members: Option<String>,
    /// The membership epoch the running agents hold (they print it in the command); a lower
    /// one would read to them as damage.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub members_epoch: u32,
    #[arg(long, value_name = "on|off", value_enum, default_value_t = super::members::OnOff::Off)]
    pub outage_survival: super::members::OnOff,
}

pub fn parse_uuid(text: &str) -> Result<[u8; 16], String> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let bad = || format!("'{text}' is not a UUID (e.g. 2f1c0a4e-9b7d-4c1e-8a55-0d3b6f1e2a90)");
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(id)
}

/// The command that restores `header` on `path`, for the running agents to print.
pub fn restore_command(path: &Path, header: &Header) -> String {
    let t = &header.timing;
    let secs = |ms: u64| format_secs(ms).trim_end_matches(" s").to_string();
    let mut cmd = format!(
        "hbfence restore-header --volume {} --cluster {} --max-hosts {} --interval {} --io-timeout {} --lease-timeout {} --watchdog-timeout {} --suspect-after {}",
        path.display(),
        format::uuid_string(&header.cluster),
        header.max_hosts,
        secs(t.interval_ms),
        secs(t.io_timeout_ms),
        secs(t.lease_timeout_ms),
        secs(t.watchdog_timeout_ms),
        secs(t.suspect_after_ms),
    );
    if t.margin_ms != t.interval_ms.max(1000) {
        cmd.push_str(&format!(" --margin {}", secs(t.margin_ms)));
    }
    if !header.members.is_empty() {
        cmd.push_str(&format!(" --members {}", id_ranges(&header.members)));
    }
    if header.members_epoch != 0 {
        cmd.push_str(&format!(" --members-epoch {}", header.members_epoch));
    }
    if header.outage_survival {
        cmd.push_str(" --outage-survival on");
    }
    cmd
}

pub fn run(a: &RestoreArgs) -> CliResult {
    let path = a.volume.as_path();
    super::init::check_max_hosts(a.max_hosts)?;
    let members = match &a.members {
        Some(list) => parse_id_ranges(list, a.max_hosts)
            .map_err(|e| CliError::new(format!("--members {list}: {e}; nothing was written")))?,
        None => Vec::new(),
    };
    let timing = Timing {
        interval_ms: a.interval,
        io_timeout_ms: a.io_timeout,
        lease_timeout_ms: a.lease_timeout,
        watchdog_timeout_ms: a.watchdog_timeout,
        suspect_after_ms: a.suspect_after,
        margin_ms: a.margin.unwrap_or(a.interval.max(1000)),
    };
    if a.outage_survival.is_on() {
        super::init::check_survival_timing(
            &timing,
            "restore with --outage-survival off (this agent version ignores survival under this timing and refuses to start with it on)",
        )?;
    }
    let volume = Volume::open(path, Access::ReadWrite)?;
    let mut block0 = AlignedBuf::new(1)?;
    if volume.blocks() > 0 {
        volume.read_blocks(0, &mut block0)?;
    }
    if let Decoded::Header(h) = format::decode(block0.block(0)) {
        return Err(CliError::new(format!(
            "{}: block 0 holds a valid header (cluster {}, max_hosts {}): nothing to restore; nothing was written",
            path.display(),
            format::uuid_string(&h.cluster),
            h.max_hosts
        )));
    }
    // Every block a volume of max_hosts holds after block 0, or as many as there are.
    let census = volume.census(format::Geometry { max_hosts: a.max_hosts }.total_blocks())?;
    let found = census.cluster().map_err(|e| refused(path, &e))?;
    let cluster = match (a.cluster, found) {
        (Some(c), _) => c,
        (None, Some(c)) => c,
        (None, None) => {
            return Err(refused(
                path,
                "no intact host block names the cluster: pass --cluster UUID (printed by the running agents and by `hbfence status --json`)",
            ))
        }
    };
    let header = Header {
        cluster,
        max_hosts: a.max_hosts,
        timing,
        created_wall_ms: sys::wall_ms(),
        created_by: hostname(),
        members,
        members_epoch: a.members_epoch,
        outage_survival: a.outage_survival.is_on(),
        earlier_memberships: Vec::new(),
    };
    check_restore(&header, &census, volume.blocks()).map_err(|e| refused(path, &e))?;
    let mut buf = AlignedBuf::new(1)?;
    buf.block_mut(0).copy_from_slice(&format::encode_header(&header));
    volume.write_blocks(0, &buf)?;
    println!(
        "restored the header of {}: cluster {}, max_hosts {}; {} intact host block(s) agree; no host block was written",
        path.display(),
        format::uuid_string(&cluster),
        a.max_hosts,
        census.intact()
    );
    Ok(())
}

fn refused(path: &Path, why: &str) -> CliError {
    CliError::new(format!("{}: {why}; nothing was written", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_command_parses_back_to_the_same_parameters() {
        use clap::Parser;
        let header = Header {
            cluster: parse_uuid("2f1c0a4e-9b7d-4c1e-8a55-0d3b6f1e2a90").unwrap(),
            max_hosts: 16,
            timing: Timing { interval_ms: 1500, margin_ms: 2000, ..Timing::default() },
            created_wall_ms: 0,
            created_by: String::new(),
            members: vec![1, 2, 3, 9],
            members_epoch: 7,
            outage_survival: true,
            earlier_memberships: Vec::new(),
        };
        let cmd = restore_command(Path::new("/mnt/v/hb.vol"), &header);
        let cli = super::super::Cli::try_parse_from(cmd.split(' ')).unwrap();
        let super::super::Command::RestoreHeader(a) = cli.command else { panic!("{cmd}") };
        assert_eq!(a.cluster, Some(header.cluster));
        assert_eq!(a.max_hosts, 16);
        assert_eq!(a.interval, 1500);
        assert_eq!(a.margin, Some(2000));
        assert_eq!(
            (a.io_timeout, a.lease_timeout, a.watchdog_timeout, a.suspect_after),
            (
                header.timing.io_timeout_ms,
                header.timing.lease_timeout_ms,
                header.timing.watchdog_timeout_ms,
                header.timing.suspect_after_ms
            )
        );
        assert_eq!(parse_id_ranges(a.members.as_deref().unwrap(), 16), Ok(header.members));
        assert_eq!(a.members_epoch, 7);
        assert!(a.outage_survival.is_on());
        assert!(parse_uuid("nope").is_err());
    }
}
