//! TDX module completion status (RAX after TDCALL / SEAMCALL) and a decoder that names it.
//!
//! Layout (TDX module `api_error_code_t`): bits 31:0 operand id or details, 39:32 details L1,
//! 47:40 class, 60 host-recoverability hint, 61 fatal, 62 non-recoverable, 63 error.

use core::fmt;

/// A raw TDX module completion status.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct TdxStatus(pub u64);

/// Linux's `TDX_SEAMCALL_STATUS_MASK`: the bits that identify a status, without the operand.
pub const STATUS_MASK: u64 = 0xFFFF_FFFF_0000_0000;

/// Operand ids: a GPR's index in the order RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15.
pub mod operand {
    /// RAX (leaf and version).
    pub const RAX: u32 = 0;
    /// RCX.
    pub const RCX: u32 = 1;
    /// RDX.
    pub const RDX: u32 = 2;
    /// R8.
    pub const R8: u32 = 8;
    /// The S-EPT tree lock (`OPERAND_ID_SEPT`), seen with OPERAND_BUSY.
    pub const SEPT_TREE: u32 = 0x92;
    /// The TD epoch lock (`OPERAND_ID_TD_EPOCH`), seen with OPERAND_BUSY from TRACK.
    pub const TD_EPOCH: u32 = 0xA9;
}

const GPR_NAMES: [&str; 16] = [
    "RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", "R8", "R9", "R10", "R11", "R12", "R13",
    "R14", "R15",
];

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl TdxStatus {
            $($(#[$doc])* pub const $name: TdxStatus = TdxStatus($value);)*
            /// Every status this project knows by name, for decoders and tests.
            pub const KNOWN: &'static [(&'static str, TdxStatus)] = &[
                $((stringify!($name), TdxStatus($value)),)*
            ];
        }
    };
}

statuses! {
    /// TDX_SUCCESS.
    SUCCESS = 0;
    /// TDX_OPERAND_INVALID: bad operand; low bits name it.
    OPERAND_INVALID = 0xC000_0100_0000_0000;
    /// TDX_OPERAND_BUSY: lock contention; low bits name the lock.
    OPERAND_BUSY = 0x8000_0200_0000_0000;
    /// TDX_PREVIOUS_TLB_EPOCH_BUSY: TRACK while vCPUs still run in the previous epoch.
    PREVIOUS_TLB_EPOCH_BUSY = 0x8000_0201_0000_0000;
    /// TDX_RND_NO_ENTROPY.
    RND_NO_ENTROPY = 0x8000_0203_0000_0000;
    /// TDX_OPERAND_BUSY_HOST_PRIORITY.
    OPERAND_BUSY_HOST_PRIORITY = 0x8000_0204_0000_0000;
    /// TDX_INTERRUPTED_RESUMABLE.
    INTERRUPTED_RESUMABLE = 0x8000_0003_0000_0000;
    /// TDX_INTERRUPTED_RESTARTABLE.
    INTERRUPTED_RESTARTABLE = 0x8000_0004_0000_0000;
    /// TDX_PAGE_METADATA_INCORRECT.
    PAGE_METADATA_INCORRECT = 0xC000_0300_0000_0000;
    /// TDX_TD_ASSOCIATED_PAGES_EXIST.
    TD_ASSOCIATED_PAGES_EXIST = 0xC000_0400_0000_0000;
    /// TDX_LIFECYCLE_STATE_INCORRECT.
    LIFECYCLE_STATE_INCORRECT = 0xC000_0607_0000_0000;
    /// TDX_METADATA_FIELD_ID_INCORRECT: no such metadata field (or not a single element).
    METADATA_FIELD_ID_INCORRECT = 0xC000_0C00_0000_0000;
    /// TDX_METADATA_FIELD_NOT_WRITABLE: the caller may not write any requested bit.
    METADATA_FIELD_NOT_WRITABLE = 0xC000_0C01_0000_0000;
    /// TDX_METADATA_FIELD_NOT_READABLE: the field exists but the caller may not read it.
    METADATA_FIELD_NOT_READABLE = 0xC000_0C02_0000_0000;
    /// TDX_METADATA_FIELD_VALUE_NOT_VALID: the write would change a bit the caller may not
    /// change, or the value is refused.
    METADATA_FIELD_VALUE_NOT_VALID = 0xC000_0C03_0000_0000;
    /// TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT: a read of the null field id (-1) answers
    /// the first field's id in RDX (a warning, not an error).
    METADATA_FIRST_FIELD_ID_IN_CONTEXT = 0x0000_0C0B_0000_0000;
    /// TDX_NO_VALID_VE_INFO: VEINFO.GET with no #VE pending.
    NO_VALID_VE_INFO = 0xC000_0704_0000_0000;
    /// TDX_EPT_WALK_FAILED: the S-EPT walk stopped above the requested level.
    EPT_WALK_FAILED = 0xC000_0B00_0000_0000;
    /// TDX_EPT_ENTRY_FREE.
    EPT_ENTRY_FREE = 0xC000_0B01_0000_0000;
    /// TDX_EPT_ENTRY_NOT_FREE.
    EPT_ENTRY_NOT_FREE = 0xC000_0B02_0000_0000;
    /// TDX_EPT_ENTRY_NOT_PRESENT.
    EPT_ENTRY_NOT_PRESENT = 0xC000_0B03_0000_0000;
    /// TDX_EPT_ENTRY_NOT_LEAF.
    EPT_ENTRY_NOT_LEAF = 0xC000_0B04_0000_0000;
    /// TDX_EPT_ENTRY_LEAF.
    EPT_ENTRY_LEAF = 0xC000_0B05_0000_0000;
    /// TDX_GPA_RANGE_NOT_BLOCKED: remove/demote/sept-remove of an unblocked entry.
    GPA_RANGE_NOT_BLOCKED = 0xC000_0B06_0000_0000;
    /// TDX_GPA_RANGE_ALREADY_BLOCKED: BLOCK on a blocked entry (not an error).
    GPA_RANGE_ALREADY_BLOCKED = 0x0000_0B07_0000_0000;
    /// TDX_TLB_TRACKING_NOT_DONE: the block epoch has not been tracked yet.
    TLB_TRACKING_NOT_DONE = 0xC000_0B08_0000_0000;
    /// TDX_EPT_INVALID_PROMOTE_CONDITIONS.
    EPT_INVALID_PROMOTE_CONDITIONS = 0xC000_0B09_0000_0000;
    /// TDX_PAGE_ALREADY_ACCEPTED: not an error; low bits = level where the walk stopped.
    PAGE_ALREADY_ACCEPTED = 0x0000_0B0A_0000_0000;
    /// TDX_PAGE_SIZE_MISMATCH: requested level maps to a non-leaf; low bits = level.
    PAGE_SIZE_MISMATCH = 0xC000_0B0B_0000_0000;
    /// TDX_GPA_RANGE_BLOCKED.
    GPA_RANGE_BLOCKED = 0xC000_0B0C_0000_0000;
    /// TDX_EPT_ENTRY_STATE_INCORRECT: state not allowed for this operation.
    EPT_ENTRY_STATE_INCORRECT = 0xC000_0B0D_0000_0000;
    /// TDX_EPT_PAGE_NOT_FREE: SEPT.REMOVE of a table with non-FREE entries.
    EPT_PAGE_NOT_FREE = 0xC000_0B0E_0000_0000;
    /// Linux TDX_SW_ERROR: bit 63 and class 0xFF; never produced by the module.
    SW_ERROR = 0x8000_FF00_0000_0000;
    /// Linux TDX_SEAMCALL_VMFAILINVALID.
    SEAMCALL_VMFAILINVALID = 0x8000_FF00_FFFF_0000;
}

impl TdxStatus {
    /// Linux TDX_SEAMCALL_GP: SEAMCALL raised #GP.
    pub const SEAMCALL_GP: TdxStatus = TdxStatus(Self::SW_ERROR.0 | 13);
    /// Linux TDX_SEAMCALL_UD: SEAMCALL raised #UD.
    pub const SEAMCALL_UD: TdxStatus = TdxStatus(Self::SW_ERROR.0 | 6);

    /// The identifying part (bits 63:32), as Linux compares statuses.
    pub const fn code(self) -> u64 {
        self.0 & STATUS_MASK
    }
    /// True when `self` is `other` regardless of operand/details bits.
    pub const fn is(self, other: TdxStatus) -> bool {
        self.code() == other.code()
    }
    /// True for TDX_SUCCESS exactly.
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }
    /// Bit 63: an error (PAGE_ALREADY_ACCEPTED, GPA_RANGE_ALREADY_BLOCKED are not).
    pub const fn is_error(self) -> bool {
        self.0 >> 63 != 0
    }
    /// Bit 62: non-recoverable.
    pub const fn is_non_recoverable(self) -> bool {
        self.0 >> 62 & 1 != 0
    }
    /// Bit 61: fatal.
    pub const fn is_fatal(self) -> bool {
        self.0 >> 61 & 1 != 0
    }
    /// Bit 60: host-recoverability hint.
    pub const fn host_recoverability_hint(self) -> bool {
        self.0 >> 60 & 1 != 0
    }
    /// Bits 47:40: the class.
    pub const fn class(self) -> u8 {
        (self.0 >> 40) as u8
    }
    /// Bits 39:32: details L1.
    pub const fn details_l1(self) -> u8 {
        (self.0 >> 32) as u8
    }
    /// Bits 31:0: operand id or details L2 (an S-EPT level for the S-EPT class).
    pub const fn details_l2(self) -> u32 {
        self.0 as u32
    }
    /// The same status with `details` in bits 31:0 (an operand id or a level).
    pub const fn with_details(self, details: u32) -> TdxStatus {
        TdxStatus(self.code() | details as u64)
    }
    /// The name of the status code, if known.
    pub fn name(self) -> Option<&'static str> {
        if self.0 == 0 {
            return Some("SUCCESS");
        }
        // SW_ERROR-derived statuses share one code; match them exactly first.
        for (name, s) in [
            ("SEAMCALL_VMFAILINVALID", Self::SEAMCALL_VMFAILINVALID),
            ("SEAMCALL_GP", Self::SEAMCALL_GP),
            ("SEAMCALL_UD", Self::SEAMCALL_UD),
        ] {
            if self == s {
                return Some(name);
            }
        }
        Self::KNOWN
            .iter()
            .find(|(_, s)| s.0 != 0 && s.is(self))
            .map(|(n, _)| *n)
    }
    /// Which class of the module's error table the status belongs to, where this project knows it.
    pub const fn class_name(self) -> Option<&'static str> {
        match self.class() {
            0x01 => Some("operand"),
            0x02 => Some("busy"),
            0x0B => Some("S-EPT"),
            0xFF => Some("Linux software"),
            _ => None,
        }
    }
}

impl fmt::Debug for TdxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `TDX_PAGE_SIZE_MISMATCH (0xc0000b0b00000001): error, class 0x0b (S-EPT), level 1 (2M)`.
impl fmt::Display for TdxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "TDX_{n} ({:#018x})", self.0)?,
            None => write!(f, "unknown TDX status {:#018x}", self.0)?,
        }
        if self.is_success() {
            return Ok(());
        }
        f.write_str(if self.is_error() {
            ": error"
        } else {
            ": warning"
        })?;
        if self.is_non_recoverable() {
            f.write_str(", non-recoverable")?;
        }
        if self.is_fatal() {
            f.write_str(", fatal")?;
        }
        write!(f, ", class {:#04x}", self.class())?;
        if let Some(c) = self.class_name() {
            write!(f, " ({c})")?;
        }
        let d = self.details_l2();
        match self.class() {
            0x01 | 0x02 => match GPR_NAMES.get(d as usize) {
                Some(r) => write!(f, ", operand {r}"),
                None if d == operand::SEPT_TREE => f.write_str(", operand S-EPT tree"),
                None if d == operand::TD_EPOCH => f.write_str(", operand TD epoch"),
                None => write!(f, ", operand {d:#x}"),
            },
            0x0B if self.is(Self::PAGE_ALREADY_ACCEPTED) || self.is(Self::PAGE_SIZE_MISMATCH) => {
                match crate::PageLevel::from_tdx_level(d as u64) {
                    Some(l) => write!(f, ", level {d} ({l})"),
                    None => write!(f, ", level {d}"),
                }
            }
            _ if d != 0 => write!(f, ", details {d:#x}"),
            _ => Ok(()),
        }
    }
}
