//! The host's answer to the TD's environment: mmu-notifier invalidations of shared memory.

use crate::kvm::{Kvm, KvmBug};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

/// `--inject host-invalidate-hz=N`: N times a second the host changes a random 2 MiB block
/// of guest memory behind KVM's back (as a page migration or swap would), so KVM zaps its
/// shared leaves there through the mmu notifier (SHARED filter). Contents are kept; the
/// guest's next access faults the pages back in.
pub(super) fn host_invalidator(
    kvm: &Kvm,
    hz: u32,
    seed: u64,
    stop: &AtomicBool,
    n: &AtomicU64,
) -> Result<(), KvmBug> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1a7a);
    let blocks = (kvm.config().mem_pages >> 9).max(1);
    let period = Duration::from_secs_f64(1.0 / hz as f64);
    let mut next = Instant::now() + period;
    while !stop.load(SeqCst) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(5)));
            continue;
        }
        next += period;
        let start = rng.random_range(0..blocks) << 9;
        let end = (start + 512).min(kvm.config().mem_pages);
        kvm.kvm_mmu_notifier_invalidate_range(start, end, || {})?;
        n.fetch_add(1, Relaxed);
    }
    Ok(())
}
