//! `hbfence vms HOST`: the VMs HOST ran at its last heartbeat, read from the volumes (issue 15).
//! Read-only: works on any host and on a read-only mount (a management server's).

use super::text::{age, table, Align};
use super::{CliError, CliResult};
use crate::config::Config;
use crate::core::format::{self, VerdictKind};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct VmsArgs {
    /// Host id or name (names from the configuration or the volume).
    pub host: String,
    #[command(flatten)]
    pub source: super::inspect::VolumeSource,
}

pub fn run(a: &VmsArgs) -> CliResult {
    let (paths, config) = if a.source.volume.is_empty() {
        let config = Config::load(&a.source.config_path())?;
        (config.volumes.iter().map(|v| v.path.clone()).collect::<Vec<_>>(), Some(config))
    } else {
        (a.source.volume.clone(), None)
    };
    let (volumes, errors) = super::ops::open_read_only(&paths)?;
    if volumes.is_empty() {
        return Err(CliError::new(format!("no volume is readable: {}", errors.join("; "))));
    }
    let view = super::ops::read_quorum(&volumes, paths.len(), &errors)?;
    let max_hosts = volumes[0].1.max_hosts;
    let by_record = view.records().find(|r| r.name == a.host).map(|r| r.host_id);
    let id = config
        .as_ref()
        .and_then(|c| c.resolve_host(&a.host))
        .or_else(|| a.host.parse().ok())
        .or(by_record)
        .filter(|&id| id >= 1 && id <= max_hosts)
        .ok_or_else(|| {
            CliError::new(format!(
                "unknown host {:?}: give a host id (1..={max_hosts}) or a name from the config or the volume",
                a.host
            ))
        })?;
    let Some(record) = view.record(id) else {
        return Err(CliError::new(format!(
            "host {id} has no readable heartbeat on the volume: it never ran hbfence, or its block is torn on every volume"
        )));
    };
    let now = crate::sys::wall_ms();
    let vms = crate::inventory::merged_vms(&view, id, now);
    let verdict = view.current_verdict(id);
    if a.source.json {
        let mut out = crate::inventory::report_json(&vms);
        out["host"] = json!(id);
        out["name"] = json!(record.name);
        out["state"] = json!(record.state.as_str());
        out["incarnation"] = json!(record.incarnation);
        out["last_heartbeat"] = json!(super::text::wall_time(record.wall_ms));
        out["verdict"] = json!(verdict.map(|v| v.kind.as_str()));
        out["method"] = json!(verdict.map(|v| v.method.as_str()));
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let verdict_text = match verdict {
        Some(v) if v.kind == VerdictKind::Fenced => format!(", FENCED ({})", v.method.as_str()),
        Some(v) => format!(", verdict {} ({})", v.kind.as_str(), v.method.as_str()),
        None => String::new(),
    };
    let what = match vms.inventory {
        "none" => {
            "publishes no VM inventory (no source configured, or none collected yet)".to_string()
        }
        "unread" => "its list could not be read (torn or being rewritten): try again".to_string(),
        word => format!(
            "{} VM(s) at its last heartbeat ({}), list {} old",
            vms.domains.len(),
            word,
            age(vms.age_ms.unwrap_or(0) as i64)
        ),
    };
    println!("host {id} ({}){verdict_text}: {what}", record.name);
    if !vms.domains.is_empty() {
        let rows: Vec<Vec<String>> = vms
            .domains
            .iter()
            .map(|d| vec![format::uuid_string(&d.uuid), d.name.clone(), d.state.as_str().into()])
            .collect();
        let columns = [("UUID", Align::Left), ("NAME", Align::Left), ("STATE", Align::Left)];
        for line in table(&columns, &rows) {
            println!("{line}");
        }
    }
    Ok(())
}
