//! Driver for the VM inventory (issue 15): the collector thread `hbfence-inventory` (libvirt's
//! live status files, or the configured command with a timeout) and the reader the I/O threads
//! and the CLI use to fetch a host's list from the volume when its heartbeat names a new one.
//!
//! S7: collecting never happens in the petting thread. The collector hands its result over
//! through a one-slot handover: it sends only when the previous result was taken by the main
//! thread (`unread`), so at most one collection is ever queued, whatever the main thread does.

use crate::config::{InventoryConfig, InventorySource};
use crate::core::agent::Input;
use crate::core::format::{self, inventory_flags, ClusterId, Geometry, Inventory};
use crate::core::inventory::{parse_command_output, parse_libvirt_status, Collected, VmReport};
use crate::core::view::{Slot, VolumeView};
use crate::volume::{AlignedBuf, Volume};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The same failure of the source is logged at most this often (a new one at once).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(600);

/// The collector's handover flag: set while a result waits for the main thread.
#[derive(Clone, Default)]
pub struct Handover {
    unread: Arc<AtomicBool>,
}

impl Handover {
    /// The main thread took the result: the collector may send the next one.
    pub fn taken(&self) {
        self.unread.store(false, Ordering::Release);
    }
}

/// Starts `hbfence-inventory` (none for `source = "none"`): one collection per `interval`.
pub fn start(
    config: &InventoryConfig,
    interval: Duration,
    tx: Sender<Input>,
) -> Result<Option<Handover>, String> {
    if config.source == InventorySource::None {
        return Ok(None);
    }
    let handover = Handover::default();
    let flag = handover.clone();
    let config = config.clone();
    std::thread::Builder::new()
        .stack_size(crate::sys::THREAD_STACK)
        .name("hbfence-inventory".into())
        .spawn(move || {
            let mut next_log: Option<Instant> = None;
            let mut last_failure: Option<String> = None;
            let mut skipped = 0u64;
            loop {
                let started = Instant::now();
                let result = collect(&config);
                match &result {
                    // A new reason at once, the same one again at most every FAILURE_LOG_EVERY
                    // (a host without libvirt says so once, not every interval).
                    Collected::Failed(why) => {
                        if last_failure.as_ref() != Some(why)
                            || next_log.is_none_or(|t| Instant::now() >= t)
                        {
                            next_log = Some(Instant::now() + FAILURE_LOG_EVERY);
                            log::warn!("inventory ({}): {why}; publishing the last list collected, flagged stale (none before the first)", config.source.as_str());
                            last_failure = Some(why.clone());
                        }
                    }
                    Collected::Domains(_) => {
                        if last_failure.take().is_some() {
                            log::info!("inventory ({}): collected again", config.source.as_str());
                        }
                    }
                }
                if flag.unread.swap(true, Ordering::AcqRel) {
                    // The main thread has not taken the previous result: skip this one.
                    skipped += 1;
                    if skipped.is_power_of_two() {
                        log::warn!("inventory: {skipped} collections not taken by the main thread");
                    }
                } else if tx.send(Input::Inventory(result)).is_err() {
                    return;
                }
                std::thread::sleep(interval.saturating_sub(started.elapsed()));
            }
        })
        .map_err(|e| format!("cannot start the inventory thread: {e}"))?;
    Ok(Some(handover))
}

/// One collection from the configured source.
pub fn collect(config: &InventoryConfig) -> Collected {
    match config.source {
        InventorySource::None => Collected::Failed("no inventory source".into()),
        InventorySource::Libvirt => collect_libvirt(&config.status_dir),
        InventorySource::Command => {
            collect_command(&config.command, Duration::from_secs_f64(config.timeout))
        }
    }
}

/// libvirt's live status files: one `NAME.xml` per active domain of the QEMU driver, written
/// by libvirtd and readable without it. Reading them costs a few small tmpfs reads per
/// interval, never waits for libvirtd (a hung or stopped libvirtd changes nothing: the files
/// stay; a domain whose qemu died meanwhile is dropped by its pid), and needs no library. A
/// missing directory is a host without libvirt: no inventory, not "no VMs".
pub fn collect_libvirt(dir: &Path) -> Collected {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return Collected::Failed(format!(
                "{}: {e} (libvirt's QEMU driver not installed or never started?)",
                dir.display()
            ))
        }
    };
    let mut domains = Vec::new();
    for entry in entries {
        let path = match entry {
            Ok(e) => e.path(),
            Err(e) => return Collected::Failed(format!("{}: {e}", dir.display())),
        };
        if path.extension().is_none_or(|x| x != "xml") {
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // Removed between the listing and the read: the domain stopped.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Collected::Failed(format!("{}: {e}", path.display())),
        };
        match parse_libvirt_status(&text) {
            Ok((domain, pid)) => {
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    continue;
                }
                domains.push(domain)
            }
            // A file that does not parse fails the list: a domain left out would read as
            // stopped.
            Err(e) => return Collected::Failed(format!("{}: {e}", path.display())),
        }
    }
    Collected::Domains(domains)
}

/// The inventory command: one `UUID NAME [STATE]` per line on stdout, exit 0, within
/// `timeout` (else it is killed with its process group and the collection failed).
pub fn collect_command(argv: &[String], timeout: Duration) -> Collected {
    let Some((program, args)) = argv.split_first() else {
        return Collected::Failed("no command configured".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    match crate::fence::child::run(cmd, None, timeout) {
        Ok(f) if f.status.success() => {
            match parse_command_output(&String::from_utf8_lossy(&f.stdout)) {
                Ok(d) => Collected::Domains(d),
                Err(e) => Collected::Failed(format!("{program}: {e}")),
            }
        }
        Ok(f) => Collected::Failed(format!(
            "{program} failed ({}): {}",
            f.status,
            String::from_utf8_lossy(&f.stderr).trim()
        )),
        Err(crate::fence::child::RunError::TimedOut { .. }) => Collected::Failed(format!(
            "{program} did not finish within {} s: killed",
            timeout.as_secs_f64()
        )),
        Err(crate::fence::child::RunError::Spawn(e)) => {
            Collected::Failed(format!("{program}: cannot start it: {e}"))
        }
        Err(crate::fence::child::RunError::Wait(e)) => Collected::Failed(format!("{program}: {e}")),
    }
}

/// The VM lists a reader holds, fetched from the volume only when a heartbeat names a list
/// (incarnation, generation) it does not hold yet.
pub struct InventoryReader {
    held: BTreeMap<u32, Arc<Inventory>>,
    buf: AlignedBuf,
}

/// At most this many lists are fetched per cycle (a cluster starting at once would otherwise
/// make one cycle read every host's list); the rest follow in the next cycles.
pub const FETCHES_PER_CYCLE: usize = 8;

impl InventoryReader {
    pub fn new() -> std::io::Result<InventoryReader> {
        Ok(InventoryReader { held: BTreeMap::new(), buf: AlignedBuf::new(format::INVENTORY_SET)? })
    }

    /// Adds to `view.inventories` the list of every record of the view that publishes one,
    /// reading at most `limit` lists not held yet (a torn or rewritten set is retried at the
    /// next call). `except`: a host whose list is not wanted (the reader's own).
    pub fn fetch(
        &mut self,
        volume: &Volume,
        geo: Geometry,
        cluster: &ClusterId,
        view: &mut VolumeView,
        except: Option<u32>,
        limit: usize,
    ) {
        let mut fetched = 0;
        for slot in &view.slots {
            let Slot::Record(r) = slot else { continue };
            let info = &r.inventory;
            if Some(r.host_id) == except
                || info.flags & inventory_flags::PUBLISHED == 0
                || info.count == 0
            {
                continue;
            }
            let held = self
                .held
                .get(&r.host_id)
                .filter(|l| l.incarnation == r.incarnation && l.gen == info.gen);
            if let Some(l) = held {
                view.inventories.push(Arc::clone(l));
                continue;
            }
            if fetched >= limit {
                continue;
            }
            fetched += 1;
            let count = usize::from(info.count);
            let blocks = count.div_ceil(format::INVENTORY_PER_BLOCK);
            if blocks > self.buf.blocks() {
                continue;
            }
            let first = geo.inventory_set(r.host_id, info.flags & inventory_flags::SET_1 != 0);
            if volume.read_blocks_into(first, &mut self.buf, blocks).is_err() {
                continue;
            }
            let raw = &self.buf.as_slice()[..blocks * format::BLOCK_SIZE];
            if let Some(list) =
                format::assemble_inventory(raw, cluster, r.host_id, r.incarnation, info.gen, count)
            {
                let list = Arc::new(list);
                self.held.insert(r.host_id, Arc::clone(&list));
                view.inventories.push(list);
            }
        }
    }
}

/// A VM list as JSON (events, `status --json`, `check --json`, `vms --json`, the
/// `HBFENCE_VMS_FILE` of hooks).
pub fn report_json(r: &crate::core::inventory::VmReport) -> serde_json::Value {
    serde_json::json!({
        "inventory": r.inventory,
        "age_s": r.age_ms.map(|a| a as f64 / 1000.0),
        "vms": r.domains.iter().map(|d| serde_json::json!({
            "uuid": format::uuid_string(&d.uuid),
            "name": d.name,
            "state": d.state.as_str(),
        })).collect::<Vec<_>>(),
    })
}

/// Host `id`'s VM list as a reader without a daemon sees it (`status`, `check`, `vms`). The
/// age adds the time since the record's wall time to the age the host wrote: for people only
/// (it compares this host's wall clock with the writer's, S2), never for a decision.
pub fn merged_vms(view: &crate::core::view::MergedView, id: u32, now_wall_ms: u64) -> VmReport {
    let Some(r) = view.record(id) else {
        return VmReport { inventory: "none", ..VmReport::default() };
    };
    let info = &r.inventory;
    let word = crate::core::inventory::inventory_word(info.flags);
    if word == "none" {
        return VmReport { inventory: "none", ..VmReport::default() };
    }
    let age_ms = Some(u64::from(info.age_ms) + now_wall_ms.saturating_sub(r.wall_ms));
    match view.inventory(id) {
        Some(l) => VmReport { inventory: word, age_ms, domains: l.domains.clone() },
        None if info.count == 0 => VmReport { inventory: word, age_ms, domains: Vec::new() },
        None => VmReport { inventory: "unread", age_ms, domains: Vec::new() },
    }
}
