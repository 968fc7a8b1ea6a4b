//! Read-only commands: `dump`, `status --volume`, `run --check`.

use super::text::{age, hex, table, wall_time, Align};
use super::{CliError, CliResult, RunArgs};
use crate::config::Config;
use crate::core::format::{self, caps, Decoded, Header, Heartbeat, Mailbox, Verdict};
use crate::core::header::Membership;
use crate::core::timing::format_secs;
use crate::sys;
use crate::volume::{Access, Snapshot, Volume};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// Volume file or block device.
    #[arg(long, value_name = "PATH")]
    pub volume: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Where a read-only report finds the volumes (`status`, `vms`): a configuration, or the
/// volumes themselves.
#[derive(clap::Args, Debug)]
pub struct VolumeSource {
    /// This host's configuration, naming the volumes (default /etc/hbfence/hbfence.toml).
    #[arg(long, short = 'c', value_name = "PATH", conflicts_with = "volume")]
    pub config: Option<PathBuf>,
    /// Read these volumes directly (no configuration needed); repeat for every volume of the
    /// cluster: the answer comes from a read quorum of them (1 of 1, 2 of 2, 2 of 3).
    #[arg(long, value_name = "PATH")]
    pub volume: Vec<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

impl VolumeSource {
    /// The configuration to read when no `--volume` is given.
    pub fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG))
    }
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub source: VolumeSource,
    /// Only this host's own agent, from its status file (no volume is read): one line and a
    /// Nagios-style exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    #[arg(long, conflicts_with_all = ["volume", "json"])]
    pub health: bool,
}

fn header_json(h: &Header) -> Value {
    let t = &h.timing;
    json!({
        "crc": "ok",
        "format_version": format::FORMAT_VERSION,
        "cluster": format::uuid_string(&h.cluster),
        "max_hosts": h.max_hosts,
        "created_wall_time": wall_time(h.created_wall_ms),
        "created_by": h.created_by,
        "members": h.members,
        "members_epoch": h.members_epoch,
        "outage_survival": h.outage_survival,
        "earlier_memberships": h.earlier_memberships.iter().map(|m| json!({
            "members": m.members,
            "members_epoch": m.epoch,
            "outage_survival": m.outage_survival,
        })).collect::<Vec<_>>(),
        "timing_ms": {
            "interval": t.interval_ms,
            "io_timeout": t.io_timeout_ms,
            "lease_timeout": t.lease_timeout_ms,
            "watchdog_timeout": t.watchdog_timeout_ms,
            "suspect_after": t.suspect_after_ms,
            "margin": t.margin_ms,
            "dead_after": t.dead_after_ms(),
        },
    })
}

fn heartbeat_json(hb: &Heartbeat, now_wall: u64) -> Value {
    json!({
        "id": hb.host_id,
        "name": hb.name,
        "state": hb.state.as_str(),
        "seq": hb.seq,
        "incarnation": hb.incarnation,
        "wall_time": wall_time(hb.wall_ms),
        "wall_time_ms": hb.wall_ms,
        "age_s": (now_wall as i64 - hb.wall_ms as i64) as f64 / 1000.0,
        "mono_ms": hb.mono_ms,
        "boot_id": hex(&hb.boot_id),
        "capabilities": caps::names(hb.caps),
        "watchdog_timeout_s": hb.watchdog_timeout_s,
        "ack_nonce": hb.ack_nonce,
        "coordinator": hb.coordinator,
        "verdict_gen": hb.verdict_gen,
        "verdict_author": hb.verdict_author,
        // The part of the table in verdict pages (`status` and `check` read them).
        "verdicts_in_pages": hb.verdicts_in_pages,
        "verdicts": hb.verdicts.iter().map(verdict_json).collect::<Vec<_>>(),
        // What the heartbeat says of the writer's VM list (`hbfence vms` reads the list).
        "inventory": {
            "state": crate::core::inventory::inventory_word(hb.inventory.flags),
            "generation": hb.inventory.gen,
            "domains": hb.inventory.count,
            "set": u8::from(hb.inventory.flags & format::inventory_flags::SET_1 != 0),
            "age_s": f64::from(hb.inventory.age_ms) / 1000.0,
        },
    })
}

fn verdict_json(v: &Verdict) -> Value {
    json!({
        "id": v.host_id,
        "verdict": v.kind.as_str(),
        "method": v.method.as_str(),
        "incarnation": v.incarnation,
        "wall_time": wall_time(v.wall_ms),
        "seq": v.seq,
        // The generation in which the entry last changed (0: unknown).
        "changed_gen": v.changed_gen,
    })
}

fn verdict_line(v: &Verdict) -> String {
    format!(
        "    verdict: host {} {} (method {}, incarnation {}) at {}",
        v.host_id,
        v.kind.as_str(),
        v.method.as_str(),
        v.incarnation,
        wall_time(v.wall_ms)
    )
}

/// The VM list `hb` names, from its inventory set (None: it names no list). A set that does
/// not hold the named generation whole (torn, or rewritten since this heartbeat) is said so.
fn dump_inventory(snap: &Snapshot, hb: &Heartbeat, lines: &mut Vec<String>) -> Option<Value> {
    let info = &hb.inventory;
    if info.flags & format::inventory_flags::PUBLISHED == 0 {
        return None;
    }
    let set = u8::from(info.flags & format::inventory_flags::SET_1 != 0);
    let Some(inv) = snap.inventory(hb) else {
        lines.push(format!(
            "    vms: generation {} set {set}: {} domain(s) named, the set does not hold them whole (torn, or rewritten since this heartbeat)",
            info.gen, info.count
        ));
        return Some(json!("unreadable"));
    };
    lines.push(format!(
        "    vms: generation {} set {set}: {} domain(s){}",
        info.gen,
        inv.domains.len(),
        if info.flags & format::inventory_flags::OVERFLOW != 0 {
            " (overflow: list cut)"
        } else {
            ""
        }
    ));
    lines.extend(inv.domains.iter().map(|d| {
        format!("      {} {} {}", format::uuid_string(&d.uuid), d.state.as_str(), d.name)
    }));
    Some(json!(inv
        .domains
        .iter()
        .map(|d| json!({"uuid": format::uuid_string(&d.uuid), "name": d.name, "state": d.state.as_str()}))
        .collect::<Vec<_>>()))
}

/// The verdict pages that hold the rest of `hb`'s table, as readers judge them: a page counts
/// only if it names the heartbeat's (generation, author) and its own index
/// (`view::complete_tables`); anything else is shown with its state, so a torn or stale page
/// is visible instead of a table that silently lacks verdicts.
fn dump_verdict_pages(snap: &Snapshot, hb: &Heartbeat, lines: &mut Vec<String>) -> Vec<Value> {
    let geo = snap.geometry;
    let mut pages = Vec::new();
    let mut found = 0usize;
    for j in 0..geo.pages_per_host() {
        let block = geo.page_block(hb.host_id, j);
        let d = snap.verdict_page(hb.host_id, j);
        let state = match &d {
            Decoded::VerdictPage(p) if p.cluster != hb.cluster => "other-cluster",
            Decoded::VerdictPage(p) if p.host_id != hb.host_id => "wrong-host-id",
            Decoded::VerdictPage(p) if !crate::core::view::page_of_table(p, hb, j as usize) => {
                "other-table"
            }
            Decoded::VerdictPage(_) => "ok",
            other => other.crc_state(),
        };
        let mut v = json!({"page": j, "block": block, "crc": state});
        match &d {
            Decoded::VerdictPage(p) => {
                v["verdict_gen"] = json!(p.verdict_gen);
                v["verdict_author"] = json!(p.verdict_author);
                v["verdicts"] = json!(p.verdicts.iter().map(verdict_json).collect::<Vec<_>>());
                lines.push(format!(
                    "    verdict page {j} (block {block}): {state}, generation {} by host {}, {} verdicts",
                    p.verdict_gen,
                    p.verdict_author,
                    p.verdicts.len()
                ));
                if state == "ok" {
                    found += p.verdicts.len();
                    lines.extend(p.verdicts.iter().map(verdict_line));
                }
            }
            Decoded::Empty if found >= hb.verdicts_in_pages as usize => continue,
            _ => lines.push(format!("    verdict page {j} (block {block}): {state}")),
        }
        pages.push(v);
    }
    if found != hb.verdicts_in_pages as usize {
        lines.push(format!(
            "    table incomplete: {} verdicts belong in the pages, {found} found in pages of this table (readers do not offer this copy)",
            hb.verdicts_in_pages
        ));
    }
    pages
}

fn mailbox_json(m: &Mailbox) -> Value {
    json!({
        "id": m.host_id,
        "command": m.command.as_str(),
        "nonce": m.nonce,
        "sender": m.sender,
        "sender_name": m.sender_name,
        "target_incarnation": m.target_incarnation,
        "seen_verdict_gen": m.seen_verdict_gen,
        "wall_time": wall_time(m.wall_ms),
    })
}

/// The CRC state of a decoded host block, with blocks of another cluster told apart.
fn block_state(d: &Decoded, cluster: &[u8; 16]) -> &'static str {
    match d {
        Decoded::Heartbeat(hb) if &hb.cluster != cluster => "other-cluster",
        Decoded::Mailbox(m) if &m.cluster != cluster => "other-cluster",
        Decoded::Header(_) => "misplaced-header",
        d => d.crc_state(),
    }
}

fn open_snapshot(path: &std::path::Path) -> Result<(Volume, Snapshot), CliError> {
    let volume = Volume::open(path, Access::ReadOnly)?;
    let snap = volume.read_all()?;
    Ok((volume, snap))
}

pub fn dump(a: &DumpArgs) -> CliResult {
    let (volume, snap) = open_snapshot(&a.volume)?;
    let h = &snap.header;
    let now = sys::wall_ms();
    let mut hosts = Vec::new();
    let mut mailboxes = Vec::new();
    let mut lines = Vec::new();
    for id in 1..=h.max_hosts {
        let d = snap.heartbeat(id);
        let state = block_state(&d, &h.cluster);
        match &d {
            Decoded::Empty => {}
            Decoded::Heartbeat(hb) if state == "ok" && hb.host_id == id => {
                let mut v = heartbeat_json(hb, now);
                v["block"] = json!(snap.geometry.heartbeat_block(id));
                v["crc"] = json!("ok");
                lines.push(heartbeat_line(hb, now));
                lines.extend(hb.verdicts.iter().map(verdict_line));
                if hb.verdicts_in_pages > 0 {
                    let pages = dump_verdict_pages(&snap, hb, &mut lines);
                    v["verdict_pages"] = json!(pages);
                }
                if let Some(vms) = dump_inventory(&snap, hb, &mut lines) {
                    v["inventory"]["vms"] = vms;
                }
                hosts.push(v);
            }
            other => {
                let state = if matches!(other, Decoded::Heartbeat(_)) && state == "ok" {
                    "wrong-host-id"
                } else {
                    state
                };
                hosts.push(
                    json!({"id": id, "block": snap.geometry.heartbeat_block(id), "crc": state}),
                );
                lines.push(format!("heartbeat {id:>4}: {state}"));
            }
        }
        let m = snap.mailbox(id);
        let mstate = block_state(&m, &h.cluster);
        match &m {
            Decoded::Empty => {}
            Decoded::Mailbox(mb) if mstate == "ok" => {
                let mut v = mailbox_json(mb);
                v["block"] = json!(snap.geometry.mailbox_block(id));
                v["crc"] = json!("ok");
                mailboxes.push(v);
                lines.push(format!(
                    "mailbox   {id:>4}: ok  {} nonce {} from {} ({}) target incarnation {} saw verdicts {} at {}",
                    mb.command.as_str(),
                    mb.nonce,
                    mb.sender,
                    if mb.sender_name.is_empty() { "-" } else { &mb.sender_name },
                    mb.target_incarnation,
                    mb.seen_verdict_gen.map_or("unknown".into(), |g| format!("gen {g}")),
                    wall_time(mb.wall_ms)
                ));
            }
            _ => {
                mailboxes.push(
                    json!({"id": id, "block": snap.geometry.mailbox_block(id), "crc": mstate}),
                );
                lines.push(format!("mailbox   {id:>4}: {mstate}"));
            }
        }
    }
    if a.json {
        let out = json!({
            "volume": volume.path(),
            "size_bytes": volume.size_bytes(),
            "header": header_json(h),
            "hosts": hosts,
            "mailboxes": mailboxes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let t = &h.timing;
    println!(
        "volume {}: {} bytes, {} blocks of 4096",
        volume.path().display(),
        volume.size_bytes(),
        volume.blocks()
    );
    println!(
        "header: ok  format {}  cluster {}  max_hosts {}  created {} by {}",
        format::FORMAT_VERSION,
        format::uuid_string(&h.cluster),
        h.max_hosts,
        wall_time(h.created_wall_ms),
        h.created_by
    );
    println!(
        "timing: interval {}  io_timeout {}  lease_timeout {}  watchdog_timeout {}  suspect_after {}  margin {}  dead_after {}",
        format_secs(t.interval_ms),
        format_secs(t.io_timeout_ms),
        format_secs(t.lease_timeout_ms),
        format_secs(t.watchdog_timeout_ms),
        format_secs(t.suspect_after_ms),
        format_secs(t.margin_ms),
        format_secs(t.dead_after_ms())
    );
    println!(
        "members: {}  outage_survival {}",
        Membership::of(h).describe(),
        if h.outage_survival { "on" } else { "off" }
    );
    if !h.earlier_memberships.is_empty() {
        let earlier: Vec<String> = h.earlier_memberships.iter().map(Membership::describe).collect();
        println!("earlier memberships: {}", earlier.join("; "));
    }
    if lines.is_empty() {
        println!("(every host block is empty: no host has written yet)");
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// The membership of the newest header among the volumes' (the highest epoch): what the
/// agents follow once a read quorum holds it.
pub(super) fn newest_membership<'a>(headers: impl Iterator<Item = &'a Header>) -> Membership {
    headers.max_by_key(|h| h.members_epoch).map(Membership::of).unwrap_or_default()
}

fn heartbeat_line(hb: &Heartbeat, now: u64) -> String {
    format!(
        "heartbeat {:>4}: ok  {} state {} seq {} incarnation {} wall {} (age {}) mono {} ms boot {} caps [{}] watchdog {} s ack {} coordinator {}",
        hb.host_id,
        hb.name,
        hb.state.as_str(),
        hb.seq,
        hb.incarnation,
        wall_time(hb.wall_ms),
        age(now as i64 - hb.wall_ms as i64),
        hb.mono_ms,
        hex(&hb.boot_id[..4]),
        caps::names(hb.caps).join(","),
        hb.watchdog_timeout_s,
        hb.ack_nonce,
        hb.coordinator
    )
}

pub fn status(a: &StatusArgs) -> CliResult {
    let src = &a.source;
    if src.volume.is_empty() {
        if a.health {
            return super::ops::health(&src.config_path());
        }
        return super::ops::status_config(&src.config_path(), src.json);
    }
    let (volumes, errors) = super::ops::open_read_only(&src.volume)?;
    let view = super::ops::read_quorum(&volumes, src.volume.len(), &errors)?;
    let h = &volumes[0].1;
    let now = sys::wall_ms();
    let rows: Vec<&Heartbeat> = view.records().collect();
    // Hosts whose block is torn on every volume: a verdict about them still stands.
    let torn: Vec<(u32, format::Verdict)> = (1..=h.max_hosts)
        .filter(|&id| matches!(view.slot(id), Some(crate::core::view::Slot::NoNews)))
        .filter_map(|id| view.current_verdict(id).map(|v| (id, v)))
        .collect();
    let coordinator = view.coordinator();
    let verdict_of = |id: u32| view.current_verdict(id);
    let paths = volumes.iter().map(|(v, _)| v.path().display().to_string()).collect::<Vec<_>>();
    let m = newest_membership(volumes.iter().map(|(_, h)| h));
    if src.json {
        let hosts: Vec<Value> = rows
            .iter()
            .map(|hb| {
                let mut v = heartbeat_json(hb, now);
                let verdict = verdict_of(hb.host_id);
                v["verdict"] = json!(verdict.map(|v| v.kind.as_str()));
                v["method"] = json!(verdict.map(|v| v.method.as_str()));
                v["vms"] = crate::inventory::report_json(&crate::inventory::merged_vms(
                    &view,
                    hb.host_id,
                    now,
                ));
                v
            })
            .chain(torn.iter().map(|(id, v)| {
                json!({"id": id, "crc": "unreadable", "incarnation": v.incarnation, "verdict": v.kind.as_str(), "method": v.method.as_str()})
            }))
            .collect();
        let out = json!({
            "volume": paths[0],
            "volumes": paths,
            "cluster": format::uuid_string(&h.cluster),
            "max_hosts": h.max_hosts,
            "members": m.members,
            "members_epoch": m.epoch,
            "outage_survival": m.outage_survival,
            "coordinator": coordinator,
            "hosts": hosts,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "volume {} cluster {} ({} of {} host slots used), coordinator {}, members {}",
        paths.join(", "),
        format::uuid_string(&h.cluster),
        rows.len(),
        h.max_hosts,
        coordinator.map_or("none".to_string(), |c| c.to_string()),
        m.describe()
    );
    let mut cells: Vec<Vec<String>> = Vec::new();
    for hb in &rows {
        let verdict = verdict_of(hb.host_id)
            .map_or("-".to_string(), |v| format!("{} ({})", v.kind.as_str(), v.method.as_str()));
        cells.push(vec![
            hb.host_id.to_string(),
            hb.name.clone(),
            hb.state.as_str().to_string(),
            hb.seq.to_string(),
            hb.incarnation.to_string(),
            wall_time(hb.wall_ms),
            age(now as i64 - hb.wall_ms as i64),
            verdict,
            caps::names(hb.caps).join(","),
        ]);
    }
    for (id, v) in &torn {
        cells.push(vec![
            id.to_string(),
            "?".into(),
            "unreadable".into(),
            "-".into(),
            v.incarnation.to_string(),
            "-".into(),
            "-".into(),
            format!("{} ({})", v.kind.as_str(), v.method.as_str()),
            String::new(),
        ]);
    }
    let columns = [
        ("ID", Align::Right),
        ("NAME", Align::Left),
        ("STATE", Align::Left),
        ("SEQ", Align::Right),
        ("INCARNATION", Align::Right),
        ("LAST WRITE (UTC)", Align::Left),
        ("AGE", Align::Right),
        ("VERDICT", Align::Left),
        ("CAPABILITIES", Align::Left),
    ];
    for line in table(&columns, &cells) {
        println!("{line}");
    }
    if rows.is_empty() && torn.is_empty() {
        println!("(no host has written a heartbeat yet)");
    }
    println!("(ages compare this machine's wall clock with the writers': for people only, not for liveness)");
    Ok(())
}

/// `run --check`: every check `run` makes before it arms anything (the config and its files,
/// the volumes, the watchdog device without opening it, the sysrq trigger, the hooks, the event
/// log, the runtime dir: [`crate::preflight::check`]), with the exit code `run` would give.
pub fn run_check(a: &RunArgs) -> CliResult {
    let fail = |crate::daemon::StartError(message, code)| CliError { message, code };
    let config = Config::load(&a.config)
        .map_err(|e| CliError { message: e.to_string(), code: crate::daemon::exit_code::CONFIG })?;
    let checked = crate::preflight::check(&config).map_err(fail)?;
    for (v, (vol, h)) in config.volumes.iter().zip(&checked.volumes) {
        println!(
            "volume {}: ok (cluster {}, max_hosts {}, {} bytes, members {})",
            v.path.display(),
            format::uuid_string(&checked.header.cluster),
            checked.header.max_hosts,
            vol.size_bytes(),
            Membership::of(h).describe()
        );
    }
    let kind = match checked.watchdog {
        crate::watchdog::DeviceKind::Kernel => "character device",
        crate::watchdog::DeviceKind::Double => "FIFO test double",
    };
    println!("watchdog {}: ok ({kind}, not opened)", config.watchdog.device.display());
    println!("hooks {}: ok ({} hook(s))", config.events.hooks_dir.display(), checked.hooks.len());
    if let Some(n) = &config.network {
        // Not bound here: a running agent holds the port; `run` binds it before arming.
        println!(
            "network {}: ok (key {} checked, {} peer address(es), port not bound by --check)",
            n.listen,
            n.key_file.display(),
            config.peers.len()
        );
    }
    for w in &checked.warnings {
        eprintln!("hbfence: warning: {w}");
    }
    println!(
        "config {}: ok (host {} \"{}\", {} volume(s), {} peer(s))",
        a.config.display(),
        config.host.id,
        config.host_name(),
        config.volumes.len(),
        config.peers.len()
    );
    Ok(())
}
