//! A bounded pool for a request's CPU-heavy work (e.g. parsing and checking large definitions):
//! at most `workers` jobs run at once, on tokio's blocking threads, and at most `queue` more
//! wait for a turn; past that the request is refused at once ([`PoolError::Busy`], a 503 with
//! `Retry-After`). The async threads never run the work, so health checks and every other
//! route stay responsive whatever a client sends, and the backlog is bounded.

use std::sync::Arc;

use quiver_core::fault::{Classified, ErrorKind};
use tokio::sync::Semaphore;

/// Why a job did not run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every worker busy and the queue full: come back in `retry_after_secs`.
    #[error(
        "the server is busy with {running} such requests and {queued} waiting: retry in {retry_after_secs} s"
    )]
    Busy {
        running: usize,
        queued: usize,
        retry_after_secs: u64,
    },
    /// The job panicked (a bug).
    #[error("the request's work failed: {0}")]
    Failed(String),
}

impl Classified for PoolError {
    fn kind(&self) -> ErrorKind {
        match self {
            PoolError::Busy { .. } => ErrorKind::Unavailable,
            PoolError::Failed(_) => ErrorKind::Internal,
        }
    }
}

/// The pool; cheap to clone (one per server, shared by its routes).
#[derive(Debug, Clone)]
pub struct BlockingPool {
    workers: usize,
    queue: usize,
    /// Permits to be in the pool at all (running or waiting): `workers + queue`.
    admit: Arc<Semaphore>,
    /// Permits to run: `workers`.
    run: Arc<Semaphore>,
}

/// What `Retry-After` says when the pool is full.
pub const RETRY_AFTER_SECS: u64 = 1;

impl BlockingPool {
    /// At least one worker; `queue` may be 0 (refuse whenever every worker is busy).
    pub fn new(workers: usize, queue: usize) -> BlockingPool {
        let workers = workers.max(1);
        BlockingPool {
            workers,
            queue,
            admit: Arc::new(Semaphore::new(workers + queue)),
            run: Arc::new(Semaphore::new(workers)),
        }
    }

    /// Half the cores (at least one): the other half keeps serving.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }

    /// Runs `job` on a blocking thread when a worker is free, or refuses at once when the
    /// queue is full. A caller that goes away does not cancel a job that has started (it
    /// holds its permits until it ends, so the bound holds).
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let Ok(admitted) = Arc::clone(&self.admit).try_acquire_owned() else {
            let running = self.workers - self.run.available_permits().min(self.workers);
            return Err(PoolError::Busy {
                running,
                queued: self.queue,
                retry_after_secs: RETRY_AFTER_SECS,
            });
        };
        let turn = Arc::clone(&self.run)
            .acquire_owned()
            .await
            .map_err(|e| PoolError::Failed(format!("pool closed: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let _held = (admitted, turn);
            job()
        })
        .await
        .map_err(|e| PoolError::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn runs_at_most_workers_and_refuses_past_the_queue() {
        let pool = BlockingPool::new(2, 1);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let mut jobs = Vec::new();
        for _ in 0..3 {
            let (pool, running, peak, rx) = (
                pool.clone(),
                running.clone(),
                peak.clone(),
                release_rx.clone(),
            );
            jobs.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                    running.fetch_sub(1, Ordering::SeqCst);
                    7
                })
                .await
            }));
        }
        // Two running, one queued: a fourth is refused at once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let refused = pool.run(|| 0).await.unwrap_err();
        assert!(
            matches!(refused, PoolError::Busy { running: 2, .. }),
            "{refused:?}"
        );
        assert_eq!(refused.kind(), ErrorKind::Unavailable);
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        for j in jobs {
            assert_eq!(j.await.unwrap(), Ok(7));
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        // Free again.
        assert_eq!(pool.run(|| 1).await, Ok(1));
    }
}
