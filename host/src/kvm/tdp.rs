//! One TDP MMU root: an EPT-format 4-level table of 64-bit SPTEs (`tdp_mmu.c`).
//!
//! Entries are atomics so that faults can install leaves under `mmu_lock` held for read,
//! as KVM does (`tdp_mmu_set_spte_atomic`); zaps run with the lock held for write. Child
//! tables are linked by address, like a real EPT, and are freed only when the root is
//! dropped: KVM zaps leaves, not page tables, while a TD runs (`arch/x86/kvm/mmu/tdp_mmu.c`).

use std::sync::atomic::{AtomicU64, Ordering::*};

/// SPTE bit 0: readable, our "present".
pub(crate) const SPTE_PRESENT: u64 = 1 << 0;
/// SPTE bit 7: a leaf above 4K (PS).
pub(crate) const SPTE_LEAF_LARGE: u64 = 1 << 7;
/// Non-present marker of an entry another thread is changing (`FROZEN_SPTE`).
pub(crate) const FROZEN_SPTE: u64 = 0x5a0;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Top level of a 4-level table (PML4 entries).
pub(crate) const ROOT_LEVEL: u8 = 3;

/// Which kind of root (`enum kvm_tdp_mmu_root_types`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RootKind {
    /// The shared root (KVM_DIRECT_ROOTS): maps shared GPAs to host memory.
    Direct,
    /// The private root (KVM_MIRROR_ROOTS): mirrors the S-EPT owned by the TDX module.
    Mirror,
}

impl RootKind {
    /// "direct" / "mirror".
    pub const fn name(self) -> &'static str {
        match self {
            RootKind::Direct => "direct",
            RootKind::Mirror => "mirror",
        }
    }
}

#[repr(C, align(4096))]
struct TdpPage([AtomicU64; 512]);

impl TdpPage {
    fn new() -> *mut TdpPage {
        Box::into_raw(Box::new(TdpPage(std::array::from_fn(|_| {
            AtomicU64::new(0)
        }))))
    }
}

fn child(spte: u64) -> *mut TdpPage {
    (spte & ADDR_MASK) as *mut TdpPage
}

fn is_leaf(spte: u64, level: u8) -> bool {
    level == 0 || spte & SPTE_LEAF_LARGE != 0
}

fn span(level: u8) -> u64 {
    shared_abi::sept::level_pages(level)
}

/// The result of installing a leaf.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapOutcome {
    /// A leaf is now present at this level (lower than asked when a table already existed
    /// at the asked level: a huge page is never installed over a table).
    Installed(u8),
    /// A leaf covering the GFN was already present (a spurious fault).
    AlreadyMapped,
    /// Another thread holds the entry frozen: retry the fault.
    Retry,
}

/// A TDP root.
pub struct TdpRoot {
    kind: RootKind,
    top: *mut TdpPage,
}

// SAFETY: the raw pointers name tables owned by this root; entries are atomics and tables are
// never freed before the root is dropped.
unsafe impl Send for TdpRoot {}
// SAFETY: as above.
unsafe impl Sync for TdpRoot {}

impl Drop for TdpRoot {
    fn drop(&mut self) {
        fn free(p: *mut TdpPage, level: u8) {
            // SAFETY: `p` came from `TdpPage::new` and is freed exactly once, here.
            let page = unsafe { Box::from_raw(p) };
            if level > 0 {
                for e in page.0.iter() {
                    let s = e.load(Relaxed);
                    if s & SPTE_PRESENT != 0 && !is_leaf(s, level) {
                        free(child(s), level - 1);
                    }
                }
            }
        }
        free(self.top, ROOT_LEVEL);
    }
}

impl TdpRoot {
    /// An empty root (one table page).
    pub fn new(kind: RootKind) -> TdpRoot {
        TdpRoot {
            kind,
            top: TdpPage::new(),
        }
    }
    /// The root's kind.
    pub fn kind(&self) -> RootKind {
        self.kind
    }

    fn page(&self, p: *mut TdpPage) -> &TdpPage {
        // SAFETY: every pointer reached from `top` is a live table of this root.
        unsafe { &*p }
    }

    /// The hardware's walk: `(pfn of gfn, level of the leaf)` if a leaf maps `gfn`.
    pub fn lookup(&self, gfn: u64) -> Option<(u64, u8)> {
        let mut p = self.top;
        let mut level = ROOT_LEVEL;
        loop {
            let s = self.page(p).0[((gfn >> (9 * level as u32)) & 511) as usize].load(Acquire);
            if s & SPTE_PRESENT == 0 {
                return None;
            }
            if is_leaf(s, level) {
                let base = s >> 12 & (ADDR_MASK >> 12);
                return Some((base + (gfn & (span(level) - 1)), level));
            }
            p = child(s);
            level -= 1;
        }
    }

    /// Install a leaf for `gfn` at `level` mapping `pfn` (the frame of the level-aligned
    /// base), with `mmu_lock` held for read. `link(gfn, level)` runs before a new table is
    /// linked (the mirror root's `link_external_spt` → TDH.MEM.SEPT.ADD); `leaf(gfn, level,
    /// pfn)` runs before the leaf is published (`set_external_spte` → TDH.MEM.PAGE.AUG).
    /// Either failing leaves the entry as it was and returns the error.
    pub fn map<E>(
        &self,
        gfn: u64,
        mut level: u8,
        mut pfn: u64,
        mut link: impl FnMut(u64, u8) -> Result<(), E>,
        leaf: impl FnOnce(u64, u8, u64) -> Result<(), E>,
    ) -> Result<MapOutcome, E> {
        let mut p = self.top;
        let mut l = ROOT_LEVEL;
        loop {
            let e = &self.page(p).0[((gfn >> (9 * l as u32)) & 511) as usize];
            let cur = e.load(Acquire);
            if cur == FROZEN_SPTE {
                return Ok(MapOutcome::Retry);
            }
            if l == level && cur & SPTE_PRESENT != 0 && !is_leaf(cur, l) {
                // A table already hangs here: map below it, one level down.
                let base = gfn & !(span(l) - 1);
                level -= 1;
                pfn += (gfn & !(span(level) - 1)) - base;
                p = child(cur);
                l -= 1;
                continue;
            }
            if l == level {
                if cur & SPTE_PRESENT != 0 {
                    return Ok(MapOutcome::AlreadyMapped);
                }
                if e.compare_exchange(cur, FROZEN_SPTE, AcqRel, Acquire)
                    .is_err()
                {
                    return Ok(MapOutcome::Retry);
                }
                let base = gfn & !(span(level) - 1);
                return match leaf(base, level, pfn) {
                    Ok(()) => {
                        let large = if level > 0 { SPTE_LEAF_LARGE } else { 0 };
                        e.store(pfn << 12 | SPTE_PRESENT | large, Release);
                        Ok(MapOutcome::Installed(level))
                    }
                    Err(err) => {
                        e.store(cur, Release);
                        Err(err)
                    }
                };
            }
            if cur & SPTE_PRESENT != 0 {
                if is_leaf(cur, l) {
                    return Ok(MapOutcome::AlreadyMapped);
                }
                p = child(cur);
                l -= 1;
                continue;
            }
            if e.compare_exchange(cur, FROZEN_SPTE, AcqRel, Acquire)
                .is_err()
            {
                continue; // raced with another fault: re-read
            }
            if let Err(err) = link(gfn & !(span(l) - 1), l) {
                e.store(cur, Release);
                return Err(err);
            }
            let new = TdpPage::new();
            e.store(new as u64 | SPTE_PRESENT, Release);
            p = new;
            l -= 1;
        }
    }

    /// Zap every leaf intersecting `[start, end)` (`tdp_mmu_zap_leafs`), `mmu_lock` held for
    /// write. A large leaf only partly inside the range is first split by `split` (which must
    /// return the per-4K-frame base pfn to give the 512 children, or `None` to zap it whole).
    /// `zapped(gfn, level, pfn)` runs after each leaf is cleared. Returns whether any leaf was
    /// zapped.
    pub(crate) fn zap_leafs(
        &self,
        start: u64,
        end: u64,
        split: &mut dyn FnMut(u64, u8, u64) -> Option<u64>,
        zapped: &mut dyn FnMut(u64, u8, u64),
    ) -> bool {
        self.zap_in(self.top, ROOT_LEVEL, 0, start, end, split, zapped)
    }

    #[allow(clippy::too_many_arguments)]
    fn zap_in(
        &self,
        p: *mut TdpPage,
        level: u8,
        base: u64,
        start: u64,
        end: u64,
        split: &mut dyn FnMut(u64, u8, u64) -> Option<u64>,
        zapped: &mut dyn FnMut(u64, u8, u64),
    ) -> bool {
        let sz = span(level);
        if end <= base || start >= base + 512 * sz {
            return false;
        }
        let first = start.max(base).saturating_sub(base) / sz;
        let last = (end.min(base + 512 * sz) - base).div_ceil(sz).min(512);
        let mut any = false;
        for i in first..last {
            let e = &self.page(p).0[i as usize];
            let s = e.load(Acquire);
            if s & SPTE_PRESENT == 0 {
                continue;
            }
            let g = base + i * sz;
            if !is_leaf(s, level) {
                any |= self.zap_in(child(s), level - 1, g, start, end, split, zapped);
                continue;
            }
            let pfn = s >> 12 & (ADDR_MASK >> 12);
            let partial = g < start || g + sz > end;
            if partial {
                if let Some(child_pfn) = split(g, level, pfn) {
                    let new = Self::split_entry(e, level, child_pfn);
                    any |= self.zap_in(new, level - 1, g, start, end, split, zapped);
                    continue;
                }
            }
            e.store(0, Release);
            zapped(g, level, pfn);
            any = true;
        }
        any
    }

    /// Replace the huge leaf in `e` (at `level`) by a table of 512 children mapping the
    /// frames from `child_pfn`; returns the new table.
    fn split_entry(e: &AtomicU64, level: u8, child_pfn: u64) -> *mut TdpPage {
        let new = TdpPage::new();
        let large = if level > 1 { SPTE_LEAF_LARGE } else { 0 };
        let step = span(level - 1);
        // SAFETY: `new` was just allocated and is not yet reachable.
        for (j, c) in unsafe { &*new }.0.iter().enumerate() {
            c.store(
                (child_pfn + j as u64 * step) << 12 | SPTE_PRESENT | large,
                Relaxed,
            );
        }
        e.store(new as u64 | SPTE_PRESENT, Release);
        new
    }

    /// Split the huge leaf covering `gfn` into its 512 children, keeping every frame mapped
    /// (`tdp_mmu_split_huge_page`), `mmu_lock` held for write. `split(gfn, level, pfn)` does
    /// the external part first (the TDX hooks) and returns the children's base pfn, or `None`
    /// to leave the leaf as it is. Returns whether a leaf was split.
    pub(crate) fn split_huge_leaf(
        &self,
        gfn: u64,
        split: &mut dyn FnMut(u64, u8, u64) -> Option<u64>,
    ) -> bool {
        let mut p = self.top;
        let mut level = ROOT_LEVEL;
        loop {
            let e = &self.page(p).0[((gfn >> (9 * level as u32)) & 511) as usize];
            let s = e.load(Acquire);
            if s & SPTE_PRESENT == 0 || level == 0 {
                return false;
            }
            if is_leaf(s, level) {
                let base = gfn & !(span(level) - 1);
                let Some(child_pfn) = split(base, level, s >> 12 & (ADDR_MASK >> 12)) else {
                    return false;
                };
                Self::split_entry(e, level, child_pfn);
                return true;
            }
            p = child(s);
            level -= 1;
        }
    }

    /// Every leaf as `(gfn, level, pfn)`.
    pub fn leaves(&self) -> Vec<(u64, u8, u64)> {
        let mut out = Vec::new();
        self.collect(self.top, ROOT_LEVEL, 0, &mut out);
        out
    }

    fn collect(&self, p: *mut TdpPage, level: u8, base: u64, out: &mut Vec<(u64, u8, u64)>) {
        for (i, e) in self.page(p).0.iter().enumerate() {
            let s = e.load(Acquire);
            if s & SPTE_PRESENT == 0 {
                continue;
            }
            let g = base + i as u64 * span(level);
            if is_leaf(s, level) {
                out.push((g, level, s >> 12 & (ADDR_MASK >> 12)));
            } else {
                self.collect(child(s), level - 1, g, out);
            }
        }
    }
}
