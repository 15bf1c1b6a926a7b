//! The SEAMCALLs KVM uses to manage a TD's private memory (TDH.MEM.*), with the module's
//! locking: the S-EPT tree lock held shared by the calls that change one entry (AUG,
//! REMOVE, a leaf's BLOCK) — each then changes its entry with a compare-and-swap or under
//! the entry's lock — and held exclusively by the calls that link, unlink or split tables.

use super::sept::{CasError, EntryRef};
use super::{rcx_error, Hpa, OpState, SeamInner, SeamResult, Sept, SeptEntry, TdxModule};
use shared_abi::sept::{SeptLevel, SeptState};
use shared_abi::{Gpa, TdxStatus};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

impl TdxModule {
    /// Change the entry at `level` under the tree lock held shared, as the module does with
    /// the entry's cmpxchg: `next` checks the entry as read and gives its new value or the
    /// call's status. A change that raced another is read again; an entry another call has
    /// locked answers OPERAND_BUSY naming RCX (`tdx_module`'s entry-lock contention).
    /// Returns the entry as it was.
    pub(super) fn update_entry(
        &self,
        tree: &Sept,
        gpa: Gpa,
        level: SeptLevel,
        next: impl Fn(SeptEntry) -> SeamResult<SeptEntry>,
    ) -> SeamResult<SeptEntry> {
        let slot = tree.entry(gpa, level)?;
        loop {
            let old = slot.read();
            let new = next(old)?;
            match slot.cas(old, new) {
                Ok(()) => return Ok(old),
                Err(CasError::Changed) => continue,
                Err(CasError::Locked) => return Err(rcx_error(TdxStatus::OPERAND_BUSY)),
            }
        }
    }

    /// TDH.MEM.SEPT.ADD: link a new S-EPT table page under the entry at `level` (1..=3) that
    /// covers `gpa` (`tdh_mem_sept_add`).
    pub fn tdh_mem_sept_add(&self, gpa: Gpa, level: SeptLevel) -> SeamResult<()> {
        self.check_gpa(gpa)?;
        if !(1..=3).contains(&level) {
            return Err(rcx_error(TdxStatus::OPERAND_INVALID));
        }
        let mut tree = self.tree_mut();
        let e = tree.entry_at(gpa, level)?;
        if e.state != SeptState::Free {
            return Err(TdxStatus::EPT_ENTRY_NOT_FREE.with_details(level as u32));
        }
        tree.link_table(gpa, level);
        self.stats.sept_add.fetch_add(1, Relaxed);
        tracing::trace!(target: "seam", gpa = %gpa, level = %crate::trace::PageSize(level as u64), "TDH.MEM.SEPT.ADD");
        Ok(())
    }

    /// TDH.MEM.PAGE.ADD: add an initial, already-accepted 4K page before finalize
    /// (`tdh_mem_page_add`).
    pub fn tdh_mem_page_add(&self, gpa: Gpa, hpa: Hpa) -> SeamResult<()> {
        self.check_gpa(gpa)?;
        let tree = self.tree_mut();
        let mut g = self.lock();
        if self.op_state() != OpState::Initialized {
            return Err(TdxStatus::LIFECYCLE_STATE_INCORRECT);
        }
        let e = tree.entry_at(gpa, 0)?;
        if e.state != SeptState::Free {
            return Err(TdxStatus::EPT_ENTRY_NOT_FREE.with_details(0));
        }
        tree.store(gpa, 0, SeptEntry::leaf(SeptState::Mapped, hpa));
        g.mrtd.page_add(gpa);
        self.map_for_cpu(gpa, hpa, 1);
        self.stats.page_add.fetch_add(1, Relaxed);
        Ok(())
    }

    /// TDH.MEM.PAGE.AUG: add a PENDING page (4K or 2M) to a TD (`tdh_mem_page_aug`).
    pub fn tdh_mem_page_aug(&self, gpa: Gpa, level: SeptLevel, hpa: Hpa) -> SeamResult<()> {
        self.check_gpa(gpa)?;
        if level > 1 || gpa.0 & (shared_abi::sept::level_bytes(level) - 1) != 0 {
            return Err(rcx_error(TdxStatus::OPERAND_INVALID));
        }
        let tree = self.tree();
        if self.op_state() == OpState::Teardown {
            return Err(TdxStatus::LIFECYCLE_STATE_INCORRECT);
        }
        self.update_entry(&tree, gpa, level, |e| match e.state {
            SeptState::Free | SeptState::Removed => Ok(SeptEntry::leaf(SeptState::Pending, hpa)),
            _ => Err(TdxStatus::EPT_ENTRY_NOT_FREE.with_details(level as u32)),
        })?;
        self.stats.page_aug.fetch_add(1, Relaxed);
        tracing::trace!(target: "seam", gpa = %gpa, level = %crate::trace::PageSize(level as u64), hpa, "TDH.MEM.PAGE.AUG");
        Ok(())
    }

    /// TDH.MEM.RANGE.BLOCK: stop new translations through the entry and record the current
    /// epoch as its BEPOCH (`tdh_mem_range_block`).
    ///
    /// The module holds the tree lock exclusively for every BLOCK. Blocking a leaf changes
    /// that entry alone, which its lock makes atomic, so here a leaf's BLOCK holds the tree
    /// lock shared and other vCPUs' faults and ACCEPTs go on; a non-leaf's, which cuts off a
    /// subtree, holds it exclusively.
    pub fn tdh_mem_range_block(&self, gpa: Gpa, level: SeptLevel) -> SeamResult<()> {
        self.check_gpa(gpa)?;
        let tree = self.tree();
        let slot = tree.entry(gpa, level)?;
        if !slot.read().state.is_non_leaf() {
            return self.block_entry(slot, gpa, level);
        }
        drop(tree);
        let tree = self.tree_mut();
        self.block_entry(tree.entry(gpa, level)?, gpa, level)
    }

    /// BLOCK the entry in `slot`, found under the tree lock the caller holds.
    fn block_entry(&self, slot: EntryRef<'_>, gpa: Gpa, level: SeptLevel) -> SeamResult<()> {
        let mut g = self.lock();
        let bepoch = self.epochs().td_epoch();
        let e = loop {
            let e = slot.read();
            let next = match e.state {
                SeptState::NlMapped => SeptState::NlBlocked,
                SeptState::Mapped | SeptState::BlockedW => SeptState::Blocked,
                SeptState::Pending | SeptState::PendingBlockedW => SeptState::PendingBlocked,
                SeptState::NlBlocked | SeptState::Blocked | SeptState::PendingBlocked => {
                    return Err(TdxStatus::GPA_RANGE_ALREADY_BLOCKED.with_details(level as u32))
                }
                _ => return Err(TdxStatus::EPT_ENTRY_STATE_INCORRECT.with_details(level as u32)),
            };
            match slot.lock(e) {
                Ok(()) => {
                    slot.store(SeptEntry {
                        state: next,
                        hpa: e.hpa,
                        bepoch,
                    });
                    break e;
                }
                Err(CasError::Changed) => continue,
                // Only an ACCEPT holds a leaf's lock, for a bounded time (zero, map, store).
                // The module would answer BUSY and KVM retry once after kicking every vCPU
                // out of the TD, by when the TDCALL has completed; here the TDCALL runs
                // outside the vCPU's time in the TD, so BLOCK waits for it instead.
                Err(CasError::Locked) => std::hint::spin_loop(),
            }
        };
        if e.state == SeptState::Mapped {
            let pages = shared_abi::sept::level_pages(level);
            g.cpu_unmap_pending.push((gpa.0 >> 12, pages));
            self.unmap_pending.store(true, Release);
        }
        self.stats.block.fetch_add(1, Relaxed);
        tracing::trace!(target: "seam", gpa = %gpa, level = %crate::trace::PageSize(level as u64), bepoch, "TDH.MEM.RANGE.BLOCK");
        Ok(())
    }

    /// TDH.MEM.RANGE.UNBLOCK: the inverse of BLOCK, once tracked (`tdh_mem_range_unblock`).
    pub fn tdh_mem_range_unblock(&self, gpa: Gpa, level: SeptLevel) -> SeamResult<()> {
        self.check_gpa(gpa)?;
        let tree = self.tree_mut();
        self.unmap_blocked_for_cpu(&mut self.lock());
        let e = tree.entry_at(gpa, level)?;
        let next = match e.state {
            SeptState::NlBlocked => SeptState::NlMapped,
            SeptState::Blocked => SeptState::Mapped,
            SeptState::PendingBlocked => SeptState::Pending,
            _ => return Err(TdxStatus::EPT_ENTRY_STATE_INCORRECT.with_details(level as u32)),
        };
        if self.op_state() == OpState::Runnable && !self.epochs().is_tracked(e.bepoch) {
            return Err(TdxStatus::TLB_TRACKING_NOT_DONE.with_details(level as u32));
        }
        tree.store(gpa, level, SeptEntry::leaf(next, e.hpa));
        if next == SeptState::Mapped {
            self.map_for_cpu(gpa, e.hpa, shared_abi::sept::level_pages(level));
        }
        self.stats.unblock.fetch_add(1, Relaxed);
        Ok(())
    }

    /// TDH.MEM.TRACK: advance the TD epoch unless a vCPU still runs in the previous one
    /// (`tdh_mem_track`).
    pub fn tdh_mem_track(&self) -> SeamResult<()> {
        let mut g = self.lock();
        let epoch = {
            let ep = self.epochs();
            ep.track()?;
            ep.td_epoch()
        };
        self.unmap_blocked_for_cpu(&mut g);
        self.stats.track.fetch_add(1, Relaxed);
        tracing::trace!(target: "seam", epoch, "TDH.MEM.TRACK");
        Ok(())
    }

    /// Checks shared by REMOVE, DEMOTE and SEPT.REMOVE on a runnable TD: blocked, then tracked.
    fn require_blocked_tracked(&self, e: &SeptEntry, level: SeptLevel) -> SeamResult<()> {
        if self.op_state() != OpState::Runnable {
            return Ok(());
        }
        let blocked = matches!(
            e.state,
            SeptState::Blocked | SeptState::PendingBlocked | SeptState::NlBlocked
        );
        if !blocked {
            return Err(TdxStatus::GPA_RANGE_NOT_BLOCKED.with_details(level as u32));
        }
        if !self.epochs().is_tracked(e.bepoch) {
            return Err(TdxStatus::TLB_TRACKING_NOT_DONE.with_details(level as u32));
        }
        Ok(())
    }

    /// TDH.MEM.PAGE.REMOVE: remove a private leaf, returning its HPA (`tdh_mem_page_remove`);
    /// the tree lock shared, as the module takes it.
    pub fn tdh_mem_page_remove(&self, gpa: Gpa, level: SeptLevel) -> SeamResult<Hpa> {
        self.check_gpa(gpa)?;
        let tree = self.tree();
        if self.unmap_pending.load(Acquire) {
            self.unmap_blocked_for_cpu(&mut self.lock());
        }
        let e = self.update_entry(&tree, gpa, level, |e| {
            if !matches!(
                e.state,
                SeptState::Mapped
                    | SeptState::Blocked
                    | SeptState::BlockedW
                    | SeptState::Pending
                    | SeptState::PendingBlocked
                    | SeptState::PendingBlockedW
            ) {
                return Err(TdxStatus::EPT_ENTRY_STATE_INCORRECT.with_details(level as u32));
            }
            self.require_blocked_tracked(&e, level)?;
            Ok(SeptEntry::FREE)
        })?;
        self.stats.remove.fetch_add(1, Relaxed);
        tracing::trace!(target: "seam", gpa = %gpa, level = %crate::trace::PageSize(level as u64), hpa = e.hpa, "TDH.MEM.PAGE.REMOVE");
        Ok(e.hpa)
    }

    /// TDH.MEM.PAGE.DEMOTE: split a blocked 2M leaf into 512 4K leaves carrying the unblocked
    /// form of its state (`tdh_mem_page_demote`).
    pub fn tdh_mem_page_demote(&self, gpa: Gpa, level: SeptLevel) -> SeamResult<()> {
        self.check_gpa(gpa)?;
        if level != 1 {
            return Err(rcx_error(TdxStatus::OPERAND_INVALID));
        }
        let mut tree = self.tree_mut();
        self.unmap_blocked_for_cpu(&mut self.lock());
        let e = tree.entry_at(gpa, level)?;
        let child = match e.state {
            SeptState::Mapped | SeptState::Blocked => SeptState::Mapped,
            SeptState::Pending | SeptState::PendingBlocked => SeptState::Pending,
            _ => return Err(TdxStatus::EPT_ENTRY_STATE_INCORRECT.with_details(level as u32)),
        };
        self.require_blocked_tracked(&e, level)?;
        tree.demote(gpa, e.hpa, child);
        if child == SeptState::Mapped {
            // 512 present 4K leaves: the CPU reaches the pages again (BLOCK took them away).
            self.map_for_cpu(gpa, e.hpa, 512);
        }
        self.stats.demote.fetch_add(1, Relaxed);
        Ok(())
    }

    /// TDH.MEM.SEPT.REMOVE: unlink an empty S-EPT table page (`tdh_mem_sept_remove`).
    pub fn tdh_mem_sept_remove(&self, gpa: Gpa, level: SeptLevel) -> SeamResult<()> {
        self.check_gpa(gpa)?;
        if !(1..=3).contains(&level) {
            return Err(rcx_error(TdxStatus::OPERAND_INVALID));
        }
        let mut tree = self.tree_mut();
        self.unmap_blocked_for_cpu(&mut self.lock());
        let e = tree.entry_at(gpa, level)?;
        if !e.state.is_non_leaf() {
            return Err(TdxStatus::EPT_ENTRY_STATE_INCORRECT.with_details(level as u32));
        }
        self.require_blocked_tracked(&e, level)?;
        if !tree.child_table_is_free(gpa, level) {
            return Err(TdxStatus::EPT_PAGE_NOT_FREE.with_details(level as u32));
        }
        tree.unlink_table(gpa, level);
        if self.op_state() == OpState::Runnable {
            self.stats.tables_freed_while_runnable.fetch_add(1, Relaxed);
        }
        self.stats.sept_remove.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The pages blocked since the last TRACK leave the CPU, one call per run of adjacent
    /// pages (the caller holds `inner`); a host failure is counted and logged like
    /// [`Self::map_for_cpu`]'s.
    pub(super) fn unmap_blocked_for_cpu(&self, g: &mut SeamInner) {
        if g.cpu_unmap_pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut g.cpu_unmap_pending);
        self.unmap_pending.store(false, Release);
        pending.sort_unstable();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (gfn, n) in pending {
            match runs.last_mut() {
                Some((s, len)) if *s + *len == gfn => *len += n,
                _ => runs.push((gfn, n)),
            }
        }
        for (gfn, pages) in runs {
            if let Err(e) = self.mem.unmap(Gpa(gfn << 12), pages) {
                self.stats.map_failures.fetch_add(1, Relaxed);
                tracing::error!(target: "seam", gpa = %Gpa(gfn << 12), pages, "unmapping a blocked page failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seam::{CpuMapError, PrivateMem, TdParams};
    use shared_abi::Gpaw;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    /// Private memory that records which pages the CPU can reach.
    #[derive(Default)]
    struct CpuMap(Mutex<HashSet<u64>>);

    impl PrivateMem for CpuMap {
        fn zero(&self, _: Hpa, _: u64) {}
        fn read(&self, _: Hpa, _: u64) -> u64 {
            0
        }
        fn write(&self, _: Hpa, _: u64, _: u64) {}
        fn map(&self, gpa: Gpa, _: Hpa, pages: u64) -> Result<(), CpuMapError> {
            let mut m = self.0.lock().unwrap();
            (0..pages).for_each(|i| _ = m.insert((gpa.0 >> 12) + i));
            Ok(())
        }
        fn unmap(&self, gpa: Gpa, pages: u64) -> Result<(), CpuMapError> {
            let mut m = self.0.lock().unwrap();
            (0..pages).for_each(|i| _ = m.remove(&((gpa.0 >> 12) + i)));
            Ok(())
        }
    }

    /// The guest's AUG-and-ACCEPT and the host's BLOCK, TRACK and REMOVE race on the same
    /// pages from two threads: every call answers one of the statuses its state allows (a
    /// BLOCK waits for an ACCEPT in progress instead of failing), and afterwards the CPU
    /// reaches exactly the MAPPED pages — none freed under it.
    #[test]
    fn racing_accepts_and_removals_leave_the_cpu_exactly_the_mapped_pages() {
        let mem = Arc::new(CpuMap::default());
        let params = TdParams {
            gpaw: Gpaw::GPAW_48,
            attributes: 0,
            num_vcpus: 1,
            max_vcpus: 1,
        };
        let m = TdxModule::runnable(params, mem.clone());
        for level in [3, 2, 1] {
            m.tdh_mem_sept_add(Gpa(0), level).unwrap();
        }
        const PAGES: u64 = 8;
        let page = |i: u64| Gpa((i % PAGES) << 12);
        let remove = |i: u64| match m.tdh_mem_range_block(page(i), 0) {
            Ok(()) => {
                m.tdh_mem_track().unwrap();
                m.tdh_mem_page_remove(page(i), 0).unwrap();
            }
            Err(e) => assert!(
                e.is(TdxStatus::EPT_ENTRY_STATE_INCORRECT),
                "BLOCK of a FREE page only: {e:?}"
            ),
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..20_000u64 {
                    let _ = m.tdh_mem_page_aug(page(i), 0, i % PAGES);
                    let mut regs = tdcall::Regs {
                        rax: shared_abi::tdcall::TdcallLeaf::MemPageAccept as u64,
                        rcx: page(i).0,
                        ..Default::default()
                    };
                    m.tdcall(0, &mut regs);
                }
                done.store(true, Relaxed);
            });
            s.spawn(|| {
                // Until the guest is done, then once more over every page.
                let mut i = 0;
                while !done.load(Relaxed) {
                    remove(i);
                    i += 1;
                }
                (0..PAGES / 2).for_each(remove);
            });
        });
        let cpu = mem.0.lock().unwrap().clone();
        for i in 0..PAGES {
            let mapped = m.entry_state(page(i), 0) == Some(SeptState::Mapped);
            assert_eq!(
                cpu.contains(&i),
                mapped,
                "page {i}: {:?}",
                m.entry_state(page(i), 0)
            );
        }
        assert!(m.stats.remove.load(Relaxed) > 0 && m.stats.accepted_4k.load(Relaxed) > 0);
    }
}
