//! Connection slots: a server serves at most so many client connections at once, and with all
//! of them taken it accepts no more — new connections wait in the kernel's listen backlog — so
//! a flood of clients cannot take the file descriptors the server needs for its own work (an
//! edge's backend connections, a node's store files).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often a server that keeps finding every slot taken says so in the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// At most `max` connections of one server at once, over all its accept loops.
#[derive(Debug)]
pub struct Slots {
    permits: Arc<Semaphore>,
    max: usize,
    /// The setting that sets `max`, named in the warning (e.g. `[[edge]] max_connections`).
    setting: &'static str,
    warned: Mutex<Option<Instant>>,
}

/// One connection's slot, held until the connection ends.
pub type Slot = OwnedSemaphorePermit;

impl Slots {
    /// Slots for `max` connections (at least 1, at most tokio's semaphore limit), set by
    /// `setting`.
    pub fn new(max: usize, setting: &'static str) -> Slots {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Slots {
            permits: Arc::new(Semaphore::new(max)),
            max,
            setting,
            warned: Mutex::new(None),
        }
    }

    /// A slot for the next connection to accept. With every slot taken, calls `on_full` (to
    /// count it), logs a warning at most every 10 s, and waits until a connection ends.
    pub async fn take(&self, on_full: impl FnOnce()) -> Slot {
        if let Ok(slot) = Arc::clone(&self.permits).try_acquire_owned() {
            return slot;
        }
        on_full();
        let warn = {
            let mut warned = self
                .warned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = warned.is_none_or(|at| at.elapsed() >= WARN_EVERY);
            if due {
                *warned = Some(Instant::now());
            }
            due
        };
        if warn {
            tracing::warn!(
                max = self.max,
                "all {} connection slots are taken: new connections wait in the listen backlog \
                 until one closes; raise {} (and the open-files limit) if this is real traffic",
                self.max,
                self.setting
            );
        }
        // invariant: the semaphore is never closed.
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("invariant: connection slots are never closed")
    }

    /// Connections holding a slot now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// The most connections served at once.
    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_server_waits_for_a_slot_and_counts_it() {
        let slots = Arc::new(Slots::new(2, "test max"));
        let first = slots.take(|| panic!("not full")).await;
        let _second = slots.take(|| panic!("not full")).await;
        assert_eq!(slots.open(), 2);
        let full = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, f) = (Arc::clone(&slots), Arc::clone(&full));
        let third = tokio::spawn(async move {
            s.take(|| {
                f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third connection got a slot");
        assert_eq!(full.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the freed slot was given")
            .expect("task");
        assert_eq!(slots.open(), 2);
        drop(third);
        assert_eq!(slots.open(), 1);
        assert_eq!(Slots::new(0, "x").max(), 1);
    }
}
