//! Benchmark (issue 12, "no per-cycle allocation"): heap allocations per steady-state cycle of
//! one agent, counted by a global allocator that wraps the system one.
//!
//! Three agents (ids 1..=3, members 1-3, one in-memory volume of 255 slots, the default timing)
//! are driven in 10 ms steps exactly as the daemon drives them: the core's `StartIo` is carried
//! out as the I/O thread does (the write encoded into a reused buffer and its record handed back
//! to the core; from `read_at` on, the read plan's blocks decoded into a view the core handed
//! back), and the result is fed back as `Input::IoDone`. After a warm-up of 60 s of cluster time the allocations of the
//! next 200 cycles of host 1 are counted, split into the I/O side (decode) and the core side
//! (`Agent::handle`, the inputs of a cycle and the time-only wake-ups between them).
//!
//! Run: `cargo bench --bench alloc`

use hbfence::core::agent::{
    Action, Agent, AgentParams, Input, Now, SelfFenceKind, UnsafeTestKnobs,
};
use hbfence::core::format::{self, Geometry, BLOCK_SIZE};
use hbfence::core::header::Membership;
use hbfence::core::readplan::{IdSet, ReadPlanner};
use hbfence::core::timing::Timing;
use hbfence::core::view::VolumeView;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

#[path = "common.rs"]
mod common;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

const CLUSTER: [u8; 16] = [7; 16];
const GEO: Geometry = Geometry { max_hosts: 255 };

struct Host {
    agent: Agent,
    /// The daemon's action buffer (`Agent::handle_into`).
    actions: Vec<Action>,
    planner: ReadPlanner,
    pending: Vec<Io>,
    /// `pending` taken for a step (kept: its buffer is reused).
    due: Vec<Io>,
    /// Cycles written and waiting for their read (kept: its buffer is reused).
    waiting: Vec<Io>,
    wbuf: format::Block,
}

/// One `StartIo` on its way through the I/O thread.
struct Io {
    volume: usize,
    cycle: u64,
    started: u64,
    write: Option<Box<format::Heartbeat>>,
    wrote: Option<Result<u64, String>>,
    read_at: u64,
}

#[derive(Default)]
struct Counts {
    io: u64,
    core: u64,
    /// Of `core`: the cycle's result, the wake-ups.
    io_done: u64,
    wake_ups: u64,
    cycles: u64,
}

fn main() {
    println!("# alloc benchmark — {} — {}", common::now_utc(), common::source_state());
    let timing = Timing::default();
    let members = Membership { members: vec![1, 2, 3], epoch: 1, outage_survival: false };
    let mut member_set = IdSet::default();
    [1, 2, 3].iter().for_each(|&id| member_set.insert(id));
    let mut disk = vec![[0u8; BLOCK_SIZE]; GEO.total_blocks() as usize];
    let mut now = 1_000_000u64;
    let mut hosts: Vec<Host> = (1..=3u32)
        .map(|id| {
            let p = AgentParams {
                host_id: id,
                name: format!("kvm{id:02}"),
                cluster: CLUSTER,
                max_hosts: GEO.max_hosts,
                timing,
                volumes: 1,
                boot_id: [id as u8; 16],
                incarnation: 1000 + u64::from(id),
                eligible: true,
                self_fence: SelfFenceKind::Reboot,
                fence_methods: BTreeMap::new(),
                watchdog_timeout_s: 10,
                doomed_marker: false,
                armed_marker: false,
                power_on_after: false,
                knobs: UnsafeTestKnobs::default(),
                peer_channel: None,
                membership: members.clone(),
                inventory: false,
            };
            let mut planner = ReadPlanner::new(GEO, id, &[1, 2, 3], false);
            planner.set_members(Some(member_set));
            Host {
                agent: Agent::new(p, Now { mono: now, wall: now }),
                actions: Vec::new(),
                planner,
                pending: Vec::new(),
                due: Vec::new(),
                waiting: Vec::new(),
                wbuf: [0u8; BLOCK_SIZE],
            }
        })
        .collect();
    let warmup = now + 60_000;
    let mut counts = Counts::default();
    let target_cycles = 200;
    while counts.cycles < target_cycles {
        now += 10;
        let counting = now > warmup;
        for (i, h) in hosts.iter_mut().enumerate() {
            // The I/O thread's part of every cycle started earlier.
            std::mem::swap(&mut h.pending, &mut h.due);
            let mut due = std::mem::take(&mut h.due);
            for mut io in due.drain(..) {
                let a0 = allocs();
                let id = h.agent.params().host_id;
                let own = GEO.heartbeat_block(id) as usize;
                if let Some(r) = io.write.take() {
                    format::encode_heartbeat_into(&r, &mut h.wbuf).unwrap();
                    disk[own] = h.wbuf;
                    io.wrote = Some(Ok(now));
                    h.agent.recycle_record(r);
                }
                if now < io.read_at {
                    h.waiting.push(io);
                    if counting && i == 0 {
                        counts.io += allocs() - a0;
                    }
                    continue;
                }
                let plan = h.planner.next(&h.agent.peer_mailboxes());
                let mut view = match h.agent.take_spare_view() {
                    Some(mut view) => {
                        view.recycle(GEO);
                        view
                    }
                    None => VolumeView::unread(GEO),
                };
                for &(first, n) in &plan.runs {
                    let raw: &[u8] = disk[first as usize..(first + n) as usize].as_flattened();
                    view.decode_blocks(first, raw, GEO, &CLUSTER);
                }
                let a1 = allocs();
                let read = Ok((now, view));
                let (volume, cycle, started, write) = (io.volume, io.cycle, io.started, io.wrote);
                feed(h, now, Input::IoDone { volume, cycle, started, write, read });
                let a2 = allocs();
                if counting && i == 0 {
                    counts.io += a1 - a0;
                    counts.io_done += a2 - a1;
                    counts.core += a2 - a1;
                    counts.cycles += 1;
                }
            }
            h.pending.append(&mut h.waiting);
            h.due = due;
            let a0 = allocs();
            let deadline = h.agent.next_deadline();
            if now >= deadline {
                feed(h, now, Input::Tick);
                if counting && i == 0 {
                    counts.core += allocs() - a0;
                    counts.wake_ups += allocs() - a0;
                }
            }
        }
    }
    let per = |n: u64| n as f64 / counts.cycles as f64;
    println!(
        "host 1 of 3 (members 1-3, 255 slots, default timing): {} cycles; allocations per cycle: I/O side (decode) {:.1}, core {:.1} (cycle result {:.1}, time-only wake-ups {:.1})",
        counts.cycles,
        per(counts.io),
        per(counts.core),
        per(counts.io_done),
        per(counts.wake_ups)
    );
}

/// Feeds an input as the daemon does (one action buffer, kept), then carries out the actions
/// that matter here: start the I/O, arm the watchdog.
fn feed(h: &mut Host, now: u64, input: Input) {
    let mut actions = std::mem::take(&mut h.actions);
    let mut next = Some(input);
    while let Some(input) = next.take() {
        h.agent.handle_into(Now { mono: now, wall: now }, input, &mut actions);
        for a in actions.drain(..) {
            match a {
                Action::StartIo { volume, cycle, write, read_at } => {
                    h.pending.push(Io { volume, cycle, started: now, write, wrote: None, read_at })
                }
                Action::ArmWatchdog => next = Some(Input::WatchdogArmed(Ok(()))),
                _ => {}
            }
        }
    }
    h.actions = actions;
}
