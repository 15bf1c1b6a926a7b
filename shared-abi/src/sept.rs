//! Secure-EPT entry states (TDX module 1.5 `sept_state_lookup`) and levels.

/// An S-EPT level: 0 = 4K leaf, 1 = 2M, 2 = 1G, 3 = PML4, 4 = PML5 (Linux pg_level − 1).
pub type SeptLevel = u8;

/// 4 KiB pages an entry at `level` maps: 1 (4K), 512 (2M), 262,144 (1G) — what the kernel
/// writes `KVM_PAGES_PER_HPAGE(level)`.
pub const fn level_pages(level: SeptLevel) -> u64 {
    1 << (9 * level as u32)
}

/// Bytes an entry at `level` maps (`KVM_HPAGE_SIZE(level)`).
pub const fn level_bytes(level: SeptLevel) -> u64 {
    4096 << (9 * level as u32)
}

/// Bit 11 of an S-EPT entry: the entry lock (TDEL).
pub const ENTRY_LOCK_BIT: u32 = 11;
/// Bit 52 of an S-EPT entry: host priority.
pub const HOST_PRIORITY_BIT: u32 = 52;
/// Bit 63 of an S-EPT entry: suppress #VE; FREE entries are written as FREE | SVE.
pub const SUPPRESS_VE_BIT: u32 = 63;

macro_rules! states {
    ($($(#[$d:meta])* $name:ident = ($enc:expr, $pub_:expr, $text:literal);)*) => {
        /// The state of one S-EPT entry, as the TDX module tracks it.
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
        pub enum SeptState {
            $($(#[$d])* $name,)*
        }
        impl SeptState {
            /// Every state.
            pub const ALL: &'static [SeptState] = &[$(SeptState::$name,)*];
            /// The module's internal 7-bit encoding (D, TDEX, TDBW, TDB, TDP, IPAT, PS bits).
            pub const fn encoding(self) -> u8 {
                match self { $(SeptState::$name => $enc,)* }
            }
            /// The public value reported in RDX[15:8] of S-EPT error extended info.
            pub const fn public_value(self) -> u8 {
                match self { $(SeptState::$name => $pub_,)* }
            }
            /// The module's name, e.g. "PENDING_BLOCKED".
            pub const fn name(self) -> &'static str {
                match self { $(SeptState::$name => $text,)* }
            }
        }
    };
}

states! {
    /// Not mapped.
    Free = (0x0E, 0, "FREE");
    /// Import in progress only.
    Removed = (0x0C, 5, "REMOVED");
    /// Non-leaf, present.
    NlMapped = (0x00, 0x84, "NL_MAPPED");
    /// Non-leaf, blocked.
    NlBlocked = (0x08, 0x81, "NL_BLOCKED");
    /// Leaf, accepted and accessible.
    Mapped = (0x60, 4, "MAPPED");
    /// Leaf, blocked (RWX cleared).
    Blocked = (0x68, 1, "BLOCKED");
    /// Leaf, added by AUG, not yet accepted.
    Pending = (0x70, 2, "PENDING");
    /// Leaf, pending and blocked.
    PendingBlocked = (0x78, 3, "PENDING_BLOCKED");
    /// Leaf, write-blocked (migration).
    BlockedW = (0x64, 8, "BLOCKEDW");
    /// Leaf, pending and write-blocked (migration).
    PendingBlockedW = (0x74, 16, "PENDING_BLOCKEDW");
    /// Migration state.
    ExportedBlockedW = (0x66, 9, "EXPORTED_BLOCKEDW");
    /// Migration state.
    ExportedDirty = (0x63, 11, "EXPORTED_DIRTY");
    /// Migration state.
    ExportedDirtyBlockedW = (0x67, 12, "EXPORTED_DIRTY_BLOCKEDW");
    /// Migration state.
    PendingExportedBlockedW = (0x76, 17, "PENDING_EXPORTED_BLOCKEDW");
    /// Migration state.
    PendingExportedDirty = (0x73, 19, "PENDING_EXPORTED_DIRTY");
    /// Migration state.
    PendingExportedDirtyBlockedW = (0x77, 20, "PENDING_EXPORTED_DIRTY_BLOCKEDW");
}

impl SeptState {
    /// True for leaf states (PS/leaf bit set in the encoding).
    pub const fn is_leaf(self) -> bool {
        self.encoding() & 0x40 != 0
    }
    /// True for the non-leaf states.
    pub const fn is_non_leaf(self) -> bool {
        matches!(self, SeptState::NlMapped | SeptState::NlBlocked)
    }
    /// Decode the public value.
    pub fn from_public_value(v: u8) -> Option<SeptState> {
        Self::ALL.iter().copied().find(|s| s.public_value() == v)
    }
}

/// S-EPT error extended info in RDX: level (2:0) | public state (15:8) | VM (17:16).
pub const fn error_info_rdx(level: SeptLevel, state: SeptState, vm: u8) -> u64 {
    (level as u64 & 7) | (state.public_value() as u64) << 8 | ((vm as u64) & 3) << 16
}
