//! TDG.VP.VMCALL (GHCI): sub-functions, status codes and the register-select mask.

use core::fmt;

/// R10 input for a GHCI-standard TDVMCALL (`TDX_HYPERCALL_STANDARD`); non-zero = vendor-specific.
pub const TDX_HYPERCALL_STANDARD: u64 = 0;

/// TDVMCALL status, returned in R10.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct VmcallStatus(pub u64);

impl VmcallStatus {
    /// TDG.VP.VMCALL_SUCCESS.
    pub const SUCCESS: VmcallStatus = VmcallStatus(0);
    /// TDG.VP.VMCALL_RETRY: resume from the GPA in R11 (MapGPA).
    pub const RETRY: VmcallStatus = VmcallStatus(1);
    /// TDG.VP.VMCALL_INVALID_OPERAND.
    pub const INVALID_OPERAND: VmcallStatus = VmcallStatus(0x8000_0000_0000_0000);
    /// TDG.VP.VMCALL_GPA_INUSE (td-shim / tdx-guest only).
    pub const GPA_INUSE: VmcallStatus = VmcallStatus(0x8000_0000_0000_0001);
    /// TDG.VP.VMCALL_ALIGN_ERROR.
    pub const ALIGN_ERROR: VmcallStatus = VmcallStatus(0x8000_0000_0000_0002);
    /// TDG.VP.VMCALL_SUBFUNC_UNSUPPORTED.
    pub const SUBFUNC_UNSUPPORTED: VmcallStatus = VmcallStatus(0x8000_0000_0000_0003);

    /// Every named status.
    pub const KNOWN: &'static [(&'static str, VmcallStatus)] = &[
        ("SUCCESS", Self::SUCCESS),
        ("RETRY", Self::RETRY),
        ("INVALID_OPERAND", Self::INVALID_OPERAND),
        ("GPA_INUSE", Self::GPA_INUSE),
        ("ALIGN_ERROR", Self::ALIGN_ERROR),
        ("SUBFUNC_UNSUPPORTED", Self::SUBFUNC_UNSUPPORTED),
    ];

    /// The status's GHCI name, if known.
    pub fn name(self) -> Option<&'static str> {
        Self::KNOWN
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
    }
}

impl fmt::Debug for VmcallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl fmt::Display for VmcallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "TDG.VP.VMCALL_{n}"),
            None => write!(f, "unknown TDVMCALL status {:#x}", self.0),
        }
    }
}

crate::tdcall::leaves! { Subfunction: u64,
    "A TDVMCALL sub-function (R11), with its GHCI name. Instruction.* numbers equal VMX basic exit reasons.",
    /// Instruction.CPUID: R12 = leaf, R13 = subleaf → R12..R15 = EAX, EBX, ECX, EDX.
    Cpuid = 0xA, "Instruction.CPUID";
    /// Instruction.HLT: R12 = 1 if IRQs were disabled.
    Hlt = 0xC, "Instruction.HLT";
    /// Instruction.IO: R12 = size, R13 = 0 read / 1 write, R14 = port, R15 = data → R11.
    Io = 0x1E, "Instruction.IO";
    /// Instruction.RDMSR: R12 = MSR → R11.
    Rdmsr = 0x1F, "Instruction.RDMSR";
    /// Instruction.WRMSR: R12 = MSR, R13 = value.
    Wrmsr = 0x20, "Instruction.WRMSR";
    /// #VE.RequestMMIO: R12 = size, R13 = dir, R14 = shared GPA, R15 = data → R11.
    RequestMmio = 0x30, "#VE.RequestMMIO";
    /// Instruction.WBINVD.
    Wbinvd = 0x36, "Instruction.WBINVD";
    /// Instruction.PCONFIG.
    Pconfig = 0x41, "Instruction.PCONFIG";
    /// GetTdVmCallInfo: R12 = leaf.
    GetTdVmCallInfo = 0x10000, "GetTdVmCallInfo";
    /// MapGPA: R12 = start GPA (shared bit = direction), R13 = length.
    MapGpa = 0x10001, "MapGPA";
    /// GetQuote: R12 = shared GPA of the buffer, R13 = size.
    GetQuote = 0x10002, "GetQuote";
    /// ReportFatalError: R12 = error code, R13 = GPA, message in R14, R15, RBX, RDI, RSI, R8, R9, RDX.
    ReportFatalError = 0x10003, "ReportFatalError";
    /// SetupEventNotifyInterrupt: R12 = vector.
    SetupEventNotifyInterrupt = 0x10004, "SetupEventNotifyInterrupt";
    /// Service.
    Service = 0x10005, "Service";
}

/// The GPR-select bitmap in RCX bits 15:0 of TDG.VP.VMCALL: bit n exposes GPR n to the host,
/// in the order RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15.
pub mod select {
    /// Bit for GPR index `n`.
    pub const fn gpr(n: u32) -> u64 {
        1 << n
    }
    /// RDX.
    pub const RDX: u64 = 1 << 2;
    /// RBX.
    pub const RBX: u64 = 1 << 3;
    /// RBP (forbidden under CONFIG_FLAGS.NO_RBP_MOD).
    pub const RBP: u64 = 1 << 5;
    /// RSI.
    pub const RSI: u64 = 1 << 6;
    /// RDI.
    pub const RDI: u64 = 1 << 7;
    /// R8..R15.
    pub const R8_R15: u64 = 0xFF00;
    /// R10..R15: td-shim's mask.
    pub const TDSHIM_MASK: u64 = 0xFC00;
    /// Linux `TDVMCALL_EXPOSE_REGS_MASK`: RDX, RBX, RSI, RDI, R8–R15.
    pub const LINUX_EXPOSE_MASK: u64 = RDX | RBX | RSI | RDI | R8_R15;
    /// Bits the module always rejects (RAX, RCX, RSP) with OPERAND_INVALID, operand RCX.
    pub const FORBIDDEN: u64 = 1 << 0 | 1 << 1 | 1 << 4;
    /// Bits 63:32 of the control word are reserved and must be zero.
    pub const RESERVED: u64 = 0xFFFF_FFFF_0000_0000;
    /// Bits 31:16 select XMM registers.
    pub const XMM_MASK: u64 = 0xFFFF_0000;
}

/// GetTdVmCallInfo leaf 0: all outputs zero, success.
pub const GET_TDVMCALL_INFO_LEAF_BASE: u64 = 0;
/// GetTdVmCallInfo leaf 1: forwarded to userspace by KVM.
pub const GET_TDVMCALL_INFO_LEAF_USER: u64 = 1;
/// ReportFatalError R12 bit 63: R13 holds a valid GPA (td-shim).
pub const FATAL_ERROR_GPA_VALID: u64 = 1 << 63;
/// Retries without progress a MapGPA loop allows (Linux `tdx_map_gpa`, td-shim).
pub const MAP_GPA_MAX_RETRIES_PER_PAGE: u32 = 3;
