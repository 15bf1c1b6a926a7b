//! The conversion engine, in Linux's order (`tdx_enc_status_changed`):
//! - to shared: the PTE gets the shared bit and the TLB entry is flushed, then MapGPA;
//! - to private: MapGPA, then accept (pages must come back zeroed: ALREADY_ACCEPTED is an
//!   error), then the PTE loses the shared bit and the TLB entry is flushed.
//!
//! The identity map uses 2 MiB pages; a conversion that covers part of one first splits it
//! into 4 KiB PTEs, with a page table taken from the heap (accepted, identity-mapped memory).
//! The same virtual address then reaches the private or the shared alias.

use crate::layout::PT_BASE;
use alloc::alloc::{alloc_zeroed, Layout};
use shared_abi::convert::ConversionTarget;
use shared_abi::{GpaRange, Gpaw};
use tdcall::AcceptStats;

/// Page-table edits of all vCPUs go one at a time (they share one set of tables).
static PT_LOCK: spin::Mutex<()> = spin::Mutex::new(());

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
const ADDR_2M: u64 = 0x000F_FFFF_FFE0_0000;
const ADDR_4K: u64 = 0x000F_FFFF_FFFF_F000;

/// Why a conversion failed.
#[derive(Debug)]
pub enum ConvertError {
    /// The MapGPA loop failed.
    MapGpa(tdcall::MapGpaError),
    /// The accept loop failed.
    Accept(tdcall::AcceptError),
    /// Pages were still accepted: the host did not remove them.
    NotFresh(u64),
    /// The range is outside the identity map or the heap is exhausted.
    Paging(&'static str),
}

impl core::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConvertError::MapGpa(e) => write!(f, "{e}"),
            ConvertError::Accept(e) => write!(f, "{e}"),
            ConvertError::NotFresh(b) => {
                write!(f, "{b} bytes came back already accepted (not zeroed)")
            }
            ConvertError::Paging(w) => f.write_str(w),
        }
    }
}

/// The 4 KiB PTE of identity-mapped `va`, splitting its 2 MiB mapping first if needed.
fn pte(va: u64) -> Result<*mut u64, ConvertError> {
    if va >= 1 << 32 {
        return Err(ConvertError::Paging(
            "conversions are limited to the identity-mapped low 4 GiB",
        ));
    }
    // The boot tables: PML4 at PT_BASE, PDPT at +0x1000, PDs at +0x2000.. (identity-mapped).
    let pd = (PT_BASE + 0x2000 + (va >> 30) * 0x1000) as *mut u64;
    // SAFETY: the boot PD for the low 4 GiB, identity-mapped; edits under PT_LOCK.
    let pde = unsafe { pd.add(((va >> 21) & 511) as usize) };
    // SAFETY: as above.
    let e = unsafe { pde.read_volatile() };
    if e & HUGE != 0 {
        let layout = Layout::from_size_align(4096, 4096).expect("valid layout");
        // SAFETY: a fresh zeroed page from the heap (accepted, identity-mapped memory), never
        // freed: page tables live as long as the TD.
        let pt = unsafe { alloc_zeroed(layout) } as *mut u64;
        if pt.is_null() {
            return Err(ConvertError::Paging(
                "heap exhausted while splitting a 2 MiB mapping",
            ));
        }
        let base = e & ADDR_2M;
        for i in 0..512u64 {
            // SAFETY: within the new table.
            unsafe {
                pt.add(i as usize)
                    .write_volatile((base + i * 4096) | PRESENT | WRITABLE)
            };
        }
        // SAFETY: replace the huge entry with the table; flush the whole 2 MiB range.
        unsafe {
            pde.write_volatile(pt as u64 | PRESENT | WRITABLE);
            core::arch::asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack));
        }
    }
    // SAFETY: the (possibly new) page table under the PD entry.
    let pt = unsafe { (pde.read_volatile() & ADDR_4K) as *mut u64 };
    // SAFETY: the PTE of `va` inside it.
    Ok(unsafe { pt.add(((va >> 12) & 511) as usize) })
}

/// Point the PTEs of `range` at the shared (`shared`) or private alias, flushing each.
/// Without MapGPA this is what an implicit conversion starts from: the next access goes to
/// the other alias and the host converts on the memory fault (or refuses under --strict).
pub fn set_alias(range: GpaRange, shared: bool, gpaw: Gpaw) -> Result<(), ConvertError> {
    let _g = PT_LOCK.lock();
    for va in (range.start.0..range.start.0 + range.len).step_by(4096) {
        let p = pte(va)?;
        let target = if shared {
            gpaw.to_shared(shared_abi::Gpa(va)).0
        } else {
            va
        };
        // SAFETY: the PTE of an identity-mapped page this vCPU owns; invlpg drops its TLB entry.
        unsafe {
            p.write_volatile(target | PRESENT | WRITABLE);
            core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack));
        }
    }
    Ok(())
}

/// Private → shared, Linux's order: PTEs first, then MapGPA.
pub fn to_shared(range: GpaRange, gpaw: Gpaw) -> Result<(), ConvertError> {
    set_alias(range, true, gpaw)?;
    crate::bare::tdx()
        .map_gpa(range, ConversionTarget::Shared, gpaw)
        .map_err(ConvertError::MapGpa)?;
    Ok(())
}

/// Shared → private, Linux's order: MapGPA, accept (fresh pages only), then PTEs.
pub fn to_private(range: GpaRange, gpaw: Gpaw) -> Result<AcceptStats, ConvertError> {
    let mut tdx = crate::bare::tdx();
    tdx.map_gpa(range, ConversionTarget::Private, gpaw)
        .map_err(ConvertError::MapGpa)?;
    let s = tdx.accept(range).map_err(ConvertError::Accept)?;
    if s.already_accepted_bytes != 0 {
        return Err(ConvertError::NotFresh(s.already_accepted_bytes));
    }
    set_alias(range, false, gpaw)?;
    Ok(s)
}
