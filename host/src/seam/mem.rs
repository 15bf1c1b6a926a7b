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
    /// the page reachable there. Called while the module holds the entry (its lock, or the
    /// tree lock exclusively, or its inner lock, which BLOCK holds too), so no removal can
    /// slip in between the state change and the mapping. Concurrent calls name different
    /// pages. Models without a CPU mapping do nothing.
    fn map(&self, _gpa: Gpa, _hpa: Hpa, _pages: u64) -> Result<(), CpuMapError> {
        Ok(())
    }
    /// The S-EPT leaf for `pages` frames at `gpa` was blocked: the CPU may create no new
    /// translation through it. Where the CPU is a real KVM VM, take the pages away (which
    /// also flushes its TLBs, more than BLOCK alone does). Called under the module's inner
    /// lock.
    fn unmap(&self, _gpa: Gpa, _pages: u64) -> Result<(), CpuMapError> {
        Ok(())
    }
}

/// Which words of a 4 KiB frame an in-process memory keeps: all 512, or only the words a
/// simulated workload writes and checks. A frame is then a few words instead of 4 KiB:
/// zeroing, poisoning and copying it cost what the model's bookkeeping costs instead of
/// memory bandwidth (which, on a small host, is what limited several simulated vCPUs), and
/// what the checks see is the same, since they read nothing else.
#[derive(Clone)]
pub struct FrameWords {
    /// Slot of each word index, or [`Self::ABSENT`].
    slot: Box<[u16; 512]>,
    per_frame: u64,
}

impl FrameWords {
    const ABSENT: u16 = u16::MAX;

    /// Every word of the frame.
    pub fn full() -> FrameWords {
        FrameWords {
            slot: Box::new(std::array::from_fn(|i| i as u16)),
            per_frame: 512,
        }
    }

    /// Only `words` (indexes below 512).
    pub fn sampled(words: &[u64]) -> FrameWords {
        let mut slot = Box::new([Self::ABSENT; 512]);
        for (n, &w) in words.iter().enumerate() {
            slot[w as usize] = n as u16;
        }
        FrameWords {
            slot,
            per_frame: words.len() as u64,
        }
    }

    /// Words kept per frame.
    pub fn per_frame(&self) -> u64 {
        self.per_frame
    }

    /// The index, in a flat array of frames, of word `word` of frame `frame`. A word the
    /// layout does not keep is a bug of the simulator's workload.
    pub fn index(&self, frame: u64, word: u64) -> usize {
        let s = self.slot[word as usize];
        assert!(s != Self::ABSENT, "word {word} of a frame is not simulated");
        (frame * self.per_frame + s as u64) as usize
    }

    /// The words kept of `pages` frames from `frame`, as a range of the flat array.
    pub fn frames(&self, frame: u64, pages: u64) -> std::ops::Range<usize> {
        (frame * self.per_frame) as usize..((frame + pages) * self.per_frame) as usize
    }

    /// The word indexes kept, in slot order.
    pub fn kept(&self) -> impl Iterator<Item = u64> + '_ {
        (0..512u64).filter(|w| self.slot[*w as usize] != Self::ABSENT)
    }
}

/// In-process private memory for the simulator: frames of atomic words, so racing simulated
/// vCPUs (a stale TLB entry, say) are well-defined.
pub struct SimPrivateMem {
    words: Vec<AtomicU64>,
    layout: FrameWords,
}

impl SimPrivateMem {
    /// `pages` whole frames, initially holding a "never written" fill.
    pub fn new(pages: u64) -> SimPrivateMem {
        Self::with_layout(pages, FrameWords::full())
    }

    /// `pages` frames keeping the words of `layout`.
    pub fn with_layout(pages: u64, layout: FrameWords) -> SimPrivateMem {
        SimPrivateMem {
            words: (0..pages * layout.per_frame())
                .map(|_| AtomicU64::new(0))
                .collect(),
            layout,
        }
    }
}

impl PrivateMem for SimPrivateMem {
    fn zero(&self, hpa: Hpa, pages: u64) {
        for w in &self.words[self.layout.frames(hpa, pages)] {
            w.store(0, Relaxed);
        }
    }
    fn read(&self, hpa: Hpa, offset: u64) -> u64 {
        self.words[self.layout.index(hpa, offset / 8)].load(Relaxed)
    }
    fn write(&self, hpa: Hpa, offset: u64, v: u64) {
        self.words[self.layout.index(hpa, offset / 8)].store(v, Relaxed)
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
