//! Every constant that has a value in the TDX module 1.5 ABI and GHCI specifications (and the
//! TDVF layout values), asserted against that value. The right-hand column is copied from the
//! specifications, not computed.

use shared_abi::convert::*;
use shared_abi::doorbell::*;
use shared_abi::kvm::*;
use shared_abi::layout::{guid, hob, ovmf, tdvf};
use shared_abi::seamcall::{SeamcallLeaf, SEAMCALL_OPCODE};
use shared_abi::sept::{self, SeptState};
use shared_abi::status::{operand, STATUS_MASK};
use shared_abi::td::{attributes as attr, tdcs, *};
use shared_abi::tdcall::{TdcallLeaf, TDCALL_OPCODE};
use shared_abi::ve::{exit_reason, X86_TRAP_VE};
use shared_abi::vmcall::{self, select, Subfunction};
use shared_abi::{Gpaw, PageLevel, TdxStatus, VmcallStatus};

#[test]
fn tdcall_leaves_match_section_1() {
    let table: &[(TdcallLeaf, u16, &str)] = &[
        (TdcallLeaf::VpVmcall, 0, "TDG.VP.VMCALL"),
        (TdcallLeaf::VpInfo, 1, "TDG.VP.INFO"),
        (TdcallLeaf::MrRtmrExtend, 2, "TDG.MR.RTMR.EXTEND"),
        (TdcallLeaf::VpVeinfoGet, 3, "TDG.VP.VEINFO.GET"),
        (TdcallLeaf::MrReport, 4, "TDG.MR.REPORT"),
        (TdcallLeaf::VpCpuidveSet, 5, "TDG.VP.CPUIDVE.SET"),
        (TdcallLeaf::MemPageAccept, 6, "TDG.MEM.PAGE.ACCEPT"),
        (TdcallLeaf::VmRd, 7, "TDG.VM.RD"),
        (TdcallLeaf::VmWr, 8, "TDG.VM.WR"),
        (TdcallLeaf::VpRd, 9, "TDG.VP.RD"),
        (TdcallLeaf::VpWr, 10, "TDG.VP.WR"),
        (TdcallLeaf::SysRd, 11, "TDG.SYS.RD"),
        (TdcallLeaf::SysRdall, 12, "TDG.SYS.RDALL"),
        (TdcallLeaf::ServtdRd, 18, "TDG.SERVTD.RD"),
        (TdcallLeaf::ServtdWr, 20, "TDG.SERVTD.WR"),
        (TdcallLeaf::MrVerifyreport, 22, "TDG.MR.VERIFYREPORT"),
        (TdcallLeaf::MemPageAttrRd, 23, "TDG.MEM.PAGE.ATTR.RD"),
        (TdcallLeaf::MemPageAttrWr, 24, "TDG.MEM.PAGE.ATTR.WR"),
        (TdcallLeaf::VpEnter, 25, "TDG.VP.ENTER"),
        (TdcallLeaf::VpInvept, 26, "TDG.VP.INVEPT"),
        (TdcallLeaf::VpInvvpid, 27, "TDG.VP.INVVPID"),
    ];
    assert_eq!(table.len(), TdcallLeaf::ALL.len());
    for (leaf, n, name) in table {
        assert_eq!(leaf.number(), *n, "{name}");
        assert_eq!(leaf.name(), *name);
        assert_eq!(TdcallLeaf::from_number(*n), Some(*leaf));
    }
    assert_eq!(TDCALL_OPCODE, [0x66, 0x0F, 0x01, 0xCC]);
    assert_eq!(SEAMCALL_OPCODE, [0x66, 0x0F, 0x01, 0xCF]);
}

#[test]
fn seamcall_leaves_match_section_7() {
    let table: &[(SeamcallLeaf, u16)] = &[
        (SeamcallLeaf::VpEnter, 0),
        (SeamcallLeaf::MngAddcx, 1),
        (SeamcallLeaf::MemPageAdd, 2),
        (SeamcallLeaf::MemSeptAdd, 3),
        (SeamcallLeaf::VpAddcx, 4),
        (SeamcallLeaf::MemPageRelocate, 5),
        (SeamcallLeaf::MemPageAug, 6),
        (SeamcallLeaf::MemRangeBlock, 7),
        (SeamcallLeaf::MngKeyConfig, 8),
        (SeamcallLeaf::MngCreate, 9),
        (SeamcallLeaf::VpCreate, 10),
        (SeamcallLeaf::MngRd, 11),
        (SeamcallLeaf::MemPageDemote, 15),
        (SeamcallLeaf::MrExtend, 16),
        (SeamcallLeaf::MrFinalize, 17),
        (SeamcallLeaf::VpFlush, 18),
        (SeamcallLeaf::MngVpflushdone, 19),
        (SeamcallLeaf::MngKeyFreeid, 20),
        (SeamcallLeaf::MngInit, 21),
        (SeamcallLeaf::VpInit, 22),
        (SeamcallLeaf::MemPagePromote, 23),
        (SeamcallLeaf::MemSeptRd, 25),
        (SeamcallLeaf::VpRd, 26),
        (SeamcallLeaf::PhymemPageReclaim, 28),
        (SeamcallLeaf::MemPageRemove, 29),
        (SeamcallLeaf::MemSeptRemove, 30),
        (SeamcallLeaf::MemTrack, 38),
        (SeamcallLeaf::MemRangeUnblock, 39),
        (SeamcallLeaf::PhymemCacheWb, 40),
        (SeamcallLeaf::PhymemPageWbinvd, 41),
        (SeamcallLeaf::VpWr, 43),
    ];
    assert_eq!(table.len(), SeamcallLeaf::ALL.len());
    for (leaf, n) in table {
        assert_eq!(leaf.number(), *n, "{}", leaf.name());
    }
    assert_eq!(SeamcallLeaf::MemPageAug.name(), "TDH.MEM.PAGE.AUG");
}

#[test]
fn tdx_statuses_match_sections_2_5_7() {
    let table: &[(TdxStatus, u64)] = &[
        (TdxStatus::SUCCESS, 0x0),
        (TdxStatus::OPERAND_INVALID, 0xC000010000000000),
        (TdxStatus::OPERAND_BUSY, 0x8000020000000000),
        (TdxStatus::PREVIOUS_TLB_EPOCH_BUSY, 0x8000020100000000),
        (TdxStatus::OPERAND_BUSY_HOST_PRIORITY, 0x8000020400000000),
        (TdxStatus::RND_NO_ENTROPY, 0x8000020300000000),
        (TdxStatus::INTERRUPTED_RESUMABLE, 0x8000000300000000),
        (TdxStatus::INTERRUPTED_RESTARTABLE, 0x8000000400000000),
        (TdxStatus::PAGE_METADATA_INCORRECT, 0xC000030000000000),
        (TdxStatus::LIFECYCLE_STATE_INCORRECT, 0xC000060700000000),
        (TdxStatus::TD_ASSOCIATED_PAGES_EXIST, 0xC000040000000000),
        (TdxStatus::NO_VALID_VE_INFO, 0xC000070400000000),
        (TdxStatus::EPT_WALK_FAILED, 0xC0000B0000000000),
        (TdxStatus::EPT_ENTRY_FREE, 0xC0000B0100000000),
        (TdxStatus::EPT_ENTRY_NOT_FREE, 0xC0000B0200000000),
        (TdxStatus::EPT_ENTRY_NOT_PRESENT, 0xC0000B0300000000),
        (TdxStatus::EPT_ENTRY_NOT_LEAF, 0xC0000B0400000000),
        (TdxStatus::EPT_ENTRY_LEAF, 0xC0000B0500000000),
        (TdxStatus::GPA_RANGE_NOT_BLOCKED, 0xC0000B0600000000),
        (TdxStatus::GPA_RANGE_ALREADY_BLOCKED, 0x00000B0700000000),
        (TdxStatus::TLB_TRACKING_NOT_DONE, 0xC0000B0800000000),
        (
            TdxStatus::EPT_INVALID_PROMOTE_CONDITIONS,
            0xC0000B0900000000,
        ),
        (TdxStatus::PAGE_ALREADY_ACCEPTED, 0x00000B0A00000000),
        (TdxStatus::PAGE_SIZE_MISMATCH, 0xC0000B0B00000000),
        (TdxStatus::GPA_RANGE_BLOCKED, 0xC0000B0C00000000),
        (TdxStatus::EPT_ENTRY_STATE_INCORRECT, 0xC0000B0D00000000),
        (TdxStatus::EPT_PAGE_NOT_FREE, 0xC0000B0E00000000),
        (TdxStatus::SW_ERROR, 0x8000FF0000000000),
        (TdxStatus::SEAMCALL_VMFAILINVALID, 0x8000FF00FFFF0000),
        (TdxStatus::SEAMCALL_GP, 0x8000FF000000000D),
        (TdxStatus::SEAMCALL_UD, 0x8000FF0000000006),
    ];
    for (s, v) in table {
        assert_eq!(s.0, *v, "{s}");
    }
    assert_eq!(STATUS_MASK, 0xFFFFFFFF00000000);
    // Values the reference spells out with operand/details.
    assert_eq!(
        TdxStatus::OPERAND_INVALID.with_details(operand::RCX).0,
        0xC000010000000001
    );
    assert_eq!(
        TdxStatus::PAGE_SIZE_MISMATCH.with_details(1).0,
        0xC0000B0B00000001
    );
    assert_eq!(
        TdxStatus::OPERAND_BUSY.with_details(operand::SEPT_TREE).0,
        0x8000020000000092
    );
    assert_eq!(
        TdxStatus::OPERAND_BUSY.with_details(operand::TD_EPOCH).0,
        0x80000200000000A9
    );
    // Linux compares `status >> 32`.
    assert_eq!(TdxStatus::OPERAND_INVALID.0 >> 32, 0xC0000100);
    assert_eq!(TdxStatus::OPERAND_BUSY.0 >> 32, 0x80000200);
}

#[test]
fn vmcall_statuses_and_subfunctions_match_section_3() {
    let st: &[(VmcallStatus, u64)] = &[
        (VmcallStatus::SUCCESS, 0),
        (VmcallStatus::RETRY, 1),
        (VmcallStatus::INVALID_OPERAND, 0x8000000000000000),
        (VmcallStatus::GPA_INUSE, 0x8000000000000001),
        (VmcallStatus::ALIGN_ERROR, 0x8000000000000002),
        (VmcallStatus::SUBFUNC_UNSUPPORTED, 0x8000000000000003),
    ];
    for (s, v) in st {
        assert_eq!(s.0, *v, "{s}");
    }
    let subs: &[(Subfunction, u64)] = &[
        (Subfunction::Cpuid, 0xA),
        (Subfunction::Hlt, 0xC),
        (Subfunction::Io, 0x1E),
        (Subfunction::Rdmsr, 0x1F),
        (Subfunction::Wrmsr, 0x20),
        (Subfunction::RequestMmio, 0x30),
        (Subfunction::Wbinvd, 0x36),
        (Subfunction::Pconfig, 0x41),
        (Subfunction::GetTdVmCallInfo, 0x10000),
        (Subfunction::MapGpa, 0x10001),
        (Subfunction::GetQuote, 0x10002),
        (Subfunction::ReportFatalError, 0x10003),
        (Subfunction::SetupEventNotifyInterrupt, 0x10004),
        (Subfunction::Service, 0x10005),
    ];
    assert_eq!(subs.len(), Subfunction::ALL.len());
    for (s, v) in subs {
        assert_eq!(s.number(), *v, "{}", s.name());
        assert_eq!(Subfunction::from_number(*v), Some(*s));
    }
    assert_eq!(vmcall::TDX_HYPERCALL_STANDARD, 0);
    assert_eq!(select::LINUX_EXPOSE_MASK, 0xFFCC);
    assert_eq!(select::TDSHIM_MASK, 0xFC00);
    assert_eq!(select::FORBIDDEN, 0b1_0011, "RAX, RCX, RSP");
    assert_eq!(select::RBP, 1 << 5);
    assert_eq!(vmcall::FATAL_ERROR_GPA_VALID, 1 << 63);
    assert_eq!(vmcall::MAP_GPA_MAX_RETRIES_PER_PAGE, 3);
    assert_eq!(vmcall::GET_TDVMCALL_INFO_LEAF_USER, 1);
}

#[test]
fn levels_and_shared_bit_match_sections_2_4_7() {
    assert_eq!(PageLevel::Size4K.tdx_level(), 0);
    assert_eq!(PageLevel::Size2M.tdx_level(), 1);
    assert_eq!(PageLevel::Size1G.tdx_level(), 2);
    assert_eq!(
        PageLevel::Size4K.linux_pg_level(),
        1,
        "S-EPT level = pg_level - 1"
    );
    assert_eq!(PageLevel::Size2M.bytes(), 2 << 20);
    assert_eq!(PageLevel::Size1G.bytes(), 1 << 30);
    assert_eq!(Gpaw::GPAW_48.shared_bit(), 47);
    assert_eq!(Gpaw::GPAW_52.shared_bit(), 51);
    assert_eq!(Gpaw::GPAW_48.shared_mask(), 0x8000_0000_0000);
    assert_eq!(Gpaw::new(47), None);
    // Emulated TDs on small-MAXPHYADDR hosts: 36..=52, non-architectural below 48.
    assert_eq!(Gpaw::emulated(35), None);
    assert_eq!(Gpaw::emulated(53), None);
    assert_eq!(Gpaw::emulated(39).map(Gpaw::shared_bit), Some(38));
    assert!(!Gpaw::emulated(46).unwrap().is_architectural());
    assert!(Gpaw::emulated(48).unwrap().is_architectural());
    assert_eq!(Gpaw::emulated(48), Some(Gpaw::GPAW_48));
}

#[test]
fn sept_states_match_section_7() {
    let table: &[(SeptState, u8, u8)] = &[
        (SeptState::Free, 0x0E, 0),
        (SeptState::Removed, 0x0C, 5),
        (SeptState::NlMapped, 0x00, 0x84),
        (SeptState::NlBlocked, 0x08, 0x81),
        (SeptState::Mapped, 0x60, 4),
        (SeptState::Blocked, 0x68, 1),
        (SeptState::Pending, 0x70, 2),
        (SeptState::PendingBlocked, 0x78, 3),
        (SeptState::BlockedW, 0x64, 8),
        (SeptState::PendingBlockedW, 0x74, 16),
        (SeptState::ExportedBlockedW, 0x66, 9),
        (SeptState::ExportedDirty, 0x63, 11),
        (SeptState::ExportedDirtyBlockedW, 0x67, 12),
        (SeptState::PendingExportedBlockedW, 0x76, 17),
        (SeptState::PendingExportedDirty, 0x73, 19),
        (SeptState::PendingExportedDirtyBlockedW, 0x77, 20),
    ];
    assert_eq!(table.len(), SeptState::ALL.len());
    for (s, enc, pub_) in table {
        assert_eq!(
            (s.encoding(), s.public_value()),
            (*enc, *pub_),
            "{}",
            s.name()
        );
        assert_eq!(SeptState::from_public_value(*pub_), Some(*s));
    }
    assert!(
        SeptState::Pending.is_leaf()
            && !SeptState::NlMapped.is_leaf()
            && !SeptState::Free.is_leaf()
    );
    assert_eq!(
        (
            sept::ENTRY_LOCK_BIT,
            sept::HOST_PRIORITY_BIT,
            sept::SUPPRESS_VE_BIT
        ),
        (11, 52, 63)
    );
    assert_eq!(sept::error_info_rdx(1, SeptState::Pending, 0), 0x201);
}

#[test]
fn td_attributes_cpuid_and_tdcs_match_sections_1_4_6() {
    let bits: &[(u64, u32)] = &[
        (attr::DEBUG, 0),
        (attr::HGS_PLUS_PROF, 4),
        (attr::PERF_PROF, 5),
        (attr::PMT_PROF, 6),
        (attr::ICSSD, 16),
        (attr::LASS, 27),
        (attr::SEPT_VE_DISABLE, 28),
        (attr::MIGRATABLE, 29),
        (attr::PKS, 30),
        (attr::KL, 31),
        (attr::TPA, 62),
        (attr::PERFMON, 63),
    ];
    for (v, bit) in bits {
        assert_eq!(*v, 1u64 << bit);
    }
    assert_eq!(tdcs::NOTIFY_ENABLES, 0x9100000000000010);
    assert_eq!(tdcs::TD_CTLS, 0x1110000300000017);
    assert_eq!(tdcs::CONFIG_FLAGS, 0x1110000300000016);
    assert_eq!(tdcs::TOPOLOGY_ENUM_CONFIGURED, 0x9100000000000019);
    assert_eq!(
        [
            tdcs::TD_CTLS_PENDING_VE_DISABLE,
            tdcs::TD_CTLS_ENUM_TOPOLOGY,
            tdcs::TD_CTLS_VIRT_CPUID2,
            tdcs::TD_CTLS_REDUCE_VE,
            tdcs::TD_CTLS_LOCK
        ],
        [1, 2, 4, 8, 1 << 63]
    );
    assert_eq!(tdcs::CONFIG_FLAGS_FLEXIBLE_PENDING_VE, 2);
    assert_eq!(CPUID_TDX_LEAF, 0x21);
    assert_eq!(TDX_SIGNATURE, b"IntelTDX    ");
    assert_eq!(
        (TDX_SIGNATURE_EBX, TDX_SIGNATURE_EDX, TDX_SIGNATURE_ECX),
        (0x65746E49, 0x5844546C, 0x20202020)
    );
    // The dwords spell the signature in EBX, EDX, ECX order.
    let mut s = Vec::new();
    for d in [TDX_SIGNATURE_EBX, TDX_SIGNATURE_EDX, TDX_SIGNATURE_ECX] {
        s.extend_from_slice(&d.to_le_bytes());
    }
    assert_eq!(&s[..], TDX_SIGNATURE);
}

#[test]
fn ve_values_match_section_5() {
    assert_eq!(X86_TRAP_VE, 20);
    assert_eq!(
        [
            exit_reason::CPUID,
            exit_reason::HLT,
            exit_reason::IO,
            exit_reason::RDMSR,
            exit_reason::WRMSR,
            exit_reason::EPT_VIOLATION
        ],
        [10, 12, 30, 31, 32, 48]
    );
}

#[test]
fn kvm_glue_matches_section_8() {
    assert_eq!(KVM_HC_MAP_GPA_RANGE, 12);
    assert_eq!(KVM_FEATURE_HC_MAP_GPA_RANGE, 16);
    assert_eq!(KVM_EXIT_HYPERCALL, 3);
    assert_eq!(
        [
            KVM_MAP_GPA_RANGE_PAGE_SZ_4K,
            KVM_MAP_GPA_RANGE_PAGE_SZ_2M,
            KVM_MAP_GPA_RANGE_PAGE_SZ_1G
        ],
        [0, 1, 2]
    );
    assert_eq!(KVM_MAP_GPA_RANGE_ENCRYPTED, 0x10);
    assert_eq!(KVM_MAP_GPA_RANGE_DECRYPTED, 0);
    assert_eq!(TDX_MAP_GPA_MAX_LEN, 2 * 1024 * 1024);
    assert_eq!(KVM_SET_MEMORY_ATTRIBUTES, 0x4020AED2);
    assert_eq!(KVM_MEMORY_ATTRIBUTE_PRIVATE, 0x8);
    assert_eq!(KVM_CAP_MEMORY_ATTRIBUTES, 233);
    assert_eq!(KVM_CAP_EXIT_HYPERCALL, 201);
    assert_eq!(KVM_EXIT_MEMORY_FAULT, 39);
    assert_eq!(KVM_MEMORY_EXIT_FLAG_PRIVATE, 1 << 3);
    assert_eq!(KVM_EXIT_TDX, 40);
    assert_eq!(KVM_SYSTEM_EVENT_TDX_FATAL, 7);
    assert_eq!(KVM_EXIT_HYPERCALL_LONG_MODE, 1);
    assert_eq!(EXIT_REASON_TDCALL, 77);
    assert_eq!(VMCS_SHARED_EPT_POINTER, 0x203C);
    assert_eq!(TDX_EXT_EXIT_QUAL_TYPE_ACCEPT, 1);
    assert_eq!(TDX_EXT_EXIT_QUAL_TYPE_PENDING_EPT_VIOLATION, 6);
    assert_eq!((KVM_EXIT_IO, KVM_EXIT_HLT, KVM_EXIT_MMIO), (2, 5, 6));
    // _IOW(0xAE, 0xD2, 32 bytes) recomputed: dir write = 1 << 30, size << 16, type << 8, nr.
    assert_eq!(
        KVM_SET_MEMORY_ATTRIBUTES,
        1 << 30 | 32 << 16 | 0xAE << 8 | 0xD2
    );
}

#[test]
fn boot_layout_values_match_td_boot() {
    assert_eq!(
        guid::OVMF_TABLE_FOOTER.0,
        [
            0xDE, 0x82, 0xB5, 0x96, 0xB2, 0x1F, 0xF7, 0x45, 0xBA, 0xEA, 0xA3, 0x66, 0xC5, 0x5A,
            0x08, 0x2D
        ]
    );
    assert_eq!(
        guid::TDX_METADATA_OFFSET.0,
        [
            0x35, 0x65, 0x7A, 0xE4, 0x4A, 0x98, 0x98, 0x47, 0x86, 0x5E, 0x46, 0x85, 0xA7, 0xBF,
            0x8E, 0xC2
        ]
    );
    assert_eq!(
        guid::TDX_METADATA.0,
        [
            0xF3, 0xF9, 0xEA, 0xE9, 0x8E, 0x16, 0xD5, 0x44, 0xA8, 0xEB, 0x7F, 0x4D, 0x87, 0x38,
            0xF6, 0xAE
        ]
    );
    assert_eq!(
        guid::OVMF_TABLE_FOOTER.to_string(),
        "96b582de-1fb2-45f7-baea-a366c55a082d"
    );
    assert_eq!(
        guid::SEV_ES_RESET_BLOCK.to_string(),
        "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
    );
    assert_eq!(ovmf::FOOTER_FROM_END, 48);
    assert_eq!(tdvf::TDVF_SIGNATURE.to_le_bytes(), *b"TDVF");
    assert_eq!(
        (
            tdvf::DESCRIPTOR_SIZE,
            tdvf::SECTION_SIZE,
            tdvf::TDVF_VERSION
        ),
        (16, 32, 1)
    );
    assert_eq!((tdvf::ATTR_MR_EXTEND, tdvf::ATTR_PAGE_AUG), (1, 2));
    assert_eq!(tdvf::IMAGE_SIZE_ALIGN, 64 * 1024);
    assert_eq!(
        (
            hob::HOB_TYPE_HANDOFF,
            hob::HOB_TYPE_RESOURCE_DESCRIPTOR,
            hob::HOB_TYPE_GUID_EXTENSION,
            hob::HOB_TYPE_END_OF_HOB_LIST
        ),
        (1, 3, 4, 0xFFFF)
    );
    assert_eq!(
        (hob::PHIT_SIZE, hob::RESOURCE_SIZE, hob::PHIT_VERSION),
        (56, 48, 9)
    );
    assert_eq!(hob::resource_type::MEMORY_UNACCEPTED, 7);
    assert_eq!(hob::resource_attr::RAM, 0x7);
    assert_eq!(
        (
            hob::resource_attr::UNCACHEABLE,
            hob::resource_attr::WRITE_BACK_CACHEABLE
        ),
        (0x400, 0x2000)
    );
    assert_eq!((DEBUG_EXIT_PORT, COM1_PORT), (0xF4, 0x3F8));
}

#[test]
fn host_check_protocol_values() {
    use shared_abi::hostcheck::*;
    assert_eq!(TDXLAB_HYPERCALL.to_be_bytes()[4..], *b"tdxl");
    assert_ne!(
        TDXLAB_HYPERCALL,
        shared_abi::vmcall::TDX_HYPERCALL_STANDARD,
        "must not be a GHCI call"
    );
    assert_eq!(HostCheckOp::from_number(1), Some(HostCheckOp::SyncShared));
    assert_eq!(HostCheckOp::from_number(2), Some(HostCheckOp::SyncPrivate));
    assert_eq!(HostCheckOp::from_number(3), Some(HostCheckOp::PunchHole));
    assert_eq!(HostCheckOp::from_number(4), Some(HostCheckOp::Mark));
    assert_eq!(HostCheckOp::from_number(0), None);
    assert_eq!(HostCheckOp::from_number(5), None);
    // The measured windows: three steps per round trip, numbered from 1.
    let numbers: Vec<u64> = Window::ALL.iter().map(|w| w.number()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
    assert_eq!(Window::from_number(0), None);
    assert_eq!(Window::ToPrivate2m.name(), "2m-to-private");
}

#[test]
fn stress_scenarios_round_trip_and_result_fields_parse() {
    use shared_abi::stress::{field, Scenario};
    for s in Scenario::ALL {
        assert_eq!(Scenario::from_u32(s as u32), Some(s));
        assert_eq!(Scenario::parse(s.name()), Some(s));
        assert!(s.min_chunk() >= 2 << 20 && s.min_chunk() % (2 << 20) == 0);
    }
    assert_eq!(Scenario::Boundary.min_mem(4, true), 40 << 20);
    assert_eq!(Scenario::Explicit.min_mem(1, false), 8 << 20);
    assert_eq!(Scenario::Alternate.min_mem(2, false), 8 << 20);
    assert_eq!(Scenario::parse("alternate"), Some(Scenario::Alternate));
    assert_eq!(Scenario::from_u32(0), None);
    assert_eq!(Scenario::parse("sideways"), None);
    let line = "stress-result vcpu=3 ops=17 hash=0xdeadbeef pages=0";
    assert_eq!(field(line, "vcpu"), Some(3));
    assert_eq!(field(line, "hash"), Some(0xdead_beef));
    assert_eq!(field(line, "pages"), Some(0));
    assert_eq!(field(line, "checks"), None);
    assert_eq!(field("ops=x", "ops"), None);
}
