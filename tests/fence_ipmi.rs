//! Peer fencing driver against real `ipmitool` and OpenIPMI `ipmi_sim` BMC simulators, and
//! against fake fence-agents programs. BMC tests skip (or fail with CI=true) without the tools.

#[path = "support/bmc.rs"]
mod bmc;
#[path = "support/script.rs"]
mod script;

use bmc::{Chassis, SimBmc};
use hbfence::fence::{
    power_off_and_confirm, power_on, power_status, spawn_attempt, AgentTarget, AttemptOutcome,
    FenceMethod, FenceSettings, IpmiTarget, PowerState,
};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

const USER: &str = "admin";
const PASSWORD: &str = "bmc-pw-7f3a9c";

/// One simulated host: its BMC, its "host" process and the files around them.
struct Lab {
    dir: tempfile::TempDir,
    bmc: SimBmc,
    host: Child,
}

impl Lab {
    fn start(chassis: Chassis) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let host = Command::new("sleep").arg("1000").spawn().unwrap();
        let pid_file = dir.path().join("host.pid");
        fs::write(&pid_file, host.id().to_string()).unwrap();
        let bmc_dir = dir.path().join("bmc");
        fs::create_dir(&bmc_dir).unwrap();
        let port = bmc::free_udp_port();
        let bmc = SimBmc::start_with(&bmc_dir, port, USER, PASSWORD, &pid_file, chassis)
            .expect("start ipmi_sim");
        Lab { dir, bmc, host }
    }

    /// The fencing method for this BMC, with `password` in its password file.
    fn method(&self, password: &str) -> FenceMethod {
        let password_file = self.dir.path().join("bmc-password");
        fs::write(&password_file, format!("{password}\n")).unwrap();
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).unwrap();
        // hbfence refuses a password file that group or others may access.
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).unwrap();
        FenceMethod::Ipmi(IpmiTarget {
            address: "127.0.0.1".into(),
            port: self.bmc.port(),
            username: USER.into(),
            password_file,
            cipher_suite: 3,
            interface: "lanplus".into(),
        })
    }

    fn host_alive(&mut self) -> bool {
        self.host.try_wait().unwrap().is_none()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.host.kill();
        let _ = self.host.wait();
    }
}

fn settings(confirm_timeout: Duration) -> FenceSettings {
    FenceSettings {
        ipmitool: "ipmitool".into(),
        command_timeout: Duration::from_secs(5),
        confirm_timeout,
        poll_interval: Duration::from_millis(100),
    }
}

fn expect_failed(outcome: AttemptOutcome) -> String {
    match outcome {
        AttemptOutcome::Failed { detail } => {
            eprintln!("Failed detail: {detail}");
            detail
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn power_off_kills_the_host_and_is_confirmed() {
    if !bmc::require_tools("power_off_kills_the_host_and_is_confirmed") {
        return;
    }
    let mut lab = Lab::start(Chassis::Honest);
    assert!(lab.host_alive());
    let outcome = power_off_and_confirm(&lab.method(PASSWORD), &settings(Duration::from_secs(10)));
    assert!(matches!(outcome, AttemptOutcome::ConfirmedOff { .. }), "{outcome:?}");
    let status = lab.host.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "host should have been killed by the BMC");
    assert!(!lab.bmc.power_is_on());
    let calls = lab.bmc.chassis_calls();
    assert!(calls.iter().any(|c| c == "0x20 set power 0"), "{calls:?}");
}

#[test]
fn already_off_chassis_is_confirmed_off() {
    if !bmc::require_tools("already_off_chassis_is_confirmed_off") {
        return;
    }
    let lab = Lab::start(Chassis::Honest);
    lab.bmc.set_power(false);
    let method = lab.method(PASSWORD);
    let settings = settings(Duration::from_secs(10));
    assert_eq!(power_status(&method, &settings).unwrap(), PowerState::Off);
    let outcome = power_off_and_confirm(&method, &settings);
    assert!(matches!(outcome, AttemptOutcome::ConfirmedOff { .. }), "{outcome:?}");
    assert!(!lab.bmc.power_is_on());
}

#[test]
fn unreachable_bmc_fails() {
    if !bmc::require_tools("unreachable_bmc_fails") {
        return;
    }
    let mut lab = Lab::start(Chassis::Honest);
    lab.bmc.stop();
    let settings = FenceSettings {
        command_timeout: Duration::from_secs(2),
        ..settings(Duration::from_secs(3))
    };
    let detail = expect_failed(power_off_and_confirm(&lab.method(PASSWORD), &settings));
    // Neither off nor status answered: the attempt ends at once instead of polling.
    assert!(detail.contains("BMC not usable"), "{detail}");
    assert!(
        detail.contains("no answer within 2s") || detail.contains("Unable to establish"),
        "{detail}"
    );
    assert!(lab.host_alive());
}

/// Command lines and environments of the ipmitool children of this test process.
fn ipmitool_children() -> Vec<(String, Vec<u8>)> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let proc_dir = entry.path();
        let Ok(status) = fs::read_to_string(proc_dir.join("status")) else { continue };
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string())
        };
        if field("Name:").as_deref() != Some("ipmitool") || field("PPid:") != Some(me.clone()) {
            continue;
        }
        let (Ok(cmdline), Ok(environ)) =
            (fs::read(proc_dir.join("cmdline")), fs::read(proc_dir.join("environ")))
        else {
            continue;
        };
        found.push((String::from_utf8_lossy(&cmdline).replace('\0', " "), environ));
    }
    found
}

#[test]
fn wrong_password_fails_and_never_shows_the_password() {
    if !bmc::require_tools("wrong_password_fails_and_never_shows_the_password") {
        return;
    }
    const WRONG: &str = "wrong-pw-51e2d0";
    let lab = Lab::start(Chassis::Honest);
    let method = lab.method(WRONG);

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.extend(ipmitool_children());
            }
            seen
        })
    };
    let detail = expect_failed(power_off_and_confirm(&method, &settings(Duration::from_secs(2))));
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();

    assert!(detail.contains("Unable to establish IPMI v2 / RMCP+ session"), "{detail}");
    assert!(!detail.contains(WRONG) && !detail.contains(PASSWORD), "{detail}");
    // Other tests run in this process too; ours are the ones that carry the wrong password.
    let our_env = format!("IPMI_PASSWORD={WRONG}");
    let ours =
        seen.iter().filter(|(_, env)| env.split(|b| *b == 0).any(|v| v == our_env.as_bytes()));
    assert!(ours.count() > 0, "never caught a running ipmitool child (saw {})", seen.len());
    for (cmdline, _) in &seen {
        assert!(cmdline.contains(" -E "), "{cmdline}");
        assert!(!cmdline.contains(WRONG) && !cmdline.contains(PASSWORD), "{cmdline}");
    }
    assert!(lab.bmc.power_is_on());
}

#[test]
fn lying_bmc_is_never_confirmed_off() {
    if !bmc::require_tools("lying_bmc_is_never_confirmed_off") {
        return;
    }
    let mut lab = Lab::start(Chassis::LiesAboutOff);
    let detail = expect_failed(power_off_and_confirm(
        &lab.method(PASSWORD),
        &settings(Duration::from_secs(2)),
    ));
    assert!(detail.contains("off command: accepted"), "{detail}");
    assert!(detail.contains("power is still on"), "{detail}");
    assert!(lab.host_alive(), "the lying BMC must not have killed the host");
    assert!(lab.bmc.power_is_on());
}

#[test]
fn power_on_after_off() {
    if !bmc::require_tools("power_on_after_off") {
        return;
    }
    let lab = Lab::start(Chassis::Honest);
    let method = lab.method(PASSWORD);
    let settings = settings(Duration::from_secs(10));
    assert_eq!(power_status(&method, &settings).unwrap(), PowerState::On);

    // Through the worker thread the daemon uses.
    let (tx, rx) = mpsc::channel();
    spawn_attempt(7, method.clone(), settings.clone(), tx).unwrap().join().unwrap();
    let (peer, outcome) = rx.recv().unwrap();
    assert_eq!(peer, 7);
    assert!(matches!(outcome, AttemptOutcome::ConfirmedOff { .. }), "{outcome:?}");
    assert!(!lab.bmc.power_is_on());

    power_on(&method, &settings).unwrap();
    assert!(lab.bmc.power_is_on());
    assert_eq!(power_status(&method, &settings).unwrap(), PowerState::On);
}

// ---- fence-agents programs (no BMC tools needed) ----

const AGENT_PASSWORD: &str = "agent-pw-c0ffee";

/// A fake fence agent following the fence-agents stdin protocol. It keeps the power state in
/// the file given by the `state` option, logs its argument count and argv, checks the
/// password, and with `stuck=1` accepts `off` but keeps answering ON.
fn fake_agent(dir: &Path) -> PathBuf {
    let path = dir.join("fence_fake");
    let script = format!(
        r#"#!/bin/sh
echo "argc=$# argv=$*" >> '{log}'
action=; password=; state=; stuck=0
while IFS='=' read -r key value; do
    case "$key" in
    action) action=$value ;;
    password) password=$value ;;
    state) state=$value ;;
    stuck) stuck=$value ;;
    esac
done
if [ "$password" != '{AGENT_PASSWORD}' ]; then
    echo "Failed: Unable to connect/login to fencing device" >&2
    exit 1
fi
case "$action" in
off) [ "$stuck" = 1 ] || echo off > "$state"; exit 0 ;;
on) echo on > "$state"; exit 0 ;;
status) if [ "$(cat "$state")" = off ]; then echo "Status: OFF"; exit 2; fi; echo "Status: ON"; exit 0 ;;
*) echo "Failed: unknown action $action" >&2; exit 1 ;;
esac
"#,
        log = dir.join("argv.log").display()
    );
    script::write_executable(&path, &script).unwrap();
    path
}

fn agent_method(dir: &Path, password: &str, stuck: bool) -> FenceMethod {
    let password_file = dir.join("agent-password");
    fs::write(&password_file, format!("{password}\n")).unwrap();
    fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(dir.join("state"), "on\n").unwrap();
    FenceMethod::Agent(AgentTarget {
        program: fake_agent(dir),
        options: vec![
            ("state".into(), dir.join("state").display().to_string()),
            ("stuck".into(), if stuck { "1" } else { "0" }.into()),
        ],
        password_file: Some(password_file),
    })
}

fn assert_argv_clean(dir: &Path) {
    let log = fs::read_to_string(dir.join("argv.log")).unwrap();
    assert!(!log.is_empty());
    for line in log.lines() {
        assert_eq!(line, "argc=0 argv=", "a fence agent gets no arguments");
    }
}

#[test]
fn fence_agent_off_is_confirmed_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let method = agent_method(dir.path(), AGENT_PASSWORD, false);
    let outcome = power_off_and_confirm(&method, &settings(Duration::from_secs(5)));
    assert!(matches!(outcome, AttemptOutcome::ConfirmedOff { .. }), "{outcome:?}");
    assert_eq!(fs::read_to_string(dir.path().join("state")).unwrap(), "off\n");
    power_on(&method, &settings(Duration::from_secs(5))).unwrap();
    assert_eq!(power_status(&method, &settings(Duration::from_secs(5))).unwrap(), PowerState::On);
    assert_argv_clean(dir.path());
}

#[test]
fn fence_agent_stuck_on_fails() {
    let dir = tempfile::tempdir().unwrap();
    let method = agent_method(dir.path(), AGENT_PASSWORD, true);
    let detail = expect_failed(power_off_and_confirm(&method, &settings(Duration::from_secs(1))));
    assert!(detail.contains("power is still on"), "{detail}");
    assert_argv_clean(dir.path());
}

#[test]
fn fence_agent_wrong_password_fails_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let method = agent_method(dir.path(), "not-the-agent-pw", false);
    let detail = expect_failed(power_off_and_confirm(&method, &settings(Duration::from_secs(1))));
    assert!(detail.contains("Unable to connect/login"), "{detail}");
    assert!(detail.contains("exit status 1"), "{detail}");
    assert!(!detail.contains("not-the-agent-pw"), "{detail}");
    assert_eq!(fs::read_to_string(dir.path().join("state")).unwrap(), "on\n");
    assert_argv_clean(dir.path());
}

/// The flake of a CI run (`fence_agent_off_is_confirmed_by_status`: "cannot run
/// .../fence_fake: Text file busy"): scripts written with `fs::write` are busy while another
/// thread's child sits between fork and exec. Bounded: 1000 scripts, one forking thread.
#[test]
fn scripts_written_for_tests_run_while_other_threads_fork() {
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let forker = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut spawned = 0u32;
            while !stop.load(Ordering::Relaxed) {
                Command::new("true").status().unwrap();
                spawned += 1;
            }
            spawned
        })
    };
    let mut busy = 0;
    for i in 0..1000 {
        let path = dir.path().join(format!("script-{i}"));
        script::write_executable(&path, "#!/bin/sh\nexit 0\n").unwrap();
        match Command::new(&path).status() {
            Ok(status) => assert!(status.success(), "{}: {status}", path.display()),
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => busy += 1,
            Err(e) => panic!("cannot run {}: {e}", path.display()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let spawned = forker.join().unwrap();
    assert!(spawned > 0, "the forking thread never ran");
    assert_eq!(
        busy, 0,
        "{busy} of 1000 scripts were busy (ETXTBSY) while {spawned} children were forked"
    );
}
