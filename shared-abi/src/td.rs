//! TD-wide facts: ATTRIBUTES, TDCS fields, TDG.VP.INFO outputs, CPUID 0x21.

use crate::Gpaw;

/// TD ATTRIBUTES bits (TDG.VP.INFO RDX).
pub mod attributes {
    /// DEBUG.
    pub const DEBUG: u64 = 1 << 0;
    /// HGS_PLUS_PROF.
    pub const HGS_PLUS_PROF: u64 = 1 << 4;
    /// PERF_PROF.
    pub const PERF_PROF: u64 = 1 << 5;
    /// PMT_PROF.
    pub const PMT_PROF: u64 = 1 << 6;
    /// ICSSD.
    pub const ICSSD: u64 = 1 << 16;
    /// LASS.
    pub const LASS: u64 = 1 << 27;
    /// SEPT_VE_DISABLE: no #VE on access to PENDING pages; the host sees the access instead.
    pub const SEPT_VE_DISABLE: u64 = 1 << 28;
    /// MIGRATABLE.
    pub const MIGRATABLE: u64 = 1 << 29;
    /// PKS.
    pub const PKS: u64 = 1 << 30;
    /// KL.
    pub const KL: u64 = 1 << 31;
    /// TPA.
    pub const TPA: u64 = 1 << 62;
    /// PERFMON.
    pub const PERFMON: u64 = 1 << 63;
}

/// TDCS field ids Linux reads and writes with TDG.VM.RD/WR.
pub mod tdcs {
    /// NOTIFY_ENABLES.
    pub const NOTIFY_ENABLES: u64 = 0x9100_0000_0000_0010;
    /// TD_CTLS.
    pub const TD_CTLS: u64 = 0x1110_0003_0000_0017;
    /// CONFIG_FLAGS.
    pub const CONFIG_FLAGS: u64 = 0x1110_0003_0000_0016;
    /// TOPOLOGY_ENUM_CONFIGURED.
    pub const TOPOLOGY_ENUM_CONFIGURED: u64 = 0x9100_0000_0000_0019;
    /// TD_CTLS.PENDING_VE_DISABLE.
    pub const TD_CTLS_PENDING_VE_DISABLE: u64 = 1 << 0;
    /// TD_CTLS.ENUM_TOPOLOGY.
    pub const TD_CTLS_ENUM_TOPOLOGY: u64 = 1 << 1;
    /// TD_CTLS.VIRT_CPUID2.
    pub const TD_CTLS_VIRT_CPUID2: u64 = 1 << 2;
    /// TD_CTLS.REDUCE_VE.
    pub const TD_CTLS_REDUCE_VE: u64 = 1 << 3;
    /// TD_CTLS.LOCK.
    pub const TD_CTLS_LOCK: u64 = 1 << 63;
    /// CONFIG_FLAGS.FLEXIBLE_PENDING_VE.
    pub const CONFIG_FLAGS_FLEXIBLE_PENDING_VE: u64 = 1 << 1;
}

/// CPUID leaf that carries the TDX signature.
pub const CPUID_TDX_LEAF: u32 = 0x21;
/// "IntelTDX    ", read in register order EBX, EDX, ECX.
pub const TDX_SIGNATURE: &[u8; 12] = b"IntelTDX    ";
/// EBX of CPUID 0x21 ("Inte").
pub const TDX_SIGNATURE_EBX: u32 = 0x6574_6E49;
/// EDX of CPUID 0x21 ("lTDX").
pub const TDX_SIGNATURE_EDX: u32 = 0x5844_546C;
/// ECX of CPUID 0x21 ("    ").
pub const TDX_SIGNATURE_ECX: u32 = 0x2020_2020;

/// True when CPUID(0x21, 0) returned the TDX signature.
pub const fn is_tdx_signature(ebx: u32, ecx: u32, edx: u32) -> bool {
    ebx == TDX_SIGNATURE_EBX && edx == TDX_SIGNATURE_EDX && ecx == TDX_SIGNATURE_ECX
}

/// TDX module global metadata, read by a guest with TDG.SYS.RD (field identifiers from the
/// ABI spec's global metadata table; Linux names the one it reads in
/// `arch/x86/include/asm/shared/tdx.h`).
pub mod sys_metadata {
    /// The null field identifier: "give me the first field".
    pub const FIELD_ID_NA: u64 = u64::MAX;
    /// TDX_FEATURES0: the optional features the module supports (64-bit field).
    pub const TDX_FEATURES0: u64 = 0x0A00_0003_0000_0008;
    /// Bits 54:52 of a field identifier: the context code, which TDG.SYS.RD overwrites.
    pub const CONTEXT_CODE_MASK: u64 = 0x7 << 52;
}

/// The outputs of TDG.VP.INFO.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VpInfo {
    /// RCX[5:0]: GPAW (48 or 52; an emulated TD's may be narrower, see [`Gpaw::emulated`]).
    pub gpaw: Gpaw,
    /// RDX: TD ATTRIBUTES.
    pub attributes: u64,
    /// R8[31:0]: usable vCPUs.
    pub num_vcpus: u32,
    /// R8[63:32]: maximum vCPUs.
    pub max_vcpus: u32,
    /// R9[31:0]: this vCPU's index (0 = BSP).
    pub vcpu_index: u32,
    /// R10 bit 0: TDG.SYS.RD is available.
    pub sys_rd_available: bool,
}

impl VpInfo {
    /// Decode the output registers; `None` when RCX holds a GPAW the module never reports.
    pub fn decode(rcx: u64, rdx: u64, r8: u64, r9: u64, r10: u64) -> Option<VpInfo> {
        Self::decode_with(Gpaw::new((rcx & 0x3F) as u8)?, rdx, r8, r9, r10)
    }
    /// Decode the output registers of an emulated TD's module, which may report a
    /// non-architectural GPAW ([`Gpaw::emulated`]); `None` outside that range.
    pub fn decode_emulated(rcx: u64, rdx: u64, r8: u64, r9: u64, r10: u64) -> Option<VpInfo> {
        Self::decode_with(Gpaw::emulated((rcx & 0x3F) as u8)?, rdx, r8, r9, r10)
    }
    fn decode_with(gpaw: Gpaw, rdx: u64, r8: u64, r9: u64, r10: u64) -> Option<VpInfo> {
        Some(VpInfo {
            gpaw,
            attributes: rdx,
            num_vcpus: r8 as u32,
            max_vcpus: (r8 >> 32) as u32,
            vcpu_index: r9 as u32,
            sys_rd_available: r10 & 1 != 0,
        })
    }
    /// Encode as (RCX, RDX, R8, R9, R10).
    pub const fn encode(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.gpaw.bits() as u64,
            self.attributes,
            self.num_vcpus as u64 | (self.max_vcpus as u64) << 32,
            self.vcpu_index as u64,
            self.sys_rd_available as u64,
        )
    }
    /// True when the TD was built with SEPT_VE_DISABLE.
    pub const fn sept_ve_disabled(&self) -> bool {
        self.attributes & attributes::SEPT_VE_DISABLE != 0
    }
}
