//! Typed TDCALL leaves and TDVMCALL sub-functions.

use crate::{Error, Regs, Transport};
use shared_abi::td::VpInfo;
use shared_abi::tdcall::{gpa_level_rcx, TdcallLeaf};
use shared_abi::ve::VeInfo;
use shared_abi::vmcall::{select, Subfunction, TDX_HYPERCALL_STANDARD};
use shared_abi::{Gpa, PageLevel, TdxStatus, VmcallStatus};

/// The guest's handle on the TDX module, over any [`Transport`].
#[derive(Clone, Copy, Debug)]
pub struct Tdx<T> {
    transport: T,
}

/// The host's answer to a host check (`shared_abi::hostcheck`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostCheck {
    /// The host saw what it was told to expect (and, for SYNC_SHARED, wrote the new byte).
    Passed,
    /// The host saw `found` at byte `offset` of the range.
    Mismatch {
        /// Offset of the first differing byte.
        offset: u64,
        /// The byte the host saw there.
        found: u8,
    },
    /// No tdxlab host behind the TD (real TDX): the guest checks by itself.
    Unsupported(VmcallStatus),
}

/// The registers a TDVMCALL returns, after a successful TDCALL.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VmcallOut {
    /// R10: the TDVMCALL status.
    pub status: VmcallStatus,
    /// The full register block.
    pub regs: Regs,
}

impl<T: Transport> Tdx<T> {
    /// Wrap a transport.
    pub const fn new(transport: T) -> Tdx<T> {
        Tdx { transport }
    }
    /// The transport (e.g. a mock, to inspect what it saw).
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }
    /// Give the transport back.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// One raw TDCALL: `regs.rax` must hold the leaf. Returns the status and outputs.
    pub fn tdcall(&mut self, mut regs: Regs) -> (TdxStatus, Regs) {
        self.transport.call(&mut regs);
        (TdxStatus(regs.rax), regs)
    }

    fn leaf(&mut self, leaf: TdcallLeaf, regs: Regs) -> Result<Regs, Error> {
        let (status, out) = self.tdcall(regs);
        if status.is_success() {
            Ok(out)
        } else {
            Err(Error::Tdcall { leaf, status })
        }
    }

    /// TDG.VP.INFO: GPAW, attributes, vCPU counts and this vCPU's index (`tdg_vp_info`).
    pub fn tdg_vp_info(&mut self) -> Result<VpInfo, Error> {
        let o = self.leaf(TdcallLeaf::VpInfo, Regs::leaf(TdcallLeaf::VpInfo))?;
        if self.transport.emulated() {
            VpInfo::decode_emulated(o.rcx, o.rdx, o.r8, o.r9, o.r10).ok_or(Error::BadOutput {
                leaf: TdcallLeaf::VpInfo,
                what: "GPAW is outside 36..=52",
            })
        } else {
            VpInfo::decode(o.rcx, o.rdx, o.r8, o.r9, o.r10).ok_or(Error::BadOutput {
                leaf: TdcallLeaf::VpInfo,
                what: "GPAW is neither 48 nor 52",
            })
        }
    }

    /// TDG.SYS.RD: read one TDX module global metadata field (`tdg_sys_rd`); returns the
    /// value (R8). Offered when TDG.VP.INFO's R10 bit 0 is set.
    pub fn tdg_sys_rd(&mut self, field: u64) -> Result<u64, Error> {
        let mut r = Regs::leaf(TdcallLeaf::SysRd);
        r.rdx = field;
        Ok(self.leaf(TdcallLeaf::SysRd, r)?.r8)
    }

    /// TDG.VP.VEINFO.GET: read and clear the pending #VE information (`tdg_vp_veinfo_get`).
    pub fn tdg_vp_veinfo_get(&mut self) -> Result<VeInfo, Error> {
        let o = self.leaf(TdcallLeaf::VpVeinfoGet, Regs::leaf(TdcallLeaf::VpVeinfoGet))?;
        Ok(VeInfo::decode(o.rcx, o.rdx, o.r8, o.r9, o.r10))
    }

    /// TDG.MEM.PAGE.ACCEPT of one page at `level`, returning the raw status, since callers
    /// decide what PAGE_SIZE_MISMATCH or PAGE_ALREADY_ACCEPTED mean (`tdg_mem_page_accept`).
    pub fn tdg_mem_page_accept(&mut self, gpa: Gpa, level: PageLevel) -> TdxStatus {
        let mut r = Regs::leaf(TdcallLeaf::MemPageAccept);
        r.rcx = gpa_level_rcx(gpa, level);
        self.tdcall(r).0
    }

    /// TDG.VP.VMCALL with `sub` in R11 and the arguments R12..R15 already in `regs`; exposes
    /// Linux's register set (`__tdx_hypercall`). Fails only if the TDCALL itself fails.
    pub fn tdg_vp_vmcall(&mut self, sub: Subfunction, mut regs: Regs) -> Result<VmcallOut, Error> {
        regs.rax = shared_abi::tdcall::leaf_rax(TdcallLeaf::VpVmcall, 0);
        regs.rcx = select::LINUX_EXPOSE_MASK;
        regs.r10 = TDX_HYPERCALL_STANDARD;
        regs.r11 = sub.number();
        let o = self.leaf(TdcallLeaf::VpVmcall, regs)?;
        Ok(VmcallOut {
            status: VmcallStatus(o.r10),
            regs: o,
        })
    }

    fn vmcall_ok(&mut self, sub: Subfunction, regs: Regs) -> Result<Regs, Error> {
        let o = self.tdg_vp_vmcall(sub, regs)?;
        if o.status == VmcallStatus::SUCCESS {
            Ok(o.regs)
        } else {
            Err(Error::Vmcall {
                sub,
                status: o.status,
            })
        }
    }

    /// TDVMCALL<Instruction.IO> read of `size` (1, 2, 4) bytes from `port`.
    pub fn io_read(&mut self, size: u8, port: u16) -> Result<u32, Error> {
        let r = Regs {
            r12: size as u64,
            r13: 0,
            r14: port as u64,
            ..Regs::default()
        };
        Ok(self.vmcall_ok(Subfunction::Io, r)?.r11 as u32)
    }

    /// TDVMCALL<Instruction.IO> write of `size` bytes of `data` to `port`.
    pub fn io_write(&mut self, size: u8, port: u16, data: u32) -> Result<(), Error> {
        let r = Regs {
            r12: size as u64,
            r13: 1,
            r14: port as u64,
            r15: data as u64,
            ..Regs::default()
        };
        self.vmcall_ok(Subfunction::Io, r).map(drop)
    }

    /// TDVMCALL<Instruction.CPUID>: `[eax, ebx, ecx, edx]` for `leaf`/`subleaf`.
    pub fn cpuid(&mut self, leaf: u32, subleaf: u32) -> Result<[u32; 4], Error> {
        let r = Regs {
            r12: leaf as u64,
            r13: subleaf as u64,
            ..Regs::default()
        };
        let o = self.vmcall_ok(Subfunction::Cpuid, r)?;
        Ok([o.r12 as u32, o.r13 as u32, o.r14 as u32, o.r15 as u32])
    }

    /// TDVMCALL<Instruction.HLT>: R12 = 1 when the guest halts with interrupts disabled.
    pub fn hlt(&mut self, irqs_disabled: bool) -> Result<(), Error> {
        let r = Regs {
            r12: irqs_disabled as u64,
            ..Regs::default()
        };
        self.vmcall_ok(Subfunction::Hlt, r).map(drop)
    }

    /// TDVMCALL<Instruction.RDMSR>: R12 = MSR → R11 = value.
    pub fn rdmsr(&mut self, msr: u32) -> Result<u64, Error> {
        let r = Regs {
            r12: msr as u64,
            ..Regs::default()
        };
        Ok(self.vmcall_ok(Subfunction::Rdmsr, r)?.r11)
    }

    /// TDVMCALL<Instruction.WRMSR>: R12 = MSR, R13 = value.
    pub fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), Error> {
        let r = Regs {
            r12: msr as u64,
            r13: value,
            ..Regs::default()
        };
        self.vmcall_ok(Subfunction::Wrmsr, r).map(drop)
    }

    /// TDVMCALL<GetTdVmCallInfo>(leaf): R11..R14.
    pub fn get_td_vmcall_info(&mut self, leaf: u64) -> Result<[u64; 4], Error> {
        let r = Regs {
            r12: leaf,
            ..Regs::default()
        };
        let o = self.vmcall_ok(Subfunction::GetTdVmCallInfo, r)?;
        Ok([o.r11, o.r12, o.r13, o.r14])
    }

    /// TDVMCALL<ReportFatalError>: `code` in R12, `gpa` (if any) in R13 with bit 63 of the code
    /// set, and up to 64 bytes of message in R14, R15, RBX, RDI, RSI, R8, R9, RDX as Linux
    /// passes it. The host normally does not return.
    pub fn report_fatal_error(
        &mut self,
        code: u64,
        gpa: Option<Gpa>,
        msg: &[u8],
    ) -> Result<(), Error> {
        let mut words = [0u64; 8];
        for (i, chunk) in msg.chunks(8).take(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            words[i] = u64::from_le_bytes(w);
        }
        let mut r = Regs {
            r12: code & !shared_abi::vmcall::FATAL_ERROR_GPA_VALID,
            r14: words[0],
            r15: words[1],
            rbx: words[2],
            rdi: words[3],
            rsi: words[4],
            r8: words[5],
            r9: words[6],
            rdx: words[7],
            ..Regs::default()
        };
        if let Some(g) = gpa {
            r.r12 |= shared_abi::vmcall::FATAL_ERROR_GPA_VALID;
            r.r13 = g.0;
        }
        self.vmcall_ok(Subfunction::ReportFatalError, r).map(drop)
    }

    /// Ask the host to check a range from its side (`shared_abi::hostcheck`): SYNC_SHARED
    /// (host sees `expect` everywhere, then writes `new`) or SYNC_PRIVATE (host still sees
    /// `expect`).
    pub fn host_check(
        &mut self,
        op: shared_abi::hostcheck::HostCheckOp,
        range: shared_abi::GpaRange,
        expect: u8,
        new: u8,
    ) -> Result<HostCheck, Error> {
        let regs = Regs {
            rax: shared_abi::tdcall::leaf_rax(TdcallLeaf::VpVmcall, 0),
            rcx: select::LINUX_EXPOSE_MASK,
            r10: shared_abi::hostcheck::TDXLAB_HYPERCALL,
            r11: op as u64,
            r12: range.start.0,
            r13: range.len,
            r14: expect as u64,
            r15: new as u64,
            ..Regs::default()
        };
        let o = self.leaf(TdcallLeaf::VpVmcall, regs)?;
        Ok(match VmcallStatus(o.r10) {
            VmcallStatus::SUCCESS => HostCheck::Passed,
            VmcallStatus::INVALID_OPERAND if o.r11 < range.len => HostCheck::Mismatch {
                offset: o.r11,
                found: o.r12 as u8,
            },
            other => HostCheck::Unsupported(other),
        })
    }

    /// Mark the start (`end` false) or end of a measured window for the host's exit
    /// accounting (`shared_abi::hostcheck::HostCheckOp::Mark`). Hosts without it (real KVM)
    /// fail the hypercall; a mark changes nothing in the TD, so the answer is ignored.
    pub fn mark(&mut self, window: shared_abi::hostcheck::Window, end: bool) {
        let regs = Regs {
            rax: shared_abi::tdcall::leaf_rax(TdcallLeaf::VpVmcall, 0),
            rcx: select::LINUX_EXPOSE_MASK,
            r10: shared_abi::hostcheck::TDXLAB_HYPERCALL,
            r11: shared_abi::hostcheck::HostCheckOp::Mark as u64,
            r12: window as u64,
            r13: end as u64,
            ..Regs::default()
        };
        let _ = self.leaf(TdcallLeaf::VpVmcall, regs);
    }

    /// One raw TDVMCALL<MapGPA>: `(R10 status, R11)`. Use [`Tdx::map_gpa`] for the loop.
    pub fn map_gpa_once(&mut self, start: Gpa, len: u64) -> Result<(VmcallStatus, u64), Error> {
        let r = Regs {
            r12: start.0,
            r13: len,
            ..Regs::default()
        };
        let o = self.tdg_vp_vmcall(Subfunction::MapGpa, r)?;
        Ok((o.status, o.regs.r11))
    }
}
