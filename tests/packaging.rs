//! Packaging golden tests: the systemd unit's essential directives, the shipped example
//! config (it must parse with the crate's own parser, commented-out keys included), the
//! package metadata in Cargo.toml, the maintainer scripts, and `systemd-analyze verify`.
//! The .deb/.rpm build and install check is `packaging/check` (run by tests/run-all).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A unit file as section -> key -> values (a key may repeat; an empty value resets it).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    let mut joined = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        // Continuation lines end with a backslash.
        if let Some(part) = line.strip_suffix('\\') {
            joined.push_str(part);
            joined.push(' ');
            continue;
        }
        joined.push_str(line);
        let line = std::mem::take(&mut joined);
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].to_string();
            unit.entry(section.clone()).or_default();
            continue;
        }
        let (key, value) =
            line.split_once('=').unwrap_or_else(|| panic!("not a key=value line: {line:?}"));
        assert!(!section.is_empty(), "{key} outside a section");
        let values = unit.entry(section.clone()).or_default().entry(key.trim().into()).or_default();
        let value = value.trim();
        if value.is_empty() {
            values.clear();
        } else {
            values.push(value.to_string());
        }
    }
    unit
}

fn unit() -> Unit {
    parse_unit(&read("systemd/hbfence.service"))
}

/// The single value of `section.key`; panics when it is missing or repeated.
fn one(unit: &Unit, section: &str, key: &str) -> String {
    let values = unit.get(section).and_then(|s| s.get(key));
    match values.map(Vec::as_slice) {
        Some([v]) => v.clone(),
        other => panic!("[{section}] {key}: expected one value, found {other:?}"),
    }
}

/// Every word of every value of `section.key` (for list settings such as After=).
fn words(unit: &Unit, section: &str, key: &str) -> Vec<String> {
    unit.get(section)
        .and_then(|s| s.get(key))
        .map(|vs| vs.iter().flat_map(|v| v.split_whitespace().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn absent(unit: &Unit, section: &str, key: &str) -> bool {
    unit.get(section).and_then(|s| s.get(key)).is_none_or(Vec::is_empty)
}

/// systemd time span ("5min", "300", "90s", "1min 30s") in seconds.
fn seconds(span: &str) -> u64 {
    let mut total = 0;
    for part in span.split_whitespace() {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let n: u64 = digits.parse().unwrap_or_else(|_| panic!("time span {span:?}"));
        total += match &part[digits.len()..] {
            "" | "s" | "sec" => n,
            "m" | "min" => n * 60,
            "h" => n * 3600,
            unit => panic!("time unit {unit:?} in {span:?}"),
        };
    }
    total
}

#[test]
fn unit_starts_the_daemon_as_a_notify_service() {
    let u = unit();
    assert_eq!(one(&u, "Service", "Type"), "notify");
    assert_eq!(one(&u, "Service", "NotifyAccess"), "main");
    assert_eq!(
        one(&u, "Service", "ExecStart"),
        "/usr/sbin/hbfence run --config /etc/hbfence/hbfence.toml"
    );
    assert_eq!(one(&u, "Service", "ExecReload"), "kill -HUP $MAINPID");
    // READY=1 comes after 1.5 intervals of probing plus a write: intervals up to 60 s and
    // io_timeout up to 60 s must fit.
    let start = seconds(&one(&u, "Service", "TimeoutStartSec"));
    assert!(start >= 90 + 60 + 30, "TimeoutStartSec {start} s is too short");
    // A stop writes `leaving` on a write quorum; if storage is gone the lease expires first.
    let stop = seconds(&one(&u, "Service", "TimeoutStopSec"));
    assert!(stop >= 120, "TimeoutStopSec {stop} s is too short");
    assert_eq!(one(&u, "Service", "KillMode"), "mixed");
    assert_eq!(one(&u, "Install", "WantedBy"), "multi-user.target");
}

#[test]
fn unit_is_ordered_after_network_and_remote_file_systems() {
    let u = unit();
    let after = words(&u, "Unit", "After");
    for dep in ["network-online.target", "remote-fs.target"] {
        assert!(after.contains(&dep.to_string()), "After= lacks {dep}: {after:?}");
    }
    assert!(words(&u, "Unit", "Wants").contains(&"network-online.target".to_string()));
    // VMs start only once the host is protected, and stop before it leaves.
    assert!(words(&u, "Unit", "Before").contains(&"libvirt-guests.service".to_string()));
    // Decided: no Condition on the config; a unit without its config fails with the
    // daemon's message instead of being skipped silently.
    let unit_keys = u.get("Unit").unwrap();
    assert!(
        !unit_keys.keys().any(|k| k.starts_with("Condition")),
        "no Condition*= in the unit (see its comment)"
    );
}

#[test]
fn unit_restarts_only_where_safe_and_protects_the_agent() {
    let u = unit();
    // Exit code 1 (configuration, volume, host id collision, watchdog busy) is final;
    // crashes and signals are retried (S3 makes a restart on the same boot safe).
    assert_eq!(one(&u, "Service", "Restart"), "on-failure");
    let final_codes = words(&u, "Service", "RestartPreventExitStatus");
    assert!(final_codes.contains(&"78".to_string()) && final_codes.contains(&"76".to_string()));
    assert!(!final_codes.contains(&"69".to_string()), "unavailable volumes must be retried");
    assert_eq!(one(&u, "Service", "OOMScoreAdjust"), "-1000");
    assert_eq!(one(&u, "Service", "LimitMEMLOCK"), "infinity");
}

#[test]
fn unit_runtime_directory_survives_a_restart() {
    let u = unit();
    assert_eq!(one(&u, "Service", "RuntimeDirectory"), "hbfence");
    // The S3 doom marker lives in /run/hbfence: it must outlive a restart of the service.
    assert_eq!(one(&u, "Service", "RuntimeDirectoryPreserve"), "yes");
    assert_eq!(one(&u, "Service", "LogsDirectory"), "hbfence");
}

#[test]
fn unit_sandbox_leaves_what_the_agent_needs() {
    let u = unit();
    // /proc/sysrq-trigger and /proc/sys/kernel/sysrq must stay writable.
    assert!(absent(&u, "Service", "ProtectKernelTunables"), "ProtectKernelTunables blocks sysrq");
    // SCHED_RR.
    assert!(absent(&u, "Service", "RestrictRealtime"), "RestrictRealtime blocks SCHED_RR");
    // /dev/watchdog and block-device volumes.
    assert!(absent(&u, "Service", "PrivateDevices"), "PrivateDevices hides /dev/watchdog");
    let devices = words(&u, "Service", "DeviceAllow");
    for d in ["/dev/watchdog", "char-watchdog", "block-*"] {
        assert!(devices.contains(&d.to_string()), "DeviceAllow= lacks {d}: {devices:?}");
    }
    // Volumes are site-specific paths: the file system stays writable outside /usr, /etc, /boot.
    assert_eq!(one(&u, "Service", "ProtectSystem"), "full");
    // The busy-watchdog diagnostic reads other processes' /proc/PID/fd.
    assert!(absent(&u, "Service", "ProtectProc"));
    let caps = words(&u, "Service", "CapabilityBoundingSet");
    for c in ["CAP_IPC_LOCK", "CAP_SYS_NICE"] {
        assert!(caps.contains(&c.to_string()), "CapabilityBoundingSet lacks {c}: {caps:?}");
    }
    // ipmitool and fence agents talk IPMI/Redfish over IPv4/IPv6.
    let families = words(&u, "Service", "RestrictAddressFamilies");
    for f in ["AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(families.contains(&f.to_string()), "RestrictAddressFamilies lacks {f}");
    }
    // Child processes (ipmitool, fence agents, hooks) must be able to run.
    assert!(absent(&u, "Service", "NoExecPaths"));
}

/// systemd-analyze verify on a copy of the unit whose ExecStart names the built binary.
#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(tool) = find_in_path("systemd-analyze") else {
        let reason = "systemd-analyze not found (apt-get install systemd)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{reason}, and CI=true forbids skipping");
        }
        eprintln!("skipping unit_passes_systemd_analyze_verify: {reason}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text =
        read("systemd/hbfence.service").replace("/usr/sbin/hbfence", env!("CARGO_BIN_EXE_hbfence"));
    let path = dir.path().join("hbfence.service");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(tool).args(["verify", "--man=no"]).arg(&path).output().unwrap();
    let all =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{all}");
    let complaints: Vec<&str> = all.lines().filter(|l| l.contains("hbfence.service")).collect();
    assert!(complaints.is_empty(), "systemd-analyze verify complains:\n{}", complaints.join("\n"));
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}

#[test]
fn example_config_parses_as_shipped() {
    let text = read("packaging/hbfence.toml");
    let c = hbfence::config::Config::parse(&text).unwrap_or_else(|e| panic!("example: {e}"));
    // The documented placeholders.
    assert_eq!(c.host.id, 1);
    assert_eq!(c.volumes.len(), 1);
    assert_eq!(c.volumes[0].path, Path::new("/mnt/primary/hbfence.vol"));
    assert!(c.peers.is_empty());
    // Production defaults, not test doubles.
    assert_eq!(c.watchdog.device, Path::new("/dev/watchdog"));
    assert_eq!(c.self_fence.sysrq_trigger, Path::new("/proc/sysrq-trigger"));
    assert_eq!(c.daemon.runtime_dir, Path::new("/run/hbfence"));
    assert!(c.daemon.syslog && c.daemon.lock_memory);
}

/// Every commented-out setting of the example (`#key = value`, `#[section]`) is valid: with
/// all of them uncommented the file still parses, so no example teaches a wrong key.
#[test]
fn example_config_commented_settings_are_valid() {
    let text = read("packaging/hbfence.toml");
    let mut uncommented = 0;
    let all: String = text
        .lines()
        .map(|l| {
            let setting = l.strip_prefix('#').filter(|rest| {
                rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
            });
            match setting {
                Some(s) => {
                    uncommented += 1;
                    format!("{s}\n")
                }
                None => format!("{l}\n"),
            }
        })
        .collect();
    assert!(uncommented >= 20, "only {uncommented} commented settings found");
    let c = hbfence::config::Config::parse(&all)
        .unwrap_or_else(|e| panic!("example with every setting uncommented: {e}\n{all}"));
    assert_eq!(c.volumes.len(), 2);
    assert_eq!(c.peers.len(), 2);
    let bmc = c.peer(2).and_then(|p| p.bmc.as_ref()).expect("peer 2 bmc");
    assert_eq!(bmc.password_file, Path::new("/etc/hbfence/bmc/kvm02"));
    let agent = c.peer(3).and_then(|p| p.agent.as_ref()).expect("peer 3 agent");
    assert_eq!(agent.password_file.as_deref(), Some(Path::new("/etc/hbfence/bmc/kvm03")));
    // The commented defaults are the parser's defaults.
    let defaults = hbfence::config::Config::parse(&text).unwrap();
    assert_eq!(c.fencing.timeout, defaults.fencing.timeout);
    assert_eq!(c.fencing.command_timeout, defaults.fencing.command_timeout);
    assert_eq!(c.events.hooks_dir, defaults.events.hooks_dir);
    assert_eq!(c.events.log, defaults.events.log);
    assert_eq!(c.events.hook_timeout, defaults.events.hook_timeout);
    assert_eq!(c.daemon.realtime_priority, defaults.daemon.realtime_priority);
    assert_eq!(c.self_fence.action, defaults.self_fence.action);
}

/// hbfence.toml(5) documents every key the example shows.
#[test]
fn man_page_documents_every_example_key() {
    let man = read("packaging/man/hbfence.toml.5.in");
    let example = read("packaging/hbfence.toml");
    for line in example.lines() {
        let l = line.trim_start_matches('#');
        let Some((key, _)) = l.split_once(" = ") else { continue };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        assert!(
            man.contains(&format!(".B {key}\n")) || man.contains(&format!(".BR {key} ")),
            "hbfence.toml(5) does not document `{key}`"
        );
    }
}

fn cargo_metadata(table: &str) -> toml::Table {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    manifest["package"]["metadata"][table].as_table().cloned().unwrap_or_else(|| panic!("{table}"))
}

/// (dest, mode) of every asset, with leading slashes removed.
fn assets(meta: &toml::Table) -> BTreeMap<String, String> {
    meta["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| match a {
            toml::Value::Array(v) => (v[1].as_str().unwrap(), v[2].as_str().unwrap()),
            toml::Value::Table(t) => (t["dest"].as_str().unwrap(), t["mode"].as_str().unwrap()),
            other => panic!("asset {other:?}"),
        })
        .map(|(d, m)| (d.trim_start_matches('/').to_string(), m.to_string()))
        .collect()
}

#[test]
fn deb_and_rpm_ship_the_same_files() {
    let deb = cargo_metadata("deb");
    let rpm = cargo_metadata("generate-rpm");
    let (deb_assets, mut rpm_assets) = (assets(&deb), assets(&rpm));
    // zsh completions live where each distribution's zsh looks: Debian's vendor-completions,
    // Fedora/RHEL's site-functions. Everything else is at the same path.
    const DEB_ZSH: &str = "usr/share/zsh/vendor-completions/_hbfence";
    const RPM_ZSH: &str = "usr/share/zsh/site-functions/_hbfence";
    assert_eq!(rpm_assets.get(RPM_ZSH).map(String::as_str), Some("644"), "rpm zsh completion");
    let zsh = rpm_assets.remove(RPM_ZSH).unwrap();
    rpm_assets.insert(DEB_ZSH.to_string(), zsh);
    assert_eq!(deb_assets, rpm_assets, "the .deb and the .rpm must ship the same files");
    assert_eq!(deb_assets[DEB_ZSH], "644");
    assert_eq!(deb_assets["usr/share/bash-completion/completions/hbfence"], "644");
    assert_eq!(deb_assets["usr/sbin/hbfence"], "755");
    assert_eq!(deb_assets["etc/hbfence/hbfence.toml"], "640");
    assert_eq!(deb_assets["usr/lib/systemd/system/hbfence.service"], "644");
    assert!(deb_assets.contains_key("usr/share/man/man8/hbfence.8.gz"));
    assert!(deb_assets.contains_key("usr/share/man/man5/hbfence.toml.5.gz"));
    // Every source exists in the repository or is staged by packaging/build.
    for meta in [&deb, &rpm] {
        for a in meta["assets"].as_array().unwrap() {
            let src = match a {
                toml::Value::Array(v) => v[0].as_str().unwrap(),
                toml::Value::Table(t) => t["source"].as_str().unwrap(),
                _ => unreachable!(),
            };
            if !src.starts_with("target/release/") {
                assert!(repo(src).is_file(), "asset source {src} is missing");
            }
        }
    }
    // The config is %config(noreplace) in the rpm; /etc files are conffiles in the deb.
    let config = rpm["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["dest"].as_str() == Some("/etc/hbfence/hbfence.toml"))
        .unwrap();
    assert_eq!(config["config"].as_str(), Some("noreplace"));
    // Depends on ipmitool, recommends fence agents.
    assert!(deb["depends"].as_str().unwrap().contains("ipmitool"));
    assert_eq!(deb["recommends"].as_str(), Some("fence-agents"));
    assert!(rpm["requires"].as_table().unwrap().contains_key("ipmitool"));
    assert!(rpm["recommends"].as_table().unwrap().contains_key("fence-agents-all"));
}

#[test]
fn maintainer_scripts_are_valid_and_never_start_the_service() {
    let scripts = [
        "packaging/deb/postinst",
        "packaging/deb/prerm",
        "packaging/deb/postrm",
        "packaging/rpm/post",
        "packaging/rpm/preun",
        "packaging/rpm/postun",
    ];
    for s in scripts {
        let out = Command::new("sh").arg("-n").arg(repo(s)).output().unwrap();
        assert!(out.status.success(), "{s}: {}", String::from_utf8_lossy(&out.stderr));
        let text = read(s);
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            if line.starts_with("echo") {
                continue;
            }
            for bad in ["systemctl start", "systemctl enable", "systemctl restart", "preset"] {
                assert!(!line.contains(bad), "{s} must not `{bad}`: {line}");
            }
        }
    }
    for s in ["packaging/deb/postinst", "packaging/deb/prerm", "packaging/deb/postrm"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(repo(s)).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{s} must be executable (dpkg runs it directly)");
    }
    assert!(read("packaging/deb/prerm").contains("systemctl stop hbfence.service"));
    assert!(read("packaging/rpm/preun").contains("systemctl stop hbfence.service"));
}
