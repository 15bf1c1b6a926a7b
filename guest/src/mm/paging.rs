//! The guest's page tables, through the `x86_64` crate: the shared window maps VA
//! `SHARED_WINDOW + gpa` to `gpa | shared bit` with 2 MiB pages, so the guest reaches the
//! shared alias of any RAM page without touching the private mapping; and the 4 KiB PTEs of
//! the identity map that the conversion engine points at one alias or the other (a 2 MiB
//! mapping is split into 4 KiB PTEs the first time part of it converts, with a page table
//! taken from the heap: accepted, identity-mapped memory).

use crate::layout::PT_BASE;
use crate::workloads::round_trip::SHARED_WINDOW;
use alloc::alloc::{alloc_zeroed, Layout};
use x86_64::structures::paging::mapper::MapToError;
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size2MiB,
    Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

/// Table pages for the window come from the boot page-table area after the identity map's
/// six pages (PML4, PDPT, 4 PDs), TEMP_MEM accepted and zeroed by the host, and once those
/// ten run out from the heap: RAM split around the 32-bit PCI hole, or larger than 9 GiB,
/// needs more (one page directory per GiB of window).
struct BootTableFrames {
    next: u64,
    end: u64,
}

// SAFETY: hands out each frame of the reserved, unused area once, then fresh zeroed heap
// pages that are never freed (page tables live as long as the TD).
unsafe impl FrameAllocator<Size4KiB> for BootTableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        if self.next < self.end {
            let f = PhysFrame::containing_address(PhysAddr::new(self.next));
            self.next += 4096;
            return Some(f);
        }
        let layout = Layout::from_size_align(4096, 4096).expect("valid layout");
        // SAFETY: a non-zero-sized, page-aligned layout.
        let p = unsafe { alloc_zeroed(layout) };
        (!p.is_null()).then(|| PhysFrame::containing_address(PhysAddr::new(p as u64)))
    }
}

/// Map the shared alias of every RAM range (`(gpa, bytes)`, from the TD HOB) at
/// `SHARED_WINDOW + gpa`, with 2 MiB pages (BSP, once, after the heap, before any vCPU uses
/// the window). Holes between ranges (the 32-bit PCI hole) stay unmapped.
pub fn map_shared_window(ram: &[(u64, u64)], shared_bit: u32) {
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
    let mut total = 0;
    for &(start, len) in ram {
        let first = start & !(step - 1);
        for gpa in (first..start + len).step_by(step as usize) {
            let page = Page::<Size2MiB>::containing_address(VirtAddr::new(SHARED_WINDOW + gpa));
            let frame =
                PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(gpa | 1 << shared_bit));
            // SAFETY: the window's virtual range is used for nothing else; the frame is the
            // shared alias the host backs separately from private memory.
            match unsafe { mapper.map_to(page, frame, flags, &mut frames) } {
                Ok(f) => f.flush(),
                // Adjacent resources can share a 2 MiB page: mapped once is enough.
                Err(MapToError::PageAlreadyMapped(_)) => {}
                Err(e) => panic!("mapping the shared window at {gpa:#x}: {e:?}"),
            }
        }
        total += len;
    }
    log::info!(
        "shared window: {} MiB of RAM in {} ranges at {SHARED_WINDOW:#x} (shared bit {shared_bit})",
        total >> 20,
        ram.len()
    );
}

/// Why a PTE of the identity map cannot be had.
#[derive(Debug)]
pub enum PagingError {
    /// The identity map covers the low 4 GiB only.
    OutsideIdentityMap(u64),
    /// No heap page for a table that splits a 2 MiB mapping.
    HeapExhausted,
}

impl core::fmt::Display for PagingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PagingError::OutsideIdentityMap(va) => write!(
                f,
                "{va:#x}: conversions are limited to the identity-mapped low 4 GiB"
            ),
            PagingError::HeapExhausted => {
                f.write_str("heap exhausted while splitting a 2 MiB mapping")
            }
        }
    }
}

const RW: PageTableFlags = PageTableFlags::PRESENT.union(PageTableFlags::WRITABLE);

/// The 4 KiB PTE of identity-mapped `va`, splitting its 2 MiB mapping first if needed.
/// Callers serialize page-table edits (the conversion engine's lock).
pub fn identity_pte(va: u64) -> Result<&'static mut PageTableEntry, PagingError> {
    if va >= 1 << 32 {
        return Err(PagingError::OutsideIdentityMap(va));
    }
    // The boot tables: PML4 at PT_BASE, PDPT at +0x1000, one PD per GiB from +0x2000.
    // SAFETY: the boot PD for the low 4 GiB, identity-mapped; edits are serialized.
    let pd = unsafe { &mut *((PT_BASE + 0x2000 + (va >> 30) * 0x1000) as *mut PageTable) };
    let pde = &mut pd[((va >> 21) & 511) as usize];
    if pde.flags().contains(PageTableFlags::HUGE_PAGE) {
        split_2m(pde)?;
    }
    // SAFETY: the page table under the PD entry, identity-mapped (from the heap).
    let pt = unsafe { &mut *(pde.addr().as_u64() as *mut PageTable) };
    Ok(&mut pt[((va >> 12) & 511) as usize])
}

/// Replace a 2 MiB mapping by a table of 512 4 KiB PTEs to the same memory.
fn split_2m(pde: &mut PageTableEntry) -> Result<(), PagingError> {
    let layout = Layout::from_size_align(4096, 4096).expect("valid layout");
    // SAFETY: a fresh zeroed page from the heap (accepted, identity-mapped memory), never
    // freed: page tables live as long as the TD.
    let pt = unsafe { alloc_zeroed(layout) } as *mut PageTable;
    if pt.is_null() {
        return Err(PagingError::HeapExhausted);
    }
    // SAFETY: the page just allocated, 4 KiB aligned.
    let table = unsafe { &mut *pt };
    let base = pde.addr().as_u64();
    for (i, e) in table.iter_mut().enumerate() {
        e.set_addr(PhysAddr::new(base + i as u64 * 4096), RW);
    }
    pde.set_addr(PhysAddr::new(pt as u64), RW);
    // The whole 2 MiB range changed translation: flush the TLB.
    x86_64::instructions::tlb::flush_all();
    Ok(())
}

/// Point the 4 KiB PTE of `va` at `target` (the private or the shared alias of `va`) and drop
/// this CPU's TLB entry for it.
pub fn set_pte(pte: &mut PageTableEntry, va: u64, target: u64) {
    pte.set_addr(PhysAddr::new(target), RW);
    x86_64::instructions::tlb::flush(VirtAddr::new(va));
}
