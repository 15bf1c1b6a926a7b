//! Private memory: the frames the TDX module zeroes on accept and the host clears on removal.

use super::Hpa;
use shared_abi::Gpa;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The CPU's mapping of private pages could not be changed (a failed system call where the
/// CPU is a real KVM VM); the implementation's error is the source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CpuMapError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Access to the private backing, as the module and the CPU see it.
pub trait PrivateMem: Send + Sync {
    /// Zero `pages` 4K frames starting at `hpa`.
    fn zero(&self, hpa: Hpa, pages: u64);
    /// The frames go back to the host, cleared (KVM's `tdx_clear_page` after a REMOVE): by
    /// default zeroed in place; a backing that can drop them (a memfd's hole) does, which
    /// reads as zeroes too and costs no page faults.
    fn release(&self, hpa: Hpa, pages: u64) {
        self.zero(hpa, pages)
    }
    /// Read the word at `offset` (bytes, 8-aligned) of frame `hpa` (the CPU's access).
    fn read(&self, hpa: Hpa, offset: u64) -> u64;
    /// Write the word at `offset` of frame `hpa` (the CPU's access).
    fn write(&self, hpa: Hpa, offset: u64, v: u64);
    /// The S-EPT now lets the guest use `pages` frames from `hpa` at `gpa` (PAGE.ADD, or an
    /// ACCEPT that made the leaf MAPPED): where the CPU is emulated by a real KVM VM, make
    /// the page reachable there. Called under the module's lock, so no removal can slip in
    /// between the state change and the mapping. Models without a CPU mapping do nothing.
    fn map(&self, _gpa: Gpa, _hpa: Hpa, _pages: u64) -> Result<(), CpuMapError> {
        Ok(())
    }
    /// The S-EPT leaf for `pages` frames at `gpa` was blocked: the CPU may create no new
    /// translation through it. Where the CPU is a real KVM VM, take the pages away (which
    /// also flushes its TLBs, more than BLOCK alone does). Called under the module's lock.
    fn unmap(&self, _gpa: Gpa, _pages: u64) -> Result<(), CpuMapError> {
        Ok(())
    }
}

/// In-process private memory for the simulator: frames of atomic words, so racing simulated
/// vCPUs (a stale TLB entry, say) are well-defined.
pub struct SimPrivateMem {
    words: Vec<AtomicU64>,
}

impl SimPrivateMem {
    /// `pages` frames, initially holding a "never written" fill.
    pub fn new(pages: u64) -> SimPrivateMem {
        SimPrivateMem {
            words: (0..pages * 512).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl PrivateMem for SimPrivateMem {
    fn zero(&self, hpa: Hpa, pages: u64) {
        let start = (hpa * 512) as usize;
        for w in &self.words[start..start + (pages * 512) as usize] {
            w.store(0, Relaxed);
        }
    }
    fn read(&self, hpa: Hpa, offset: u64) -> u64 {
        self.words[(hpa * 512 + offset / 8) as usize].load(Relaxed)
    }
    fn write(&self, hpa: Hpa, offset: u64, v: u64) {
        self.words[(hpa * 512 + offset / 8) as usize].store(v, Relaxed)
    }
}

/// Private memory that stores nothing: for model-only runs (the zap table, benchmarks of
/// 64 GiB guests) where no guest ever reads a page.
#[derive(Default)]
pub struct NullPrivateMem;

impl PrivateMem for NullPrivateMem {
    fn zero(&self, _: Hpa, _: u64) {}
    fn read(&self, _: Hpa, _: u64) -> u64 {
        0
    }
    fn write(&self, _: Hpa, _: u64, _: u64) {}
}
