//! Per-CPU statistics counters, as the kernel keeps KVM's and the module keeps its own: each
//! thread adds to its own slot, and only a reader sums them. One shared atomic counted by
//! every vCPU thread would move its cache line between cores at every event, which costs
//! more than the event it counts once several vCPUs convert at once.

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots per counter: threads beyond this share slots (still correct, only slower).
const SLOTS: usize = 16;

/// A counter that many threads add to and few read (`percpu_counter`): one slot per
/// thread, each alone on its cache lines.
#[derive(Default)]
pub struct PerCpuCounter {
    slots: [CachePadded<AtomicU64>; SLOTS],
}

/// This thread's slot, assigned on first use in thread-creation order.
pub(crate) fn my_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|s| *s)
}

impl PerCpuCounter {
    /// Add `n` in this thread's slot. The ordering applies to that slot alone; a reader
    /// that needs a settled total reads after the counting threads stopped.
    pub fn fetch_add(&self, n: u64, order: Ordering) {
        self.slots[my_slot()].fetch_add(n, order);
    }

    /// The sum of every slot.
    pub fn load(&self, order: Ordering) -> u64 {
        self.slots.iter().map(|s| s.load(order)).sum()
    }
}

impl std::fmt::Debug for PerCpuCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    /// Every thread's additions reach the total, more threads than slots included.
    #[test]
    fn threads_add_up() {
        let c = PerCpuCounter::default();
        std::thread::scope(|s| {
            for t in 0..(SLOTS as u64 + 3) {
                let c = &c;
                s.spawn(move || (0..1000).for_each(|_| c.fetch_add(t + 1, Relaxed)));
            }
        });
        let n = SLOTS as u64 + 3;
        assert_eq!(c.load(Relaxed), 1000 * n * (n + 1) / 2);
    }
}
