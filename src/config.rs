//! `/etc/hbfence/hbfence.toml`: parsing (unknown keys rejected) and validation (every message
//! states the rule broken and what to change).

use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/hbfence/hbfence.toml";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub host: HostConfig,
    #[serde(rename = "volume")]
    pub volumes: Vec<VolumeConfig>,
    #[serde(default)]
    pub watchdog: WatchdogConfig,
    #[serde(default)]
    pub self_fence: SelfFenceConfig,
    #[serde(default)]
    pub coordinator: CoordinatorConfig,
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub fencing: FencingConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The authenticated peer channel; absent: no socket, no thread.
    pub network: Option<NetworkConfig>,
    #[serde(default)]
    pub inventory: InventoryConfig,
}

/// `[inventory]`: where this host's list of running VMs comes from (issue 15).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    #[serde(default)]
    pub source: InventorySource,
    /// `source = "command"`: program (absolute path) and arguments; prints one
    /// `UUID NAME [STATE]` per running domain.
    #[serde(default)]
    pub command: Vec<String>,
    /// Seconds the command may run before it is killed (with its process group).
    #[serde(default = "default_inventory_timeout")]
    pub timeout: f64,
    /// `source = "libvirt"`: libvirt's live status files of the QEMU driver.
    #[serde(default = "default_libvirt_status_dir")]
    pub status_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InventorySource {
    /// libvirt's live status files (`/run/libvirt/qemu/*.xml`): no libvirtd call, no child.
    #[default]
    Libvirt,
    /// Publish no inventory ("no inventory", never "no VMs").
    None,
    Command,
}

impl InventorySource {
    pub fn as_str(self) -> &'static str {
        match self {
            InventorySource::Libvirt => "libvirt",
            InventorySource::None => "none",
            InventorySource::Command => "command",
        }
    }
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            source: InventorySource::default(),
            command: Vec::new(),
            timeout: default_inventory_timeout(),
            status_dir: default_libvirt_status_dir(),
        }
    }
}

fn default_inventory_timeout() -> f64 {
    2.0
}

pub const DEFAULT_LIBVIRT_STATUS_DIR: &str = "/run/libvirt/qemu";

fn default_libvirt_status_dir() -> PathBuf {
    PathBuf::from(DEFAULT_LIBVIRT_STATUS_DIR)
}

impl InventoryConfig {
    fn validate(&self) -> Result<(), String> {
        match self.source {
            InventorySource::Command => match self.command.first() {
                None => return Err("[inventory] source = \"command\" needs command = [\"/path/to/program\", \"arg\", ...] (it prints one `UUID NAME` line per running VM)".into()),
                Some(p) if !Path::new(p).is_absolute() => {
                    return Err(format!("[inventory] command program {p:?} must be an absolute path"))
                }
                Some(_) => {}
            },
            _ if !self.command.is_empty() => {
                return Err(format!(
                    "[inventory] command is used only with source = \"command\" (source is \"{}\")",
                    self.source.as_str()
                ))
            }
            _ => {}
        }
        if !(0.1..=60.0).contains(&self.timeout) {
            return Err(format!(
                "[inventory] timeout = {}: must be 0.1..=60 seconds (the command runs once per interval)",
                self.timeout
            ));
        }
        if !self.status_dir.is_absolute() {
            return Err(format!("[inventory] status_dir {:?} must be absolute", self.status_dir));
        }
        Ok(())
    }
}

pub const DEFAULT_KEY_FILE: &str = "/etc/hbfence/cluster.key";

/// `[network]`: UDP between the agents, every datagram authenticated under the cluster key.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// "ADDR:PORT" this agent receives on (every peer's `address` names its listen address).
    pub listen: String,
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
    /// How often every peer is challenged; default: half the volume's heartbeat interval.
    pub interval_ms: Option<u64>,
}

fn default_key_file() -> PathBuf {
    PathBuf::from(DEFAULT_KEY_FILE)
}

/// Bounds of `[network] interval_ms`.
pub const NETWORK_INTERVAL_MS: std::ops::RangeInclusive<u64> = 50..=60_000;

impl NetworkConfig {
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, String> {
        socket_addr(&self.listen, "[network] listen")
    }

    /// The challenge period for a volume whose heartbeat interval is `interval_ms`.
    pub fn challenge_every_ms(&self, interval_ms: u64) -> u64 {
        self.interval_ms.unwrap_or(
            (interval_ms / 2).clamp(*NETWORK_INTERVAL_MS.start(), *NETWORK_INTERVAL_MS.end()),
        )
    }
}

/// An "ADDR:PORT" with a numeric address (no name lookup: a resolver can block and can lie).
fn socket_addr(text: &str, what: &str) -> Result<std::net::SocketAddr, String> {
    let a: std::net::SocketAddr = text.parse().map_err(|_| {
        format!("{what} = {text:?}: must be a numeric IP address and port, e.g. \"10.0.0.11:7405\" or \"[fd00::11]:7405\"")
    })?;
    if a.port() == 0 {
        return Err(format!("{what} = {text:?}: the port must not be 0"));
    }
    Ok(a)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub id: u32,
    /// Default: the machine's hostname.
    pub name: Option<String>,
    /// Other names of this host (e.g. the IP that CloudStack knows it by), for lookups.
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    pub path: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogConfig {
    #[serde(default = "default_watchdog_device")]
    pub device: PathBuf,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig { device: default_watchdog_device() }
    }
}

fn default_watchdog_device() -> PathBuf {
    PathBuf::from("/dev/watchdog")
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SelfFenceAction {
    #[default]
    Reboot,
    Poweroff,
    Crashdump,
}

impl SelfFenceAction {
    /// The letter written to /proc/sysrq-trigger.
    pub fn sysrq_letter(self) -> u8 {
        match self {
            SelfFenceAction::Reboot => b'b',
            SelfFenceAction::Poweroff => b'o',
            SelfFenceAction::Crashdump => b'c',
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SelfFenceAction::Reboot => "reboot",
            SelfFenceAction::Poweroff => "poweroff",
            SelfFenceAction::Crashdump => "crashdump",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfFenceConfig {
    #[serde(default)]
    pub action: SelfFenceAction,
    #[serde(default = "default_sysrq_trigger")]
    pub sysrq_trigger: PathBuf,
}

impl Default for SelfFenceConfig {
    fn default() -> Self {
        SelfFenceConfig {
            action: SelfFenceAction::default(),
            sysrq_trigger: default_sysrq_trigger(),
        }
    }
}

fn default_sysrq_trigger() -> PathBuf {
    PathBuf::from("/proc/sysrq-trigger")
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    #[serde(default = "yes")]
    pub eligible: bool,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig { eligible: true }
    }
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: u32,
    pub name: Option<String>,
    /// Other names of the peer (e.g. the IP that CloudStack knows it by), for lookups.
    #[serde(default)]
    pub aliases: Vec<String>,
    pub bmc: Option<BmcConfig>,
    pub agent: Option<AgentConfig>,
    /// Its `[network] listen` address, "ADDR:PORT" (required with `[network]`).
    pub address: Option<String>,
}

impl PeerConfig {
    /// The password file of its BMC or fence agent, if any.
    pub fn password_file(&self) -> Option<&Path> {
        self.bmc
            .as_ref()
            .map(|b| b.password_file.as_path())
            .or_else(|| self.agent.as_ref().and_then(|a| a.password_file.as_deref()))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcConfig {
    pub address: String,
    #[serde(default = "default_ipmi_port")]
    pub port: u16,
    pub username: String,
    pub password_file: PathBuf,
    #[serde(default = "default_cipher_suite")]
    pub cipher_suite: u8,
    #[serde(default = "default_interface")]
    pub interface: String,
}

fn default_ipmi_port() -> u16 {
    623
}
fn default_cipher_suite() -> u8 {
    17
}
fn default_interface() -> String {
    "lanplus".into()
}

/// A fence-agents program (`fence_ipmilan`, `fence_redfish`, ...) driven through stdin.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub program: PathBuf,
    /// `key = "value"` lines passed on stdin (ip, username, ssl, ...). No password here.
    #[serde(default)]
    pub options: toml::Table,
    pub password_file: Option<PathBuf>,
}

impl AgentConfig {
    /// The options as `key=value` pairs (validation made sure every value is a scalar).
    pub fn option_pairs(&self) -> Vec<(String, String)> {
        self.options.iter().filter_map(|(k, v)| scalar_text(v).map(|t| (k.clone(), t))).collect()
    }
}

fn scalar_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AfterFence {
    /// Leave the peer powered off (default): an operator decides when it comes back.
    #[default]
    Off,
    /// Power the peer on again after the confirmed off.
    On,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FencingConfig {
    #[serde(default = "default_ipmitool")]
    pub ipmitool: PathBuf,
    /// Seconds within which a power-off must be confirmed by a power-status query.
    #[serde(default = "default_fence_timeout")]
    pub timeout: f64,
    /// Seconds for each ipmitool / fence-agent call.
    #[serde(default = "default_command_timeout")]
    pub command_timeout: f64,
    #[serde(default)]
    pub after: AfterFence,
}

impl Default for FencingConfig {
    fn default() -> Self {
        FencingConfig {
            ipmitool: default_ipmitool(),
            timeout: default_fence_timeout(),
            command_timeout: default_command_timeout(),
            after: AfterFence::default(),
        }
    }
}

fn default_ipmitool() -> PathBuf {
    PathBuf::from("ipmitool")
}
fn default_fence_timeout() -> f64 {
    30.0
}
fn default_command_timeout() -> f64 {
    10.0
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(default = "default_hooks_dir")]
    pub hooks_dir: PathBuf,
    /// JSON-lines event log.
    #[serde(default = "default_event_log")]
    pub log: PathBuf,
    /// Seconds a hook may run before it is killed.
    #[serde(default = "default_hook_timeout")]
    pub hook_timeout: f64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            hooks_dir: default_hooks_dir(),
            log: default_event_log(),
            hook_timeout: default_hook_timeout(),
        }
    }
}

fn default_hooks_dir() -> PathBuf {
    PathBuf::from("/etc/hbfence/hooks.d")
}
fn default_event_log() -> PathBuf {
    PathBuf::from("/var/log/hbfence/events.jsonl")
}
fn default_hook_timeout() -> f64 {
    30.0
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// SCHED_RR priority of the agent (1..=99); 0 disables realtime scheduling.
    #[serde(default = "default_rt_priority")]
    pub realtime_priority: i32,
    #[serde(default = "yes")]
    pub lock_memory: bool,
    /// Log to syslog (the journal picks it up); off: stderr only.
    #[serde(default = "yes")]
    pub syslog: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            runtime_dir: default_runtime_dir(),
            realtime_priority: default_rt_priority(),
            lock_memory: true,
            syslog: true,
        }
    }
}

fn default_runtime_dir() -> PathBuf {
    PathBuf::from("/run/hbfence")
}
fn default_rt_priority() -> i32 {
    10
}

/// `[metrics]`: the Prometheus textfile (node_exporter textfile collector); absent: off.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub textfile: Option<PathBuf>,
}

impl MetricsConfig {
    fn validate(&self) -> Result<(), String> {
        if let Some(p) = &self.textfile {
            if !p.is_absolute() || p.file_name().is_none() {
                return Err(format!(
                    "[metrics] textfile {p:?} must be an absolute file path, e.g. \"/var/lib/prometheus/node-exporter/hbfence.prom\""
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates a config file (file checks included, volume checks not).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "cannot read it: {e}. Create it (see /usr/share/doc/hbfence/hbfence.toml.example or `man hbfence.toml`) or pass --config PATH"
                ),
                _ => format!("cannot read it: {e}"),
            })
        })?;
        let config = Config::parse(&text).map_err(err)?;
        config.check_files().map_err(err)?;
        Ok(config)
    }

    /// Parses and validates the structure (no file-system checks).
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn host_name(&self) -> String {
        self.host.name.clone().unwrap_or_else(hostname)
    }

    fn validate(&self) -> Result<(), String> {
        if self.host.id == 0 {
            return Err(
                "[host] id must be at least 1 (host ids are 1..=max_hosts of the volume)".into()
            );
        }
        if self.volumes.is_empty() || self.volumes.len() > 3 {
            return Err(format!(
                "{} [[volume]] entries: hbfence uses 1 to 3 heartbeat volumes",
                self.volumes.len()
            ));
        }
        let mut paths = BTreeSet::new();
        for v in &self.volumes {
            if !v.path.is_absolute() {
                return Err(format!("[[volume]] path {:?} must be absolute", v.path));
            }
            if !paths.insert(&v.path) {
                return Err(format!(
                    "[[volume]] path {:?} is listed twice; each volume once",
                    v.path
                ));
            }
        }
        if let Some(name) = &self.host.name {
            check_name(name, "[host] name")?;
        }
        let mut ids = BTreeSet::new();
        for p in &self.peers {
            if p.id == 0 {
                return Err("[[peer]] id must be at least 1".into());
            }
            if p.id == self.host.id {
                return Err(format!(
                    "[[peer]] id {} is this host's own [host] id; list only the other hosts as peers",
                    p.id
                ));
            }
            if !ids.insert(p.id) {
                return Err(format!(
                    "[[peer]] id {} appears twice; every peer id must be unique",
                    p.id
                ));
            }
            if let Some(name) = &p.name {
                check_name(name, &format!("[[peer]] id {} name", p.id))?;
            }
            if p.bmc.is_some() && p.agent.is_some() {
                return Err(format!(
                    "[[peer]] id {}: give either `bmc` (ipmitool) or `agent` (a fence-agents program), not both",
                    p.id
                ));
            }
            if let Some(b) = &p.bmc {
                if b.address.trim().is_empty() {
                    return Err(format!("[[peer]] id {}: bmc.address is empty", p.id));
                }
                if b.username.is_empty() {
                    return Err(format!("[[peer]] id {}: bmc.username is empty", p.id));
                }
                if b.cipher_suite > 17 {
                    return Err(format!(
                        "[[peer]] id {}: bmc.cipher_suite {} is not an IPMI cipher suite (0..=17)",
                        p.id, b.cipher_suite
                    ));
                }
                if !matches!(b.interface.as_str(), "lan" | "lanplus") {
                    return Err(format!(
                        "[[peer]] id {}: bmc.interface must be \"lanplus\" or \"lan\"",
                        p.id
                    ));
                }
            }
            if let Some(a) = &p.agent {
                if a.options.contains_key("password") || a.options.contains_key("passwd") {
                    return Err(format!(
                        "[[peer]] id {}: put the password in agent.password_file, not in agent.options",
                        p.id
                    ));
                }
                if let Some((k, _)) = a.options.iter().find(|(_, v)| scalar_text(v).is_none()) {
                    return Err(format!(
                        "[[peer]] id {}: agent.options.{k} must be a string, number or boolean",
                        p.id
                    ));
                }
                if a.options.contains_key("action") {
                    return Err(format!(
                        "[[peer]] id {}: agent.options must not set `action`; hbfence sends off/status/on itself",
                        p.id
                    ));
                }
            }
        }
        let secs = |v: f64, what: &str, min: f64| -> Result<(), String> {
            if !(v.is_finite() && v >= min && v <= 3600.0) {
                return Err(format!("{what} = {v}: must be between {min} and 3600 seconds"));
            }
            Ok(())
        };
        secs(self.fencing.timeout, "[fencing] timeout", 1.0)?;
        secs(self.fencing.command_timeout, "[fencing] command_timeout", 0.5)?;
        secs(self.events.hook_timeout, "[events] hook_timeout", 0.1)?;
        if !(0..=99).contains(&self.daemon.realtime_priority) {
            return Err(format!(
                "[daemon] realtime_priority = {}: must be 0 (off) or 1..=99",
                self.daemon.realtime_priority
            ));
        }
        self.metrics.validate()?;
        self.inventory.validate()?;
        self.validate_network()?;
        self.validate_aliases()?;
        Ok(())
    }

    fn validate_network(&self) -> Result<(), String> {
        let Some(n) = &self.network else {
            if let Some(p) = self.peers.iter().find(|p| p.address.is_some()) {
                return Err(format!(
                    "[[peer]] id {}: `address` is set but there is no [network] section; add [network] listen = \"ADDR:PORT\" or remove the address",
                    p.id
                ));
            }
            return Ok(());
        };
        let listen = n.listen_addr()?;
        if !n.key_file.is_absolute() {
            return Err(format!("[network] key_file {:?} must be an absolute path", n.key_file));
        }
        if let Some(ms) = n.interval_ms {
            if !NETWORK_INTERVAL_MS.contains(&ms) {
                return Err(format!(
                    "[network] interval_ms = {ms}: must be between {} and {} ms",
                    NETWORK_INTERVAL_MS.start(),
                    NETWORK_INTERVAL_MS.end()
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for p in &self.peers {
            let what = format!("[[peer]] id {} address", p.id);
            let text = p.address.as_deref().ok_or_else(|| {
                format!(
                    "[[peer]] id {}: with [network] every peer needs `address = \"ADDR:PORT\"` (its [network] listen)",
                    p.id
                )
            })?;
            let a = socket_addr(text, &what)?;
            if a == listen {
                return Err(format!("{what} = {text:?} is this host's own [network] listen"));
            }
            if !seen.insert(a) {
                return Err(format!("{what} = {text:?} is listed for two peers; each peer listens on its own address"));
            }
        }
        Ok(())
    }

    /// Every alias is a valid name, and no alias or name names two hosts: a lookup by alias
    /// must never be ambiguous (CloudStack's `-h HOST_IP` picks the host to report DEAD).
    fn validate_aliases(&self) -> Result<(), String> {
        let mut names: Vec<(String, u32)> = Vec::new();
        if let Some(n) = &self.host.name {
            names.push((n.clone(), self.host.id));
        }
        names.extend(self.peers.iter().filter_map(|p| p.name.clone().map(|n| (n, p.id))));
        let hosts = std::iter::once((self.host.id, &self.host.aliases, "[host]".to_string()))
            .chain(self.peers.iter().map(|p| (p.id, &p.aliases, format!("[[peer]] id {}", p.id))));
        let mut seen: Vec<(String, u32)> = Vec::new();
        for (id, aliases, what) in hosts {
            for a in aliases {
                check_name(a, &format!("{what} alias"))?;
                if a.parse::<u32>().is_ok() {
                    return Err(format!(
                        "{what} alias {a:?} is a number, which lookups read as a host id; use another alias"
                    ));
                }
                if let Some((_, other)) = names.iter().find(|(n, other)| n == a && *other != id) {
                    return Err(format!(
                        "{what} alias {a:?} is the name of host {other}; an alias must not name another host"
                    ));
                }
                if let Some((_, other)) = seen.iter().find(|(n, _)| n == a) {
                    return Err(format!(
                        "{what} alias {a:?} is also an alias of host {other}; every alias must be unique across the config"
                    ));
                }
                seen.push((a.clone(), id));
            }
        }
        Ok(())
    }

    /// Checks that the files the config names exist and are safe: every password file is a
    /// regular file owned by root with no access for group or others (see
    /// [`crate::preflight::secret_file_rules`]). Only metadata: the content (not empty, one
    /// line) is checked by `run` and `run --check` ([`crate::preflight::check`]) and at every
    /// use, so that commands run by other users can still load the config.
    pub fn check_files(&self) -> Result<(), String> {
        if let Some(n) = &self.network {
            let meta = std::fs::metadata(&n.key_file).map_err(|e| {
                format!(
                    "[network] key_file {}: {e}. Create it with `hbfence keygen --output {}` on one host and copy it to every host (owner root, mode 0600)",
                    n.key_file.display(),
                    n.key_file.display()
                )
            })?;
            crate::preflight::secret_file_rules(&n.key_file, &meta)
                .map_err(|e| format!("[network] key_file {}: {e}", n.key_file.display()))?;
        }
        for p in &self.peers {
            if let Some(file) = p.password_file() {
                let meta = std::fs::metadata(file).map_err(|e| {
                    format!(
                        "[[peer]] id {}: password file {}: {e}. Create it with the BMC password, owner root, mode 0600",
                        p.id,
                        file.display()
                    )
                })?;
                crate::preflight::secret_file_rules(file, &meta).map_err(|e| {
                    format!("[[peer]] id {}: password file {}: {e}", p.id, file.display())
                })?;
            }
        }
        Ok(())
    }

    /// Checks ids against the volume's max_hosts.
    pub fn check_against_volume(&self, max_hosts: u32) -> Result<(), String> {
        if self.host.id > max_hosts {
            return Err(format!(
                "[host] id {} is above the volume's max_hosts {max_hosts}; use an id in 1..={max_hosts} or re-create the volume with a larger --max-hosts",
                self.host.id
            ));
        }
        for p in &self.peers {
            if p.id > max_hosts {
                return Err(format!(
                    "[[peer]] id {} is above the volume's max_hosts {max_hosts}",
                    p.id
                ));
            }
        }
        Ok(())
    }

    pub fn peer(&self, id: u32) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// Finds a host id by id or name (this host included).
    pub fn resolve_host(&self, what: &str) -> Option<u32> {
        if let Ok(id) = what.parse::<u32>() {
            return Some(id);
        }
        if self.host_name() == what {
            return Some(self.host.id);
        }
        if let Some(p) = self.peers.iter().find(|p| p.name.as_deref() == Some(what)) {
            return Some(p.id);
        }
        self.resolve_alias(what)
    }

    /// Finds a host id by one of its `aliases` (this host included).
    pub fn resolve_alias(&self, alias: &str) -> Option<u32> {
        if self.host.aliases.iter().any(|a| a == alias) {
            return Some(self.host.id);
        }
        self.peers.iter().find(|p| p.aliases.iter().any(|a| a == alias)).map(|p| p.id)
    }
}

fn check_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("{what} {name:?} must be 1 to 63 bytes"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(format!("{what} {name:?} contains control characters"));
    }
    Ok(())
}

/// The machine's host name, or "localhost" when unavailable.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[host]
id = 1
name = "kvm01"

[[volume]]
path = "/mnt/primary/hbfence.vol"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.host.id, 1);
        assert_eq!(c.watchdog.device, PathBuf::from("/dev/watchdog"));
        assert_eq!(c.self_fence.action, SelfFenceAction::Reboot);
        assert!(c.coordinator.eligible);
        assert_eq!(c.daemon.runtime_dir, PathBuf::from("/run/hbfence"));
    }

    #[test]
    fn brief_example_parses() {
        let text = r#"
[host]
id = 1
name = "kvm01"

[[volume]]
path = "/mnt/primary/hbfence.vol"

[watchdog]
device = "/dev/watchdog"

[self_fence]
action = "reboot"
sysrq_trigger = "/proc/sysrq-trigger"

[coordinator]
eligible = true

[[peer]]
id = 2
name = "kvm02"
bmc = { address = "10.0.0.12", port = 623, username = "admin", password_file = "/etc/hbfence/bmc/kvm02", cipher_suite = 17 }

[events]
hooks_dir = "/etc/hbfence/hooks.d"
"#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.peers[0].bmc.as_ref().unwrap().cipher_suite, 17);
    }

    #[test]
    fn unknown_key_is_named() {
        let e =
            Config::parse(&format!("{MINIMAL}\n[watchdog]\ndevise = \"/dev/x\"\n")).unwrap_err();
        assert!(e.contains("devise"), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn peer_rules() {
        let dup = format!("{MINIMAL}\n[[peer]]\nid = 2\n[[peer]]\nid = 2\n");
        assert!(Config::parse(&dup).unwrap_err().contains("appears twice"));
        let own = format!("{MINIMAL}\n[[peer]]\nid = 1\n");
        assert!(Config::parse(&own).unwrap_err().contains("own [host] id"));
        let both = format!(
            "{MINIMAL}\n[[peer]]\nid = 2\nbmc = {{ address = \"a\", username = \"u\", password_file = \"/p\" }}\nagent = {{ program = \"fence_x\" }}\n"
        );
        assert!(Config::parse(&both).unwrap_err().contains("not both"));
        let pw = format!("{MINIMAL}\n[[peer]]\nid = 2\nagent = {{ program = \"fence_x\", options = {{ password = \"x\" }} }}\n");
        assert!(Config::parse(&pw).unwrap_err().contains("password_file"));
    }

    #[test]
    fn id_above_max_hosts_is_refused() {
        let c = Config::parse(MINIMAL).unwrap();
        assert!(c.check_against_volume(1).is_ok());
        let c = Config::parse(&MINIMAL.replace("id = 1", "id = 9")).unwrap();
        assert!(c.check_against_volume(8).unwrap_err().contains("above the volume's max_hosts 8"));
    }

    #[test]
    fn volume_count_and_paths() {
        let none = "volume = []\n[host]\nid = 1\n";
        assert!(Config::parse(none).unwrap_err().contains("1 to 3"));
        let rel = MINIMAL.replace("/mnt/primary/hbfence.vol", "hb.vol");
        assert!(Config::parse(&rel).unwrap_err().contains("absolute"));
    }

    #[test]
    fn password_file_checks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        let text = format!(
            "{MINIMAL}\n[[peer]]\nid = 2\nbmc = {{ address = \"a\", username = \"u\", password_file = \"{}\" }}\n",
            pw.display()
        );
        let c = Config::parse(&text).unwrap();
        assert!(c.check_files().unwrap_err().contains("Create it"));
        std::fs::write(&pw, "secret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = c.check_files().unwrap_err();
        assert!(e.contains("0644") && e.contains("chmod 0600"), "{e}");
        // Group access is refused too, not only access by others.
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = c.check_files().unwrap_err();
        assert!(
            e.contains("0640") && e.contains("group or others") && e.contains("[[peer]] id 2"),
            "{e}"
        );
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        c.check_files().unwrap();
    }

    #[test]
    fn network_section_rules() {
        let c = Config::parse(MINIMAL).unwrap();
        assert!(c.network.is_none());
        let net = |extra: &str, peer: &str| {
            format!("{MINIMAL}\n[network]\nlisten = \"127.0.0.1:7405\"\n{extra}\n[[peer]]\nid = 2\n{peer}\n")
        };
        let c = Config::parse(&net("", "address = \"127.0.0.2:7405\"")).unwrap();
        let n = c.network.as_ref().unwrap();
        assert_eq!(n.key_file, PathBuf::from(DEFAULT_KEY_FILE));
        assert_eq!(n.challenge_every_ms(5_000), 2_500, "half the heartbeat interval");
        assert_eq!(n.challenge_every_ms(60), 50, "never below the minimum");
        let e = Config::parse(&net("", "")).unwrap_err();
        assert!(e.contains("[[peer]] id 2") && e.contains("needs `address"), "{e}");
        let e = Config::parse(&net("", "address = \"kvm02:7405\"")).unwrap_err();
        assert!(e.contains("numeric IP address and port"), "{e}");
        let e = Config::parse(&net("", "address = \"127.0.0.1:7405\"")).unwrap_err();
        assert!(e.contains("own [network] listen"), "{e}");
        let e =
            Config::parse(&net("interval_ms = 10", "address = \"127.0.0.2:7405\"")).unwrap_err();
        assert!(e.contains("interval_ms = 10") && e.contains("between 50"), "{e}");
        let e =
            Config::parse(&net("key_file = \"k\"", "address = \"127.0.0.2:7405\"")).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = Config::parse(&net("port = 1", "address = \"127.0.0.2:7405\"")).unwrap_err();
        assert!(e.contains("port"), "unknown keys are errors: {e}");
        let e = Config::parse(&format!("{MINIMAL}\n[[peer]]\nid = 2\naddress = \"127.0.0.2:1\"\n"))
            .unwrap_err();
        assert!(e.contains("no [network] section"), "{e}");
        let two = format!(
            "{}\n[[peer]]\nid = 3\naddress = \"127.0.0.2:7405\"\n",
            net("", "address = \"127.0.0.2:7405\"")
        );
        assert!(Config::parse(&two).unwrap_err().contains("two peers"));
    }

    #[test]
    fn aliases_resolve_and_must_be_unambiguous() {
        let text = format!(
            "{}\naliases = [\"10.1.1.11\"]\n[[volume]]\npath = \"/v\"\n[[peer]]\nid = 2\nname = \"kvm02\"\naliases = [\"10.1.1.12\", \"kvm02.example\"]\n",
            "[host]\nid = 1\nname = \"kvm01\""
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.resolve_host("10.1.1.12"), Some(2));
        assert_eq!(c.resolve_host("kvm02.example"), Some(2));
        assert_eq!(c.resolve_host("10.1.1.11"), Some(1));
        assert_eq!(c.resolve_alias("kvm02"), None, "a name is no alias");
        assert_eq!(c.resolve_host("10.1.1.99"), None);
        let dup = text.replace("\"kvm02.example\"", "\"10.1.1.11\"");
        let e = Config::parse(&dup).unwrap_err();
        assert!(e.contains("also an alias of host 1") && e.contains("unique"), "{e}");
        let clash = text.replace("\"kvm02.example\"", "\"kvm01\"");
        let e = Config::parse(&clash).unwrap_err();
        assert!(e.contains("name of host 1"), "{e}");
        let own_name = text.replace("\"kvm02.example\"", "\"kvm02\"");
        Config::parse(&own_name).unwrap();
        let number = text.replace("\"kvm02.example\"", "\"7\"");
        assert!(Config::parse(&number).unwrap_err().contains("is a number"));
        let empty = text.replace("\"kvm02.example\"", "\"\"");
        assert!(Config::parse(&empty).unwrap_err().contains("1 to 63 bytes"));
    }

    #[test]
    fn metrics_section_is_optional_strict_and_absolute() {
        assert_eq!(Config::parse(MINIMAL).unwrap().metrics.textfile, None);
        let c = Config::parse(&format!(
            "{MINIMAL}\n[metrics]\ntextfile = \"/var/lib/x/hbfence.prom\"\n"
        ))
        .unwrap();
        assert_eq!(c.metrics.textfile, Some(PathBuf::from("/var/lib/x/hbfence.prom")));
        let e = Config::parse(&format!("{MINIMAL}\n[metrics]\ntextfile = \"hbfence.prom\"\n"))
            .unwrap_err();
        assert!(e.contains("[metrics] textfile") && e.contains("absolute"), "{e}");
        let e =
            Config::parse(&format!("{MINIMAL}\n[metrics]\ntext_file = \"/x.prom\"\n")).unwrap_err();
        assert!(e.contains("text_file"), "{e}");
    }
}
