//! TLB epochs: how the module knows no vCPU can still hold a translation through a blocked
//! entry (`tdh_mem_track`, `is_tlb_tracked`).
//!
//! The module counts the vCPUs inside the TD per epoch parity (TDCS `epoch_tracking`), and
//! TDH.VP.ENTER adds to the count under the epoch lock held shared. Here each vCPU records
//! the epoch it entered in on its own cache line instead, and TRACK — rare next to entries
//! and exits — scans them: the answers are the module's (a count of the vCPUs in an epoch is
//! zero exactly when no record names it), but a vCPU entering and leaving the TD touches no
//! line another vCPU writes, so simulated vCPUs on different cores do not stall each other
//! at every TDCALL.

use crossbeam_utils::CachePadded;
use shared_abi::TdxStatus;
use std::sync::atomic::{AtomicU64, Ordering::*};

/// "Outside the TD" in a vCPU's record (epochs start at 1).
const OUTSIDE: u64 = 0;

/// One vCPU's record (kept alone on its cache lines).
#[derive(Debug)]
struct VcpuEpoch {
    /// The epoch the vCPU entered in, or [`OUTSIDE`].
    inside: AtomicU64,
    /// The epoch of its last entry (to know whether its TLB must be flushed); only the vCPU
    /// itself writes it.
    last_entry: AtomicU64,
}

/// The TD epoch and where each vCPU is.
#[derive(Debug)]
pub struct EpochState {
    /// Read at every entry, written at every TRACK: alone on its cache lines.
    td_epoch: CachePadded<AtomicU64>,
    vcpus: Vec<CachePadded<VcpuEpoch>>,
}

impl EpochState {
    /// Epoch 1, no vCPU inside.
    pub fn new(vcpus: u32) -> EpochState {
        EpochState {
            td_epoch: CachePadded::new(AtomicU64::new(1)),
            vcpus: (0..vcpus)
                .map(|_| {
                    CachePadded::new(VcpuEpoch {
                        inside: AtomicU64::new(OUTSIDE),
                        last_entry: AtomicU64::new(1),
                    })
                })
                .collect(),
        }
    }

    /// The current TD epoch.
    pub(crate) fn td_epoch(&self) -> u64 {
        self.td_epoch.load(SeqCst)
    }

    /// True when some vCPU is inside the TD in `epoch` (the module's refcount is not zero).
    fn any_inside(&self, epoch: u64) -> bool {
        epoch != OUTSIDE && self.vcpus.iter().any(|v| v.inside.load(SeqCst) == epoch)
    }

    /// TDH.MEM.TRACK: bump the epoch unless vCPUs are still in the previous one. The module
    /// takes the epoch lock exclusively; a TRACK that loses the race to another answers
    /// OPERAND_BUSY, as a TRACK finding that lock taken does (tdxlab calls TRACK under the
    /// module's inner lock, so it does not happen here).
    pub(crate) fn track(&self) -> Result<(), TdxStatus> {
        let e = self.td_epoch();
        if self.any_inside(e - 1) {
            return Err(TdxStatus::PREVIOUS_TLB_EPOCH_BUSY);
        }
        self.td_epoch
            .compare_exchange(e, e + 1, SeqCst, SeqCst)
            .map(|_| ())
            .map_err(|_| TdxStatus::OPERAND_BUSY)
    }

    /// `is_tlb_tracked(bepoch)`: no vCPU can still translate through an entry blocked at
    /// `bepoch`.
    pub(crate) fn is_tracked(&self, bepoch: u64) -> bool {
        let td = self.td_epoch();
        bepoch + 1 < td || (bepoch + 1 == td && !self.any_inside(bepoch))
    }

    /// TD entry; returns true if the vCPU's TLB must be flushed (epoch changed).
    ///
    /// The record is written before the epoch is read again: a TRACK that scanned before the
    /// write advanced the epoch, which the second read sees, and the vCPU enters the new one.
    pub(crate) fn enter(&self, vcpu: u32) -> bool {
        let v = &self.vcpus[vcpu as usize];
        let mut e = self.td_epoch();
        loop {
            v.inside.store(e, SeqCst);
            let now = self.td_epoch();
            if now == e {
                break;
            }
            e = now;
        }
        v.last_entry.swap(e, Relaxed) != e
    }

    /// TD exit.
    pub fn exit(&self, vcpu: u32) {
        self.vcpus[vcpu as usize].inside.store(OUTSIDE, SeqCst);
    }

    /// One line for diagnostics: the epoch and where each vCPU is.
    pub fn describe(&self) -> String {
        let inside: Vec<String> = (self.vcpus.iter().enumerate())
            .filter_map(|(i, v)| match v.inside.load(SeqCst) {
                OUTSIDE => None,
                e => Some(format!("vCPU {i} in epoch {e}")),
            })
            .collect();
        format!(
            "TD epoch {}; {}",
            self.td_epoch(),
            if inside.is_empty() {
                "no vCPU inside".to_string()
            } else {
                inside.join(", ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TRACK waits for the vCPUs of the previous epoch to leave, not for those of the
    /// current one; an entry after a TRACK asks for a flush once.
    #[test]
    fn track_needs_the_previous_epoch_empty() {
        let ep = EpochState::new(2);
        assert!(!ep.enter(0), "first entry in epoch 1: nothing to flush");
        ep.track().unwrap(); // nobody in epoch 0
        assert!(!ep.is_tracked(1), "vCPU 0 is still inside epoch 1");
        assert_eq!(ep.track(), Err(TdxStatus::PREVIOUS_TLB_EPOCH_BUSY));
        assert!(ep.enter(1), "vCPU 1 enters epoch 2: its TLB is flushed");
        ep.exit(0);
        assert!(ep.is_tracked(1));
        ep.track().unwrap();
        assert_eq!(ep.td_epoch(), 3);
        assert!(!ep.is_tracked(2), "vCPU 1 is inside epoch 2");
        assert!(ep.describe().contains("vCPU 1 in epoch 2"));
    }

    /// Racing entries and TRACKs: whenever a TRACK succeeds, no vCPU is left inside the
    /// epoch before the one it closed.
    #[test]
    fn racing_entries_never_hide_from_track() {
        let ep = EpochState::new(2);
        std::thread::scope(|s| {
            for v in 0..2 {
                let ep = &ep;
                s.spawn(move || {
                    for _ in 0..20_000 {
                        ep.enter(v);
                        let mine = ep.vcpus[v as usize].inside.load(SeqCst);
                        assert!(mine + 1 >= ep.td_epoch(), "entered an epoch already closed");
                        ep.exit(v);
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..20_000 {
                    let _ = ep.track();
                }
            });
        });
    }
}
