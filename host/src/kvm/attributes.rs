//! Per-GFN memory attributes (KVM keeps them in an xarray; this is an interval map, which
//! stores the same function gfn → attributes in space proportional to the number of runs).

use shared_abi::convert::MemoryAttributes;
use std::collections::BTreeMap;

/// gfn → attributes, as maximal runs `[start, end)`.
#[derive(Clone, Debug)]
pub struct Attributes {
    runs: BTreeMap<u64, (u64, MemoryAttributes)>,
    limit: u64,
}

impl Attributes {
    /// `[0, limit)` all set to `init`.
    pub fn new(limit: u64, init: MemoryAttributes) -> Attributes {
        let mut runs = BTreeMap::new();
        if limit > 0 {
            runs.insert(0, (limit, init));
        }
        Attributes { runs, limit }
    }
    /// GFNs covered.
    pub fn limit(&self) -> u64 {
        self.limit
    }
    /// The attributes of `gfn` (shared outside the covered range).
    pub fn get(&self, gfn: u64) -> MemoryAttributes {
        match self.runs.range(..=gfn).next_back() {
            Some((_, &(end, a))) if gfn < end => a,
            _ => MemoryAttributes::SHARED,
        }
    }
    /// True when every GFN of `[start, end)` has `attrs` (`kvm_range_has_memory_attributes`).
    pub fn range_has(&self, start: u64, end: u64, attrs: MemoryAttributes) -> bool {
        let mut at = start;
        while at < end {
            match self.runs.range(..=at).next_back() {
                Some((_, &(e, a))) if at < e && a == attrs => at = e,
                _ => return false,
            }
        }
        true
    }
    /// Set `[start, end)` (clamped to the covered range) to `attrs`.
    pub fn set(&mut self, start: u64, end: u64, attrs: MemoryAttributes) {
        let end = end.min(self.limit);
        if start >= end {
            return;
        }
        // Split the runs that straddle the edges, then replace everything in between.
        for edge in [start, end] {
            if let Some((&s, &(e, a))) = self.runs.range(..edge).next_back() {
                if e > edge {
                    self.runs.insert(s, (edge, a));
                    self.runs.insert(edge, (e, a));
                }
            }
        }
        let inside: Vec<u64> = self.runs.range(start..end).map(|(s, _)| *s).collect();
        for s in inside {
            self.runs.remove(&s);
        }
        self.runs.insert(start, (end, attrs));
        // Merge with equal neighbours so the map stays minimal.
        if let Some((&s, &(e, a))) = self.runs.range(..start).next_back() {
            if e == start && a == attrs {
                self.runs.remove(&start);
                self.runs.insert(s, (end, a));
            }
        }
        let first = self
            .runs
            .range(..=start)
            .next_back()
            .map(|(s, _)| *s)
            .unwrap_or(start);
        if let Some(&(ne, na)) = self.runs.get(&end) {
            if na == attrs {
                self.runs.remove(&end);
                self.runs.get_mut(&first).expect("run exists").0 = ne;
            }
        }
    }
    /// The maximal runs `(start, end, attributes)`, in GFN order.
    pub(crate) fn iter_runs(&self) -> impl Iterator<Item = (u64, u64, MemoryAttributes)> + '_ {
        self.runs.iter().map(|(&s, &(e, a))| (s, e, a))
    }
    /// Number of runs (for tests).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}
