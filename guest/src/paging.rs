//! The guest's page tables beyond the boot identity map, through the `x86_64` crate: the
//! shared window maps VA `SHARED_WINDOW + gpa` to `gpa | shared bit` with 2 MiB pages, so
//! the guest reaches the shared alias of any RAM page without touching the private mapping.

use crate::layout::PT_BASE;
use crate::workload::SHARED_WINDOW;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size2MiB,
    Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

/// Table pages for the window come from the boot page-table area after the identity map's
/// six pages (PML4, PDPT, 4 PDs); that area is TEMP_MEM: accepted and zeroed by the host.
struct BootTableFrames {
    next: u64,
    end: u64,
}

// SAFETY: hands out each frame of the reserved, unused area once.
unsafe impl FrameAllocator<Size4KiB> for BootTableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        if self.next >= self.end {
            return None;
        }
        let f = PhysFrame::containing_address(PhysAddr::new(self.next));
        self.next += 4096;
        Some(f)
    }
}

/// Map the shared alias of `[0, ram)` at `SHARED_WINDOW` (BSP, once, before any vCPU uses it).
pub fn map_shared_window(ram: u64, shared_bit: u32) {
    // SAFETY: CR3 holds the boot PML4 at PT_BASE, identity-mapped, so physical offset 0.
    let pml4 = unsafe { &mut *(PT_BASE as *mut PageTable) };
    // SAFETY: all page-table memory is identity-mapped.
    let mut mapper = unsafe { OffsetPageTable::new(pml4, VirtAddr::new(0)) };
    let mut frames = BootTableFrames {
        next: PT_BASE + 6 * 4096,
        end: PT_BASE + 16 * 4096,
    };
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
    let step = 2u64 << 20;
    for gpa in (0..ram).step_by(step as usize) {
        let page = Page::<Size2MiB>::containing_address(VirtAddr::new(SHARED_WINDOW + gpa));
        let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(gpa | 1 << shared_bit));
        // SAFETY: the window's virtual range is used for nothing else; the frame is the shared
        // alias the host backs separately from private memory.
        match unsafe { mapper.map_to(page, frame, flags, &mut frames) } {
            Ok(f) => f.flush(),
            Err(e) => panic!("mapping the shared window at {gpa:#x}: {e:?}"),
        }
    }
    log::info!(
        "shared window: {} MiB at {SHARED_WINDOW:#x} (shared bit {shared_bit})",
        ram >> 20
    );
}
