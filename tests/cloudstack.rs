//! CloudStack integration against CloudStack's contracts: the heartbeat drop-ins run the way
//! CloudStack's Java runs kvmheartbeat.sh (stderr merged into stdout, only the first line read,
//! `contains("DEAD")` / older `contains("> DEAD <")`, exit status), the cloudstack-degraded hook
//! against an API double that verifies signatures as CloudStack does, and the ipmitool shim
//! with the real ipmitool against ipmi_sim.

#[path = "support/bmc.rs"]
mod bmc;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/faultfs.rs"]
mod faultfs;
#[path = "support/script.rs"]
mod script;

use cluster::*;
use faultfs::{Fault, FaultFs};
use nix::sys::signal::Signal;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SRC: &str = env!("CARGO_MANIFEST_DIR");
const ALIVE_LINE: &str = "=====> ALIVE <=====";
const DEAD_LINE: &str = "=====> DEAD <======";
const HOST2_IP: &str = "10.1.1.12";
const SECRET: &str = "Zx9-secret_KEY/with+odd=chars~";
const API_KEY: &str = "api-key-for-tests";
const BMC_PASSWORD: &str = "bmc-pw-77";

fn script(name: &str) -> PathBuf {
    let p = Path::new(SRC).join("packaging").join(name);
    assert!(p.is_file(), "{} missing", p.display());
    p
}

/// What CloudStack's Java sees of one run of a heartbeat script.
struct Seen {
    first_line: String,
    all: String,
    code: Option<i32>,
    took: Duration,
}

impl Seen {
    /// CloudStack's decision: dead only on exit 0 and DEAD in the first line (both the current
    /// and the older test must agree).
    fn dead(&self) -> bool {
        let new = self.code == Some(0) && self.first_line.contains("DEAD");
        let old = self.code == Some(0) && self.first_line.contains("> DEAD <");
        assert_eq!(new, old, "the two CloudStack tests disagree on {:?}", self.first_line);
        new
    }
}

/// Runs `script args` with stdout and stderr on one pipe, as CloudStack's
/// Script/ProcessBuilder(redirectErrorStream) does.
fn run_merged(script: &Path, args: &[&str], envs: &[(&str, &Path)]) -> Seen {
    // Close-on-exec: no other child (nor a grandchild stuck on the volume) may hold it open.
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let start = Instant::now();
    let mut cmd = Command::new(script);
    cmd.args(args)
        .env("HBFENCE_BIN", BIN)
        .stdin(Stdio::null())
        .stdout(Stdio::from(w.try_clone().unwrap()))
        .stderr(Stdio::from(w));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run the drop-in");
    drop(cmd);
    let mut all = String::new();
    fs::File::from(r).read_to_string(&mut all).unwrap();
    let code = child.wait().unwrap().code();
    Seen {
        first_line: all.lines().next().unwrap_or("").to_string(),
        all,
        code,
        took: start.elapsed(),
    }
}

/// `kvmheartbeat.sh -r` as KVMHAChecker calls it.
fn cloudstack_check(script_name: &str, config: &Path, host_ip: &str) -> Seen {
    let args = ["-i", "10.0.0.5", "-p", "/export/primary", "-m", "/mnt/pool"];
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["-h", host_ip, "-r", "-t", "60"]);
    run_merged(&script(script_name), &all, &[("HBFENCE_CONFIG", config)])
}

fn warnings_total(runtime_dir: &Path) -> u64 {
    fs::read_to_string(runtime_dir.join("cloudstack-warnings.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["warnings_total"].as_u64())
        .unwrap_or(0)
}

fn python_missing(test: &str) -> bool {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import hmac")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return false;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: python3 missing, and CI=true forbids skipping");
    }
    eprintln!("skipping {test}: python3 missing");
    true
}

/// Adds `aliases` to [host] or to the [[peer]] `id` of a config written by `Host::new`.
fn add_alias(config: &Path, id: u32, own: bool, alias: &str) {
    let text = fs::read_to_string(config).unwrap();
    let anchor = if own {
        format!("[host]\nid = {id}\nname = \"host{id}\"\n")
    } else {
        format!("[[peer]]\nid = {id}\nname = \"host{id}\"\n")
    };
    assert!(text.contains(&anchor), "{anchor:?} not in {text}");
    fs::write(config, text.replace(&anchor, &format!("{anchor}aliases = [\"{alias}\"]\n")))
        .unwrap();
}

/// The CloudStack API double (tests/support/cloudstack_api.py).
struct ApiDouble {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl ApiDouble {
    fn start(dir: &Path, fail_declares: u32) -> ApiDouble {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("secret"), SECRET).unwrap();
        let config = serde_json::json!({
            "api_key": API_KEY,
            "fail_declares": fail_declares,
            "hosts": [
                {"id": "0b5c7a1e-0000-4000-8000-000000000001", "name": "kvm01", "ipaddress": "10.1.1.11"},
                {"id": "0b5c7a1e-0000-4000-8000-000000000002", "name": "kvm02", "ipaddress": HOST2_IP},
            ],
            // CloudStack's database: the VMs it believes run on kvm02 (issue 15's cross-check).
            "vms": {"0b5c7a1e-0000-4000-8000-000000000002": [
                {"id": VM_BOTH, "instancename": "i-2-10-VM"},
                {"id": VM_DB_ONLY, "instancename": "i-2-11-VM"},
            ]},
        });
        fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let child = Command::new("python3")
            .arg(Path::new(SRC).join("tests/support/cloudstack_api.py"))
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .expect("start the API double");
        let port_file = dir.join("port");
        assert!(wait_until(Duration::from_secs(10), || port_file.exists()), "API double not up");
        let port = fs::read_to_string(&port_file).unwrap().trim().parse().unwrap();
        ApiDouble { child, dir: dir.to_path_buf(), port }
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn count(&self, command: &str) -> usize {
        self.requests().iter().filter(|r| r["command"] == command).count()
    }

    /// Writes the hook's credentials file (mode 0600) and returns its path.
    fn credentials(&self, dir: &Path, secret: &str, log: &Path) -> PathBuf {
        let path = dir.join("cloudstack-api.conf");
        fs::write(
            &path,
            format!(
                "[cloudstack]\nurl = http://127.0.0.1:{}/client/api\napi_key = {API_KEY}\nsecret_key = {secret}\nretry_for = 60\nfirst_retry = 1\nlog = {}\n\n[hosts]\nhost2 = {HOST2_IP}\n",
                self.port,
                log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

impl Drop for ApiDouble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every /proc/PID/cmdline and /proc/PID/environ that holds `needle`.
fn processes_holding(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        for file in ["cmdline", "environ"] {
            if let Ok(bytes) = fs::read(entry.path().join(file)) {
                if String::from_utf8_lossy(&bytes).contains(needle) {
                    found.push(format!("/proc/{name}/{file}"));
                }
            }
        }
    }
    found
}

/// Runs the hook as hbfence's event runner does (HBFENCE_* variables); returns its exit code
/// and stderr (the detached part logs to its own file).
fn run_hook(conf: &Path, event: &str, host_name: &str, detail: &str) -> (Option<i32>, String) {
    let out = Command::new(script("hooks/cloudstack-degraded"))
        .env("HBFENCE_CLOUDSTACK_CONF", conf)
        .env("HBFENCE_EVENT", event)
        .env("HBFENCE_HOST", "2")
        .env("HBFENCE_HOST_NAME", host_name)
        .env("HBFENCE_DETAIL", detail)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Write mode into `mount` through one drop-in; returns what CloudStack saw.
fn write_heartbeat(name: &str, mount: &Path) -> Seen {
    let config = mount.join("no-config.toml");
    run_merged(
        &script(name),
        &["-i", "10.0.0.5", "-p", "/export", "-m", mount.to_str().unwrap(), "-h", HOST2_IP],
        &[("HBFENCE_CONFIG", &config)],
    )
}

fn assert_fresh_heartbeat(name: &str, mount: &Path, seen: &Seen) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(seen.code, Some(0), "{name}: {}", seen.all);
    let file = mount.join("KVMHA").join(format!("hb-{HOST2_IP}"));
    let stamp: u64 = fs::read_to_string(&file).unwrap().trim().parse().unwrap();
    assert!(stamp + 5 >= now && stamp <= now, "{name}: timestamp {stamp} vs now {now}");
    // No temporary file is left next to it.
    assert_eq!(fs::read_dir(mount.join("KVMHA")).unwrap().count(), 1);
}

#[test]
fn write_mode_writes_cloudstacks_own_heartbeat_file() {
    let tmp = tempfile::tempdir().unwrap();
    // SharedMountPoint pools: any directory, as kvmsmpheartbeat.sh.
    let smp = tmp.path().join("smp");
    fs::create_dir_all(&smp).unwrap();
    let seen = write_heartbeat("cloudstack/kvmsmpheartbeat.sh", &smp);
    assert_fresh_heartbeat("kvmsmpheartbeat.sh", &smp, &seen);
    // NFS pools: never onto the local disk under an unmounted pool (exit 1, as the original
    // when it cannot remount).
    let unmounted = tmp.path().join("nfs");
    fs::create_dir_all(&unmounted).unwrap();
    let seen = write_heartbeat("cloudstack/kvmheartbeat.sh", &unmounted);
    assert_eq!(seen.code, Some(1), "{}", seen.all);
    assert!(seen.all.contains("is not mounted"), "{}", seen.all);
    assert!(!unmounted.join("KVMHA").exists());
    // A mount point that cannot hold the directory: the original's exit code 2.
    let not_a_dir = tmp.path().join("file");
    fs::write(&not_a_dir, "x").unwrap();
    let seen = write_heartbeat("cloudstack/kvmsmpheartbeat.sh", &not_a_dir);
    assert_eq!(seen.code, Some(2), "{}", seen.all);
    assert!(seen.all.contains("Failed to write"), "{}", seen.all);
    // A mounted pool (a tmpfs here: mounting needs root).
    if nix::unistd::Uid::effective().is_root() {
        let pool = tmp.path().join("pool");
        fs::create_dir_all(&pool).unwrap();
        let _mounted = Mounted::tmpfs(&pool);
        let seen = write_heartbeat("cloudstack/kvmheartbeat.sh", &pool);
        assert_fresh_heartbeat("kvmheartbeat.sh", &pool, &seen);
    } else if std::env::var("CI").as_deref() == Ok("true") {
        panic!("write_mode_writes_cloudstacks_own_heartbeat_file: needs root for a tmpfs, and CI=true forbids skipping");
    } else {
        eprintln!("write_mode_writes_cloudstacks_own_heartbeat_file: not root, the mounted-pool part skipped");
    }
}

/// A mount for the length of a test, lazily unmounted on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn run(args: &[&str], at: &Path) -> Mounted {
        let out = Command::new("mount").args(args).arg(at).output().unwrap();
        assert!(out.status.success(), "mount {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Mounted(at.to_path_buf())
    }
    fn tmpfs(at: &Path) -> Mounted {
        Mounted::run(&["-t", "tmpfs", "-o", "size=1m", "hbfence-test"], at)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn cleanup_logs_and_never_writes_sysrq() {
    let tmp = tempfile::tempdir().unwrap();
    let sysrq = tmp.path().join("sysrq");
    fs::write(&sysrq, "").unwrap();
    let config = tmp.path().join("hbfence.toml");
    fs::write(
        &config,
        format!(
            "[host]\nid = 1\nname = \"host1\"\n[[volume]]\npath = \"{}\"\n[self_fence]\nsysrq_trigger = \"{}\"\n[daemon]\nsyslog = false\nruntime_dir = \"{}\"\n",
            tmp.path().join("v.vol").display(),
            sysrq.display(),
            tmp.path().join("run").display()
        ),
    )
    .unwrap();
    for name in ["cloudstack/kvmheartbeat.sh", "cloudstack/kvmsmpheartbeat.sh"] {
        let seen = run_merged(
            &script(name),
            &["-i", "10.0.0.5", "-p", "/e", "-m", "/mnt/pool", "-h", HOST2_IP, "-c"],
            &[("HBFENCE_CONFIG", &config)],
        );
        assert_eq!(seen.code, Some(0), "{}", seen.all);
        assert!(seen.all.contains("ignored"), "the request is logged: {}", seen.all);
        assert!(seen.took < Duration::from_secs(3), "no sync-and-sleep: {:?}", seen.took);
    }
    assert_eq!(fs::read(&sysrq).unwrap(), b"", "-c wrote to the sysrq trigger");
}

#[test]
fn hung_volume_answers_alive_within_the_deadline() {
    if !require_root("hung_volume_answers_alive_within_the_deadline") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    fs::create_dir_all(&backing).unwrap();
    let fs_ = FaultFs::mount(&backing, &tmp.path().join("mnt")).expect("mount faultfs");
    let volume = fs_.mountpoint().join("v.vol");
    init_volume(&volume, &[]);
    let host = Host::new(
        tmp.path(),
        &HostSpec {
            id: 1,
            volumes: vec![volume],
            peers: vec![(2, None)],
            hooks_dir: None,
            eligible: true,
        },
    );
    add_alias(&host.config, 2, false, HOST2_IP);
    fs_.set_fault("v.vol", Fault::Freeze);
    let seen = cloudstack_check("cloudstack/kvmheartbeat.sh", &host.config, HOST2_IP);
    fs_.set_fault("v.vol", Fault::None);
    println!("hung volume: answered in {:.2} s", seen.took.as_secs_f64());
    assert_eq!(seen.first_line, ALIVE_LINE, "{}", seen.all);
    assert!(!seen.dead());
    assert!(seen.took < Duration::from_secs(6), "took {:?} (deadline 4 s)", seen.took);
    assert!(seen.all.contains("no answer from the heartbeat volume"), "{}", seen.all);
    assert_eq!(warnings_total(&host.dir.join("run")), 1);
}

/// The whole path on a two-host cluster: the drop-in's answers while host 2 is alive, suspect
/// and fenced (and from a host whose agent is stopped, and for an unknown IP); the hook that
/// tells CloudStack on `fenced`, retrying past hook_timeout; the ipmitool shim on a management
/// server that reads the volume through a read-only mount.
#[test]
fn cluster_drop_in_hook_and_shim_follow_cloudstacks_contracts() {
    let test = "cluster_drop_in_hook_and_shim_follow_cloudstacks_contracts";
    if !require_root(test) || !bmc::require_tools(test) || python_missing(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let backing = base.join("backing");
    fs::create_dir_all(&backing).unwrap();
    let fs_ = FaultFs::mount(&backing, &base.join("mnt")).expect("mount faultfs");
    let volume = fs_.mountpoint().join("v.vol");
    init_volume(&volume, &[]);

    // CloudStack's API, and host 1's hook pointed at it.
    let api = ApiDouble::start(&base.join("api"), 3);
    let hook_log = base.join("hook.log");
    let conf = api.credentials(base, SECRET, &hook_log);
    let hooks = base.join("hooks.d");
    fs::create_dir_all(&hooks).unwrap();
    // Copied, as docs/operations.md says: hbfence refuses a symlink out of hooks_dir.
    fs::copy(script("hooks/cloudstack-degraded"), hooks.join("50-cloudstack-degraded")).unwrap();

    let spec = |id, peers: Vec<(u32, Option<&'static BmcConfig>)>, hooks_dir| HostSpec {
        id,
        volumes: vec![volume.clone()],
        peers,
        hooks_dir,
        eligible: true,
    };
    let mut h1 = Host::new(base, &spec(1, vec![(2, None)], Some(hooks.clone())));
    let mut h2 = Host::new(base, &spec(2, vec![(1, None)], None));
    // Host 3 never runs: its config is a checking host whose agent is stopped.
    let h3 = Host::new(base, &spec(3, vec![(1, None), (2, None)], None));
    add_alias(&h1.config, 1, true, "10.1.1.11");
    add_alias(&h1.config, 2, false, HOST2_IP);
    add_alias(&h3.config, 2, false, HOST2_IP);
    h1.start_with(true, &[("HBFENCE_CLOUDSTACK_CONF", conf.as_os_str())]);
    h2.start();
    let check = |h: &Host, id: &str| h.cli(&["check", id]).status.code();
    assert!(
        wait_until(Duration::from_secs(20), || check(&h1, "2") == Some(0)),
        "host 2 never alive:\n{}",
        h1.log_text()
    );

    // Alive, through both drop-ins.
    for name in ["cloudstack/kvmheartbeat.sh", "cloudstack/kvmsmpheartbeat.sh"] {
        let seen = cloudstack_check(name, &h1.config, HOST2_IP);
        assert_eq!((seen.first_line.as_str(), seen.code), (ALIVE_LINE, Some(0)), "{}", seen.all);
        assert!(!seen.dead());
    }
    assert_eq!(warnings_total(&h1.dir.join("run")), 0);

    // Unknown host: ALIVE, a warning, counted.
    let seen = cloudstack_check("cloudstack/kvmheartbeat.sh", &h1.config, "10.9.9.9");
    assert_eq!(seen.first_line, ALIVE_LINE, "{}", seen.all);
    assert!(!seen.dead());
    assert!(
        seen.all.contains("unknown host \"10.9.9.9\"") && seen.all.contains("aliases"),
        "{}",
        seen.all
    );
    assert!(seen.all.contains("warning"), "logged as a warning: {}", seen.all);
    assert_eq!(warnings_total(&h1.dir.join("run")), 1);

    // The agent of the checking host is stopped.
    let seen = cloudstack_check("cloudstack/kvmheartbeat.sh", &h3.config, HOST2_IP);
    assert_eq!(seen.first_line, ALIVE_LINE, "{}", seen.all);
    assert!(!seen.dead());
    assert!(seen.all.contains("not running"), "{}", seen.all);
    assert_eq!(warnings_total(&h3.dir.join("run")), 1);

    // Host 2 dies; no BMC: fenced only once its watchdog bound has passed. Only once its record
    // on the volume advertises the armed watchdog: `check` says ALIVE from its first record,
    // and since the one-read cycle the first lease (and the arming) comes half an interval
    // later, so a host killed before that was rightly never declared fenced.
    h2.wait_armed();
    assert!(
        wait_until(Duration::from_secs(10), || {
            host_record(&dump(&volume), 2).is_some_and(|(_, state)| state == "active")
        }),
        "host 2 never wrote an active record:\n{}",
        h2.log_text()
    );
    h2.signal(Signal::SIGKILL);
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || check(&h1, "2") == Some(3)),
        "host 2 never suspect"
    );
    let seen = cloudstack_check("cloudstack/kvmheartbeat.sh", &h1.config, HOST2_IP);
    assert!(!seen.dead(), "dead but not fenced must stay ALIVE: {}", seen.all);
    assert!(seen.all.contains("not fenced yet"), "{}", seen.all);

    // Watch every process for the secret while the hook runs.
    let mut leaks = Vec::new();
    assert!(
        wait_until(Duration::from_secs(25), || {
            leaks.extend(processes_holding(SECRET));
            check(&h1, "2") == Some(4)
        }),
        "host 2 never fenced:\n{}",
        h1.log_text()
    );
    println!("kill -9 -> fenced: {:.1} s", killed.elapsed().as_secs_f64());
    for name in ["cloudstack/kvmheartbeat.sh", "cloudstack/kvmsmpheartbeat.sh"] {
        let seen = cloudstack_check(name, &h1.config, HOST2_IP);
        assert_eq!((seen.first_line.as_str(), seen.code), (DEAD_LINE, Some(0)), "{}", seen.all);
        assert!(seen.dead());
        assert!(seen.took < Duration::from_secs(4), "took {:?}", seen.took);
    }
    // The verdict is on the volume: a checking host with a stopped agent sees it too.
    assert!(cloudstack_check("cloudstack/kvmheartbeat.sh", &h3.config, HOST2_IP).dead());

    // The hook: CloudStack refuses 3 times (host still Up), then accepts; the pauses (1, 2, 4
    // s) outlast hook_timeout (5 s), so only a detached hook gets there.
    let fenced_at = Instant::now();
    assert!(
        wait_until(Duration::from_secs(40), || {
            leaks.extend(processes_holding(SECRET));
            fs::read_to_string(&hook_log).unwrap_or_default().contains("declared Degraded")
        }),
        "the hook never declared host 2 Degraded:\nhook log:\n{}\nagent log:\n{}",
        fs::read_to_string(&hook_log).unwrap_or_default(),
        h1.log_text()
    );
    let log = fs::read_to_string(&hook_log).unwrap();
    println!(
        "hook: declared {:.1} s after the fenced verdict was seen\n{log}",
        fenced_at.elapsed().as_secs_f64()
    );
    assert!(log.contains("declared Degraded after 4 tries"), "{log}");
    assert!(log.contains("Cannot perform declare host"), "CloudStack's refusal is logged: {log}");
    let declares: Vec<_> =
        api.requests().into_iter().filter(|r| r["command"] == "declareHostAsDegraded").collect();
    assert_eq!(declares.len(), 4, "{declares:?}");
    assert!(declares.iter().all(|r| r["id"] == "0b5c7a1e-0000-4000-8000-000000000002"));
    assert!(api.requests().iter().all(|r| r["signature_ok"] == true));
    assert!(leaks.is_empty(), "the secret was in {leaks:?}");
    for (what, text) in
        [("hook log", log), ("agent log", h1.log_text()), ("events", h1.events_text())]
    {
        assert!(!text.contains(SECRET), "the secret is in the {what}");
    }

    // The shim on a management server: the volume through a read-only bind mount, a reader
    // config whose aliases are the BMC addresses (127.0.0.1: host 2's, 127.0.0.3: host 1's).
    let ro = base.join("ro");
    fs::create_dir_all(&ro).unwrap();
    let _ro_mount = read_only_bind(fs_.mountpoint(), &ro);
    let reader = base.join("reader.toml");
    fs::write(
        &reader,
        format!(
            "[host]\nid = 8\nname = \"mgmt\"\n[[volume]]\npath = \"{}\"\n[daemon]\nruntime_dir = \"{}\"\nsyslog = false\n[[peer]]\nid = 1\nname = \"host1\"\naliases = [\"127.0.0.3\"]\n[[peer]]\nid = 2\nname = \"host2\"\naliases = [\"127.0.0.1\"]\n",
            ro.join("v.vol").display(),
            base.join("reader-run").display()
        ),
    )
    .unwrap();
    let pid_file = base.join("bmc.pid");
    fs::write(&pid_file, "999999\n").unwrap();
    let port = bmc::free_udp_port();
    let mut sim = bmc::SimBmc::start(&base.join("bmc"), port, "admin", BMC_PASSWORD, &pid_file)
        .expect("start ipmi_sim");
    let ipmi = |shim: bool, address: &str, action: &str| {
        let port = port.to_string();
        let args = [
            "-I",
            "lanplus",
            "-H",
            address,
            "-p",
            &port,
            "-U",
            "admin",
            "-P",
            BMC_PASSWORD,
            "-C",
            "3",
            "-R",
            "1",
            "-N",
            "1",
            "chassis",
            "power",
            action,
        ];
        let program =
            if shim { script("cloudstack/ipmitool-shim") } else { PathBuf::from("ipmitool") };
        let out = Command::new(program)
            .args(args)
            .env("HBFENCE_BIN", BIN)
            .env("HBFENCE_READER_CONFIG", &reader)
            .env("HBFENCE_REAL_IPMITOOL", which("ipmitool"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // BMC up: the real answer, even for a fenced host.
    let up = ipmi(true, "127.0.0.1", "status");
    assert_eq!((up.0, up.1.trim()), (Some(0), "Chassis Power is on"), "{up:?}");
    assert_eq!(up, ipmi(false, "127.0.0.1", "status"));
    // -V like ipmitool.
    let v = |program: PathBuf| {
        Command::new(program)
            .arg("-V")
            .env("HBFENCE_REAL_IPMITOOL", which("ipmitool"))
            .output()
            .unwrap()
    };
    let (shim_v, real_v) = (v(script("cloudstack/ipmitool-shim")), v(PathBuf::from("ipmitool")));
    assert_eq!((shim_v.status.code(), &shim_v.stdout), (real_v.status.code(), &real_v.stdout));
    assert!(String::from_utf8_lossy(&shim_v.stdout).contains("ipmitool version"));
    // BMC dead, host fenced: off.
    sim.stop();
    for action in ["status", "off"] {
        let real = ipmi(false, "127.0.0.1", action);
        assert_ne!(real.0, Some(0), "the real ipmitool reached a stopped BMC: {real:?}");
        let shim = ipmi(true, "127.0.0.1", action);
        assert_eq!((shim.0, shim.1.as_str()), (Some(0), "Chassis Power is off\n"), "{shim:?}");
    }
    // BMC dead, host not fenced (host 1 runs): the real failure, unchanged.
    let real = ipmi(false, "127.0.0.3", "status");
    assert_ne!(real.0, Some(0));
    assert_eq!(ipmi(true, "127.0.0.3", "status"), real);
    // The shim never wrote the volume: the reader opened it read-only (a read-write open
    // fails on this mount).
    assert!(fs::OpenOptions::new().write(true).open(ro.join("v.vol")).is_err());
}

fn which(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file()).expect(tool)
}

/// A read-only bind mount of `from` at `to`.
fn read_only_bind(from: &Path, to: &Path) -> Mounted {
    let guard = Mounted::run(&["--bind", from.to_str().unwrap()], to);
    let out = Command::new("mount").args(["-o", "remount,bind,ro"]).arg(to).output().unwrap();
    assert!(out.status.success(), "remount ro: {}", String::from_utf8_lossy(&out.stderr));
    guard
}

#[test]
fn hook_refuses_loose_credentials_and_gives_up_on_a_wrong_signature() {
    if python_missing("hook_refuses_loose_credentials_and_gives_up_on_a_wrong_signature") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let api = ApiDouble::start(&tmp.path().join("api"), 0);
    let log = tmp.path().join("hook.log");
    // Group-readable: refused before any request.
    let conf = api.credentials(tmp.path(), SECRET, &log);
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o640)).unwrap();
    let (code, err) = run_hook(&conf, "fenced", "host2", "");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("0640") && err.contains("chmod 0600"), "{err}");
    assert!(api.requests().is_empty());
    // A wrong secret: CloudStack's 401, and the hook gives up at once.
    let conf = api.credentials(tmp.path(), "not-the-secret", &log);
    let (code, err) = run_hook(&conf, "fenced", "host2", "");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        wait_until(Duration::from_secs(10), || fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("giving up")),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("refused the credentials (HTTP 401)"), "{text}");
    assert!(api.requests().iter().all(|r| r["signature_ok"] == false));
    assert_eq!(api.count("declareHostAsDegraded"), 0, "only listHosts was tried");
}

const VM_BOTH: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const VM_DB_ONLY: &str = "11111111-2222-4333-8444-555555555555";
const VM_HOST_ONLY: &str = "99999999-2222-4333-8444-555555555555";

/// Issue 15: after declaring the host Degraded the hook compares CloudStack's VMs of the host
/// with the list the host published (HBFENCE_VMS) and names the differences in its log.
#[test]
fn hook_cross_checks_cloudstacks_vms_with_the_fenced_hosts_list() {
    if python_missing("hook_cross_checks_cloudstacks_vms_with_the_fenced_hosts_list") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let api = ApiDouble::start(&tmp.path().join("api"), 0);
    let log = tmp.path().join("hook.log");
    let conf = api.credentials(tmp.path(), SECRET, &log);
    let out = Command::new(script("hooks/cloudstack-degraded"))
        .env("HBFENCE_CLOUDSTACK_CONF", &conf)
        .env("HBFENCE_EVENT", "fenced")
        .env("HBFENCE_HOST", "2")
        .env("HBFENCE_HOST_NAME", "kvm02")
        .env("HBFENCE_VMS", format!("{VM_BOTH} {VM_HOST_ONLY}"))
        .env("HBFENCE_VMS_INVENTORY", "complete")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = || fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || text().contains("CloudStack lists VMs on it")),
        "{}",
        text()
    );
    let t = text();
    assert!(t.contains("it ran 2 VM(s) at its last heartbeat (list complete), CloudStack lists 2 on it, 1 in both"), "{t}");
    assert!(
        t.contains(&format!(
            "does not list on it (not restarted by CloudStack: check them): {VM_HOST_ONLY}"
        )),
        "{t}"
    );
    assert!(t.contains(&format!("it was not running: {VM_DB_ONLY} (i-2-11-VM)")), "{t}");
    assert_eq!(api.count("listVirtualMachines"), 1);
}

#[test]
fn hook_declares_then_cancels_after_a_new_boot() {
    if python_missing("hook_declares_then_cancels_after_a_new_boot") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let api = ApiDouble::start(&tmp.path().join("api"), 0);
    let log = tmp.path().join("hook.log");
    let conf = api.credentials(tmp.path(), SECRET, &log);
    let logged = |what: &str| {
        wait_until(Duration::from_secs(10), || {
            fs::read_to_string(&log).unwrap_or_default().contains(what)
        })
    };
    // Events the hook does not act on: nothing at all.
    assert_eq!(run_hook(&conf, "host_suspect", "host2", "").0, Some(0));
    assert_eq!(run_hook(&conf, "host_up", "host2", "new incarnation").0, Some(0));
    assert_eq!(run_hook(&conf, "fenced", "host2", "").0, Some(0));
    assert!(
        logged("declared Degraded after 1 tries"),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    // The detail the core gives a host that rejoins with a new boot after a fenced verdict.
    assert_eq!(
        run_hook(&conf, "host_up", "host2", "new incarnation after verdict fenced").0,
        Some(0)
    );
    assert!(logged("Degraded cancelled"), "{}", fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(api.count("declareHostAsDegraded"), 1);
    assert_eq!(api.count("cancelHostAsDegraded"), 1);
    assert!(api.requests().iter().all(|r| r["signature_ok"] == true));
    assert!(!fs::read_to_string(&log).unwrap().contains(SECRET));
}

/// The verdict line stays first when syslog is on but cannot be opened (logging then goes to
/// stderr, which CloudStack merges into the line it parses), and a config that does not even
/// load still answers ALIVE.
#[test]
fn verdict_line_comes_first_even_when_logging_falls_back_to_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("hbfence.toml");
    fs::write(
        &config,
        format!(
            "[host]\nid = 1\nname = \"host1\"\n[[volume]]\npath = \"{}\"\n[daemon]\nruntime_dir = \"{}\"\n[[peer]]\nid = 2\nname = \"host2\"\naliases = [\"{HOST2_IP}\"]\n",
            tmp.path().join("missing.vol").display(),
            tmp.path().join("run").display()
        ),
    )
    .unwrap();
    for ip in [HOST2_IP, "10.9.9.9"] {
        let seen = cloudstack_check("cloudstack/kvmheartbeat.sh", &config, ip);
        assert_eq!((seen.first_line.as_str(), seen.code), (ALIVE_LINE, Some(0)), "{}", seen.all);
    }
    assert_eq!(warnings_total(&tmp.path().join("run")), 2);
    let broken = tmp.path().join("broken.toml");
    fs::write(&broken, "[host]\nid = 0\n").unwrap();
    let seen = cloudstack_check("cloudstack/kvmheartbeat.sh", &broken, HOST2_IP);
    assert_eq!((seen.first_line.as_str(), seen.code), (ALIVE_LINE, Some(0)), "{}", seen.all);
    assert!(seen.all.contains("cannot use the hbfence config"), "{}", seen.all);
}
