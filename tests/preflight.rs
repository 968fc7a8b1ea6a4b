//! `hbfence run --check` and `hbfence run` apply the same start-up checks and exit with the same
//! code (0, 69 not available, 78 configuration) on the same configuration: a table of broken
//! configurations, each run both ways. Agents use a FIFO watchdog double and a sysrq test file
//! in a tempdir; never the real watchdog or /proc/sysrq-trigger.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/script.rs"]
mod script;

use cluster::*;
use nix::sys::signal::Signal;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One host with a volume, a BMC peer (password file 0600), a hooks dir with one hook.
struct Setup {
    base: PathBuf,
    host: Host,
    hooks: PathBuf,
    hook: PathBuf,
    password: PathBuf,
    /// Last: removed after the agents, BMCs and mounts that use it have stopped.
    _tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let volume = base.join("hb.vol");
        init_volume(&volume, &[]);
        let hooks = base.join("hooks.d");
        fs::create_dir(&hooks).unwrap();
        mode(&hooks, 0o755);
        let hook = hooks.join("10-page");
        script::write_executable(&hook, "#!/bin/sh\nexit 0\n").unwrap();
        let password = base.join("bmc2.pw");
        fs::write(&password, "secret\n").unwrap();
        mode(&password, 0o600);
        // Port 9 on 127.0.0.1: never fenced here, only its password file is checked.
        let bmc = BmcConfig { port: 9, password_file: password.clone() };
        let host = Host::new(
            &base,
            &HostSpec {
                id: 1,
                volumes: vec![volume],
                peers: vec![(2, Some(&bmc))],
                hooks_dir: Some(hooks.clone()),
                eligible: true,
            },
        );
        Setup { _tmp: tmp, base, host, hooks, hook, password }
    }

    /// Replaces `from` by `to` in the config.
    fn edit(&self, from: &str, to: &str) {
        let text = fs::read_to_string(&self.host.config).unwrap();
        assert!(text.contains(from), "{from:?} not in the config:\n{text}");
        fs::write(&self.host.config, text.replace(from, to)).unwrap();
    }

    fn path_key(&self, key: &str, old: &Path, new: &Path) {
        self.edit(
            &format!("{key} = \"{}\"", old.display()),
            &format!("{key} = \"{}\"", new.display()),
        );
    }
}

fn mode(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `run`: the exit code once it exits, or 0 after it became ready (armed the watchdog
/// double) and stopped cleanly on SIGTERM; and its output.
fn run_agent(s: &mut Setup) -> (Option<i32>, String) {
    s.host.start();
    let ready = wait_until(Duration::from_secs(15), || {
        s.host.watchdog.keepalives() > 0 || s.host.exited().is_some()
    });
    assert!(ready, "agent neither exited nor became ready:\n{}", s.host.log_text());
    let status = match s.host.exited() {
        Some(status) => status,
        None => {
            s.host.signal(Signal::SIGTERM);
            s.host.wait_exit(Duration::from_secs(15)).expect("agent did not stop on SIGTERM")
        }
    };
    (status.code(), s.host.log_text())
}

struct Case {
    name: &'static str,
    /// Breaks the setup; returns what the message must name (a path, a rule).
    breaks: fn(&Setup) -> Vec<String>,
    code: i32,
    needs_root: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "hook writable by group",
            breaks: |s| {
                mode(&s.hook, 0o775);
                vec![s.hook.display().to_string(), "writable by group".into()]
            },
            code: 78,
            needs_root: false,
        },
        Case {
            name: "hooks_dir writable by others",
            breaks: |s| {
                mode(&s.hooks, 0o757);
                vec![s.hooks.display().to_string(), "writable by others".into()]
            },
            code: 78,
            needs_root: false,
        },
        Case {
            name: "hook owned by another user",
            breaks: |s| {
                std::os::unix::fs::chown(&s.hook, Some(65534), None).unwrap();
                vec![s.hook.display().to_string(), "uid 65534".into()]
            },
            code: 78,
            needs_root: true,
        },
        Case {
            name: "hook symlink leaving hooks_dir",
            breaks: |s| {
                let outside = s.base.join("outside-hook");
                script::write_executable(&outside, "#!/bin/sh\n").unwrap();
                let link = s.hooks.join("20-outside");
                std::os::unix::fs::symlink(&outside, &link).unwrap();
                vec![link.display().to_string(), "outside hooks_dir".into()]
            },
            code: 78,
            needs_root: false,
        },
        Case {
            name: "password file readable by group",
            breaks: |s| {
                mode(&s.password, 0o640);
                vec![s.password.display().to_string(), "chmod 0600".into()]
            },
            code: 78,
            needs_root: false,
        },
        Case {
            name: "password file empty",
            breaks: |s| {
                fs::write(&s.password, "").unwrap();
                vec![s.password.display().to_string(), "empty".into()]
            },
            code: 78,
            needs_root: false,
        },
        Case {
            name: "password file owned by another user",
            breaks: |s| {
                std::os::unix::fs::chown(&s.password, Some(65534), None).unwrap();
                vec![s.password.display().to_string(), "uid 65534".into()]
            },
            code: 78,
            needs_root: true,
        },
        Case {
            name: "watchdog device is a regular file",
            breaks: |s| {
                let file = s.base.join("not-a-watchdog");
                fs::write(&file, "").unwrap();
                s.path_key("device", &s.host.watchdog.path, &file);
                vec![file.display().to_string(), "regular file".into()]
            },
            code: 78,
            needs_root: false,
        },
        Case {
            name: "watchdog device is a directory",
            breaks: |s| {
                s.path_key("device", &s.host.watchdog.path, &s.base);
                vec![s.base.display().to_string(), "directory".into()]
            },
            code: 78,
            needs_root: false,
        },
        Case {
            name: "watchdog device missing (driver not loaded yet)",
            breaks: |s| {
                let gone = s.base.join("watchdog-gone");
                s.path_key("device", &s.host.watchdog.path, &gone);
                vec![gone.display().to_string(), "modprobe".into()]
            },
            code: 69,
            needs_root: false,
        },
        Case {
            name: "sysrq_trigger in a missing directory",
            breaks: |s| {
                let lost = s.base.join("gone").join("sysrq");
                s.path_key("sysrq_trigger", &s.host.sysrq, &lost);
                vec![lost.display().to_string(), "does not exist".into()]
            },
            code: 78,
            needs_root: false,
        },
        Case {
            name: "event log under a regular file",
            breaks: |s| {
                let file = s.base.join("plain");
                fs::write(&file, "").unwrap();
                let log = file.join("events.jsonl");
                s.path_key("log", &s.host.events, &log);
                vec![log.display().to_string(), "not a directory".into()]
            },
            code: 78,
            needs_root: false,
        },
        Case {
            name: "runtime_dir under a regular file",
            breaks: |s| {
                let file = s.base.join("plain");
                fs::write(&file, "").unwrap();
                let run = file.join("run");
                s.path_key("runtime_dir", &s.host.dir.join("run"), &run);
                vec![run.display().to_string(), "runtime_dir".into()]
            },
            code: 78,
            needs_root: false,
        },
        Case {
            name: "volume missing (share not mounted yet)",
            breaks: |s| {
                let gone = s.base.join("gone.vol");
                s.path_key("path", &s.base.join("hb.vol"), &gone);
                vec![gone.display().to_string()]
            },
            code: 69,
            needs_root: false,
        },
        Case {
            name: "unknown key",
            breaks: |s| {
                s.edit("[watchdog]\n", "[watchdog]\ndevise = \"x\"\n");
                vec!["devise".into()]
            },
            code: 78,
            needs_root: false,
        },
    ]
}

fn is_root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: needs root (chown to another uid); CI=true forbids skipping");
        }
        eprintln!("skipping {test}: needs root (chown to another uid)");
    }
    root
}

#[test]
fn run_check_and_run_exit_alike_on_every_broken_config() {
    for case in cases() {
        if case.needs_root && !is_root(case.name) {
            continue;
        }
        let mut s = Setup::new();
        let needles = (case.breaks)(&s);
        let check = s.host.cli(&["run", "--check"]);
        let (run_code, run_out) = run_agent(&mut s);
        let check_out = text(&check);
        assert_eq!(
            check.status.code(),
            Some(case.code),
            "{}: run --check exit code:\n{check_out}",
            case.name
        );
        assert_eq!(run_code, Some(case.code), "{}: run exit code:\n{run_out}", case.name);
        for n in &needles {
            assert!(
                check_out.contains(n.as_str()),
                "{}: run --check does not name {n:?}:\n{check_out}",
                case.name
            );
            assert!(
                run_out.contains(n.as_str()),
                "{}: run does not name {n:?}:\n{run_out}",
                case.name
            );
        }
        assert_eq!(s.host.watchdog.keepalives(), 0, "{}: the watchdog double was armed", case.name);
    }
}

#[test]
fn a_good_config_passes_both_and_the_sysrq_double_is_announced() {
    let mut s = Setup::new();
    let check = s.host.cli(&["run", "--check"]);
    let check_out = text(&check);
    assert_eq!(check.status.code(), Some(0), "{check_out}");
    let sysrq = s.host.sysrq.display().to_string();
    assert!(
        check_out.contains("TEST DOUBLE") && check_out.contains(&sysrq),
        "sysrq double not announced:\n{check_out}"
    );
    assert!(check_out.contains("1 hook(s)"), "{check_out}");
    let (code, log) = run_agent(&mut s);
    assert_eq!(code, Some(0), "{log}");
    assert!(s.host.watchdog.keepalives() > 0, "never ready:\n{log}");
    assert!(
        log.contains("sysrq_trigger is") && log.contains(&sysrq) && log.contains("TEST DOUBLE"),
        "run did not announce the sysrq double:\n{log}"
    );
    assert!(s.host.sysrq_letters().is_empty(), "self-fenced:\n{log}");
}
