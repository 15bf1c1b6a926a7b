//! The virtualization exception (#VE) and TDG.VP.VEINFO.GET outputs.

/// #VE vector (X86_TRAP_VE).
pub const X86_TRAP_VE: u8 = 20;

/// VMX basic exit reasons that reach the guest as #VE.
pub mod exit_reason {
    /// CPUID.
    pub const CPUID: u32 = 10;
    /// HLT.
    pub const HLT: u32 = 12;
    /// I/O instruction.
    pub const IO: u32 = 30;
    /// RDMSR.
    pub const RDMSR: u32 = 31;
    /// WRMSR.
    pub const WRMSR: u32 = 32;
    /// EPT violation.
    pub const EPT_VIOLATION: u32 = 48;
}

/// The outputs of TDG.VP.VEINFO.GET.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct VeInfo {
    /// RCX: exit reason (32-bit).
    pub exit_reason: u32,
    /// RDX: exit qualification.
    pub exit_qualification: u64,
    /// R8: guest linear address (EPT violations only).
    pub gla: u64,
    /// R9: guest physical address (EPT violations only).
    pub gpa: u64,
    /// R10[31:0]: instruction length (valid for HLT, RDMSR, WRMSR, CPUID, IO).
    pub instr_len: u32,
    /// R10[63:32]: instruction information.
    pub instr_info: u32,
}

impl VeInfo {
    /// Decode the output registers RCX, RDX, R8, R9, R10.
    pub const fn decode(rcx: u64, rdx: u64, r8: u64, r9: u64, r10: u64) -> VeInfo {
        VeInfo {
            exit_reason: rcx as u32,
            exit_qualification: rdx,
            gla: r8,
            gpa: r9,
            instr_len: r10 as u32,
            instr_info: (r10 >> 32) as u32,
        }
    }
    /// Encode as (RCX, RDX, R8, R9, R10).
    pub const fn encode(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.exit_reason as u64,
            self.exit_qualification,
            self.gla,
            self.gpa,
            self.instr_len as u64 | (self.instr_info as u64) << 32,
        )
    }
}

/// An I/O #VE's exit qualification: size−1 in bits 2:0, bit 3 IN, bit 4 string, port in 31:16.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IoQualification {
    /// Access size in bytes (1, 2 or 4).
    pub size: u8,
    /// True for IN.
    pub is_in: bool,
    /// True for INS/OUTS.
    pub is_string: bool,
    /// Port.
    pub port: u16,
}

impl IoQualification {
    /// Decode an exit qualification.
    pub const fn decode(q: u64) -> IoQualification {
        IoQualification {
            size: (q & 7) as u8 + 1,
            is_in: q & 8 != 0,
            is_string: q & 16 != 0,
            port: (q >> 16) as u16,
        }
    }
    /// Encode as an exit qualification.
    pub const fn encode(&self) -> u64 {
        (self.size as u64 - 1) & 7
            | (self.is_in as u64) << 3
            | (self.is_string as u64) << 4
            | (self.port as u64) << 16
    }
}
