//! The heap (`linked_list_allocator`) over memory the BSP accepts first, and `log` output to
//! the console.

use crate::layout::{HEAP_BASE, HEAP_SIZE};
use linked_list_allocator::LockedHeap;
use shared_abi::{Gpa, GpaRange};

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Accept the heap's pages and hand them to the allocator (BSP, before any allocation).
pub fn init() {
    let range = GpaRange::new(Gpa(HEAP_BASE), HEAP_SIZE);
    let s = crate::bare::tdx()
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

struct ConsoleLog;

impl log::Log for ConsoleLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            println!("{}: {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: ConsoleLog = ConsoleLog;

/// Route `log` to the console.
pub fn init_log() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}
