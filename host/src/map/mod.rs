//! The visual map of a run (`--html FILE` on `sim` and `stress`): page states over time for
//! each vCPU's region, sampled from the models while the run goes (KVM's attributes and the
//! TDX module's S-EPT), with the conversions the VMM served counted per cell; `html` draws
//! it as one self-contained page.
//!
//! A region is cut into [`ROWS`] rows of adjacent pages and time into columns; a cell shows
//! the state most of its row's pages were in when the column was sampled (BLOCKED wins: it
//! is the rare, interesting one). A row of more than [`ROW_SAMPLES`] pages is judged by that
//! many pages spread over it, so that a sample of a large TD stays cheap, except that every
//! BLOCKED leaf is still seen. Past [`MAX_COLS`] columns, neighbours are merged, so a long
//! run stays small. Every conversion the VMM serves is counted once in its column's totals
//! (inside a region or not: those are the report's `conversions`), and in every cell it
//! touches.

mod html;

use crate::kvm::Kvm;
use crate::seam::TdxModule;
use shared_abi::convert::ConversionTarget;
use shared_abi::sept::{level_pages, SeptLevel, SeptState};
use std::sync::Mutex;
use std::time::Instant;

pub use html::render;

/// An S-EPT leaf as the module lists it.
type Leaf = (shared_abi::Gpa, SeptLevel, SeptState);

/// Rows per region.
pub const ROWS: usize = 32;
/// The most columns a map keeps.
pub const MAX_COLS: usize = 120;
/// The most pages of a row whose state is read per sample.
pub const ROW_SAMPLES: u64 = 64;

/// A cell's state (the legend's order).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum CellState {
    /// Private attribute, no S-EPT leaf: converted to private (or never accepted), not yet
    /// accepted.
    Free = 0,
    /// An S-EPT leaf AUGed, waiting for the guest's ACCEPT.
    Pending = 1,
    /// Private and accepted (MAPPED).
    Private = 2,
    /// Shared attribute.
    Shared = 3,
    /// An S-EPT leaf BLOCKED: being removed.
    Blocked = 4,
}

/// One sampled column.
#[derive(Clone, Debug)]
pub struct Column {
    /// When it was sampled, ms since the start.
    pub t_ms: f64,
    /// Per cell (region-major, then row): its state.
    pub states: Vec<CellState>,
    /// Per cell: conversions to shared and to private that touched its row in this column.
    pub conversions: Vec<(u32, u32)>,
    /// Conversions to shared and to private in this column, each counted once, wherever it
    /// was.
    pub totals: (u64, u64),
}

/// Records a run's map.
pub struct Recorder {
    /// Each vCPU region's GFNs `[start, end)`.
    regions: Vec<(u64, u64)>,
    start: Instant,
    /// The closed columns, and the conversion counts of the one being filled.
    inner: Mutex<(Vec<Column>, Counts)>,
}

/// The conversions of the column being filled: per cell, and in all.
#[derive(Clone, Debug, Default)]
struct Counts {
    cells: Vec<(u32, u32)>,
    totals: (u64, u64),
}

impl Counts {
    fn new(cells: usize) -> Counts {
        Counts {
            cells: vec![(0, 0); cells],
            totals: (0, 0),
        }
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorder({} regions)", self.regions.len())
    }
}

impl Recorder {
    /// A map over `regions` (GFN ranges, one per vCPU).
    pub fn new(regions: Vec<(u64, u64)>) -> Recorder {
        let cells = regions.len() * ROWS;
        Recorder {
            regions,
            start: Instant::now(),
            inner: Mutex::new((Vec::new(), Counts::new(cells))),
        }
    }

    /// The regions.
    pub fn regions(&self) -> &[(u64, u64)] {
        &self.regions
    }

    /// The cells `[start_gfn, start_gfn + npages)` touches.
    fn cells(&self, start: u64, npages: u64) -> impl Iterator<Item = usize> + '_ {
        let end = start + npages;
        self.regions
            .iter()
            .enumerate()
            .flat_map(move |(r, &(lo, hi))| {
                let per = (hi - lo).div_ceil(ROWS as u64).max(1);
                (0..ROWS).filter_map(move |row| {
                    let (a, b) = (lo + row as u64 * per, (lo + (row as u64 + 1) * per).min(hi));
                    (a < end && start < b).then_some(r * ROWS + row)
                })
            })
    }

    /// The VMM converted `[start_gfn, start_gfn + npages)`.
    pub fn conversion(&self, start_gfn: u64, npages: u64, to: ConversionTarget) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match to {
            ConversionTarget::Shared => g.1.totals.0 += 1,
            ConversionTarget::Private => g.1.totals.1 += 1,
        }
        for c in self.cells(start_gfn, npages) {
            match to {
                ConversionTarget::Shared => g.1.cells[c].0 += 1,
                ConversionTarget::Private => g.1.cells[c].1 += 1,
            }
        }
    }

    /// Sample every row's state now and close the column.
    pub fn sample(&self, kvm: &Kvm, seam: &TdxModule) {
        let states = self.states(kvm, seam);
        let t_ms = self.start.elapsed().as_secs_f64() * 1e3;
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let cells = g.1.cells.len();
        let counts = std::mem::replace(&mut g.1, Counts::new(cells));
        g.0.push(Column {
            t_ms,
            states,
            conversions: counts.cells,
            totals: counts.totals,
        });
        if g.0.len() > MAX_COLS {
            g.0 = merge_pairs(std::mem::take(&mut g.0));
        }
    }

    /// The columns so far.
    pub fn columns(&self) -> Vec<Column> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Every row's state, from the attributes and the S-EPT leaves of its sampled pages;
    /// a row with any BLOCKED leaf is BLOCKED.
    fn states(&self, kvm: &Kvm, seam: &TdxModule) -> Vec<CellState> {
        let attrs = kvm.attributes();
        let mut leaves = seam.leaves();
        leaves.sort_unstable_by_key(|(gpa, _, _)| gpa.0);
        let blocked = self.blocked_cells(&leaves);
        let mut out = Vec::with_capacity(self.regions.len() * ROWS);
        for &(lo, hi) in &self.regions {
            let per = (hi - lo).div_ceil(ROWS as u64).max(1);
            for row in 0..ROWS as u64 {
                let (a, b) = (lo + row * per, (lo + (row + 1) * per).min(hi));
                let pages: Vec<CellState> = sample_gfns(a, b)
                    .map(|g| match leaf_state(&leaves, g) {
                        Some(SeptState::Pending) => CellState::Pending,
                        Some(SeptState::Blocked) => CellState::Blocked,
                        Some(_) => CellState::Private,
                        None if attrs.get(g).is_private() => CellState::Free,
                        None => CellState::Shared,
                    })
                    .collect();
                out.push(match blocked.contains(&out.len()) {
                    true => CellState::Blocked,
                    false => dominant(&pages),
                });
            }
        }
        out
    }

    /// The cells a BLOCKED leaf lies in (sampling must not hide one).
    fn blocked_cells(&self, leaves: &[Leaf]) -> Vec<usize> {
        (leaves.iter())
            .filter(|(_, _, s)| *s == SeptState::Blocked)
            .flat_map(|(gpa, level, _)| self.cells(gpa.0 >> 12, level_pages(*level)))
            .collect()
    }
}

/// Up to [`ROW_SAMPLES`] GFNs spread evenly over `[a, b)` (all of them in a small row).
fn sample_gfns(a: u64, b: u64) -> impl Iterator<Item = u64> {
    let n = b.saturating_sub(a);
    let step = n.div_ceil(ROW_SAMPLES).max(1);
    (a..b).step_by(step as usize)
}

/// The state of the S-EPT leaf mapping `gfn`, if any (`leaves` sorted by GPA; leaves do not
/// overlap).
fn leaf_state(leaves: &[Leaf], gfn: u64) -> Option<SeptState> {
    let i = leaves.partition_point(|(gpa, _, _)| gpa.0 >> 12 <= gfn);
    let (gpa, level, state) = leaves.get(i.checked_sub(1)?)?;
    (gfn < (gpa.0 >> 12) + level_pages(*level)).then_some(*state)
}

/// The state most pages of a row are in (any BLOCKED page makes the row BLOCKED).
fn dominant(pages: &[CellState]) -> CellState {
    if pages.contains(&CellState::Blocked) {
        return CellState::Blocked;
    }
    let mut n = [0usize; 5];
    pages.iter().for_each(|s| n[*s as usize] += 1);
    let best = (0..5).max_by_key(|i| (n[*i], 5 - i)).unwrap_or(0);
    [
        CellState::Free,
        CellState::Pending,
        CellState::Private,
        CellState::Shared,
        CellState::Blocked,
    ][best]
}

/// Halve the columns: each pair becomes one, with the later state and both counts.
fn merge_pairs(cols: Vec<Column>) -> Vec<Column> {
    cols.chunks(2)
        .map(|pair| {
            let mut last = pair[pair.len() - 1].clone();
            if pair.len() == 2 {
                for (c, (s, p)) in last.conversions.iter_mut().zip(&pair[0].conversions) {
                    c.0 += s;
                    c.1 += p;
                }
                last.totals.0 += pair[0].totals.0;
                last.totals.1 += pair[0].totals.1;
            }
            last
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_take_the_dominant_state_and_blocked_wins() {
        use CellState::*;
        assert_eq!(dominant(&[Shared, Shared, Private]), Shared);
        assert_eq!(dominant(&[Shared, Private, Private, Blocked]), Blocked);
        assert_eq!(dominant(&[]), Free);
    }

    #[test]
    fn conversions_count_in_the_rows_they_touch_and_columns_merge() {
        let r = Recorder::new(vec![(0, 64), (64, 128)]);
        // 64 pages per region: two pages per row. Pages 2..6 are rows 1 and 2 of region 0.
        r.conversion(2, 4, ConversionTarget::Shared);
        r.conversion(64, 1, ConversionTarget::Private);
        let g = r.inner.lock().unwrap();
        let c = &g.1.cells;
        let touched: Vec<usize> = (0..c.len()).filter(|i| c[*i] != (0, 0)).collect();
        assert_eq!(touched, [1, 2, ROWS]);
        assert_eq!(c[ROWS], (0, 1));
        drop(g);
        let col = |t: f64, n: u32| Column {
            t_ms: t,
            states: vec![CellState::Free],
            conversions: vec![(n, 0)],
            totals: (n as u64, 1),
        };
        let merged = merge_pairs(vec![col(1.0, 1), col(2.0, 2), col(3.0, 4)]);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].t_ms, merged[0].conversions[0].0), (2.0, 3));
        assert_eq!(merged[0].totals, (3, 2));
        assert_eq!(merged[1].conversions[0].0, 4);
    }

    #[test]
    fn totals_count_each_conversion_once_wherever_it_is() {
        let r = Recorder::new(vec![(0, 64)]);
        r.conversion(0, 64, ConversionTarget::Shared); // every row of the region
        r.conversion(1000, 8, ConversionTarget::Private); // outside it
        let g = r.inner.lock().unwrap();
        assert_eq!(g.1.totals, (1, 1));
        assert_eq!(
            g.1.cells.iter().map(|c| c.0 + c.1).sum::<u32>(),
            ROWS as u32
        );
    }

    #[test]
    fn large_rows_are_sampled_but_a_blocked_leaf_is_never_missed() {
        let all: Vec<u64> = sample_gfns(0, 10).collect();
        assert_eq!(
            all,
            (0..10).collect::<Vec<_>>(),
            "a small row is read whole"
        );
        let big: Vec<u64> = sample_gfns(100, 100 + 8192).collect();
        assert!(big.len() as u64 <= ROW_SAMPLES && big.len() as u64 > ROW_SAMPLES / 2);
        assert!(big.iter().all(|g| (100..8292).contains(g)));
        let leaf = |gfn: u64, level, state| (shared_abi::Gpa(gfn << 12), level, state);
        // Sorted by GPA: a 2 MiB leaf at GFN 512, a 4 KiB BLOCKED one at GFN 1 (no sample
        // of row 0 in a 32 × 8192-page region lands there).
        let leaves = [
            leaf(1, 0, SeptState::Blocked),
            leaf(512, 1, SeptState::Mapped),
        ];
        assert_eq!(leaf_state(&leaves, 1), Some(SeptState::Blocked));
        assert_eq!(leaf_state(&leaves, 0), None);
        assert_eq!(leaf_state(&leaves, 700), Some(SeptState::Mapped));
        assert_eq!(leaf_state(&leaves, 1024), None);
        let r = Recorder::new(vec![(0, 32 * 8192)]);
        assert!(!sample_gfns(0, 8192).any(|g| g == 1));
        assert_eq!(r.blocked_cells(&leaves), [0]);
    }
}
