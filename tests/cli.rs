//! Command-line behaviour that needs no cluster: test-watchdog, help texts, exit codes.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::hbfence;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn test_watchdog_tells_usable_busy_and_not_a_watchdog() {
    let out = hbfence(&["test-watchdog", "--device", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not a watchdog"), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("wd");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = hbfence(&["test-watchdog", "--device", fifo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("test double") && text(&out).contains("held by: nobody"));

    // A writer holds it: the command names the holder's pid.
    let _reader =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(b"k").unwrap();
    let out = hbfence(&["test-watchdog", "--device", fifo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains(&format!("process {}", std::process::id())), "{}", text(&out));

    let out = hbfence(&["test-watchdog", "--device", "/nonexistent/watchdog"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("modprobe"), "{}", text(&out));
}

#[test]
fn help_answers_the_questions() {
    let out = hbfence(&["--help"]);
    assert!(out.status.success());
    for cmd in ["init", "run", "status", "dump", "fence", "clear", "check", "test-watchdog"] {
        assert!(text(&out).contains(cmd), "--help lacks {cmd}");
    }
    let out = hbfence(&["check", "--help"]);
    let t = text(&out);
    assert!(
        t.contains("FENCED (exit 4)")
            && t.contains("DEAD (exit 3)")
            && t.contains("=====> DEAD <======"),
        "{t}"
    );
    let out = hbfence(&["init", "--help"]);
    assert!(text(&out).contains("--force") && text(&out).contains("live cluster"));
    let out = hbfence(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn commands_without_a_config_say_what_to_do() {
    for args in [
        &["check", "2", "--config", "/nonexistent.toml"][..],
        &["fence", "2", "--config", "/nonexistent.toml"],
        &["status", "--config", "/nonexistent.toml"],
        &["run", "--check", "--config", "/nonexistent.toml"],
    ] {
        let out = hbfence(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out).contains("cannot read it"), "{args:?}: {}", text(&out));
    }
}

#[test]
fn test_watchdog_refuses_a_device_that_stops_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("wd");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = hbfence(&["test-watchdog", "--device", fifo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("after close: keeps running"), "{}", text(&out));
    // The test-only sidecar emulates a driver without magic close, nowayout off.
    std::fs::write(dir.path().join("wd.test-driver"), "magic_close = false\nnowayout = false\n")
        .unwrap();
    let out = hbfence(&["test-watchdog", "--device", fifo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("after close: STOPS") && t.contains("no magic close"), "{t}");
    assert!(t.contains("not usable for hbfence") && t.contains("nowayout=1"), "{t}");
    assert!(!t.contains("usable: yes"), "{t}");
    // nowayout keeps it running even without magic close.
    std::fs::write(dir.path().join("wd.test-driver"), "magic_close = false\nnowayout = true\n")
        .unwrap();
    let out = hbfence(&["test-watchdog", "--device", fifo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}
