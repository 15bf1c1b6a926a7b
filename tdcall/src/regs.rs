//! The register block of one TDCALL.

/// Every general-purpose register a TDCALL leaf may read or write.
///
/// `#[repr(C)]` with fixed offsets: the transports' assembly loads and stores by offset.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(C)]
pub struct Regs {
    /// Leaf and version in; completion status out.
    pub rax: u64,
    /// Offset 8.
    pub rcx: u64,
    /// Offset 16.
    pub rdx: u64,
    /// Offset 24.
    pub rbx: u64,
    /// Offset 32.
    pub rsi: u64,
    /// Offset 40.
    pub rdi: u64,
    /// Offset 48.
    pub r8: u64,
    /// Offset 56.
    pub r9: u64,
    /// Offset 64.
    pub r10: u64,
    /// Offset 72.
    pub r11: u64,
    /// Offset 80.
    pub r12: u64,
    /// Offset 88.
    pub r13: u64,
    /// Offset 96.
    pub r14: u64,
    /// Offset 104.
    pub r15: u64,
}

impl Regs {
    /// Registers for `leaf` (version 0) with everything else zero.
    pub const fn leaf(leaf: shared_abi::tdcall::TdcallLeaf) -> Regs {
        Regs {
            rax: shared_abi::tdcall::leaf_rax(leaf, 0),
            rcx: 0,
            rdx: 0,
            rbx: 0,
            rsi: 0,
            rdi: 0,
            r8: 0,
            r9: 0,
            r10: 0,
            r11: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
        }
    }
}
