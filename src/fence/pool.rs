//! A small pool of worker threads started at boot for fencing attempts and power-on commands,
//! so the petting thread never creates a thread (S7: under `mlockall` every new stack is
//! faulted in and locked, possibly under memory pressure). Jobs go in through a bounded queue
//! with `try_send`: a full queue is an error the caller reports, never a wait.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

pub type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct Pool {
    tx: SyncSender<Job>,
}

impl Pool {
    /// Starts `workers` threads named `NAME-N` taking jobs from a queue of `queue` jobs.
    pub fn start(name: &str, workers: usize, queue: usize) -> Result<Pool, String> {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue.max(1));
        // Shared by the workers only: the submitter never takes this lock.
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .stack_size(crate::sys::THREAD_STACK)
                .name(format!("{name}-{i}"))
                .spawn(move || worker(&rx))
                .map_err(|e| {
                    format!(
                        "cannot start {name} worker thread {} of {workers}: {e}; check the process and memory limits (LimitNPROC, LimitMEMLOCK) of the unit",
                        i + 1
                    )
                })?;
        }
        Ok(Pool { tx })
    }

    /// Queues a job; never blocks. Fails if the queue is full (or the workers are gone).
    pub fn submit(&self, job: Job) -> Result<(), String> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => "the fencing job queue is full".to_string(),
            TrySendError::Disconnected(_) => "the fencing workers are gone".to_string(),
        })
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, not while running it.
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn jobs_run_and_more_jobs_than_workers_wait_their_turn() {
        let pool = Pool::start("test-pool", 2, 8).unwrap();
        let (tx, rx) = channel();
        for i in 0..6u32 {
            let tx = tx.clone();
            pool.submit(Box::new(move || {
                std::thread::sleep(Duration::from_millis(50));
                tx.send((i, std::thread::current().name().unwrap_or("").to_string())).unwrap();
            }))
            .unwrap();
        }
        let mut got: Vec<_> =
            (0..6).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        got.sort();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        assert!(got.iter().all(|g| g.1.starts_with("test-pool-")), "{got:?}");
        let workers: std::collections::BTreeSet<_> = got.iter().map(|g| &g.1).collect();
        assert!(workers.len() <= 2, "{workers:?}");
    }

    #[test]
    fn a_full_queue_is_refused_at_once() {
        let pool = Pool::start("test-full", 1, 1).unwrap();
        let (release_tx, release_rx) = channel::<()>();
        let (started_tx, started_rx) = channel::<()>();
        pool.submit(Box::new(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
        }))
        .unwrap();
        started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // The worker is busy: one job queues, the next is refused without waiting.
        pool.submit(Box::new(|| {})).unwrap();
        let t = std::time::Instant::now();
        let e = pool.submit(Box::new(|| {})).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(e.contains("full"), "{e}");
        release_tx.send(()).unwrap();
        // Once the worker is free again, jobs are taken again.
        let (tx, rx) = channel();
        assert!(retry_submit(&pool, move || tx.send(()).unwrap()));
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    fn retry_submit(pool: &Pool, job: impl FnOnce() + Send + Clone + 'static) -> bool {
        for _ in 0..100 {
            if pool.submit(Box::new(job.clone())).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}
