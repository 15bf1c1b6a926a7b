//! TDCALL leaf numbers (guest → TDX module) and the RAX encoding.

/// TDCALL opcode bytes.
pub const TDCALL_OPCODE: [u8; 4] = [0x66, 0x0F, 0x01, 0xCC];

/// A numbered ABI enum from one table: the variants, `ALL`, `number`, `from_number` and
/// `name` (the spec's name), so that number and name cannot drift apart. The repr type
/// defaults to u16 (leaf numbers).
macro_rules! leaves {
    ($ty:ident, $doc:literal, $($(#[$d:meta])* $name:ident = $value:expr, $text:literal;)*) => {
        $crate::tdcall::leaves! { $ty: u16, $doc, $($(#[$d])* $name = $value, $text;)* }
    };
    ($ty:ident: $repr:ty, $doc:literal, $($(#[$d:meta])* $name:ident = $value:expr, $text:literal;)*) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
        #[repr($repr)]
        pub enum $ty {
            $($(#[$d])* $name = $value,)*
        }
        impl $ty {
            /// Every value with its name.
            pub const ALL: &'static [$ty] = &[$($ty::$name,)*];
            /// The number.
            pub const fn number(self) -> $repr {
                self as $repr
            }
            /// Decode a number.
            pub fn from_number(n: $repr) -> Option<$ty> {
                Self::ALL.iter().copied().find(|l| l.number() == n)
            }
            /// The spec's name, e.g. "TDG.MEM.PAGE.ACCEPT".
            pub const fn name(self) -> &'static str {
                match self { $($ty::$name => $text,)* }
            }
        }
    };
}
pub(crate) use leaves;

leaves! { TdcallLeaf, "A TDCALL leaf (RAX bits 15:0).",
    /// TDG.VP.VMCALL: hypercall to the host (GHCI).
    VpVmcall = 0, "TDG.VP.VMCALL";
    /// TDG.VP.INFO: GPAW, attributes, vCPU counts and index.
    VpInfo = 1, "TDG.VP.INFO";
    /// TDG.MR.RTMR.EXTEND.
    MrRtmrExtend = 2, "TDG.MR.RTMR.EXTEND";
    /// TDG.VP.VEINFO.GET: read and clear the pending #VE info.
    VpVeinfoGet = 3, "TDG.VP.VEINFO.GET";
    /// TDG.MR.REPORT.
    MrReport = 4, "TDG.MR.REPORT";
    /// TDG.VP.CPUIDVE.SET.
    VpCpuidveSet = 5, "TDG.VP.CPUIDVE.SET";
    /// TDG.MEM.PAGE.ACCEPT: accept a PENDING private page.
    MemPageAccept = 6, "TDG.MEM.PAGE.ACCEPT";
    /// TDG.VM.RD.
    VmRd = 7, "TDG.VM.RD";
    /// TDG.VM.WR.
    VmWr = 8, "TDG.VM.WR";
    /// TDG.VP.RD.
    VpRd = 9, "TDG.VP.RD";
    /// TDG.VP.WR.
    VpWr = 10, "TDG.VP.WR";
    /// TDG.SYS.RD.
    SysRd = 11, "TDG.SYS.RD";
    /// TDG.SYS.RDALL.
    SysRdall = 12, "TDG.SYS.RDALL";
    /// TDG.SERVTD.RD.
    ServtdRd = 18, "TDG.SERVTD.RD";
    /// TDG.SERVTD.WR.
    ServtdWr = 20, "TDG.SERVTD.WR";
    /// TDG.MR.VERIFYREPORT.
    MrVerifyreport = 22, "TDG.MR.VERIFYREPORT";
    /// TDG.MEM.PAGE.ATTR.RD.
    MemPageAttrRd = 23, "TDG.MEM.PAGE.ATTR.RD";
    /// TDG.MEM.PAGE.ATTR.WR.
    MemPageAttrWr = 24, "TDG.MEM.PAGE.ATTR.WR";
    /// TDG.VP.ENTER (TD partitioning).
    VpEnter = 25, "TDG.VP.ENTER";
    /// TDG.VP.INVEPT (TD partitioning).
    VpInvept = 26, "TDG.VP.INVEPT";
    /// TDG.VP.INVVPID (TD partitioning).
    VpInvvpid = 27, "TDG.VP.INVVPID";
}

/// RAX for a TDCALL: leaf in bits 15:0, version in bits 23:16.
pub const fn leaf_rax(leaf: TdcallLeaf, version: u8) -> u64 {
    leaf as u64 | (version as u64) << 16
}

/// Split RAX into (leaf number, version); `None` when bits 63:24 are set, which the module
/// rejects with OPERAND_INVALID, operand RAX.
pub const fn decode_rax(rax: u64) -> Option<(u16, u8)> {
    if rax >> 24 != 0 {
        None
    } else {
        Some((rax as u16, (rax >> 16) as u8))
    }
}

/// TDG.MEM.PAGE.ACCEPT / SEAMCALL RCX: GPA page number in bits 51:12, level in bits 2:0.
pub const fn gpa_level_rcx(gpa: crate::Gpa, level: crate::PageLevel) -> u64 {
    gpa.0 & !0xFFF | level.tdx_level()
}

/// Decode a GPA|level operand; `None` when reserved bits 11:3 or 63:52 are set.
pub const fn decode_gpa_level(rcx: u64) -> Option<(crate::Gpa, u8)> {
    if rcx & 0xFF8 != 0 || rcx >> 52 != 0 {
        None
    } else {
        Some((crate::Gpa(rcx & !0xFFF), (rcx & 7) as u8))
    }
}
