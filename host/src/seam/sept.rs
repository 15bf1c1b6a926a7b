//! The Secure EPT: real 4-level tables (PML4 → PDPT → PD → PT) whose entries carry the module's
//! states. Table pages live in an arena; a non-leaf entry's `hpa` is its child's arena index.
//!
//! Each entry is one atomic word, as the module's S-EPT entries are 64-bit words it updates
//! with a single cmpxchg: the walk reads without a lock, and an operation that changes one
//! entry under the tree lock held shared does it by compare-and-swap, taking the entry's
//! lock bit where it has work to do between the check and the new state (the module's
//! TDEL, bit 11 of a real entry). Linking and unlinking tables changes the arena itself and
//! needs the tree lock held exclusively (`&mut Sept`).

use super::Hpa;
use shared_abi::sept::{SeptLevel, SeptState};
use shared_abi::{Gpa, TdxStatus};
use std::sync::atomic::{AtomicU64, Ordering::*};

/// One S-EPT entry, as read.
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

/// Why a compare-and-swap of an entry did not happen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CasError {
    /// Another operation holds the entry's lock (the module answers OPERAND_BUSY).
    Locked,
    /// The entry changed since it was read: read it again.
    Changed,
}

/// The word of an entry: state encoding in bits 0..7, the lock in bit 8, the frame from
/// bit 12.
mod word {
    use super::{Hpa, SeptState};

    pub(super) const LOCK: u64 = 1 << 8;
    const STATE_MASK: u64 = 0x7F;

    /// The state of each 7-bit encoding (unused encodings read as FREE; none is stored).
    const DECODE: [SeptState; 128] = {
        let mut t = [SeptState::Free; 128];
        let mut i = 0;
        while i < SeptState::ALL.len() {
            t[SeptState::ALL[i].encoding() as usize] = SeptState::ALL[i];
            i += 1;
        }
        t
    };

    pub(super) const fn pack(state: SeptState, hpa: Hpa) -> u64 {
        hpa << 12 | state.encoding() as u64
    }
    pub(super) const fn state(w: u64) -> SeptState {
        DECODE[(w & STATE_MASK) as usize]
    }
    pub(super) const fn hpa(w: u64) -> Hpa {
        w >> 12
    }
}

/// One table page: 512 entry words and, beside them, each entry's BEPOCH.
struct Table {
    words: [AtomicU64; 512],
    bepoch: [AtomicU64; 512],
}

impl Table {
    fn new(fill: impl Fn(usize) -> SeptEntry) -> Box<Table> {
        Box::new(Table {
            words: std::array::from_fn(|i| {
                let e = fill(i);
                AtomicU64::new(word::pack(e.state, e.hpa))
            }),
            bepoch: std::array::from_fn(|_| AtomicU64::new(0)),
        })
    }
    fn read(&self, i: usize) -> SeptEntry {
        let w = self.words[i].load(Acquire);
        SeptEntry {
            state: word::state(w),
            hpa: word::hpa(w),
            bepoch: self.bepoch[i].load(Acquire),
        }
    }
}

/// One entry's slot, found by one walk: read it, and change it by compare-and-swap, by
/// taking its lock, or by storing (see [`Sept`]).
#[derive(Clone, Copy)]
pub(crate) struct EntryRef<'a> {
    table: &'a Table,
    i: usize,
}

impl EntryRef<'_> {
    /// The entry now.
    pub(crate) fn read(&self) -> SeptEntry {
        self.table.read(self.i)
    }

    /// Replace the entry with `new` if it still is `old`, unlocked; BEPOCH stays (an
    /// operation that sets it locks the entry and [`Self::store`]s).
    pub(crate) fn cas(&self, old: SeptEntry, new: SeptEntry) -> Result<(), CasError> {
        self.exchange(
            word::pack(old.state, old.hpa),
            word::pack(new.state, new.hpa),
        )
    }

    /// Take the entry's lock if it still is `old` (the module's TDEL).
    pub(crate) fn lock(&self, old: SeptEntry) -> Result<(), CasError> {
        let o = word::pack(old.state, old.hpa);
        self.exchange(o, o | word::LOCK)
    }

    /// The word from `old` (unlocked) to `new`, or why not.
    fn exchange(&self, old: u64, new: u64) -> Result<(), CasError> {
        match self.table.words[self.i].compare_exchange(old, new, AcqRel, Acquire) {
            Ok(_) => Ok(()),
            Err(now) if now & word::LOCK != 0 => Err(CasError::Locked),
            Err(_) => Err(CasError::Changed),
        }
    }

    /// Write `new`, dropping the entry's lock: the end of an operation that took it with
    /// [`Self::lock`], or one that holds the tree lock exclusively. BEPOCH is written first:
    /// whoever sees the new state sees the epoch that goes with it.
    pub(crate) fn store(&self, new: SeptEntry) {
        self.table.bepoch[self.i].store(new.bepoch, Release);
        self.table.words[self.i].store(word::pack(new.state, new.hpa), Release);
    }
}

/// The S-EPT of one TD.
pub struct Sept {
    tables: Vec<Option<Box<Table>>>,
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
            tables: vec![Some(Table::new(|_| SeptEntry::FREE))],
            free_slots: Vec::new(),
        }
    }

    fn table(&self, t: usize) -> &Table {
        self.tables[t].as_deref().expect("linked table exists")
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
            let e = self.table(t).read(i);
            match e.state {
                SeptState::NlMapped | SeptState::NlBlocked => t = e.hpa as usize,
                SeptState::Free => return Err(Walk::Free { level: l }),
                _ => return Err(Walk::Leaf { entry: e, level: l }),
            }
            l -= 1;
        }
    }

    /// The entry slot at `level`; the walk must reach it (the caller checked, and holds the
    /// tree lock, so no table is unlinked meanwhile).
    pub(crate) fn slot(&self, gpa: Gpa, level: SeptLevel) -> EntryRef<'_> {
        self.entry(gpa, level).expect("caller checked the walk")
    }

    /// The slot of the entry at exactly `level`, or EPT_WALK_FAILED if the walk stops above
    /// it.
    pub(crate) fn entry(&self, gpa: Gpa, level: SeptLevel) -> Result<EntryRef<'_>, TdxStatus> {
        match self.locate(gpa, level) {
            Ok((t, i)) => Ok(EntryRef {
                table: self.table(t),
                i,
            }),
            Err(
                Walk::Free { level: l }
                | Walk::Leaf { level: l, .. }
                | Walk::NonLeaf { level: l, .. },
            ) => Err(TdxStatus::EPT_WALK_FAILED.with_details(l as u32)),
        }
    }

    /// Walk towards `target` the way the module does.
    pub(crate) fn walk(&self, gpa: Gpa, target: SeptLevel) -> Walk {
        match self.locate(gpa, target) {
            Err(w) => w,
            Ok((t, i)) => {
                let e = self.table(t).read(i);
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
        self.entry(gpa, level).map(|e| e.read())
    }

    /// Write `new` into the entry at `level` (see [`EntryRef::store`]); the walk must reach
    /// it.
    pub(crate) fn store(&self, gpa: Gpa, level: SeptLevel, new: SeptEntry) {
        self.slot(gpa, level).store(new);
    }

    fn alloc(&mut self, table: Box<Table>) -> usize {
        match self.free_slots.pop() {
            Some(s) => {
                self.tables[s] = Some(table);
                s
            }
            None => {
                self.tables.push(Some(table));
                self.tables.len() - 1
            }
        }
    }

    /// Link a fresh all-FREE table under the (FREE) entry at `level`.
    pub(crate) fn link_table(&mut self, gpa: Gpa, level: SeptLevel) {
        let t = self.alloc(Table::new(|_| SeptEntry::FREE));
        self.store(gpa, level, SeptEntry::leaf(SeptState::NlMapped, t as Hpa));
    }

    /// True when every entry of the table under `level` is FREE.
    pub(crate) fn child_table_is_free(&self, gpa: Gpa, level: SeptLevel) -> bool {
        let child = self.table(self.slot(gpa, level).read().hpa as usize);
        (0..512).all(|j| child.read(j).state == SeptState::Free)
    }

    /// Unlink and free the table under `level`; the entry becomes FREE.
    pub(crate) fn unlink_table(&mut self, gpa: Gpa, level: SeptLevel) {
        let slot = self.slot(gpa, level);
        let child = slot.read().hpa as usize;
        slot.store(SeptEntry::FREE);
        self.tables[child] = None;
        self.free_slots.push(child);
    }

    /// Replace the 2M leaf at `gpa` with a table of 512 4K leaves in `child` state.
    pub(crate) fn demote(&mut self, gpa: Gpa, hpa: Hpa, child: SeptState) {
        let t = self.alloc(Table::new(|i| SeptEntry::leaf(child, hpa + i as u64)));
        self.store(gpa, 1, SeptEntry::leaf(SeptState::NlMapped, t as Hpa));
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
        for i in 0..512 {
            let e = self.table(t).read(i);
            let gpa = base + ((i as u64) << (12 + 9 * level as u32));
            match e.state {
                SeptState::Free => {}
                s if s.is_non_leaf() => self.collect(e.hpa as usize, level - 1, gpa, out),
                s => out.push((Gpa(gpa), level, s)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state survives the entry word, with frames up to 52 bits.
    #[test]
    fn entry_words_round_trip() {
        for &s in SeptState::ALL {
            for hpa in [0, 1, (1 << 52) - 1] {
                let w = word::pack(s, hpa);
                assert_eq!((word::state(w), word::hpa(w)), (s, hpa));
                assert_eq!(w & word::LOCK, 0);
            }
        }
    }

    /// A locked entry refuses other changes until its owner stores the result; a stale
    /// expectation is told apart from a lock.
    #[test]
    fn the_entry_lock_excludes_other_changes() {
        let mut s = Sept::new();
        for level in [3, 2, 1] {
            s.link_table(Gpa(0), level);
        }
        let g = Gpa(0x3000);
        let e = s.entry(g, 0).unwrap();
        let pending = SeptEntry::leaf(SeptState::Pending, 7);
        e.cas(SeptEntry::FREE, pending).unwrap();
        e.lock(pending).unwrap();
        let blocked = SeptEntry::leaf(SeptState::PendingBlocked, 7);
        assert_eq!(e.cas(pending, blocked), Err(CasError::Locked));
        assert_eq!(e.lock(pending), Err(CasError::Locked));
        assert_eq!(s.entry_at(g, 0).unwrap().state, SeptState::Pending);
        let mapped = SeptEntry::leaf(SeptState::Mapped, 7);
        e.store(mapped);
        assert_eq!(e.cas(pending, blocked), Err(CasError::Changed));
        assert_eq!(
            s.walk(g, 0),
            Walk::Leaf {
                entry: mapped,
                level: 0
            }
        );
    }
}
