//! The visual map of a run (`--html FILE` on `sim` and `stress`): page states over time for
//! each vCPU's region, sampled from the models while the run goes (KVM's attributes and the
//! TDX module's S-EPT), with the conversions the VMM served counted per cell; `html` draws
//! it as one self-contained page.
//!
//! A region is cut into [`ROWS`] rows of adjacent pages and time into columns; a cell shows
//! the state most of its row's pages were in when the column was sampled (BLOCKED wins: it
//! is the rare, interesting one). Past [`MAX_COLS`] columns, neighbours are merged, so a
//! long run stays small.

mod html;

use crate::kvm::Kvm;
use crate::seam::TdxModule;
use shared_abi::convert::ConversionTarget;
use shared_abi::sept::{level_pages, SeptState};
use std::sync::Mutex;
use std::time::Instant;

pub use html::render;

/// Rows per region.
pub const ROWS: usize = 32;
/// The most columns a map keeps.
pub const MAX_COLS: usize = 120;

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
}

/// Records a run's map.
pub struct Recorder {
    /// Each vCPU region's GFNs `[start, end)`.
    regions: Vec<(u64, u64)>,
    start: Instant,
    /// The closed columns, and the conversion counts of the one being filled.
    inner: Mutex<(Vec<Column>, Counts)>,
}

/// Per cell: conversions to shared and to private.
type Counts = Vec<(u32, u32)>;

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
            inner: Mutex::new((Vec::new(), vec![(0, 0); cells])),
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
        for c in self.cells(start_gfn, npages) {
            match to {
                ConversionTarget::Shared => g.1[c].0 += 1,
                ConversionTarget::Private => g.1[c].1 += 1,
            }
        }
    }

    /// Sample every row's state now and close the column.
    pub fn sample(&self, kvm: &Kvm, seam: &TdxModule) {
        let states = self.states(kvm, seam);
        let t_ms = self.start.elapsed().as_secs_f64() * 1e3;
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let cells = g.1.len();
        let conversions = std::mem::replace(&mut g.1, vec![(0, 0); cells]);
        g.0.push(Column {
            t_ms,
            states,
            conversions,
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

    /// Every row's state: per GFN from the attributes and the S-EPT leaves, then per row.
    fn states(&self, kvm: &Kvm, seam: &TdxModule) -> Vec<CellState> {
        let attrs = kvm.attributes();
        let leaves = seam.leaves();
        let mut out = Vec::with_capacity(self.regions.len() * ROWS);
        for &(lo, hi) in &self.regions {
            let mut page: Vec<CellState> = (lo..hi)
                .map(|g| match attrs.get(g).is_private() {
                    true => CellState::Free,
                    false => CellState::Shared,
                })
                .collect();
            for (gpa, level, state) in &leaves {
                let first = gpa.0 >> 12;
                for g in first.max(lo)..(first + level_pages(*level)).min(hi) {
                    page[(g - lo) as usize] = match state {
                        SeptState::Pending => CellState::Pending,
                        SeptState::Blocked => CellState::Blocked,
                        _ => CellState::Private,
                    };
                }
            }
            let per = page.len().div_ceil(ROWS).max(1);
            for row in 0..ROWS {
                let chunk = page.get(row * per..((row + 1) * per).min(page.len()));
                out.push(dominant(chunk.unwrap_or(&[])));
            }
        }
        out
    }
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
        let touched: Vec<usize> = (0..g.1.len()).filter(|c| g.1[*c] != (0, 0)).collect();
        assert_eq!(touched, [1, 2, ROWS]);
        assert_eq!(g.1[ROWS], (0, 1));
        drop(g);
        let col = |t: f64, n: u32| Column {
            t_ms: t,
            states: vec![CellState::Free],
            conversions: vec![(n, 0)],
        };
        let merged = merge_pairs(vec![col(1.0, 1), col(2.0, 2), col(3.0, 4)]);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].t_ms, merged[0].conversions[0].0), (2.0, 3));
        assert_eq!(merged[1].conversions[0].0, 4);
    }
}
