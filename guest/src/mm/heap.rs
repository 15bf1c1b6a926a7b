//! The heap (`linked_list_allocator`) over memory the BSP accepts first.

use crate::layout::{HEAP_BASE, HEAP_SIZE};
use linked_list_allocator::LockedHeap;
use shared_abi::{Gpa, GpaRange};

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Accept the heap's pages and hand them to the allocator (BSP, before any allocation).
pub fn init() {
    let range = GpaRange::new(Gpa(HEAP_BASE), HEAP_SIZE);
    let s = crate::arch::tdx()
        .accept(range)
        .unwrap_or_else(|e| panic!("accepting the heap {range}: {e}"));
    // SAFETY: the range was just accepted, is identity-mapped, and nothing else uses it.
    unsafe {
        ALLOCATOR
            .lock()
            .init(HEAP_BASE as *mut u8, HEAP_SIZE as usize)
    };
    log::info!(
        "heap: {} KiB at {:#x} ({} accept calls)",
        HEAP_SIZE >> 10,
        HEAP_BASE,
        s.calls
    );
}
