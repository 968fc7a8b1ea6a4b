//! Report helpers shared by the benchmarks: when, what source, and the command that ran.
#![allow(dead_code)]

use std::process::Command;

pub fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The command that reproduces this run, with the arguments actually given.
pub fn command_line(bench: &str) -> String {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut cmd = format!("CARGO_TARGET_DIR=/work/target-bench cargo bench --bench {bench}");
    if !args.is_empty() {
        cmd += &format!(" -- {}", args.join(" "));
    }
    cmd
}

/// Which source was measured: commit, and how many files under src/ differ from it.
pub fn source_state() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--", "src"]).unwrap_or_default();
            let n = dirty.lines().count();
            if n == 0 {
                format!("commit {head}, src/ clean")
            } else {
                format!("commit {head} + uncommitted changes in {n} file(s) under src/")
            }
        }
        None => "unknown (no git)".to_string(),
    }
}
