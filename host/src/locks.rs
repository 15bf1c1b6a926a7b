//! The model's spinning locks. KVM's mmu_lock is a spinning reader-writer lock, the TDX
//! module's locks are spin locks taken by a CPU that cannot be preempted, and the kernel's
//! mutexes spin while their owner runs: a waiter in any of them does not sleep. A sleeping
//! lock in their place would cost each wait a futex sleep and, in a VM, an idle CPU's
//! wake-up — more than the short sections these locks guard.

use std::cell::Cell;

/// Spin, and give the CPU away now and then: simulated vCPUs may outnumber host CPUs, and
/// the lock's owner may be waiting for this one's CPU.
pub struct Backoff;

/// Spins between two yields.
const SPINS_PER_YIELD: u32 = 128;

impl spin::relax::RelaxStrategy for Backoff {
    fn relax() {
        thread_local! {
            static SPINS: Cell<u32> = const { Cell::new(0) };
        }
        let n = SPINS.with(|s| {
            let n = s.get().wrapping_add(1);
            s.set(n);
            n
        });
        if n.is_multiple_of(SPINS_PER_YIELD) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// A spinning mutex (`spinlock_t`, the module's locks, a kernel mutex spinning on its
/// running owner).
pub type SpinMutex<T> = spin::mutex::Mutex<T, Backoff>;
/// Its guard.
pub type SpinMutexGuard<'a, T> = spin::mutex::MutexGuard<'a, T>;
/// A spinning reader-writer lock (`rwlock_t`, KVM's mmu_lock on x86).
pub type SpinRwLock<T> = spin::rwlock::RwLock<T, Backoff>;
/// Its write guard.
pub type SpinRwLockWriteGuard<'a, T> = spin::rwlock::RwLockWriteGuard<'a, T, Backoff>;

/// Shards of a [`PerCpuRwLock`].
const SHARDS: usize = 8;

/// A spinning reader-writer lock with a reader lock per CPU (the kernel's per-CPU
/// reader-writer locks, `percpu_rw_semaphore`): a reader takes its own CPU's shard, a
/// writer every shard in order. The exclusion is a reader-writer lock's; what changes is
/// that readers on different CPUs touch different cache lines, where one lock word would
/// move between cores at every read — on this project's hosts a cache line takes about
/// 200 ns to cross, more than the read-side section of a fault.
pub struct PerCpuRwLock {
    shards: [crossbeam_utils::CachePadded<SpinRwLock<()>>; SHARDS],
}

/// A reader's hold on its shard.
pub type PerCpuReadGuard<'a> = spin::rwlock::RwLockReadGuard<'a, ()>;

/// A writer's hold on every shard.
pub struct PerCpuWriteGuard<'a> {
    _shards: [SpinRwLockWriteGuard<'a, ()>; SHARDS],
}

impl Default for PerCpuRwLock {
    fn default() -> Self {
        PerCpuRwLock {
            shards: std::array::from_fn(|_| Default::default()),
        }
    }
}

impl PerCpuRwLock {
    /// Take this CPU's shard for read.
    pub fn read(&self) -> PerCpuReadGuard<'_> {
        self.shards[crate::percpu::my_slot() % SHARDS].read()
    }

    /// Take every shard for write, in order (so two writers cannot deadlock).
    pub fn write(&self) -> PerCpuWriteGuard<'_> {
        PerCpuWriteGuard {
            _shards: std::array::from_fn(|i| self.shards[i].write()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More threads than CPUs contend for one lock and every increment lands.
    #[test]
    fn contended_locks_lose_nothing() {
        let m = SpinMutex::new(0u64);
        let rw = SpinRwLock::new(0u64);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        *m.lock() += 1;
                        *rw.write() += 1;
                        let _ = *rw.read();
                    }
                });
            }
        });
        assert_eq!((*m.lock(), *rw.read()), (80_000, 80_000));
    }

    /// A writer excludes readers on every CPU: a value written in two halves under the
    /// write lock is never seen half-written by readers on other threads.
    #[test]
    fn per_cpu_writers_exclude_every_reader() {
        use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
        let lock = PerCpuRwLock::default();
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        let _r = lock.read();
                        assert_eq!(a.load(Relaxed), b.load(Relaxed), "a writer was inside");
                    }
                });
            }
            s.spawn(|| {
                for i in 1..=2_000 {
                    let _w = lock.write();
                    a.store(i, Relaxed);
                    std::hint::spin_loop();
                    b.store(i, Relaxed);
                }
            });
        });
        assert_eq!(a.load(Relaxed), 2_000);
    }
}
