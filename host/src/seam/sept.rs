//! The Secure EPT: real 4-level tables (PML4 → PDPT → PD → PT) whose entries carry the module's
//! states. Table pages live in an arena; a non-leaf entry's `hpa` is its child's arena index.

use super::Hpa;
use shared_abi::sept::{SeptLevel, SeptState};
use shared_abi::{Gpa, TdxStatus};

/// One S-EPT entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SeptEntry {
    /// The module's state.
    pub state: SeptState,
    /// Leaf: the first 4K frame. Non-leaf: the child table.
    pub hpa: Hpa,
    /// TD epoch when the entry was blocked.
    pub bepoch: u64,
}

impl SeptEntry {
    /// A free entry.
    pub(crate) const FREE: SeptEntry = SeptEntry {
        state: SeptState::Free,
        hpa: 0,
        bepoch: 0,
    };
    /// A leaf in `state` at `hpa`.
    pub const fn leaf(state: SeptState, hpa: Hpa) -> SeptEntry {
        SeptEntry {
            state,
            hpa,
            bepoch: 0,
        }
    }
}

/// Where a walk for a GPA ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Walk {
    /// A leaf (at the target level or above it).
    Leaf {
        /// The entry.
        entry: SeptEntry,
        /// Its level.
        level: SeptLevel,
    },
    /// The target level holds a non-leaf entry.
    NonLeaf {
        /// The entry.
        entry: SeptEntry,
        /// Its level.
        level: SeptLevel,
    },
    /// A FREE entry at `level` (a missing table if above the target).
    Free {
        /// Where.
        level: SeptLevel,
    },
}

type Table = Box<[SeptEntry; 512]>;

/// The S-EPT of one TD.
pub struct Sept {
    tables: Vec<Option<Table>>,
    free_slots: Vec<usize>,
}

const ROOT_LEVEL: SeptLevel = 3;

fn index(gpa: Gpa, level: SeptLevel) -> usize {
    ((gpa.0 >> (12 + 9 * level as u32)) & 511) as usize
}

impl Default for Sept {
    fn default() -> Self {
        Self::new()
    }
}

impl Sept {
    /// An S-EPT with only its root (PML4) page.
    pub fn new() -> Sept {
        Sept {
            tables: vec![Some(Box::new([SeptEntry::FREE; 512]))],
            free_slots: Vec::new(),
        }
    }

    fn table(&self, t: usize) -> &Table {
        self.tables[t].as_ref().expect("linked table exists")
    }

    /// The (table, index) holding the entry for `gpa` at `level`, if the walk reaches it.
    fn locate(&self, gpa: Gpa, level: SeptLevel) -> Result<(usize, usize), Walk> {
        let mut t = 0;
        let mut l = ROOT_LEVEL;
        loop {
            let i = index(gpa, l);
            if l == level {
                return Ok((t, i));
            }
            let e = self.table(t)[i];
            match e.state {
                SeptState::NlMapped | SeptState::NlBlocked => t = e.hpa as usize,
                SeptState::Free => return Err(Walk::Free { level: l }),
                _ => return Err(Walk::Leaf { entry: e, level: l }),
            }
            l -= 1;
        }
    }

    /// Walk towards `target` the way the module does.
    pub(crate) fn walk(&self, gpa: Gpa, target: SeptLevel) -> Walk {
        match self.locate(gpa, target) {
            Err(w) => w,
            Ok((t, i)) => {
                let e = self.table(t)[i];
                match e.state {
                    SeptState::Free => Walk::Free { level: target },
                    s if s.is_non_leaf() => Walk::NonLeaf {
                        entry: e,
                        level: target,
                    },
                    _ => Walk::Leaf {
                        entry: e,
                        level: target,
                    },
                }
            }
        }
    }

    /// The entry at exactly `level`, or EPT_WALK_FAILED if the walk stops above it.
    pub(crate) fn entry_at(&self, gpa: Gpa, level: SeptLevel) -> Result<SeptEntry, TdxStatus> {
        match self.locate(gpa, level) {
            Ok((t, i)) => Ok(self.table(t)[i]),
            Err(
                Walk::Free { level: l }
                | Walk::Leaf { level: l, .. }
                | Walk::NonLeaf { level: l, .. },
            ) => Err(TdxStatus::EPT_WALK_FAILED.with_details(l as u32)),
        }
    }

    /// The entry at `level`; the walk must reach it.
    pub(crate) fn entry_mut(&mut self, gpa: Gpa, level: SeptLevel) -> &mut SeptEntry {
        let (t, i) = self.locate(gpa, level).expect("caller checked the walk");
        &mut self.tables[t].as_mut().expect("linked")[i]
    }

    fn alloc(&mut self, fill: [SeptEntry; 512]) -> usize {
        match self.free_slots.pop() {
            Some(s) => {
                self.tables[s] = Some(Box::new(fill));
                s
            }
            None => {
                self.tables.push(Some(Box::new(fill)));
                self.tables.len() - 1
            }
        }
    }

    /// Link a fresh all-FREE table under the (FREE) entry at `level`.
    pub(crate) fn link_table(&mut self, gpa: Gpa, level: SeptLevel) {
        let t = self.alloc([SeptEntry::FREE; 512]);
        *self.entry_mut(gpa, level) = SeptEntry {
            state: SeptState::NlMapped,
            hpa: t as Hpa,
            bepoch: 0,
        };
    }

    /// True when every entry of the table under `level` is FREE.
    pub(crate) fn child_table_is_free(&self, gpa: Gpa, level: SeptLevel) -> bool {
        let (t, i) = self.locate(gpa, level).expect("caller checked the walk");
        let child = self.table(t)[i].hpa as usize;
        self.table(child).iter().all(|e| e.state == SeptState::Free)
    }

    /// Unlink and free the table under `level`; the entry becomes FREE.
    pub(crate) fn unlink_table(&mut self, gpa: Gpa, level: SeptLevel) {
        let e = self.entry_mut(gpa, level);
        let child = e.hpa as usize;
        *e = SeptEntry::FREE;
        self.tables[child] = None;
        self.free_slots.push(child);
    }

    /// Replace the 2M leaf at `gpa` with a table of 512 4K leaves in `child` state.
    pub(crate) fn demote(&mut self, gpa: Gpa, hpa: Hpa, child: SeptState) {
        let mut fill = [SeptEntry::FREE; 512];
        for (i, e) in fill.iter_mut().enumerate() {
            *e = SeptEntry::leaf(child, hpa + i as u64);
        }
        let t = self.alloc(fill);
        *self.entry_mut(gpa, 1) = SeptEntry {
            state: SeptState::NlMapped,
            hpa: t as Hpa,
            bepoch: 0,
        };
    }

    /// Every leaf as (gpa, level, state).
    pub fn leaves(&self) -> Vec<(Gpa, SeptLevel, SeptState)> {
        let mut out = Vec::new();
        self.collect(0, ROOT_LEVEL, 0, &mut out);
        out
    }

    fn collect(
        &self,
        t: usize,
        level: SeptLevel,
        base: u64,
        out: &mut Vec<(Gpa, SeptLevel, SeptState)>,
    ) {
        for (i, e) in self.table(t).iter().enumerate() {
            let gpa = base + ((i as u64) << (12 + 9 * level as u32));
            match e.state {
                SeptState::Free => {}
                s if s.is_non_leaf() => self.collect(e.hpa as usize, level - 1, gpa, out),
                s => out.push((Gpa(gpa), level, s)),
            }
        }
    }
}
