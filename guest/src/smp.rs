//! The vCPUs meeting in the mailbox (TEMP_MEM, zeroed by the host): the BSP releases the
//! others once boot information is parsed, again once the heap is ready, and counts them in
//! at the end.

use crate::layout::MAILBOX;
use core::sync::atomic::{AtomicU32, Ordering};

fn mailbox(word: u64) -> &'static AtomicU32 {
    // SAFETY: the mailbox page is TEMP_MEM, zeroed by the host, shared by all vCPUs, and only
    // ever accessed atomically.
    unsafe { &*((MAILBOX + 8 + 4 * word) as *const AtomicU32) }
}

/// The BSP parsed the boot information: the others may run Rust code now.
pub fn boot_done() {
    mailbox(0).store(1, Ordering::Release);
}

/// Wait for the BSP's `boot_done`.
pub fn wait_boot_done() {
    while mailbox(0).load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
}

/// Count this vCPU in; returns how many have arrived.
pub fn arrive() -> u32 {
    mailbox(1).fetch_add(1, Ordering::AcqRel) + 1
}

/// vCPUs that have arrived so far.
pub fn arrived() -> u32 {
    mailbox(1).load(Ordering::Acquire)
}

/// The BSP set up the heap: other vCPUs may allocate now.
pub fn heap_ready() {
    mailbox(2).store(1, Ordering::Release);
}

/// Wait until the BSP set up the heap.
pub fn wait_heap_ready() {
    while mailbox(2).load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
}
