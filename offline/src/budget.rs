//! The offline servers' memory budget for uploaded entity tables, shared by every request of
//! both servers (Flight and HTTP): a byte semaphore. A request reserves what its upload will
//! take before it takes it (HTTP: a bound computed from the body's length before the body is
//! read; Flight: each message as it arrives) and keeps the reservation until its answer has
//! been sent (or, for a `DoPut`, until the table is read, expires or is evicted). When the
//! budget is taken by other requests a reservation waits up to `wait`, then fails with
//! `Overloaded` (503 / RESOURCE_EXHAUSTED); a request larger than the whole budget fails at
//! once with `TooLarge` (413 / RESOURCE_EXHAUSTED).
//!
//! Reservations grow as uploads arrive, so holders waiting for each other could deadlock (four
//! 200 MB uploads each holding a quarter of a 512 MiB budget). So only a reservation that holds
//! nothing yet, or one holder at a time, waits; any other holder that finds no room fails at
//! once, and what it held is free for the one that waits.
//!
//! The sorts and joins have their own budget (`--memory-limit`, DataFusion's pool): this one
//! covers what arrives from clients, which DataFusion's pool does not see.

use std::sync::Arc;
use std::time::Duration;

use quiver_core::fault::{Classified, ErrorKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget's size when none is configured (`--upload-memory`).
pub const DEFAULT_BYTES: usize = 1 << 30;
/// How long a reservation waits for room by default (`--upload-wait`).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// One permit is this many bytes (the semaphore counts in `u32`s per acquisition).
const UNIT: usize = 1024;

/// Why a reservation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "{what}: {bytes} bytes is more than the server's whole upload budget ({budget} bytes, --upload-memory)"
    )]
    TooLarge {
        what: String,
        bytes: usize,
        budget: usize,
    },
    #[error(
        "{what}: the server's upload memory ({budget} bytes, --upload-memory) is taken by other requests (waited up to {wait:?}); retry later"
    )]
    Overloaded {
        what: String,
        budget: usize,
        wait: Duration,
    },
}

impl Classified for BudgetError {
    fn kind(&self) -> ErrorKind {
        match self {
            BudgetError::TooLarge { .. } => ErrorKind::TooLarge,
            BudgetError::Overloaded { .. } => ErrorKind::Overloaded,
        }
    }
}

/// The shared budget. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    semaphore: Arc<Semaphore>,
    units: usize,
    wait: Duration,
    /// Held by the one reservation that waits for more while already holding some.
    holder_waiting: Arc<tokio::sync::Mutex<()>>,
}

impl MemoryBudget {
    /// A budget of `bytes` (at least one unit); reservations wait up to `wait` for room.
    pub fn new(bytes: usize, wait: Duration) -> MemoryBudget {
        let units = bytes.div_ceil(UNIT).clamp(1, u32::MAX as usize);
        MemoryBudget {
            semaphore: Arc::new(Semaphore::new(units)),
            units,
            wait,
            holder_waiting: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn bytes(&self) -> usize {
        self.units * UNIT
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits() * UNIT
    }

    /// An empty reservation, to grow as data arrives.
    pub fn empty(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            permit: None,
        }
    }

    /// Reserves `bytes` for `what`.
    pub async fn reserve(&self, bytes: usize, what: &str) -> Result<Reservation, BudgetError> {
        let mut r = self.empty();
        r.grow(bytes, what).await?;
        Ok(r)
    }
}

/// Bytes held against the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: MemoryBudget,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits() * UNIT)
    }

    /// Holds `more` bytes too, waiting up to the budget's `wait` for room.
    pub async fn grow(&mut self, more: usize, what: &str) -> Result<(), BudgetError> {
        let units = more.div_ceil(UNIT);
        if units == 0 {
            return Ok(());
        }
        let held = self.permit.as_ref().map_or(0, |p| p.num_permits());
        if held + units > self.budget.units {
            return Err(BudgetError::TooLarge {
                what: what.to_owned(),
                bytes: (held + units) * UNIT,
                budget: self.budget.bytes(),
            });
        }
        let overloaded = || BudgetError::Overloaded {
            what: what.to_owned(),
            budget: self.budget.bytes(),
            wait: self.budget.wait,
        };
        let semaphore = Arc::clone(&self.budget.semaphore);
        let permit = match Arc::clone(&semaphore).try_acquire_many_owned(units as u32) {
            Ok(p) => p,
            Err(_) => {
                // A holder waits only when no other holder does (see the module's doc).
                let _waiting = if held > 0 {
                    let Ok(guard) = Arc::clone(&self.budget.holder_waiting).try_lock_owned() else {
                        return Err(overloaded());
                    };
                    Some(guard)
                } else {
                    None
                };
                let acquire = semaphore.acquire_many_owned(units as u32);
                match tokio::time::timeout(self.budget.wait, acquire).await {
                    Ok(Ok(p)) => p,
                    // The semaphore is never closed; a closed one cannot hold anything either.
                    Ok(Err(_)) | Err(_) => return Err(overloaded()),
                }
            }
        };
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }

    /// Gives back what is held beyond `bytes` (the table turned out smaller than reserved).
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(UNIT);
        if let Some(p) = &mut self.permit {
            let held = p.num_permits();
            if held > keep {
                drop(p.split(held - keep));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_then_fail_and_give_back_on_drop() {
        let budget = MemoryBudget::new(10 * UNIT, Duration::from_millis(50));
        let mut a = budget.reserve(6 * UNIT, "a").await.unwrap();
        assert_eq!(budget.available(), 4 * UNIT);
        let e = budget.reserve(5 * UNIT, "b").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
        assert!(e.to_string().contains("retry later"), "{e}");
        let e = budget.reserve(11 * UNIT, "c").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        // A waiting reservation gets the room freed while it waits.
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(5 * UNIT, "d").await.map(|r| r.bytes()) })
        };
        a.shrink_to(UNIT + 1);
        assert_eq!(a.bytes(), 2 * UNIT);
        assert_eq!(waiter.await.unwrap().unwrap(), 5 * UNIT);
        a.grow(3 * UNIT, "a").await.unwrap();
        assert_eq!(a.bytes(), 5 * UNIT);
        drop(a);
        assert_eq!(budget.available(), 10 * UNIT);
    }

    #[tokio::test]
    async fn holders_that_need_more_do_not_wait_for_each_other() {
        let budget = MemoryBudget::new(10 * UNIT, Duration::from_secs(5));
        let mut a = budget.reserve(5 * UNIT, "a").await.unwrap();
        let mut b = budget.reserve(5 * UNIT, "b").await.unwrap();
        // `a` waits for room; `b`, also holding, fails at once instead of waiting on `a`
        // (which would wait on `b`: a deadlock until both time out).
        let waiting = tokio::spawn(async move { a.grow(4 * UNIT, "a").await.map(|()| a) });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let e = b.grow(4 * UNIT, "b").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overloaded);
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(b);
        let a = waiting.await.unwrap().unwrap();
        assert_eq!(a.bytes(), 9 * UNIT);
    }
}
