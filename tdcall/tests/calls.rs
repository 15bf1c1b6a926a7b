//! The typed leaves put their inputs in the registers the ABI names and decode the outputs.

mod common;
use common::{scripted, scripted_emulated, vmcall_answer};
use shared_abi::tdcall::TdcallLeaf;
use shared_abi::vmcall::Subfunction;
use shared_abi::{Gpa, Gpaw, PageLevel, TdxStatus, VmcallStatus};
use tdcall::{Error, Regs, Tdx};

#[test]
fn vp_info_decodes_gpaw_counts_and_index() {
    let mut tdx = Tdx::new(scripted(|r| {
        assert_eq!(r.rax, 1);
        Regs {
            rcx: 48,
            rdx: 1 << 28,
            r8: 4 | 8 << 32,
            r9: 3,
            r10: 1,
            ..Regs::default()
        }
    }));
    let info = tdx.tdg_vp_info().unwrap();
    assert_eq!(info.gpaw, Gpaw::GPAW_48);
    assert!(info.sept_ve_disabled());
    assert_eq!((info.num_vcpus, info.max_vcpus, info.vcpu_index), (4, 8, 3));
    assert!(info.sys_rd_available);
}

#[test]
fn an_emulated_td_may_report_its_hosts_maxphyaddr_as_gpaw() {
    let mut tdx = Tdx::new(scripted_emulated(|_| Regs {
        rcx: 39,
        ..Regs::default()
    }));
    assert_eq!(tdx.tdg_vp_info().unwrap().gpaw.shared_bit(), 38);
    let mut tdx = Tdx::new(scripted_emulated(|_| Regs {
        rcx: 30,
        ..Regs::default()
    }));
    assert_eq!(
        tdx.tdg_vp_info().unwrap_err(),
        Error::BadOutput {
            leaf: TdcallLeaf::VpInfo,
            what: "GPAW is outside 36..=52"
        }
    );
}

#[test]
fn vp_info_with_an_impossible_gpaw_is_bad_output() {
    let mut tdx = Tdx::new(scripted(|_| Regs {
        rcx: 39,
        ..Regs::default()
    }));
    assert_eq!(
        tdx.tdg_vp_info().unwrap_err(),
        Error::BadOutput {
            leaf: TdcallLeaf::VpInfo,
            what: "GPAW is neither 48 nor 52"
        }
    );
}

#[test]
fn veinfo_get_without_pending_ve_names_the_status() {
    let mut tdx = Tdx::new(scripted(|_| Regs {
        rax: TdxStatus::NO_VALID_VE_INFO.0,
        ..Regs::default()
    }));
    let err = tdx.tdg_vp_veinfo_get().unwrap_err();
    assert_eq!(
        err,
        Error::Tdcall {
            leaf: TdcallLeaf::VpVeinfoGet,
            status: TdxStatus::NO_VALID_VE_INFO
        }
    );
    assert!(
        err.to_string()
            .contains("TDG.VP.VEINFO.GET failed: TDX_NO_VALID_VE_INFO"),
        "{err}"
    );
}

#[test]
fn veinfo_get_decodes_every_field() {
    let mut tdx = Tdx::new(scripted(|_| Regs {
        rcx: 48,
        rdx: 0x181,
        r8: 0x1000,
        r9: 0x8000_0000_2000,
        r10: 3 | 7 << 32,
        ..Regs::default()
    }));
    let ve = tdx.tdg_vp_veinfo_get().unwrap();
    assert_eq!(
        (ve.exit_reason, ve.exit_qualification, ve.gla, ve.gpa),
        (48, 0x181, 0x1000, 0x8000_0000_2000)
    );
    assert_eq!((ve.instr_len, ve.instr_info), (3, 7));
}

#[test]
fn accept_encodes_gpa_and_level_in_rcx() {
    let mut tdx = Tdx::new(scripted(|_| Regs::default()));
    assert!(tdx
        .tdg_mem_page_accept(Gpa(0x40_0000), PageLevel::Size2M)
        .is_success());
    let c = tdx.transport().calls[0];
    assert_eq!((c.rax, c.rcx), (6, 0x40_0001));
}

#[test]
fn io_read_and_write_use_r12_to_r15() {
    let mut tdx = Tdx::new(scripted(|r| {
        vmcall_answer(0, if r.r13 == 0 { 0xAB } else { 0 })
    }));
    assert_eq!(tdx.io_read(1, 0x3FD).unwrap(), 0xAB);
    tdx.io_write(4, 0xF4, 0x31).unwrap();
    let calls = &tdx.transport().calls;
    assert_eq!(
        (calls[0].r11, calls[0].r12, calls[0].r13, calls[0].r14),
        (Subfunction::Io as u64, 1, 0, 0x3FD)
    );
    assert_eq!(
        (calls[1].r12, calls[1].r13, calls[1].r14, calls[1].r15),
        (4, 1, 0xF4, 0x31)
    );
}

#[test]
fn cpuid_returns_r12_to_r15() {
    let mut tdx = Tdx::new(scripted(|r| {
        assert_eq!((r.r11, r.r12, r.r13), (Subfunction::Cpuid as u64, 0x21, 0));
        Regs {
            r12: 0,
            r13: 0x6574_6E49,
            r14: 0x2020_2020,
            r15: 0x5844_546C,
            ..Regs::default()
        }
    }));
    let [_, ebx, ecx, edx] = tdx.cpuid(0x21, 0).unwrap();
    assert!(shared_abi::td::is_tdx_signature(ebx, ecx, edx));
}

#[test]
fn host_refusal_is_a_vmcall_error_naming_sub_function_and_status() {
    let mut tdx = Tdx::new(scripted(|_| {
        vmcall_answer(VmcallStatus::SUBFUNC_UNSUPPORTED.0, 0)
    }));
    let err = tdx.get_td_vmcall_info(0).unwrap_err();
    assert_eq!(
        err,
        Error::Vmcall {
            sub: Subfunction::GetTdVmCallInfo,
            status: VmcallStatus::SUBFUNC_UNSUPPORTED
        }
    );
    assert_eq!(
        err.to_string(),
        "TDG.VP.VMCALL<GetTdVmCallInfo> failed: TDG.VP.VMCALL_SUBFUNC_UNSUPPORTED"
    );
}

#[test]
fn report_fatal_error_spreads_the_message_like_linux() {
    let mut tdx = Tdx::new(scripted(|_| vmcall_answer(0, 0)));
    let msg: Vec<u8> = (b'a'..=b'z').cycle().take(64).collect();
    tdx.report_fatal_error(7, Some(Gpa(0x1000)), &msg).unwrap();
    let c = tdx.transport().calls[0];
    assert_eq!(c.r11, Subfunction::ReportFatalError as u64);
    assert_eq!(c.r12, 7 | 1 << 63, "bit 63 marks R13 as a valid GPA");
    assert_eq!(c.r13, 0x1000);
    let order = [c.r14, c.r15, c.rbx, c.rdi, c.rsi, c.r8, c.r9, c.rdx];
    let got: Vec<u8> = order.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(got, msg);
}

#[test]
fn hlt_rdmsr_wrmsr_use_the_ghci_registers() {
    let mut tdx = Tdx::new(scripted(|r| {
        vmcall_answer(
            0,
            if r.r11 == Subfunction::Rdmsr as u64 {
                0xFEE0_0C00
            } else {
                0
            },
        )
    }));
    tdx.hlt(true).unwrap();
    assert_eq!(tdx.rdmsr(0x1B).unwrap(), 0xFEE0_0C00);
    tdx.wrmsr(0x1B, 0x1234).unwrap();
    let c = &tdx.transport().calls;
    assert_eq!((c[0].r11, c[0].r12), (Subfunction::Hlt as u64, 1));
    assert_eq!((c[1].r11, c[1].r12), (Subfunction::Rdmsr as u64, 0x1B));
    assert_eq!(
        (c[2].r11, c[2].r12, c[2].r13),
        (Subfunction::Wrmsr as u64, 0x1B, 0x1234)
    );
}

#[test]
fn host_check_uses_a_vendor_r10_and_decodes_the_answer() {
    use shared_abi::hostcheck::{HostCheckOp, TDXLAB_HYPERCALL};
    use shared_abi::GpaRange;
    use tdcall::HostCheck;
    let range = GpaRange::new(Gpa(0x40_0000), 0x2000);
    let answers = [
        vmcall_answer(0, 0),
        vmcall_answer(VmcallStatus::INVALID_OPERAND.0, 0x1234),
        vmcall_answer(0xFFFF_FFFF_FFFF_FC18, 0),
    ];
    let mut i = 0;
    let mut tdx = Tdx::new(scripted(move |_| {
        i += 1;
        let mut a = answers[i - 1];
        a.r12 = 0x5A;
        a
    }));
    assert_eq!(
        tdx.host_check(HostCheckOp::SyncShared, range, 0x11, 0x22)
            .unwrap(),
        HostCheck::Passed
    );
    assert_eq!(
        tdx.host_check(HostCheckOp::SyncPrivate, range, 0, 0)
            .unwrap(),
        HostCheck::Mismatch {
            offset: 0x1234,
            found: 0x5A
        }
    );
    assert_eq!(
        tdx.host_check(HostCheckOp::SyncPrivate, range, 0, 0)
            .unwrap(),
        HostCheck::Unsupported(VmcallStatus(0xFFFF_FFFF_FFFF_FC18)),
        "real KVM fails an unknown KVM hypercall: the guest falls back to self-checks"
    );
    let c = tdx.transport().calls[0];
    assert_eq!(
        (c.rax, c.r10, c.r11, c.r12, c.r13, c.r14, c.r15),
        (0, TDXLAB_HYPERCALL, 1, 0x40_0000, 0x2000, 0x11, 0x22)
    );
}
