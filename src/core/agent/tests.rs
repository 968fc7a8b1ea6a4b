//! Focused scenarios on a tiny in-memory cluster with 10 ms I/O. The exhaustive, randomized
//! checks live in tests/simulation.rs.
use super::*;
use crate::core::format::{encode_heartbeat, encode_mailbox, Geometry, Mailbox, BLOCK_SIZE};
use crate::core::view::decode_view;

const T: Timing = Timing {
    interval_ms: 1000,
    io_timeout_ms: 2000,
    lease_timeout_ms: 4000,
    watchdog_timeout_ms: 2000,
    suspect_after_ms: 3000,
    margin_ms: 1000,
};
const MAX: u32 = 4;
const CLUSTER: ClusterId = [5; 16];

struct Host {
    agent: Agent,
    alive: bool,
    pets: Vec<u64>,
    self_fenced: Option<u64>,
    pending: Vec<(usize, u64, u64, Option<Box<Heartbeat>>)>,
    fences: Vec<u32>,
    events: Vec<Event>,
    exit: Option<i32>,
}

struct Sim {
    now: u64,
    disk: Vec<[u8; BLOCK_SIZE]>,
    hosts: Vec<Host>,
    /// Storage fails (EIO) for these hosts.
    broken: Vec<u32>,
    /// Writes of these hosts land torn (first 512 bytes only).
    torn: Vec<u32>,
}

fn params(id: u32) -> AgentParams {
    AgentParams {
        host_id: id,
        name: format!("h{id}"),
        cluster: CLUSTER,
        max_hosts: MAX,
        timing: T,
        volumes: 1,
        boot_id: [id as u8; 16],
        incarnation: 1000 + u64::from(id),
        eligible: true,
        self_fence: SelfFenceKind::Reboot,
        fence_methods: BTreeMap::new(),
        watchdog_timeout_s: 2,
        doomed_marker: false,
        power_on_after: false,
        knobs: UnsafeTestKnobs::default(),
    }
}

const GEO: Geometry = Geometry { max_hosts: MAX };

impl Sim {
    fn new(n: u32) -> Sim {
        let mut sim = Sim {
            now: 1_000_000,
            disk: vec![[0u8; BLOCK_SIZE]; GEO.total_blocks() as usize],
            hosts: Vec::new(),
            broken: vec![],
            torn: vec![],
        };
        for id in 1..=n {
            sim.add(params(id));
        }
        sim
    }
    fn add(&mut self, p: AgentParams) {
        let mut agent = Agent::new(p, Now { mono: self.now, wall: 1 });
        let first = agent.handle(Now { mono: self.now, wall: 1 }, Input::Tick);
        self.hosts.push(Host {
            agent,
            alive: true,
            pets: vec![],
            self_fenced: None,
            pending: vec![],
            fences: vec![],
            events: vec![],
            exit: None,
        });
        let i = self.hosts.len() - 1;
        self.apply(i, first);
    }
    fn host(&mut self, id: u32) -> &mut Host {
        self.hosts.iter_mut().rev().find(|h| h.agent.params().host_id == id).unwrap()
    }
    fn feed(&mut self, i: usize, input: Input) {
        let a = self.hosts[i].agent.handle(Now { mono: self.now, wall: self.now }, input);
        self.apply(i, a);
    }
    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            let h = &mut self.hosts[i];
            match a {
                Action::StartIo { volume, cycle, write } => {
                    h.pending.push((volume, cycle, self.now, write))
                }
                Action::Pet => h.pets.push(self.now),
                Action::SelfFence { .. } => h.self_fenced = Some(self.now),
                Action::StartFence { peer } => h.fences.push(peer),
                Action::Event(e) => h.events.push(e),
                Action::Exit { code, .. } => h.exit = Some(code),
                Action::ArmWatchdog => {
                    let a = h.agent.handle(
                        Now { mono: self.now, wall: self.now },
                        Input::WatchdogArmed(Ok(())),
                    );
                    self.apply(i, a);
                }
                _ => {}
            }
        }
    }
    fn io(&mut self, i: usize) {
        let id = self.hosts[i].agent.params().host_id;
        let pending = std::mem::take(&mut self.hosts[i].pending);
        for (volume, cycle, started, write) in pending {
            let broken = self.broken.contains(&id);
            let write = write.map(|r| {
                if broken {
                    return Err("EIO".to_string());
                }
                let block = encode_heartbeat(&r).unwrap();
                let slot = &mut self.disk[GEO.heartbeat_block(id) as usize];
                if self.torn.contains(&id) {
                    slot[..512].copy_from_slice(&block[..512]);
                } else {
                    *slot = block;
                }
                Ok(self.now)
            });
            let read = if broken {
                Err("EIO".to_string())
            } else {
                let raw: Vec<u8> = self.disk[1..].iter().flatten().copied().collect();
                Ok((self.now, decode_view(&raw, GEO, &CLUSTER)))
            };
            self.feed(i, Input::IoDone { volume, cycle, started, write, read });
        }
    }
    /// Advances time in 10 ms steps: I/O completes 10 ms after it starts.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 10;
            for i in 0..self.hosts.len() {
                if !self.hosts[i].alive || self.hosts[i].exit.is_some() {
                    continue;
                }
                self.io(i);
                self.feed(i, Input::Tick);
            }
        }
    }
    fn kill(&mut self, id: u32) {
        self.host(id).alive = false;
    }
    fn mailbox(&mut self, id: u32, command: Command, nonce: u64) {
        let m = Mailbox {
            cluster: CLUSTER,
            host_id: id,
            nonce,
            command,
            sender: 0,
            wall_ms: 1,
            target_incarnation: 0,
            sender_name: "op".into(),
        };
        self.disk[GEO.mailbox_block(id) as usize] = encode_mailbox(&m);
    }
    fn verdict(&mut self, observer: u32, id: u32) -> Option<(VerdictKind, FenceMethodKind)> {
        self.host(observer).agent.verdicts().get(&id).map(|v| (v.kind, v.method))
    }
}

fn events(h: &Host, kind: EventKind) -> Vec<&Event> {
    h.events.iter().filter(|e| e.kind == kind).collect()
}

#[test]
fn starts_probes_arms_and_pets_only_with_a_lease() {
    let mut s = Sim::new(1);
    s.run(1000);
    assert!(
        matches!(s.host(1).agent.phase(), Phase::Probing { .. }),
        "writes before the probe ended"
    );
    assert!(s.host(1).pets.is_empty());
    s.run(2000);
    assert_eq!(s.host(1).agent.phase(), Phase::Running);
    assert!(s.host(1).agent.watchdog_armed());
    assert!(!s.host(1).pets.is_empty());
    assert!(s.host(1).agent.is_coordinator());
}

#[test]
fn lease_expiry_self_fences_and_never_pets_again() {
    let mut s = Sim::new(1);
    s.run(4000);
    s.broken.push(1);
    let broke = s.now;
    s.run(6000);
    let h = s.host(1);
    let fenced = h.self_fenced.expect("no self-fence");
    // The last successful cycle started at most one interval before the failure.
    assert!(
        fenced <= broke + T.lease_timeout_ms + 20,
        "self-fence {} ms after the failure",
        fenced - broke
    );
    assert!(fenced >= broke + T.lease_timeout_ms - T.interval_ms - 20);
    assert!(h.pets.iter().all(|&p| p < fenced), "petted after the self-fence");
    let expiry = h.agent.lease_expiry().unwrap();
    assert!(h.pets.iter().all(|&p| p < expiry), "petted after lease expiry");
    assert_eq!(events(h, EventKind::SelfFence).len(), 1);
    // Storage comes back: the doomed host still never pets.
    s.broken.clear();
    let n = s.host(1).pets.len();
    s.run(3000);
    assert_eq!(s.host(1).pets.len(), n);
}

#[test]
fn torn_own_writes_do_not_renew_the_lease() {
    let mut s = Sim::new(1);
    s.run(4000);
    s.torn.push(1);
    s.run(6000);
    assert!(s.host(1).self_fenced.is_some(), "torn writes kept the lease");
}

#[test]
fn a_second_writer_on_the_same_id_is_refused_at_start() {
    let mut s = Sim::new(1);
    s.run(4000);
    let mut twin = params(1);
    twin.incarnation = 77;
    twin.boot_id = [9; 16];
    s.add(twin);
    s.run(3000);
    assert_eq!(s.hosts[1].exit, Some(EXIT_HOST_ID_IN_USE), "the twin kept running");
    assert!(s.hosts[1].pets.is_empty());
    assert_eq!(s.hosts[0].exit, None);
}

#[test]
fn restart_on_the_same_boot_after_expiry_is_doomed_at_once() {
    let mut s = Sim::new(1);
    s.run(4000);
    s.kill(1);
    s.run(5000); // longer than the lease: the old record's lease has expired
    s.add(AgentParams { incarnation: 4242, ..params(1) });
    s.run(500);
    let h = &s.hosts[1];
    assert!(h.self_fenced.is_some(), "restarted agent did not self-fence");
    assert!(h.pets.is_empty(), "restarted agent petted");
}

#[test]
fn restart_within_the_lease_continues() {
    let mut s = Sim::new(1);
    s.run(4000);
    s.kill(1);
    s.run(500);
    s.add(AgentParams { incarnation: 4242, ..params(1) });
    s.run(3000);
    let h = &s.hosts[1];
    assert!(h.self_fenced.is_none());
    assert!(!h.pets.is_empty());
}

#[test]
fn doomed_marker_dooms_at_once() {
    let mut s = Sim::new(0);
    s.add(AgentParams { doomed_marker: true, ..params(1) });
    assert!(s.hosts[0].self_fenced.is_some());
    s.run(3000);
    assert!(s.hosts[0].pets.is_empty());
}

#[test]
fn dead_peer_without_bmc_is_fenced_at_the_watchdog_bound_not_before() {
    let mut s = Sim::new(3);
    s.run(5000);
    s.kill(3);
    let killed = s.now;
    let mut fenced_at = None;
    for _ in 0..2000 {
        s.run(10);
        if s.verdict(1, 3).is_some_and(|v| v.0 == VerdictKind::Fenced) {
            fenced_at = Some(s.now);
            break;
        }
    }
    let at = fenced_at.expect("never fenced");
    assert_eq!(s.verdict(1, 3), Some((VerdictKind::Fenced, FenceMethodKind::Watchdog)));
    assert!(at - killed >= T.dead_after_ms(), "fenced {} ms after death", at - killed);
    assert!(
        at - killed <= T.dead_after_ms() + T.interval_ms + 100,
        "fenced late: {} ms",
        at - killed
    );
    // Host 2 mirrors the coordinator's table from the volume.
    s.run(1500);
    assert_eq!(s.verdict(2, 3), Some((VerdictKind::Fenced, FenceMethodKind::Watchdog)));
}

#[test]
fn bmc_fencing_needs_a_confirmed_off() {
    let mut s = Sim::new(0);
    let mut p = params(1);
    p.fence_methods.insert(2, FenceMethodKind::Ipmi);
    s.add(p);
    s.add(params(2));
    s.run(5000);
    s.kill(2);
    s.run(T.suspect_after_ms + 1500);
    assert_eq!(s.host(1).fences, vec![2], "fencing did not start exactly once");
    assert_eq!(s.verdict(1, 2).map(|v| v.0), Some(VerdictKind::Fencing));
    s.feed(
        0,
        Input::FenceDone {
            peer: 2,
            method: FenceMethodKind::Ipmi,
            result: Err("Unable to establish IPMI v2 / RMCP+ session".into()),
        },
    );
    assert_eq!(s.verdict(1, 2).map(|v| v.0), Some(VerdictKind::FenceFailed));
    assert_eq!(events(s.host(1), EventKind::FenceFailed).len(), 1);
    s.run(2500); // backoff, then a new attempt
    assert_eq!(s.host(1).fences, vec![2, 2]);
    s.feed(
        0,
        Input::FenceDone {
            peer: 2,
            method: FenceMethodKind::Ipmi,
            result: Ok("off confirmed".into()),
        },
    );
    assert_eq!(s.verdict(1, 2), Some((VerdictKind::Fenced, FenceMethodKind::Ipmi)));
}

#[test]
fn storage_blip_restarts_peer_timers_s4() {
    let mut s = Sim::new(3);
    s.run(5000);
    // Everybody loses storage for less than the lease.
    // Survivable by the lease: the last good cycle started up to one interval earlier.
    s.broken = vec![1, 2, 3];
    s.run(T.lease_timeout_ms - T.interval_ms - 600);
    s.broken.clear();
    s.run(10_000);
    for id in 1..=3 {
        let h = s.host(id);
        assert!(h.self_fenced.is_none(), "host {id} self-fenced");
        assert!(
            events(h, EventKind::HostSuspect).is_empty(),
            "host {id} suspected a peer after a blip"
        );
        assert!(h.agent.verdicts().is_empty());
    }
}

#[test]
fn without_s4_a_blip_makes_suspects() {
    // The same blip with S4 disabled: proves the previous test can fail.
    let mut s = Sim::new(0);
    for id in 1..=3 {
        let mut p = params(id);
        p.knobs.judge_through_trouble = true;
        s.add(p);
    }
    s.run(5000);
    s.broken = vec![2, 3];
    s.run(T.lease_timeout_ms - 500);
    s.broken.clear();
    s.run(2000);
    assert!(!events(s.host(1), EventKind::HostSuspect).is_empty());
}

#[test]
fn clean_stop_leaves_and_is_never_fenced() {
    let mut s = Sim::new(2);
    s.run(5000);
    s.feed(1, Input::StopRequested);
    s.run(500);
    assert_eq!(s.hosts[1].exit, Some(0));
    s.run(T.dead_after_ms() + 3000);
    assert!(s.verdict(1, 2).is_none(), "a host that left was judged");
    assert_eq!(events(s.host(1), EventKind::HostLeft).len(), 1);
}

#[test]
fn stop_is_ignored_while_doomed() {
    let mut s = Sim::new(1);
    s.run(4000);
    s.broken.push(1);
    s.run(6000);
    s.feed(0, Input::StopRequested);
    s.run(500);
    assert_eq!(s.hosts[0].exit, None, "a doomed agent exited on SIGTERM");
}

#[test]
fn fence_request_is_acknowledged_then_self_fenced_and_declared_by_request() {
    let mut s = Sim::new(2);
    s.run(5000);
    s.mailbox(2, Command::Reset, 99);
    s.run(200);
    assert!(s.host(2).self_fenced.is_none() || s.host(2).agent.phase() != Phase::Running);
    s.run(T.io_timeout_ms + 200);
    assert!(s.host(2).self_fenced.is_some(), "no self-fence on request");
    s.kill(2);
    let record =
        decode_view(&s.disk[1..].iter().flatten().copied().collect::<Vec<u8>>(), GEO, &CLUSTER);
    let r = record.record(2).unwrap().clone();
    assert_eq!((r.ack_nonce, r.state), (99, HostState::SelfFencing));
    s.run(T.io_timeout_ms + T.watchdog_timeout_ms + T.margin_ms + 1500);
    assert_eq!(s.verdict(1, 2), Some((VerdictKind::Fenced, FenceMethodKind::Request)));
}

#[test]
fn stale_poison_pill_is_ignored_at_start() {
    let mut s = Sim::new(0);
    s.mailbox(1, Command::Reset, 5);
    s.add(params(1));
    s.run(5000);
    assert!(s.host(1).self_fenced.is_none());
    s.mailbox(1, Command::Test, 6);
    s.run(1500);
    let raw: Vec<u8> = s.disk[1..].iter().flatten().copied().collect();
    assert_eq!(decode_view(&raw, GEO, &CLUSTER).record(1).unwrap().ack_nonce, 6);
}

#[test]
fn coordinator_failover_inherits_verdicts_and_clear_removes_one() {
    let mut s = Sim::new(4);
    s.run(5000);
    s.kill(4);
    s.run(T.dead_after_ms() + 2000);
    assert_eq!(s.verdict(1, 4).map(|v| v.0), Some(VerdictKind::Fenced));
    s.kill(1);
    s.run(T.dead_after_ms() + 3000);
    assert!(s.host(2).agent.is_coordinator());
    assert_eq!(
        s.verdict(2, 4).map(|v| v.0),
        Some(VerdictKind::Fenced),
        "verdict lost in the hand-over"
    );
    assert_eq!(s.verdict(2, 1).map(|v| v.0), Some(VerdictKind::Fenced));
    s.mailbox(4, Command::Clear, 7);
    s.run(1500);
    assert_eq!(s.verdict(2, 4), None, "clear did not remove the verdict");
    s.run(2000);
    assert_eq!(s.verdict(3, 4), None, "host 3 did not mirror the clear");
    assert_eq!(s.verdict(3, 1).map(|v| v.0), Some(VerdictKind::Fenced));
}

#[test]
fn reload_that_removes_a_bmc_reaches_the_core() {
    // Issue 10 item 10: the job stayed in flight forever, with no event.
    let mut s = Sim::new(0);
    let mut p = params(1);
    p.fence_methods.insert(2, FenceMethodKind::Ipmi);
    s.add(p);
    s.add(params(2));
    s.run(5000);
    s.kill(2);
    s.run(T.suspect_after_ms + 1500);
    assert_eq!(s.host(1).fences, vec![2]);
    s.feed(0, Input::FencingChanged { methods: BTreeMap::new(), power_on_after: false });
    let failed = events(s.host(1), EventKind::FenceFailed);
    assert!(
        failed.iter().any(|e| e.host == 2 && e.detail.contains("removed by a reload")),
        "no event for the removed method: {failed:?}"
    );
    s.run(200);
    assert_eq!(s.verdict(1, 2).map(|v| v.0), Some(VerdictKind::FenceFailed));
    assert_eq!(s.host(1).fences, vec![2], "fenced through a removed BMC");
}
