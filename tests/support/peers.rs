//! Peer-channel helpers for the process tests (issue 13): a cluster key, loopback listen
//! addresses, the `[network]` section of a harness host, and a UDP relay the test owns, which
//! can capture what passes and cut the path. Everything is sent to 127.0.0.1 only; every loop is
//! bounded.
#![allow(dead_code)]

use crate::cluster::{hbfence, Host};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("bind a UDP port").port()
}

/// `n` free loopback addresses for the agents' `[network] listen`.
pub fn listen_addrs(n: usize) -> Vec<SocketAddr> {
    (0..n).map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect()
}

/// A cluster key made by `hbfence keygen` in `dir`.
pub fn keygen(dir: &Path) -> PathBuf {
    let key = dir.join("cluster.key");
    let out = hbfence(&["keygen", "--output", key.to_str().unwrap()]);
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    key
}

/// Adds `[network]` (listen, key, challenge period) to a harness host's config and gives each
/// of its `[[peer]]` entries the address `address_of(peer)`.
pub fn enable_network(
    host: &Host,
    listen: SocketAddr,
    key: &Path,
    interval_ms: u64,
    address_of: impl Fn(u32) -> SocketAddr,
) {
    let mut text = std::fs::read_to_string(&host.config).unwrap();
    let peers: Vec<u32> = text
        .lines()
        .zip(text.lines().skip(1))
        .filter(|(l, _)| *l == "[[peer]]")
        .filter_map(|(_, id)| id.strip_prefix("id = ")?.parse().ok())
        .collect();
    assert!(!peers.is_empty(), "no [[peer]] in {}", host.config.display());
    for p in peers {
        let entry = format!("[[peer]]\nid = {p}\nname = \"host{p}\"\n");
        assert!(text.contains(&entry), "{text}");
        text = text.replace(&entry, &format!("{entry}address = \"{}\"\n", address_of(p)));
    }
    text += &format!(
        "[network]\nlisten = \"{listen}\"\nkey_file = \"{}\"\ninterval_ms = {interval_ms}\n",
        key.display()
    );
    std::fs::write(&host.config, text).unwrap();
}

/// Forwards every datagram it receives to `to`, keeping a copy, until it is cut (then it drops
/// them: the path is down in that direction).
pub struct Relay {
    pub addr: SocketAddr,
    pub captured: Arc<Mutex<Vec<Vec<u8>>>>,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    pub fn start(to: SocketAddr) -> Relay {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, x, s) = (captured.clone(), cut.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            // Bounded: the test stops it, and it never runs longer than 3 minutes.
            let end = Instant::now() + Duration::from_secs(180);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    if x.load(Ordering::Relaxed) {
                        continue;
                    }
                    c.lock().unwrap().push(buf[..n].to_vec());
                    let _ = sock.send_to(&buf[..n], to);
                }
            }
        });
        Relay { addr, captured, cut, stop, thread: Some(thread) }
    }

    /// The latest captured datagram of a type (1 challenge, 2 answer).
    pub fn latest(&self, kind: u8) -> Option<Vec<u8>> {
        self.captured.lock().unwrap().iter().rev().find(|d| d.len() > 5 && d[5] == kind).cloned()
    }

    /// Drops (true) or forwards (false) from now on.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The agent's status file (status.json), Null while it cannot be read.
pub fn status_file(host: &Host) -> serde_json::Value {
    std::fs::read_to_string(host.dir.join("run/status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// What `host`'s status file says about `peer` on the peer channel (Null if nothing).
pub fn channel_peer(host: &Host, peer: u32) -> serde_json::Value {
    status_file(host)["network"]["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == peer).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Every host reaches every other one on the peer channel.
pub fn all_reachable(hosts: &[Host]) -> bool {
    hosts.iter().all(|o| {
        hosts.iter().filter(|p| p.id != o.id).all(|p| channel_peer(o, p.id)["reachable"] == true)
    })
}
