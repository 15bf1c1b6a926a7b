//! The fault path (`kvm_mmu_faultin_pfn`, `kvm_tdp_mmu_page_fault`, `kvm_tdp_mmu_map`).

use super::{Alias, Kvm, KvmBug, MapOutcome, RootKind};
use shared_abi::convert::MemoryAttributes;
use shared_abi::{Gpa, PageLevel, TdxStatus};
use std::sync::atomic::Ordering::*;

/// How a fault ended.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum FaultOutcome {
    /// A leaf maps the GPA now (installed by this fault or already present).
    Mapped,
    /// Raced with an invalidation or another fault: re-enter the guest and fault again.
    Retry,
    /// The access's alias disagrees with the GFN's attribute: exit to userspace with
    /// KVM_EXIT_MEMORY_FAULT (the VMM converts implicitly, or refuses under --strict).
    MemoryFault {
        /// The faulting GPA.
        gpa: Gpa,
        /// True when the access was private (KVM_MEMORY_EXIT_FLAG_PRIVATE).
        private: bool,
    },
    /// The fault cannot be served.
    Error(FaultError),
}

/// Why KVM cannot serve a fault (`kvm_tdp_mmu_page_fault` returning an error to KVM_RUN).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// The VM was bugged (`KVM_BUG_ON`) earlier or by this fault.
    #[error(transparent)]
    Bugged(#[from] KvmBug),
    /// No memslot covers the GPA.
    #[error("gpa {0} is outside guest memory")]
    OutsideMemory(Gpa),
    /// The VM has no root of this kind (a private fault on a VM that is not a TD).
    #[error("no {} root", .0.name())]
    NoRoot(RootKind),
}

impl Kvm {
    /// Handle an EPT violation on `gpa` (the shared bit selects the root), mapping at most
    /// `max_level` (`kvm_tdp_mmu_page_fault`).
    pub fn kvm_mmu_page_fault(&self, gpa: Gpa, max_level: PageLevel) -> FaultOutcome {
        self.tdp_page_fault(gpa, max_level, &self.stats.faults)
    }

    /// KVM_PRE_FAULT_MEMORY's `kvm_tdp_map_page`: the fault path for a mapping no EPT
    /// violation asked for, so it counts as a prefault, not as a fault.
    fn kvm_tdp_map_page(&self, gpa: Gpa, level: PageLevel) -> FaultOutcome {
        self.tdp_page_fault(gpa, level, &self.stats.prefault_maps)
    }

    /// The fault path (`kvm_tdp_mmu_page_fault`), counted in `count`.
    fn tdp_page_fault(
        &self,
        gpa: Gpa,
        max_level: PageLevel,
        count: &crate::percpu::PerCpuCounter,
    ) -> FaultOutcome {
        // A bugged VM runs nothing (the first bug is recorded before the flag is set).
        if let Some(first) = self.is_bugged().then(|| self.bug_reason()).flatten() {
            return FaultOutcome::Error(KvmBug::AlreadyBugged(Box::new(first)).into());
        }
        count.fetch_add(1, Relaxed);
        let gpaw = self.cfg.gpaw;
        let is_private = self.cfg.is_td && !gpaw.is_shared(gpa);
        let gfn = self.gfn_of(gpa);
        if gfn >= self.cfg.mem_pages && !(is_private && self.cfg.firmware.contains(&gfn)) {
            return FaultOutcome::Error(FaultError::OutsideMemory(gpa));
        }
        // kvm_mmu_faultin_pfn: snapshot the sequence, then check the attribute.
        let mmu_seq = self.inval.seq.load(Acquire);
        if is_private != self.kvm_mem_is_private(gfn) {
            self.stats.memory_faults.fetch_add(1, Relaxed);
            tracing::debug!(target: "kvm", gpa = %gpa, private = is_private, "KVM_EXIT_MEMORY_FAULT");
            return FaultOutcome::MemoryFault {
                gpa,
                private: is_private,
            };
        }
        let level = self.max_mapping_level(gfn, is_private, max_level);
        if is_private && self.pending_leaf_above(gpa, level) {
            return self.split_for_smaller_fault(gfn);
        }
        let base = gfn & !(level.pages_4k() - 1);
        let pfn = if is_private {
            self.backend.private_pfn(base)
        } else {
            self.backend.shared_pfn(gfn)
        };
        if self.mmu_invalidate_retry_gfn(mmu_seq, base, base + level.pages_4k()) {
            return self.retry();
        }
        let _read = self.mmu_lock.read();
        // is_page_fault_stale: the authoritative check under the lock.
        if self.mmu_invalidate_retry_gfn(mmu_seq, base, base + level.pages_4k()) {
            return self.retry();
        }
        let kind = if is_private {
            RootKind::Mirror
        } else {
            RootKind::Direct
        };
        let Some(root) = self.root(kind) else {
            return FaultOutcome::Error(FaultError::NoRoot(kind));
        };
        // The map is the parent of what it calls: the S-EPT tables it links and the AUG.
        let _s = tracing::debug_span!(target: "kvm", "kvm_tdp_mmu_map", gpa = %gpa, level = %crate::trace::PageSize(level as u64), root = kind.name())
            .entered();
        let result = self.map_leaf(root, gfn, level as u8, pfn, is_private);
        self.after_map(result, gpa, gfn, kind)
    }

    /// Beyond upstream (`--prefault`): map private `[start, end)` ahead of the guest's
    /// ACCEPTs, each page (or 2 MiB block, where private mappings may be that large) through
    /// the fault path as KVM_PRE_FAULT_MEMORY's `kvm_tdp_map_page` does, so the TDX hook AUGs
    /// it PENDING. Best effort: a page left unmapped (a racing zap) is faulted in by the
    /// guest's ACCEPT as usual. Returns the pages mapped.
    pub fn kvm_arch_vcpu_pre_fault_memory(&self, start: u64, end: u64) -> u64 {
        let huge = self.cfg.private_max_level;
        let mut gfn = start;
        let mut mapped = 0;
        while gfn < end {
            let whole = gfn.is_multiple_of(huge.pages_4k()) && gfn + huge.pages_4k() <= end;
            let level = if whole { huge } else { PageLevel::Size4K };
            // A retry means a zap raced this range: try again a few times, then leave it.
            for _ in 0..4 {
                match self.kvm_tdp_map_page(Gpa(gfn << 12), level) {
                    FaultOutcome::Retry => continue,
                    FaultOutcome::Mapped => mapped += level.pages_4k(),
                    _ => {}
                }
                break;
            }
            gfn += level.pages_4k();
        }
        self.stats.prefaulted.fetch_add(mapped, Relaxed);
        mapped
    }

    /// Is `gpa` covered by a PENDING private leaf larger than `level` (a 4K ACCEPT inside a
    /// 2M page KVM AUGed whole)?
    fn pending_leaf_above(&self, gpa: Gpa, level: PageLevel) -> bool {
        // KVM maps no private leaf above private_max_level, so none can be above it: the
        // usual 4K TD skips the walk.
        if level >= self.cfg.private_max_level {
            return false;
        }
        let Some(tdx) = self.tdx.as_deref() else {
            return false;
        };
        matches!(tdx.translate(gpa), crate::seam::Walk::Leaf { entry, level: at }
            if at > level as u8 && entry.state == shared_abi::sept::SeptState::Pending)
    }

    /// The fault asks for a smaller page than the PENDING private leaf covering it: split the
    /// leaf (BLOCK, TRACK, kick, DEMOTE — module 1.5 demotes PENDING pages too) and have the
    /// fault retried, so the re-executed ACCEPT finds a PENDING 4K child, as the TDX huge-page
    /// series does. Without the split the module would raise the same EPT violation forever.
    fn split_for_smaller_fault(&self, gfn: u64) -> FaultOutcome {
        let Some(root) = self.root(RootKind::Mirror) else {
            return FaultOutcome::Error(FaultError::NoRoot(RootKind::Mirror));
        };
        let _w = self.lock_write();
        let mut err = None;
        let mut split = |g: u64, lv: u8, pfn: u64| match self.tdx_sept_split_private_spte(g, lv) {
            Ok(()) => Some(pfn),
            Err(e) => {
                err = Some(e);
                None
            }
        };
        root.split_huge_leaf(gfn, &mut split);
        match err {
            Some(e) => FaultOutcome::Error(e.into()),
            None => self.retry(),
        }
    }

    /// `kvm_tdp_mmu_map`: install the leaf; a private one through the TDX hooks
    /// (`tdx_sept_link_private_spt`, `tdx_sept_set_private_spte`).
    fn map_leaf(
        &self,
        root: &super::TdpRoot,
        gfn: u64,
        level: u8,
        pfn: u64,
        is_private: bool,
    ) -> Result<MapOutcome, TdxStatus> {
        if is_private {
            root.map(
                gfn,
                level,
                pfn,
                |g, lv| self.tdx_sept_link_private_spt(g, lv),
                |g, lv, p| self.tdx_sept_set_private_spte(g, lv, p),
            )
        } else {
            root.map(gfn, level, pfn, |_, _| Ok(()), |_, _, _| Ok(()))
        }
    }

    /// Count an installed leaf (and make a shared one reachable), or turn the map's result
    /// into a retry or a bugged VM.
    fn after_map(
        &self,
        result: Result<MapOutcome, TdxStatus>,
        gpa: Gpa,
        gfn: u64,
        kind: RootKind,
    ) -> FaultOutcome {
        match result {
            Ok(MapOutcome::Installed(lv)) => {
                let n = shared_abi::sept::level_pages(lv);
                let first = gfn & !(n - 1);
                if kind == RootKind::Mirror {
                    self.stats.installed_mirror.fetch_add(n, Relaxed);
                } else {
                    self.stats.installed_direct.fetch_add(n, Relaxed);
                    if let Err(e) = self.backend.set_accessible(Alias::Shared, first, n, true) {
                        return FaultOutcome::Error(self.bug(e).into());
                    }
                }
                tracing::debug!(target: "kvm", level = %crate::trace::PageSize(lv as u64), "leaf installed");
                FaultOutcome::Mapped
            }
            Ok(MapOutcome::AlreadyMapped) => FaultOutcome::Mapped,
            Ok(MapOutcome::Retry) => self.retry(),
            Err(s) if s.is(TdxStatus::OPERAND_BUSY) => self.retry(),
            Err(s) => FaultOutcome::Error(self.bug(KvmBug::MapPrivate { gpa, status: s }).into()),
        }
    }

    fn retry(&self) -> FaultOutcome {
        self.stats.fault_retries.fetch_add(1, Relaxed);
        FaultOutcome::Retry
    }

    /// The largest level the fault may map: 2M only when allowed, inside RAM, and every GFN of
    /// the huge page has the same attribute (KVM's LPAGE_MIXED check).
    fn max_mapping_level(&self, gfn: u64, is_private: bool, max_level: PageLevel) -> PageLevel {
        let allowed = if is_private {
            self.cfg.private_max_level.min(max_level)
        } else {
            PageLevel::Size4K
        };
        if allowed >= PageLevel::Size2M {
            let base = gfn & !511;
            let attrs = if is_private {
                MemoryAttributes::PRIVATE
            } else {
                MemoryAttributes::SHARED
            };
            let a = self.attrs.read().unwrap_or_else(|e| e.into_inner());
            if base + 512 <= self.cfg.mem_pages && a.range_has(base, base + 512, attrs) {
                return PageLevel::Size2M;
            }
        }
        PageLevel::Size4K
    }

    /// `mmu_invalidate_retry_gfn_range`: an invalidation covering the range is in progress,
    /// or one completed since `mmu_seq` was read.
    fn mmu_invalidate_retry_gfn(&self, mmu_seq: u64, start: u64, end: u64) -> bool {
        if self.inval.in_progress.load(Acquire) > 0 {
            let (s, e) = (self.inval.start.load(Acquire), self.inval.end.load(Acquire));
            if s == super::INVALID_GFN || (start < e && s < end) {
                return true;
            }
        }
        self.inval.seq.load(Acquire) != mmu_seq
    }
}
