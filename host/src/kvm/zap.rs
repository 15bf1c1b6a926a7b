//! The zap path and its callers (`kvm_main.c`, `mmu.c`, `tdp_mmu.c`, `guest_memfd.c`).

use super::policy::{root_action, RootAction, ZapCaller};
use super::{Alias, Kvm, KvmBug, RootKind, TdpRoot, TdxRemove, INVALID_GFN};
use shared_abi::convert::MemoryAttributes;
use shared_abi::PageLevel;
use std::sync::atomic::Ordering::*;

/// `struct kvm_gfn_range`: what to zap and which aliases.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KvmGfnRange {
    /// First GFN.
    pub start: u64,
    /// One past the last GFN.
    pub end: u64,
    /// KVM_FILTER_SHARED | KVM_FILTER_PRIVATE (0 is a bug on a TD).
    pub attr_filter: u8,
    /// May sleep/yield.
    pub may_block: bool,
    /// Who asked (the v19 policy reads its flags from it).
    pub caller: ZapCaller,
}

impl KvmGfnRange {
    /// The range `caller` builds for `[start, end)`, with its filter.
    pub fn new(caller: ZapCaller, start: u64, end: u64) -> KvmGfnRange {
        KvmGfnRange {
            start,
            end,
            attr_filter: caller.attr_filter(),
            may_block: true,
            caller,
        }
    }
}

/// Zapped leaves gathered into runs of adjacent GFNs (start, pages).
#[derive(Default)]
struct UnmapRuns(Option<(u64, u64)>);

impl UnmapRuns {
    /// Add `n` pages at `gfn`; returns the run this one does not continue, if any.
    fn add(&mut self, gfn: u64, n: u64) -> Option<(u64, u64)> {
        match self.0 {
            Some((s, len)) if s + len == gfn => {
                self.0 = Some((s, len + n));
                None
            }
            prev => {
                self.0 = Some((gfn, n));
                prev
            }
        }
    }
}

impl Kvm {
    pub(super) fn lock_write(&self) -> crate::locks::PerCpuWriteGuard<'_> {
        self.mmu_lock.write()
    }

    /// `kvm_mmu_invalidate_begin`, mmu_lock held for write.
    fn kvm_mmu_invalidate_begin(&self) {
        if self.inval.in_progress.fetch_add(1, AcqRel) == 0 {
            self.inval.start.store(INVALID_GFN, Release);
            self.inval.end.store(INVALID_GFN, Release);
        }
    }

    /// `kvm_mmu_invalidate_range_add`, mmu_lock held for write.
    fn kvm_mmu_invalidate_range_add(&self, start: u64, end: u64) {
        let s = self.inval.start.load(Acquire);
        if s == INVALID_GFN {
            self.inval.start.store(start, Release);
            self.inval.end.store(end, Release);
        } else {
            self.inval.start.store(s.min(start), Release);
            self.inval
                .end
                .store(self.inval.end.load(Acquire).max(end), Release);
        }
    }

    /// `kvm_mmu_invalidate_end`, mmu_lock held for write: bump the sequence so racing faults
    /// retry, then close the window.
    fn kvm_mmu_invalidate_end(&self) {
        self.inval.seq.fetch_add(1, AcqRel);
        self.inval.in_progress.fetch_sub(1, AcqRel);
    }

    /// `kvm_flush_remote_tlbs`.
    pub(crate) fn kvm_flush_remote_tlbs(&self) {
        tracing::trace!(target: "kvm", "kvm_flush_remote_tlbs");
        self.stats.flushes.fetch_add(1, Relaxed);
        self.stats.kicks.fetch_add(1, Relaxed);
        self.backend.kick_all_vcpus(true);
    }

    /// `kvm_vm_set_mem_attributes`: zap the old mappings of `[start, end)`, store the new
    /// attributes, and bump the sequence, all inside one invalidation.
    pub fn kvm_vm_set_mem_attributes(
        &self,
        start: u64,
        end: u64,
        attrs: MemoryAttributes,
    ) -> Result<(), KvmBug> {
        let _slots = self.slots_lock.lock();
        if start >= end || end > self.cfg.mem_pages {
            return Err(self.bug(KvmBug::OutsideMemslots { start, end }));
        }
        if self
            .attrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range_has(start, end, attrs)
        {
            return Ok(());
        }
        let span = tracing::debug_span!(target: "kvm", "kvm_vm_set_mem_attributes", start, end, private = attrs.is_private());
        let _e = span.enter();
        {
            let _w = self.lock_write();
            self.kvm_mmu_invalidate_begin();
            self.kvm_mmu_invalidate_range_add(start, end);
            let flush = self.kvm_arch_pre_set_memory_attributes(start, end, attrs)?;
            if flush {
                self.kvm_flush_remote_tlbs();
            }
        }
        // Stored outside mmu_lock: safe because the invalidation is still in progress.
        self.attrs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set(start, end, attrs);
        let _w = self.lock_write();
        self.kvm_mmu_invalidate_end();
        Ok(())
    }

    /// `kvm_arch_pre_set_memory_attributes`: widen the invalidation over the head and tail
    /// huge pages, pick the filter (to private ⇒ SHARED, to shared ⇒ PRIVATE), and unmap.
    fn kvm_arch_pre_set_memory_attributes(
        &self,
        start: u64,
        end: u64,
        attrs: MemoryAttributes,
    ) -> Result<bool, KvmBug> {
        let huge = PageLevel::Size2M.pages_4k();
        let head = start & !(huge - 1);
        let tail = end.div_ceil(huge) * huge;
        self.kvm_mmu_invalidate_range_add(head, tail.min(self.cfg.mem_pages));
        let caller = if attrs.is_private() {
            ZapCaller::SetAttrPrivate
        } else {
            ZapCaller::SetAttrShared
        };
        tracing::debug!(target: "kvm", filter = caller.attr_filter(), "kvm_arch_pre_set_memory_attributes");
        self.kvm_unmap_gfn_range(&KvmGfnRange::new(caller, start, end))
    }

    /// `kvm_unmap_gfn_range`: only inside an invalidation, or under slots_lock for memslot
    /// removal. Returns whether the caller must flush.
    pub(crate) fn kvm_unmap_gfn_range(&self, range: &KvmGfnRange) -> Result<bool, KvmBug> {
        if self.inval.in_progress.load(Acquire) == 0 && range.caller != ZapCaller::MemslotDelete {
            return Err(self.bug(KvmBug::UnmapOutsideInvalidation));
        }
        self.kvm_tdp_mmu_unmap_gfn_range(range, false)
    }

    /// `kvm_tdp_mmu_unmap_gfn_range`: each root, in allocation order, as the policy decides.
    pub fn kvm_tdp_mmu_unmap_gfn_range(
        &self,
        range: &KvmGfnRange,
        mut flush: bool,
    ) -> Result<bool, KvmBug> {
        self.stats.zap_calls.fetch_add(1, Relaxed);
        let span = tracing::debug_span!(target: "kvm", "kvm_tdp_mmu_unmap_gfn_range",
            start = range.start, end = range.end, filter = range.attr_filter, caller = range.caller.name());
        let _e = span.enter();
        let mut zapped_any = false;
        for root in &self.roots {
            let action = root_action(
                self.cfg.policy,
                self.cfg.is_td,
                root.kind(),
                range.caller,
                range.attr_filter,
            )
            .map_err(|b| self.bug(b))?;
            tracing::trace!(target: "kvm", root = root.kind().name(), ?action, "visit");
            match action {
                RootAction::Zap => {
                    let z = self.tdp_mmu_zap_leafs(root, range.start, range.end)?;
                    zapped_any |= z;
                    flush |= z;
                }
                RootAction::Skip => {}
                RootAction::SkipDropFlush => flush = false,
            }
        }
        if zapped_any && !flush {
            self.stats.flushes_dropped.fetch_add(1, Relaxed);
            // v19's known bug, counted in flushes_dropped: expected, not worth a warning.
            tracing::debug!(target: "kvm", "pending TLB flush dropped (v19 return false)");
        }
        tracing::debug!(target: "kvm", flush, "done");
        Ok(flush)
    }

    /// `tdp_mmu_zap_leafs`: clear every leaf of `root` in `[start, end)`; mirror leaves go
    /// through the TDX hooks. Returns whether anything was zapped (the flush it needs).
    fn tdp_mmu_zap_leafs(&self, root: &TdpRoot, start: u64, end: u64) -> Result<bool, KvmBug> {
        let mirror = root.kind() == RootKind::Mirror;
        let mut err: Option<KvmBug> = None;
        let mut split = |gfn: u64, level: u8, pfn: u64| -> Option<u64> {
            if !mirror {
                return None; // a shared huge leaf is zapped whole and faulted back
            }
            match self.tdx_sept_split_private_spte(gfn, level) {
                Ok(()) => Some(pfn),
                Err(e) => {
                    err.get_or_insert(e);
                    None
                }
            }
        };
        let mut errs: Vec<KvmBug> = Vec::new();
        // Each alias's zapped leaves leave the backend in runs of adjacent GFNs, one call
        // each (one madvise on KVM); the walk visits leaves in address order.
        let alias = if mirror {
            Alias::Private
        } else {
            Alias::Shared
        };
        let mut runs = UnmapRuns::default();
        let mut batch: Vec<(u64, u8, u64)> = Vec::new();
        let mut zapped = |gfn: u64, level: u8, pfn: u64| {
            let n = shared_abi::sept::level_pages(level);
            tracing::trace!(target: "kvm", root = root.kind().name(), gfn, level = %crate::trace::PageSize(level as u64), "zap leaf");
            if mirror {
                self.stats.zapped_mirror.fetch_add(n, Relaxed);
                match self.cfg.beyond.tdx_remove {
                    TdxRemove::PerLeaf => {
                        if let Err(e) = self.tdx_sept_remove_private_spte(gfn, level, pfn) {
                            errs.push(e);
                        }
                    }
                    TdxRemove::Batched => batch.push((gfn, level, pfn)),
                }
            } else {
                self.stats.zapped_direct.fetch_add(n, Relaxed);
            }
            if let Some((s, len)) = runs.add(gfn, n) {
                errs.extend(self.unmap_run(alias, s, len));
            }
        };
        let any = root.zap_leafs(start, end, &mut split, &mut zapped);
        if !batch.is_empty() {
            errs.extend(self.tdx_sept_remove_private_sptes_batched(&batch).err());
        }
        if let Some((s, len)) = runs.0 {
            errs.extend(self.unmap_run(alias, s, len));
        }
        match err.or(errs.into_iter().next()) {
            Some(e) => Err(e),
            None => Ok(any),
        }
    }

    /// Make `[gfn, gfn + len)` of `alias` unreachable for the CPU.
    fn unmap_run(&self, alias: Alias, gfn: u64, len: u64) -> Option<KvmBug> {
        (self.backend.set_accessible(alias, gfn, len, false))
            .err()
            .map(|e| self.bug(e))
    }

    /// The mmu_notifier around a host change to shared memory (`invalidate_range_start`,
    /// the change, `invalidate_range_end`), filter SHARED.
    pub fn kvm_mmu_notifier_invalidate_range(
        &self,
        start: u64,
        end: u64,
        host_change: impl FnOnce(),
    ) -> Result<(), KvmBug> {
        {
            let _w = self.lock_write();
            self.kvm_mmu_invalidate_begin();
            self.kvm_mmu_invalidate_range_add(start, end);
            let flush =
                self.kvm_unmap_gfn_range(&KvmGfnRange::new(ZapCaller::MmuNotifier, start, end));
            let flush = match flush {
                Ok(f) => f,
                Err(e) => {
                    self.kvm_mmu_invalidate_end();
                    return Err(e);
                }
            };
            if flush {
                self.kvm_flush_remote_tlbs();
            }
        }
        host_change();
        let _w = self.lock_write();
        self.kvm_mmu_invalidate_end();
        Ok(())
    }

    /// guest_memfd PUNCH_HOLE over `[start, end)` (`kvm_gmem_invalidate_begin`, truncate,
    /// `kvm_gmem_invalidate_end`), filter PRIVATE. The GFNs stay private.
    pub fn kvm_gmem_punch_hole(&self, start: u64, end: u64) -> Result<(), KvmBug> {
        {
            let _w = self.lock_write();
            self.kvm_mmu_invalidate_begin();
            self.kvm_mmu_invalidate_range_add(start, end);
            let flush =
                self.kvm_unmap_gfn_range(&KvmGfnRange::new(ZapCaller::GmemPunchHole, start, end));
            match flush {
                Ok(true) => self.kvm_flush_remote_tlbs(),
                Ok(false) => {}
                Err(e) => {
                    // Close the invalidation: faults waiting on it would retry forever.
                    self.kvm_mmu_invalidate_end();
                    return Err(e);
                }
            }
        }
        let discarded = self
            .backend
            .discard(Alias::Private, start, end - start)
            .map_err(|e| self.bug(e));
        let _w = self.lock_write();
        self.kvm_mmu_invalidate_end();
        discarded
    }

    /// Memslot deletion over `[start, end)` (`kvm_arch_flush_shadow_memslot`): both
    /// filters, protected by slots_lock instead of an invalidation.
    pub fn kvm_arch_flush_shadow_memslot(&self, start: u64, end: u64) -> Result<(), KvmBug> {
        let _slots = self.slots_lock.lock();
        let _w = self.lock_write();
        if self.kvm_unmap_gfn_range(&KvmGfnRange::new(ZapCaller::MemslotDelete, start, end))? {
            self.kvm_flush_remote_tlbs();
        }
        Ok(())
    }
}
