//! Global, TD-scope and vCPU-scope metadata as a guest reads and writes it: TDG.SYS.RD,
//! TDG.VM.RD/WR and TDG.VP.RD/WR (TDX module 1.5: `tdg_sys_rd.c`, `tdg_vm_rd_wr.c`,
//! `tdg_vp_rd_wr.c`, and the metadata handlers `metadata_generic.c`, `metadata_sys.c`,
//! `metadata_td.c`, `metadata_vp.c`).
//!
//! The tables are the module's lookup tables (`include/auto_gen/tdr_tdcs_fields_lookup.c`,
//! `td_vmcs_fields_lookup.c`, `tdvps_fields_lookup.c`) reduced to what tells one answer from
//! another for a guest: each entry's first field id, its fields and elements, and the guest's
//! read and write masks. With no L2 VMs the module leaves out the last entries of the TD table
//! (`TDCS_PAGES_PER_L2_VM` × 3: the L2 S-EPT roots) and of the vCPU table
//! (`TDVPS_PAGES_PER_L2_VM` × 3: the L2 VMCSs and MSR bitmaps), so their ids are unknown.
//!
//! Values: the module's for what tdxlab models (ATTRIBUTES, NUM_VCPUS, MAX_VCPUS, GPAW,
//! CONFIG_FLAGS as KVM sets it, TD_CTLS, NOTIFY_ENABLES, MRTD, the vCPU index and #VE
//! controls), zero where the module starts at zero and tdxlab never changes it (the
//! configuration measurements QEMU leaves unset, the RTMRs, service TDs, migration), and zero
//! for the three readable fields tdxlab does not model (TD_UUID, XFAM, TSC_FREQUENCY:
//! docs/emulation.md).

use super::TdxModule;
use shared_abi::status::operand;
use shared_abi::TdxStatus;
use tdcall::Regs;

/// One lookup-table entry: its first field id, fields, elements per field, and the guest's
/// read and write masks.
#[derive(Clone, Copy, Debug)]
struct MdEntry {
    id: u64,
    fields: u32,
    elems: u32,
    guest_rd: u64,
    guest_wr: u64,
}

const fn e(id: u64, fields: u32, elems: u32, guest_rd: u64, guest_wr: u64) -> MdEntry {
    MdEntry {
        id,
        fields,
        elems,
        guest_rd,
        guest_wr,
    }
}

/// `tdr_tdcs_lookup`, entries 0–79 (the L2 S-EPT roots, 80–82, are out with no L2 VM).
#[rustfmt::skip]
const TDR_TDCS: &[MdEntry] = &[
    e(0x8010_0000_0000_0001, 1, 1, 0x0, 0x0), // 0 FATAL
    e(0x8010_0002_0000_0002, 1, 1, 0x0, 0x0), // 1 NUM_TDCX
    e(0x8010_0003_0000_0004, 1, 1, 0x0, 0x0), // 2 CHLDCNT
    e(0x8010_0002_0000_0005, 1, 1, 0x0, 0x0), // 3 LIFECYCLE_STATE
    e(0x8010_0003_0000_0010, 9, 1, 0x0, 0x0), // 4 TDCX_PA
    e(0x8010_0003_0000_0020, 1, 4, 0xFFFFFFFFFFFFFFFF, 0x0), // 5 TD_UUID
    e(0x8110_0001_0000_0001, 1, 1, 0x0, 0x0), // 6 HKID
    e(0x8110_0003_0000_0002, 1, 1, 0x0, 0x0), // 7 PKG_CONFIG_BITMAP
    e(0x8210_0001_0000_0000, 1, 1, 0x0, 0x0), // 8 HANDOFF_VERSION
    e(0x8210_0003_0000_0001, 1, 1, 0x0, 0x0), // 9 SEAMDB_INDEX
    e(0x8210_0003_0000_0002, 1, 4, 0x0, 0x0), // 10 SEAMDB_NONCE
    e(0x9010_0002_0000_0001, 1, 1, 0xFFFFFFFF, 0x0), // 11 NUM_VCPUS
    e(0x9010_0002_0000_0002, 1, 1, 0x0, 0x0), // 12 NUM_ASSOC_VCPUS
    e(0x9010_0002_0000_0004, 1, 1, 0x0, 0x0), // 13 OP_STATE
    e(0x9010_0001_0000_0005, 1, 1, 0xFFFF, 0x0), // 14 NUM_L2_VMS
    e(0x1110_0003_0000_0000, 1, 1, 0xFFFFFFFFFFFFFFFF, 0x0), // 15 ATTRIBUTES
    e(0x1110_0003_0000_0001, 1, 1, 0xFFFFFFFFFFFFFFFF, 0x0), // 16 XFAM
    e(0x1110_0002_0000_0002, 1, 1, 0xFFFFFFFF, 0x0), // 17 MAX_VCPUS
    e(0x1110_0000_0000_0003, 1, 1, 0xFF, 0x0), // 18 GPAW
    e(0x1110_0003_0000_0004, 1, 1, 0x0, 0x0), // 19 EPTP
    e(0x1110_0003_0000_000A, 1, 1, 0x0, 0x0), // 20 TSC_OFFSET
    e(0x1110_0003_0000_000B, 1, 1, 0x0, 0x0), // 21 TSC_MULTIPLIER
    e(0x1110_0001_0000_000C, 1, 1, 0xFFFF, 0x0), // 22 TSC_FREQUENCY
    e(0x1110_0003_0000_000D, 1, 1, 0x0, 0x0), // 23 VIRTUAL_TSC
    e(0x9110_0001_0000_000E, 1, 1, 0x0, 0x0), // 24 NUM_CPUID_VALUES
    e(0x9110_0002_0000_000F, 1, 1, 0x0, 0x0), // 25 XBUFF_SIZE
    e(0x9110_0003_0000_0010, 1, 1, 0x1, 0x1), // 26 NOTIFY_ENABLES
    e(0x9110_0003_0000_0011, 1, 1, 0x0, 0x0), // 27 HP_LOCK_TIMEOUT
    e(0x9110_0003_0000_0012, 4, 1, 0x0, 0x0), // 28 VM_CTLS
    e(0x1110_0003_0000_0016, 1, 1, 0xFFFFFFFFFFFFFFFF, 0x0), // 29 CONFIG_FLAGS
    e(0x1110_0003_0000_0017, 1, 1, 0xFFFFFFFFFFFFFFFF, 0x1), // 30 TD_CTLS
    e(0x9110_0000_0000_0080, 80, 1, 0x0, 0x0), // 31 CPUID_VALID
    e(0x9110_0002_0000_0800, 19, 1, 0x0, 0x0), // 32 XBUFF_OFFSETS
    e(0x9210_0003_0000_0000, 1, 1, 0x0, 0x0), // 33 TD_EPOCH
    e(0x9210_0001_0000_0001, 2, 1, 0x0, 0x0), // 34 REFCOUNT
    e(0x1310_0003_0000_0000, 1, 6, 0xFFFFFFFFFFFFFFFF, 0x0), // 35 MRTD
    e(0x1310_0003_0000_0010, 1, 6, 0xFFFFFFFFFFFFFFFF, 0x0), // 36 MRCONFIGID
    e(0x1310_0003_0000_0018, 1, 6, 0xFFFFFFFFFFFFFFFF, 0x0), // 37 MROWNER
    e(0x1310_0003_0000_0020, 1, 6, 0xFFFFFFFFFFFFFFFF, 0x0), // 38 MROWNERCONFIG
    e(0x1310_0003_0000_0040, 4, 6, 0xFFFFFFFFFFFFFFFF, 0x0), // 39 RTMR
    e(0x9410_0003_0000_0000, 80, 2, 0x0, 0x0), // 40 CPUID_VALUES
    e(0x9610_0003_0000_010A, 1, 1, 0x0, 0x0), // 41 VIRTUAL_IA32_ARCH_CAPABILITIES
    e(0x9610_0003_0000_0480, 1, 1, 0x0, 0x0), // 42 VIRTUAL_IA32_VMX_BASIC
    e(0x9610_0003_0000_0485, 1, 1, 0x0, 0x0), // 43 VIRTUAL_IA32_VMX_MISC
    e(0x9610_0003_0000_0486, 1, 1, 0x0, 0x0), // 44 VIRTUAL_IA32_VMX_CR0_FIXED0
    e(0x9610_0003_0000_0487, 1, 1, 0x0, 0x0), // 45 VIRTUAL_IA32_VMX_CR0_FIXED1
    e(0x9610_0003_0000_0488, 1, 1, 0x0, 0x0), // 46 VIRTUAL_IA32_VMX_CR4_FIXED0
    e(0x9610_0003_0000_0489, 1, 1, 0x0, 0x0), // 47 VIRTUAL_IA32_VMX_CR4_FIXED1
    e(0x9610_0003_0000_048B, 1, 1, 0x0, 0x0), // 48 VIRTUAL_IA32_VMX_PROCBASED_CTLS2
    e(0x9610_0003_0000_048C, 1, 1, 0x0, 0x0), // 49 VIRTUAL_IA32_VMX_EPT_VPID_CAP
    e(0x9610_0003_0000_048D, 1, 1, 0x0, 0x0), // 50 VIRTUAL_IA32_VMX_TRUE_PINBASED_CTLS
    e(0x9610_0003_0000_048E, 1, 1, 0x0, 0x0), // 51 VIRTUAL_IA32_VMX_TRUE_PROCBASED_CTLS
    e(0x9610_0003_0000_048F, 1, 1, 0x0, 0x0), // 52 VIRTUAL_IA32_VMX_TRUE_EXIT_CTLS
    e(0x9610_0003_0000_0490, 1, 1, 0x0, 0x0), // 53 VIRTUAL_IA32_VMX_TRUE_ENTRY_CTLS
    e(0x9610_0003_0000_0491, 1, 1, 0x0, 0x0), // 54 VIRTUAL_IA32_VMX_VMFUNC
    e(0x9610_0003_0000_0492, 1, 1, 0x0, 0x0), // 55 VIRTUAL_IA32_VMX_PROCBASED_CTLS3
    e(0x9610_0003_0000_0493, 1, 1, 0x0, 0x0), // 56 VIRTUAL_IA32_VMX_EXIT_CTLS2
    e(0x9810_0000_0000_0001, 1, 1, 0x0, 0x0), // 57 MIG_DEC_KEY_SET
    e(0x9810_0002_0000_0002, 1, 1, 0x0, 0x0), // 58 EXPORT_COUNT
    e(0x9810_0002_0000_0003, 1, 1, 0x0, 0x0), // 59 IMPORT_COUNT
    e(0x9810_0002_0000_0004, 1, 1, 0x0, 0x0), // 60 MIG_EPOCH
    e(0x9810_0003_0000_0005, 1, 1, 0x0, 0x0), // 61 BW_EPOCH
    e(0x9810_0003_0000_0006, 1, 1, 0x0, 0x0), // 62 TOTAL_MB_COUNT
    e(0x9810_0003_0000_0010, 1, 4, 0x0, 0x0), // 63 MIG_DEC_KEY
    e(0x9810_0003_0000_0014, 1, 4, 0x0, 0x0), // 64 MIG_DEC_WORKING_KEY
    e(0x9810_0003_0000_0018, 1, 4, 0x0, 0x0), // 65 MIG_ENC_KEY
    e(0x9810_0003_0000_001C, 1, 4, 0x0, 0x0), // 66 MIG_ENC_WORKING_KEY
    e(0x9810_0001_0000_0020, 1, 1, 0x0, 0x0), // 67 MIG_VERSION
    e(0x9810_0001_0000_0021, 1, 1, 0x0, 0x0), // 68 MIG_WORKING_VERSION
    e(0x9810_0003_0000_0030, 1, 1, 0x0, 0x0), // 69 DIRTY_COUNT
    e(0x9810_0003_0000_0031, 1, 1, 0x0, 0x0), // 70 MIG_COUNT
    e(0x9810_0001_0000_0032, 1, 1, 0x0, 0x0), // 71 NUM_MIGS
    e(0x9810_0002_0000_0034, 1, 1, 0x0, 0x0), // 72 NUM_MIGRATED_VCPUS
    e(0x9810_0003_0000_0040, 1, 4, 0xFFFFFFFFFFFFFFFF, 0x0), // 73 PRE_IMPORT_UUID
    e(0x9910_0003_0000_0000, 1, 6, 0xFFFFFFFFFFFFFFFF, 0x0), // 74 SERVTD_HASH
    e(0x9910_0001_0000_0006, 1, 1, 0xFFFF, 0x0), // 75 SERVTD_NUM
    e(0x9910_0003_0000_0080, 1, 16, 0xFFFFFFFFFFFFFFFF, 0x0), // 76 SERVTD_BINDINGS_TABLE
    e(0x9A10_0003_0000_0000, 512, 1, 0x0, 0x0), // 77 MIGSC_LINKS
    e(0x2010_0003_0000_0000, 512, 1, 0x0, 0x0), // 78 MSR_BITMAPS
    e(0x2110_0003_0000_0000, 512, 1, 0x0, 0x0), // 79 SEPT_ROOT
];

/// `td_vmcs_lookup`: the TD VMCS, class 0 of the vCPU context, which a guest may not access.
#[rustfmt::skip]
const TD_VMCS: &[MdEntry] = &[
    e(0x0024_0001_0000_0000, 1, 1, 0x0, 0x0), // 0 VPID
    e(0x0024_0001_0000_0002, 1, 1, 0x0, 0x0), // 1 Posted-interrupt notification vector
    e(0x0024_0001_0000_0004, 1, 1, 0x0, 0x0), // 2 EPTP index
    e(0x0024_0001_0000_0006, 1, 1, 0x0, 0x0), // 3 HLAT prefix size
    e(0x0024_0001_0000_0800, 1, 1, 0x0, 0x0), // 4 Guest ES selector
    e(0x0024_0001_0000_0802, 1, 1, 0x0, 0x0), // 5 Guest CS selector
    e(0x0024_0001_0000_0804, 1, 1, 0x0, 0x0), // 6 Guest SS selector
    e(0x0024_0001_0000_0806, 1, 1, 0x0, 0x0), // 7 Guest DS selector
    e(0x0024_0001_0000_0808, 1, 1, 0x0, 0x0), // 8 Guest FS selector
    e(0x0024_0001_0000_080A, 1, 1, 0x0, 0x0), // 9 Guest GS selector
    e(0x0024_0001_0000_080C, 1, 1, 0x0, 0x0), // 10 Guest LDTR selector
    e(0x0024_0001_0000_080E, 1, 1, 0x0, 0x0), // 11 Guest TR selector
    e(0x0024_0001_0000_0810, 1, 1, 0x0, 0x0), // 12 Guest Interrupt Status
    e(0x0024_0001_0000_0812, 1, 1, 0x0, 0x0), // 13 PML Index
    e(0x0024_0001_0000_0814, 1, 1, 0x0, 0x0), // 14 Guest UINV
    e(0x0024_0003_0000_2000, 2, 1, 0x0, 0x0), // 15 I/O-Bitmap Address n
    e(0x0024_0003_0000_2004, 1, 1, 0x0, 0x0), // 16 MSR-Bitmap Address
    e(0x0024_0003_0000_2006, 1, 1, 0x0, 0x0), // 17 VM-exit MSR-store address
    e(0x0024_0003_0000_2008, 1, 1, 0x0, 0x0), // 18 VM-exit MSR-load address
    e(0x0024_0003_0000_200A, 1, 1, 0x0, 0x0), // 19 VM-entry MSR-load address
    e(0x0024_0003_0000_200C, 1, 1, 0x0, 0x0), // 20 Executive-VMCS Pointer
    e(0x0024_0003_0000_200E, 1, 1, 0x0, 0x0), // 21 PML address
    e(0x0024_0003_0000_2010, 1, 1, 0x0, 0x0), // 22 Time-Stamp Counter Offset
    e(0x0024_0003_0000_2012, 1, 1, 0x0, 0x0), // 23 Virtual-APIC address
    e(0x0024_0003_0000_2014, 1, 1, 0x0, 0x0), // 24 APIC-access address
    e(0x0024_0003_0000_2016, 1, 1, 0x0, 0x0), // 25 Posted-interrupt descriptor address
    e(0x0024_0003_0000_2018, 1, 1, 0x0, 0x0), // 26 VM-Function Controls
    e(0x0024_0003_0000_201A, 1, 1, 0x0, 0x0), // 27 EPTP
    e(0x0024_0003_0000_201C, 4, 1, 0x0, 0x0), // 28 EOI-exit bitmap n
    e(0x0024_0003_0000_2024, 1, 1, 0x0, 0x0), // 29 EPTP-list address
    e(0x0024_0003_0000_2026, 1, 1, 0x0, 0x0), // 30 VMREAD-bitmap address
    e(0x0024_0003_0000_2028, 1, 1, 0x0, 0x0), // 31 VMWRITE-bitmap address
    e(0x0024_0003_0000_202A, 1, 1, 0x0, 0x0), // 32 Virtualization-exception information address
    e(0x0024_0003_0000_202C, 1, 1, 0x0, 0x0), // 33 XSS-Exiting Bitmap
    e(0x0024_0003_0000_202E, 1, 1, 0x0, 0x0), // 34 ENCLS-Exiting Bitmap
    e(0x0024_0003_0000_2032, 1, 1, 0x0, 0x0), // 35 Time-Stamp Counter Multiplier
    e(0x0024_0003_0000_2034, 1, 1, 0x0, 0x0), // 36 Tertiary Processor-Based VM-Exection Controls
    e(0x0024_0003_0000_2036, 1, 1, 0x0, 0x0), // 37 ENCLV-Exiting Bitmap
    e(0x0024_0003_0000_2038, 1, 1, 0x0, 0x0), // 38 low PASID directory address
    e(0x0024_0003_0000_203A, 1, 1, 0x0, 0x0), // 39 high PASID directory address
    e(0x0024_0003_0000_203C, 1, 1, 0x0, 0x0), // 40 Shared EPTP
    e(0x0024_0003_0000_203E, 1, 1, 0x0, 0x0), // 41 PCONFIG-Exiting Bitmap
    e(0x0024_0003_0000_2040, 1, 1, 0x0, 0x0), // 42 HLAT pointer
    e(0x0024_0003_0000_204A, 1, 1, 0x0, 0x0), // 43 IA32_SPEC_CTRL mask
    e(0x0024_0003_0000_204C, 1, 1, 0x0, 0x0), // 44 IA32_SPEC_CTRL shadow
    e(0x0024_0003_0000_2400, 1, 1, 0x0, 0x0), // 45 Guest-physical Address
    e(0x0024_0003_0000_2800, 1, 1, 0x0, 0x0), // 46 VMCS Link Pointer
    e(0x0024_0003_0000_2802, 1, 1, 0x0, 0x0), // 47 IA32_DEBUGCTL
    e(0x0024_0003_0000_2804, 1, 1, 0x0, 0x0), // 48 IA32_PAT
    e(0x0024_0003_0000_2806, 1, 1, 0x0, 0x0), // 49 IA32_EFER
    e(0x0024_0003_0000_2808, 1, 1, 0x0, 0x0), // 50 IA32_PERF_GLOBAL_CTRL
    e(0x0024_0003_0000_280A, 4, 1, 0x0, 0x0), // 51 PDPTEn
    e(0x0024_0003_0000_2814, 1, 1, 0x0, 0x0), // 52 IA32_RTIT_CTL
    e(0x0024_0003_0000_2816, 1, 1, 0x0, 0x0), // 53 IA32_LBR_CTL
    e(0x0024_0003_0000_2818, 1, 1, 0x0, 0x0), // 54 IA32_GUEST_PKRS
    e(0x0024_0002_0000_4000, 1, 1, 0x0, 0x0), // 55 Pin-Based VM-Exection Controls
    e(0x0024_0002_0000_4002, 1, 1, 0x0, 0x0), // 56 Primary Processor-Based VM-Exection Controls
    e(0x0024_0002_0000_4004, 1, 1, 0x0, 0x0), // 57 Exception Bitmap
    e(0x0024_0002_0000_4006, 1, 1, 0x0, 0x0), // 58 Page-fault error-code mask
    e(0x0024_0002_0000_4008, 1, 1, 0x0, 0x0), // 59 Page-fault error-code match
    e(0x0024_0002_0000_400A, 1, 1, 0x0, 0x0), // 60 CR3-Target Count
    e(0x0024_0002_0000_400C, 1, 1, 0x0, 0x0), // 61 VM-Exit Controls
    e(0x0024_0002_0000_400E, 1, 1, 0x0, 0x0), // 62 VM-exit MSR-store count
    e(0x0024_0002_0000_4010, 1, 1, 0x0, 0x0), // 63 VM-exit MSR-load count
    e(0x0024_0002_0000_4012, 1, 1, 0x0, 0x0), // 64 VM-Entry Controls
    e(0x0024_0002_0000_4014, 1, 1, 0x0, 0x0), // 65 VM-entry MSR-load count
    e(0x0024_0002_0000_4016, 1, 1, 0x0, 0x0), // 66 VM-entry interruption information
    e(0x0024_0002_0000_4018, 1, 1, 0x0, 0x0), // 67 VM-entry exception error code
    e(0x0024_0002_0000_401A, 1, 1, 0x0, 0x0), // 68 VM-entry instruction length
    e(0x0024_0002_0000_401C, 1, 1, 0x0, 0x0), // 69 TPR threshold
    e(0x0024_0002_0000_401E, 1, 1, 0x0, 0x0), // 70 Secondary Processor-Based VM-Exection Controls
    e(0x0024_0002_0000_4020, 1, 1, 0x0, 0x0), // 71 PLE_GAP
    e(0x0024_0002_0000_4022, 1, 1, 0x0, 0x0), // 72 PLE_Window
    e(0x0024_0002_0000_4024, 1, 1, 0x0, 0x0), // 73 Instruction Timeout Control
    e(0x0024_0002_0000_4026, 1, 1, 0x0, 0x0), // 74 TD HKID
    e(0x0024_0002_0000_4400, 1, 1, 0x0, 0x0), // 75 VM-instruction error
    e(0x0024_0002_0000_4402, 1, 1, 0x0, 0x0), // 76 Exit reason
    e(0x0024_0002_0000_4404, 1, 1, 0x0, 0x0), // 77 VM-exit interruption information
    e(0x0024_0002_0000_4406, 1, 1, 0x0, 0x0), // 78 VM-exit interruption error code
    e(0x0024_0002_0000_4408, 1, 1, 0x0, 0x0), // 79 IDT-vectoring information
    e(0x0024_0002_0000_440A, 1, 1, 0x0, 0x0), // 80 IDT-vectoring error code
    e(0x0024_0002_0000_440C, 1, 1, 0x0, 0x0), // 81 VM-exit instruction length
    e(0x0024_0002_0000_440E, 1, 1, 0x0, 0x0), // 82 VM-exit instruction information
    e(0x0024_0002_0000_4800, 1, 1, 0x0, 0x0), // 83 Guest ES limit
    e(0x0024_0002_0000_4802, 1, 1, 0x0, 0x0), // 84 Guest CS limit
    e(0x0024_0002_0000_4804, 1, 1, 0x0, 0x0), // 85 Guest SS limit
    e(0x0024_0002_0000_4806, 1, 1, 0x0, 0x0), // 86 Guest DS limit
    e(0x0024_0002_0000_4808, 1, 1, 0x0, 0x0), // 87 Guest FS limit
    e(0x0024_0002_0000_480A, 1, 1, 0x0, 0x0), // 88 Guest GS limit
    e(0x0024_0002_0000_480C, 1, 1, 0x0, 0x0), // 89 Guest LDTR limit
    e(0x0024_0002_0000_480E, 1, 1, 0x0, 0x0), // 90 Guest TR limit
    e(0x0024_0002_0000_4810, 1, 1, 0x0, 0x0), // 91 Guest GDTR limit
    e(0x0024_0002_0000_4812, 1, 1, 0x0, 0x0), // 92 Guest IDTR limit
    e(0x0024_0002_0000_4814, 1, 1, 0x0, 0x0), // 93 Guest ES access rights
    e(0x0024_0002_0000_4816, 1, 1, 0x0, 0x0), // 94 Guest CS access rights
    e(0x0024_0002_0000_4818, 1, 1, 0x0, 0x0), // 95 Guest SS access rights
    e(0x0024_0002_0000_481A, 1, 1, 0x0, 0x0), // 96 Guest DS access rights
    e(0x0024_0002_0000_481C, 1, 1, 0x0, 0x0), // 97 Guest FS access rights
    e(0x0024_0002_0000_481E, 1, 1, 0x0, 0x0), // 98 Guest GS access rights
    e(0x0024_0002_0000_4820, 1, 1, 0x0, 0x0), // 99 Guest LDTR access rights
    e(0x0024_0002_0000_4822, 1, 1, 0x0, 0x0), // 100 Guest TR access rights
    e(0x0024_0002_0000_4824, 1, 1, 0x0, 0x0), // 101 Interruptibility State
    e(0x0024_0002_0000_4826, 1, 1, 0x0, 0x0), // 102 Activity State
    e(0x0024_0002_0000_4828, 1, 1, 0x0, 0x0), // 103 Guest SMBASE
    e(0x0024_0002_0000_482A, 1, 1, 0x0, 0x0), // 104 IA32_SYSENTER_CS
    e(0x0024_0002_0000_482E, 1, 1, 0x0, 0x0), // 105 VMX-Preemption Timer Value
    e(0x0024_0003_0000_6000, 1, 1, 0x0, 0x0), // 106 CR0 Guest/Host Mask
    e(0x0024_0003_0000_6002, 1, 1, 0x0, 0x0), // 107 CR4 Guest/Host Mask
    e(0x0024_0003_0000_6004, 1, 1, 0x0, 0x0), // 108 CR0 Read Shadow
    e(0x0024_0003_0000_6006, 1, 1, 0x0, 0x0), // 109 CR4 Read Shadow
    e(0x0024_0003_0000_6008, 4, 1, 0x0, 0x0), // 110 CR3-Target Values
    e(0x0024_0003_0000_6400, 1, 1, 0x0, 0x0), // 111 Exit qualification
    e(0x0024_0003_0000_6402, 1, 1, 0x0, 0x0), // 112 I/O RCX
    e(0x0024_0003_0000_6404, 1, 1, 0x0, 0x0), // 113 I/O RSI
    e(0x0024_0003_0000_6406, 1, 1, 0x0, 0x0), // 114 I/O RDI
    e(0x0024_0003_0000_6408, 1, 1, 0x0, 0x0), // 115 I/O RIP
    e(0x0024_0003_0000_640A, 1, 1, 0x0, 0x0), // 116 Guest-Linear Address
    e(0x0024_0003_0000_6800, 1, 1, 0x0, 0x0), // 117 Guest CR0
    e(0x0024_0003_0000_6802, 1, 1, 0x0, 0x0), // 118 Guest CR3
    e(0x0024_0003_0000_6804, 1, 1, 0x0, 0x0), // 119 Guest CR4
    e(0x0024_0003_0000_6806, 1, 1, 0x0, 0x0), // 120 Guest ES base
    e(0x0024_0003_0000_6808, 1, 1, 0x0, 0x0), // 121 Guest CS base
    e(0x0024_0003_0000_680A, 1, 1, 0x0, 0x0), // 122 Guest SS base
    e(0x0024_0003_0000_680C, 1, 1, 0x0, 0x0), // 123 Guest DS base
    e(0x0024_0003_0000_680E, 1, 1, 0x0, 0x0), // 124 Guest FS base
    e(0x0024_0003_0000_6810, 1, 1, 0x0, 0x0), // 125 Guest GS base
    e(0x0024_0003_0000_6812, 1, 1, 0x0, 0x0), // 126 Guest LDTR base
    e(0x0024_0003_0000_6814, 1, 1, 0x0, 0x0), // 127 Guest TR base
    e(0x0024_0003_0000_6816, 1, 1, 0x0, 0x0), // 128 Guest GDTR base
    e(0x0024_0003_0000_6818, 1, 1, 0x0, 0x0), // 129 Guest IDTR base
    e(0x0024_0003_0000_681A, 1, 1, 0x0, 0x0), // 130 Guest DR7
    e(0x0024_0003_0000_681C, 1, 1, 0x0, 0x0), // 131 Guest RSP
    e(0x0024_0003_0000_681E, 1, 1, 0x0, 0x0), // 132 Guest RIP
    e(0x0024_0003_0000_6820, 1, 1, 0x0, 0x0), // 133 Guest RFLAGS
    e(0x0024_0003_0000_6822, 1, 1, 0x0, 0x0), // 134 Pending Debug Exceptions
    e(0x0024_0003_0000_6824, 1, 1, 0x0, 0x0), // 135 IA32_SYSENTER_ESP
    e(0x0024_0003_0000_6826, 1, 1, 0x0, 0x0), // 136 IA32_SYSENTER_EIP
    e(0x0024_0003_0000_6828, 1, 1, 0x0, 0x0), // 137 GUEST_IA32_S_CET
    e(0x0024_0003_0000_682A, 1, 1, 0x0, 0x0), // 138 GUEST_SSP
    e(0x0024_0003_0000_682C, 1, 1, 0x0, 0x0), // 139 GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR
    e(0x0024_0003_0000_6C08, 1, 1, 0x0, 0x0), // 140 Host GS Base
    e(0x0024_0003_0000_6C14, 1, 1, 0x0, 0x0), // 141 Host RSP
    e(0x0024_0003_0000_6C16, 1, 1, 0x0, 0x0), // 142 Host RIP
    e(0x0024_0003_0000_6C1A, 1, 1, 0x0, 0x0), // 143 HOST_SSP
];

/// `tdvps_lookup`, entries 0–109 (the L2 VMCSs and MSR bitmaps, 110–118, are out with no L2
/// VM).
#[rustfmt::skip]
const TDVPS: &[MdEntry] = &[
    e(0x0120_0003_0000_0000, 128, 1, 0x0, 0x0), // 0 VAPIC
    e(0x0220_0002_0000_0000, 1, 1, 0x0, 0x0), // 1 EXIT_REASON
    e(0x0220_0002_0000_0001, 1, 1, 0x0, 0x0), // 2 VALID
    e(0x0220_0003_0000_0002, 1, 1, 0x0, 0x0), // 3 EXIT_QUALIFICATION
    e(0x0220_0003_0000_0003, 1, 1, 0x0, 0x0), // 4 GLA
    e(0x0220_0003_0000_0004, 1, 1, 0x0, 0x0), // 5 GPA
    e(0x0220_0001_0000_0005, 1, 1, 0x0, 0x0), // 6 EPTP_INDEX
    e(0x8220_0002_0000_0010, 1, 1, 0x0, 0x0), // 7 INSTRUCTION_LENGTH
    e(0x8220_0002_0000_0011, 1, 1, 0x0, 0x0), // 8 INSTRUCTION_INFORMATION
    e(0x1020_0003_0000_0000, 1, 1, 0x0, 0x0), // 9 RAX
    e(0x1020_0003_0000_0001, 1, 1, 0x0, 0x0), // 10 RCX
    e(0x1020_0003_0000_0002, 1, 1, 0x0, 0x0), // 11 RDX
    e(0x1020_0003_0000_0003, 1, 1, 0x0, 0x0), // 12 RBX
    e(0x1020_0003_0000_0004, 1, 1, 0x0, 0x0), // 13 RSP_PLACEHOLDER
    e(0x1020_0003_0000_0005, 1, 1, 0x0, 0x0), // 14 RBP
    e(0x1020_0003_0000_0006, 1, 1, 0x0, 0x0), // 15 RSI
    e(0x1020_0003_0000_0007, 1, 1, 0x0, 0x0), // 16 RDI
    e(0x1020_0003_0000_0008, 1, 1, 0x0, 0x0), // 17 R8
    e(0x1020_0003_0000_0009, 1, 1, 0x0, 0x0), // 18 R9
    e(0x1020_0003_0000_000A, 1, 1, 0x0, 0x0), // 19 R10
    e(0x1020_0003_0000_000B, 1, 1, 0x0, 0x0), // 20 R11
    e(0x1020_0003_0000_000C, 1, 1, 0x0, 0x0), // 21 R12
    e(0x1020_0003_0000_000D, 1, 1, 0x0, 0x0), // 22 R13
    e(0x1020_0003_0000_000E, 1, 1, 0x0, 0x0), // 23 R14
    e(0x1020_0003_0000_000F, 1, 1, 0x0, 0x0), // 24 R15
    e(0x1120_0003_0000_0000, 1, 1, 0x0, 0x0), // 25 DR0
    e(0x1120_0003_0000_0001, 1, 1, 0x0, 0x0), // 26 DR1
    e(0x1120_0003_0000_0002, 1, 1, 0x0, 0x0), // 27 DR2
    e(0x1120_0003_0000_0003, 1, 1, 0x0, 0x0), // 28 DR3
    e(0x1120_0003_0000_0006, 1, 1, 0x0, 0x0), // 29 DR6
    e(0x1120_0003_0000_0020, 1, 1, 0x0, 0x0), // 30 XCR0
    e(0x1120_0003_0000_0028, 1, 1, 0x0, 0x0), // 31 CR2
    e(0x9120_0003_0000_0100, 1, 1, 0x0, 0x0), // 32 VCPU_STATE_DETAILS
    e(0x1220_0003_0000_0000, 1536, 1, 0x0, 0x0), // 33 XBUFF
    e(0x1320_0003_0000_0048, 1, 1, 0x0, 0x0), // 34 IA32_SPEC_CTRL
    e(0x1320_0003_0000_00E1, 1, 1, 0x0, 0x0), // 35 IA32_UMWAIT_CONTROL
    e(0x1320_0003_0000_0122, 1, 1, 0x0, 0x0), // 36 IA32_TSX_CTRL
    e(0x1320_0003_0000_0186, 8, 1, 0x0, 0x0), // 37 IA32_PERFEVTSELx
    e(0x1320_0003_0000_01A6, 2, 1, 0x0, 0x0), // 38 MSR_OFFCORE_RSPx
    e(0x1320_0003_0000_01C4, 1, 1, 0x0, 0x0), // 39 IA32_XFD
    e(0x1320_0003_0000_01C5, 1, 1, 0x0, 0x0), // 40 IA32_XFD_ERR
    e(0x1320_0003_0000_0309, 7, 1, 0x0, 0x0), // 41 IA32_FIXED_CTRx
    e(0x1320_0003_0000_0329, 1, 1, 0x0, 0x0), // 42 IA32_PERF_METRICS
    e(0x1320_0003_0000_038D, 1, 1, 0x0, 0x0), // 43 IA32_FIXED_CTR_CTRL
    e(0x1320_0003_0000_038E, 1, 1, 0x0, 0x0), // 44 IA32_PERF_GLOBAL_STATUS
    e(0x1320_0003_0000_03F1, 1, 1, 0x0, 0x0), // 45 IA32_PEBS_ENABLE
    e(0x1320_0003_0000_03F2, 1, 1, 0x0, 0x0), // 46 MSR_PEBS_DATA_CFG
    e(0x1320_0003_0000_03F6, 1, 1, 0x0, 0x0), // 47 MSR_PEBS_LD_LAT
    e(0x1320_0003_0000_03F7, 1, 1, 0x0, 0x0), // 48 MSR_PEBS_FRONTEND
    e(0x1320_0003_0000_04C1, 8, 1, 0x0, 0x0), // 49 IA32_A_PMCx
    e(0x1320_0003_0000_0600, 1, 1, 0x0, 0x0), // 50 IA32_DS_AREA
    e(0x1320_0003_0000_0DA0, 1, 1, 0x0, 0x0), // 51 IA32_XSS
    e(0x1320_0003_0000_14CF, 1, 1, 0x0, 0x0), // 52 IA32_LBR_DEPTH
    e(0x1320_0003_0000_1B01, 1, 1, 0x0, 0x0), // 53 IA32_UARCH_MISC_CTL
    e(0x1320_0003_0000_2081, 1, 1, 0x0, 0x0), // 54 IA32_STAR
    e(0x1320_0003_0000_2082, 1, 1, 0x0, 0x0), // 55 IA32_LSTAR
    e(0x1320_0003_0000_2084, 1, 1, 0x0, 0x0), // 56 IA32_FMASK
    e(0x1320_0003_0000_2102, 1, 1, 0x0, 0x0), // 57 IA32_KERNEL_GS_BASE
    e(0x1320_0003_0000_2103, 1, 1, 0x0, 0x0), // 58 IA32_TSC_AUX
    e(0xA020_0000_0000_0000, 1, 1, 0x0, 0x0), // 59 VCPU_STATE
    e(0xA020_0002_0000_0002, 1, 1, 0xFFFFFFFF, 0x0), // 60 VCPU_INDEX
    e(0xA020_0000_0000_0003, 1, 1, 0x0, 0x0), // 61 NUM_TDVPS_PAGES
    e(0xA020_0002_0000_0004, 1, 1, 0x0, 0x0), // 62 ASSOC_LPID
    e(0xA020_0003_0000_0006, 1, 1, 0x0, 0x0), // 63 VCPU_EPOCH
    e(0xA020_0000_0000_0007, 1, 1, 0xFF, 0xFF), // 64 CPUID_SUPERVISOR_VE
    e(0xA020_0000_0000_0008, 1, 1, 0xFF, 0xFF), // 65 CPUID_USER_VE
    e(0xA020_0003_0000_000A, 1, 1, 0x0, 0x0), // 66 LAST_EXIT_TSC
    e(0x2020_0000_0000_000B, 1, 1, 0x0, 0x0), // 67 PEND_NMI
    e(0x2020_0003_0000_000C, 1, 1, 0x0, 0x0), // 68 XFAM
    e(0xA020_0000_0000_000D, 1, 1, 0x0, 0x0), // 69 LAST_EPF_GPA_LIST_IDX
    e(0xA020_0000_0000_000E, 1, 1, 0x0, 0x0), // 70 POSSIBLY_EPF_STEPPING
    e(0xA020_0000_0000_000F, 1, 1, 0x0, 0x0), // 71 LAST_TD_EXIT
    e(0xA020_0003_0000_0010, 15, 1, 0x0, 0x0), // 72 TDVPS_PAGE_PA
    e(0xA020_0003_0000_0030, 1, 1, 0x0, 0x0), // 73 HP_LOCK_BUSY_START
    e(0xA020_0000_0000_0031, 1, 1, 0x0, 0x0), // 74 HP_LOCK_BUSY
    e(0xA020_0003_0000_0032, 1, 1, 0x0, 0x0), // 75 LAST_SEAMDB_INDEX
    e(0xA020_0000_0000_0040, 1, 1, 0x0, 0x0), // 76 NMI_UNBLOCKING_DUE_TO_IRET
    e(0xA020_0001_0000_0041, 1, 1, 0x0, 0x0), // 77 CURR_VM
    e(0xA020_0000_0000_0042, 1, 1, 0x0, 0x0), // 78 L2_EXIT_HOST_ROUTING
    e(0xA020_0000_0000_0044, 4, 1, 0x0, 0x0), // 79 VM_LAUNCHED
    e(0xA020_0000_0000_0048, 4, 1, 0x0, 0x0), // 80 LP_DEPENDENT_HPA_UPDATED
    e(0xA020_0000_0000_004C, 4, 1, 0x0, 0x0), // 81 MODULE_DEPENDENT_FIELDS_UPDATED
    e(0xA020_0003_0000_0050, 4, 1, 0xFFFFFFFFFFFFFFFF, 0x7), // 82 L2_CTLS
    e(0xA020_0003_0000_0054, 4, 1, 0x0, 0x0), // 83 L2_DEBUG_CTLS
    e(0xA020_0003_0000_0058, 4, 1, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF), // 84 TSC_DEADLINE
    e(0xA020_0003_0000_005C, 4, 1, 0x0, 0x0), // 85 SHADOW_TSC_DEADLINE
    e(0xA020_0003_0000_0080, 1, 1, 0x0, 0x0), // 86 BASE_L2_CR0_GUEST_HOST_MASK
    e(0xA020_0003_0000_0081, 1, 1, 0x0, 0x0), // 87 BASE_L2_CR0_READ_SHADOW
    e(0xA020_0003_0000_0082, 1, 1, 0x0, 0x0), // 88 BASE_L2_CR4_GUEST_HOST_MASK
    e(0xA020_0003_0000_0083, 1, 1, 0x0, 0x0), // 89 BASE_L2_CR4_READ_SHADOW
    e(0xA020_0003_0000_0084, 4, 1, 0x0, 0x0), // 90 SHADOW_CR0_GUEST_HOST_MASK
    e(0xA020_0003_0000_0088, 4, 1, 0x0, 0x0), // 91 SHADOW_CR0_READ_SHADOW
    e(0xA020_0003_0000_008C, 4, 1, 0x0, 0x0), // 92 SHADOW_CR4_GUEST_HOST_MASK
    e(0xA020_0003_0000_0090, 4, 1, 0x0, 0x0), // 93 SHADOW_CR4_READ_SHADOW
    e(0xA020_0002_0000_0094, 4, 1, 0x0, 0x0), // 94 SHADOW_INSTRUCTION_TIMEOUT_CONTROL
    e(0xA020_0003_0000_0098, 4, 1, 0x0, 0x0), // 95 SHADOW_PID_HPA
    e(0xA020_0002_0000_009C, 4, 1, 0x0, 0x0), // 96 SHADOW_PINBASED_EXEC_CTLS
    e(0xA020_0002_0000_00A4, 4, 1, 0x0, 0x0), // 97 SHADOW_PLE_GAP
    e(0xA020_0002_0000_00A8, 4, 1, 0x0, 0x0), // 98 SHADOW_PLE_WINDOW
    e(0xA020_0001_0000_00AC, 4, 1, 0x0, 0x0), // 99 SHADOW_POSTED_INT_NOTIFICATION_VECTOR
    e(0xA020_0002_0000_00B0, 4, 1, 0x0, 0x0), // 100 SHADOW_PROCBASED_EXEC_CTLS2
    e(0xA020_0003_0000_00B4, 4, 1, 0x0, 0x0), // 101 SHADOW_SHARED_EPTP
    e(0xA020_0003_0000_0100, 4, 1, 0x0, 0x0), // 102 L2_ENTER_GUEST_STATE_GPA
    e(0xA020_0003_0000_0104, 4, 1, 0x0, 0x0), // 103 L2_ENTER_GUEST_STATE_HPA
    e(0xA020_0003_0000_0108, 4, 1, 0x0, 0x0), // 104 VE_INFO_GPA
    e(0xA020_0003_0000_010C, 4, 1, 0x0, 0x0), // 105 VE_INFO_HPA
    e(0xA020_0003_0000_0110, 4, 1, 0x0, 0x0), // 106 L2_VAPIC_GPA
    e(0xA020_0003_0000_0114, 4, 1, 0x0, 0x0), // 107 L2_VAPIC_HPA
    e(0xA120_0000_0000_0000, 128, 1, 0xFF, 0x3), // 108 CPUID_CONTROL
    e(0xA220_0003_0000_0200, 32, 1, 0x0, 0x0), // 109 LAST_EPF_GPA_LIST
];

/// `global_sys_lookup` (module 1.5, `include/auto_gen/global_sys_fields_lookup.c`), all 65
/// entries: a guest may read VENDOR_ID, MINOR/MAJOR_VERSION, SYS_ATTRIBUTES,
/// NUM_TDX_FEATURES, TDX_FEATURES0, the migration versions and GUEST_L2_GPA_ATTR_MASK; every
/// other field exists (METADATA_FIELD_NOT_READABLE, not FIELD_ID_INCORRECT) but is the host's.
#[rustfmt::skip]
const GLOBAL_SYS: &[MdEntry] = &[
    e(0x0000_0002_0000_0000, 1, 1, 0x0, 0x0), // 0 NUM_PKGS
    e(0x0000_0002_0000_0001, 8, 1, 0x0, 0x0), // 1 PKG_FMS
    e(0x0800_0002_0000_0000, 1, 1, 0xFFFFFFFF, 0x0), // 2 VENDOR_ID
    e(0x8800_0002_0000_0001, 1, 1, 0x0, 0x0), // 3 BUILD_DATE
    e(0x8800_0001_0000_0002, 1, 1, 0x0, 0x0), // 4 BUILD_NUM
    e(0x0800_0001_0000_0003, 1, 1, 0xFFFF, 0x0), // 5 MINOR_VERSION
    e(0x0800_0001_0000_0004, 1, 1, 0xFFFF, 0x0), // 6 MAJOR_VERSION
    e(0x0800_0001_0000_0005, 1, 1, 0x0, 0x0), // 7 UPDATE_VERSION
    e(0x0800_0001_0000_0006, 1, 1, 0x0, 0x0), // 8 INTERNAL_VERSION
    e(0x8900_0001_0000_0000, 1, 1, 0x0, 0x0), // 9 MODULE_HV
    e(0x8900_0001_0000_0001, 1, 1, 0x0, 0x0), // 10 MIN_UPDATE_HV
    e(0x8900_0000_0000_0002, 1, 1, 0x0, 0x0), // 11 NO_DOWNGRADE
    e(0x8900_0001_0000_0003, 1, 1, 0x0, 0x0), // 12 NUM_HANDOFF_PAGES
    e(0x8900_0000_0000_0004, 1, 1, 0x0, 0x0), // 13 HANDOFF_DATA_VALID
    e(0x8900_0001_0000_0005, 1, 1, 0x0, 0x0), // 14 HANDOFF_DATA_HV
    e(0x8900_0002_0000_0006, 1, 1, 0x0, 0x0), // 15 HANDOFF_DATA_SIZE
    e(0x0A00_0002_0000_0000, 1, 1, 0xFFFFFFFF, 0x0), // 16 SYS_ATTRIBUTES
    e(0x0A00_0000_0000_0001, 1, 1, 0xFF, 0x0), // 17 NUM_TDX_FEATURES
    e(0x0A00_0003_0000_0008, 1, 1, 0xFFFFFFFFFFFFFFFF, 0x0), // 18 TDX_FEATURES0
    e(0x9000_0001_0000_0000, 1, 1, 0x0, 0x0), // 19 NUM_CMRS
    e(0x9000_0003_0000_0080, 32, 1, 0x0, 0x0), // 20 CMR_BASE
    e(0x9000_0003_0000_0100, 32, 1, 0x0, 0x0), // 21 CMR_SIZE
    e(0x9100_0001_0000_0008, 1, 1, 0x0, 0x0), // 22 MAX_TDMRS
    e(0x9100_0001_0000_0009, 1, 1, 0x0, 0x0), // 23 MAX_RESERVED_PER_TDMR
    e(0x9100_0001_0000_0010, 1, 1, 0x0, 0x0), // 24 PAMT_4K_ENTRY_SIZE
    e(0x9100_0001_0000_0011, 1, 1, 0x0, 0x0), // 25 PAMT_2M_ENTRY_SIZE
    e(0x9100_0001_0000_0012, 1, 1, 0x0, 0x0), // 26 PAMT_1G_ENTRY_SIZE
    e(0x9800_0001_0000_0000, 1, 1, 0x0, 0x0), // 27 TDR_BASE_SIZE
    e(0x9800_0001_0000_0100, 1, 1, 0x0, 0x0), // 28 TDCS_BASE_SIZE
    e(0x9800_0001_0000_0101, 1, 1, 0x0, 0x0), // 29 TDCS_SIZE_PER_L2_VM
    e(0x9800_0001_0000_0200, 1, 1, 0x0, 0x0), // 30 TDVPS_BASE_SIZE
    e(0x9800_0001_0000_0201, 1, 1, 0x0, 0x0), // 31 TDVPS_SIZE_PER_L2_VM
    e(0x1900_0003_0000_0000, 1, 1, 0x0, 0x0), // 32 ATTRIBUTES_FIXED0
    e(0x1900_0003_0000_0001, 1, 1, 0x0, 0x0), // 33 ATTRIBUTES_FIXED1
    e(0x1900_0003_0000_0002, 1, 1, 0x0, 0x0), // 34 XFAM_FIXED0
    e(0x1900_0003_0000_0003, 1, 1, 0x0, 0x0), // 35 XFAM_FIXED1
    e(0x9900_0001_0000_0004, 1, 1, 0x0, 0x0), // 36 NUM_CPUID_CONFIG
    e(0x9900_0003_0000_0006, 1, 1, 0x0, 0x0), // 37 CONFIG_FLAGS_FIXED0
    e(0x9900_0003_0000_0007, 1, 1, 0x0, 0x0), // 38 CONFIG_FLAGS_FIXED1
    e(0x9900_0003_0000_0400, 32, 1, 0x0, 0x0), // 39 CPUID_CONFIG_LEAVES
    e(0x9900_0003_0000_0500, 32, 2, 0x0, 0x0), // 40 CPUID_CONFIG_VALUES
    e(0x9900_0003_0000_0600, 1, 1, 0x0, 0x0), // 41 IA32_ARCH_CAPABILITIES_CONFIG_MASK
    e(0x9900_0001_0000_0800, 1, 1, 0x0, 0x0), // 42 NUM_ALLOWED_FMS
    e(0x9900_0001_0000_0801, 1, 1, 0x0, 0x0), // 43 NUM_DISALLOWED_FMS
    e(0x9900_0003_0000_0810, 64, 1, 0x0, 0x0), // 44 ALLOWED_FMS
    e(0x9900_0003_0000_0850, 64, 1, 0x0, 0x0), // 45 DISALLOWED_FMS
    e(0xA000_0003_0000_0000, 1, 1, 0xFFFFFFFFFFFFFFFF, 0x0), // 46 MIG_ATTRIBUTES
    e(0x2000_0001_0000_0001, 1, 1, 0xFFFF, 0x0), // 47 MIN_EXPORT_VERSION
    e(0x2000_0001_0000_0002, 1, 1, 0xFFFF, 0x0), // 48 MAX_EXPORT_VERSION
    e(0x2000_0001_0000_0003, 1, 1, 0xFFFF, 0x0), // 49 MIN_IMPORT_VERSION
    e(0x2000_0001_0000_0004, 1, 1, 0xFFFF, 0x0), // 50 MAX_IMPORT_VERSION
    e(0xA000_0001_0000_0010, 1, 1, 0x0, 0x0), // 51 MAX_MIGS
    e(0xA000_0000_0000_0020, 1, 1, 0x0, 0x0), // 52 NUM_IMMUTABLE_STATE_PAGES
    e(0xA000_0000_0000_0021, 1, 1, 0x0, 0x0), // 53 NUM_TD_STATE_PAGES
    e(0xA000_0000_0000_0022, 1, 1, 0x0, 0x0), // 54 NUM_VP_STATE_PAGES
    e(0xA100_0001_0000_0000, 1, 1, 0x0, 0x0), // 55 MAX_SERV_TDS
    e(0xA100_0003_0000_0001, 1, 1, 0x0, 0x0), // 56 SERVTD_ATTR_FIXED0
    e(0xA100_0003_0000_0002, 1, 1, 0x0, 0x0), // 57 SERVTD_ATTR_FIXED1
    e(0xA200_0001_0000_0000, 1, 1, 0xFFFF, 0x0), // 58 GUEST_L2_GPA_ATTR_MASK
    e(0xA200_0003_0000_0001, 1, 1, 0x0, 0x0), // 59 VM_CTLS_FIXED0
    e(0xA200_0003_0000_0002, 1, 1, 0x0, 0x0), // 60 VM_CTLS_FIXED1
    e(0xA200_0003_0000_0003, 1, 1, 0x0, 0x0), // 61 VPCU_L2_CTLS_FIXED0
    e(0xA200_0003_0000_0004, 1, 1, 0x0, 0x0), // 62 VCPU_L2_CTLS_FIXED1
    e(0xA200_0003_0000_0005, 1, 1, 0x0, 0x0), // 63 VPCU_L2_DEBUG_CTLS_FIXED0
    e(0xA200_0003_0000_0006, 1, 1, 0x0, 0x0), // 64 VCPU_L2_DEBUG_CTLS_FIXED1
];

/// `MD_FIELD_ID_NA`: the null field id.
pub const FIELD_ID_NA: u64 = u64::MAX;
/// `MD_TDCS_CPUID_CLASS_CODE`: CPUID_VALUES, whose field code encodes a leaf and subleaf.
const CPUID_CLASS: u8 = 0x14;
/// TDCS field ids tdxlab gives values for (the TD context).
mod tdcs {
    pub const NUM_VCPUS: u64 = 0x9010_0002_0000_0001;
    pub const NUM_L2_VMS: u64 = 0x9010_0001_0000_0005;
    pub const ATTRIBUTES: u64 = 0x1110_0003_0000_0000;
    pub const MAX_VCPUS: u64 = 0x1110_0002_0000_0002;
    pub const GPAW: u64 = 0x1110_0000_0000_0003;
    pub const NOTIFY_ENABLES: u64 = 0x9110_0003_0000_0010;
    pub const CONFIG_FLAGS: u64 = 0x1110_0003_0000_0016;
    pub const TD_CTLS: u64 = 0x1110_0003_0000_0017;
    pub const MRTD: u64 = 0x1310_0003_0000_0000;
}
/// Global (SYS context) field ids a guest may read, and their values in module 1.5
/// (`md_sys_get_first_element_val_and_ptr`, `metadata_sys.c`).
mod sys {
    pub const VENDOR_ID: u64 = 0x0800_0002_0000_0000;
    pub const MINOR_VERSION: u64 = 0x0800_0001_0000_0003;
    pub const MAJOR_VERSION: u64 = 0x0800_0001_0000_0004;
    pub const NUM_TDX_FEATURES: u64 = 0x0A00_0000_0000_0001;
    pub const TDX_FEATURES0: u64 = shared_abi::td::sys_metadata::TDX_FEATURES0;
    pub const GUEST_L2_GPA_ATTR_MASK: u64 = 0xA200_0001_0000_0000;
    /// `proj_defs.mk`: TDX_MODULE_MAJOR_VER 1, TDX_MODULE_MINOR_VER 5.
    pub const MODULE_MAJOR: u64 = 1;
    pub const MODULE_MINOR: u64 = 5;
    /// `NUM_TDX_FEATRUES` (sic, `tdx_api_defs.h`): TDX_FEATURES0 is the only one.
    pub const NUM_FEATURES: u64 = 1;
    /// `GUEST_L2_GPA_ATTR_MASK` (`tdx_api_defs.h`): BITS(6,0) | BIT(15).
    pub const L2_GPA_ATTR_MASK: u64 = 0x7f | 1 << 15;
    /// TDX_FEATURES0 as module 1.5 builds it (`tdx_features_enum0_t`): TD migration (0),
    /// TD preserving (1), service TD (2), TDG.VP.RD/WR (3), relaxed memory-management
    /// concurrency (4), CPUID virtualization guest control (5), TD partitioning (7), TD entry
    /// enhancements (9), host priority locks (10), CONFIG_IA32_ARCH_CAP (11),
    /// PENDING_EPT_VIOLATION_V2 (16), FMS_CONFIG (17), NO_RBP_MOD (18), L2_TLB_INVD_OPT (19).
    /// LOCAL_ATTESTATION (8) follows the CPU's SEAMVERIFYREPORT, which the emulated platform
    /// does not have. These announce what the module is, not what tdxlab models: the guest
    /// of a real 1.5 module reads this value (docs/emulation.md lists what is not modelled).
    pub const FEATURES0: u64 = 0b1111 << 16 | 0b1110 << 8 | 1 << 7 | 0x3f;
}
/// TDVPS field ids tdxlab gives values for (the vCPU context).
mod tdvps {
    pub const VCPU_INDEX: u64 = 0xA020_0002_0000_0002;
    pub const CPUID_SUPERVISOR_VE: u64 = 0xA020_0000_0000_0007;
    pub const CPUID_USER_VE: u64 = 0xA020_0000_0000_0008;
    pub const L2_CTLS: u64 = 0xA020_0003_0000_0050;
    pub const TSC_DEADLINE: u64 = 0xA020_0003_0000_0058;
    pub const CPUID_CONTROL: u64 = 0xA120_0000_0000_0000;
}
/// CONFIG_FLAGS as KVM 6.16 fills TD_PARAMS (`setup_tdparams`): NO_RBP_MOD always,
/// MAX_GPAW for GPAW 52; never FLEXIBLE_PENDING_VE.
const CONFIG_FLAGS_MAX_GPAW: u64 = 1 << 0;
const CONFIG_FLAGS_FLEXIBLE_PENDING_VE: u64 = 1 << 1;
const CONFIG_FLAGS_NO_RBP_MOD: u64 = 1 << 2;
/// TD_CTLS.PENDING_VE_DISABLE, which TDH.MNG.INIT copies from ATTRIBUTES.SEPT_VE_DISABLE.
const TD_CTLS_PENDING_VE_DISABLE: u64 = 1 << 0;

/// A field id's parts (`md_field_id_t`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FieldId(u64);

impl FieldId {
    const CONTEXT_MASK: u64 = 0x7 << 52;

    fn field_code(self) -> u64 {
        self.0 & 0xff_ffff
    }
    fn class_code(self) -> u8 {
        ((self.0 >> 56) & 0x3f) as u8
    }
    fn size_mask(self) -> u64 {
        match (self.0 >> 32) & 3 {
            0 => 0xff,
            1 => 0xffff,
            2 => 0xffff_ffff,
            _ => u64::MAX,
        }
    }
    fn stride(self) -> u64 {
        ((self.0 >> 50) & 1) + 1
    }
    fn with_context(self, ctx: Context) -> FieldId {
        FieldId((self.0 & !Self::CONTEXT_MASK) | (ctx as u64) << 52)
    }
    fn with_field_code(self, code: u64) -> FieldId {
        FieldId((self.0 & !0xff_ffff) | (code & 0xff_ffff))
    }
    /// `md_check_as_single_element_id`: the reserved bits, LAST_ELEMENT_IN_FIELD and
    /// LAST_FIELD_IN_SEQUENCE are 0 (size, increment, write-mask-valid and context ignored).
    fn is_single_element(self) -> bool {
        let reserved = 0xff << 24 | 0x7 << 47 | 1 << 55 | 1 << 62;
        let last_element_and_field = 0xf << 34 | 0x1ff << 38;
        self.0 & (reserved | last_element_and_field) == 0
    }
}

/// A metadata context (`md_context_code_e`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Context {
    Sys = 0,
    Td = 1,
    Vp = 2,
}

impl Context {
    /// The context's tables, in walk order: the TD VMCS precedes the TDVPS.
    fn tables(self) -> &'static [&'static [MdEntry]] {
        match self {
            Context::Sys => &[GLOBAL_SYS],
            Context::Td => &[TDR_TDCS],
            Context::Vp => &[TD_VMCS, TDVPS],
        }
    }
    /// `md_get_lookup_table`: class 0 of the vCPU context is the TD VMCS.
    fn table_of(self, id: FieldId) -> usize {
        match self {
            Context::Vp if id.class_code() != 0 => 1,
            _ => 0,
        }
    }
}

impl MdEntry {
    fn first(self) -> FieldId {
        FieldId(self.id)
    }
    fn elements(self) -> u64 {
        self.fields as u64 * self.elems as u64
    }
    /// A guest may read it (`md_get_next_accessible_item` with MD_GUEST_RD: the walk only
    /// ever serves reads).
    fn readable(self) -> bool {
        self.guest_rd != 0
    }
}

/// Where an element lies: its table in the context, entry, and element number.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Pos {
    table: usize,
    entry: usize,
    elem: u64,
}

impl Pos {
    fn entry(self, ctx: Context) -> MdEntry {
        ctx.tables()[self.table][self.entry]
    }
}

/// `md_find_entry_idx`: the entry whose class matches and whose elements cover the field code.
/// A CPUID_VALUES id is found by its element bit alone.
fn md_find(ctx: Context, id: FieldId) -> Option<Pos> {
    let table = ctx.table_of(id);
    let cpuid = ctx == Context::Td && id.class_code() == CPUID_CLASS;
    let code = if cpuid { id.0 & 1 } else { id.field_code() };
    let entries = ctx.tables()[table];
    let entry = entries.iter().position(|e| {
        let first = e.first();
        first.class_code() == id.class_code()
            && (first.field_code()..first.field_code() + e.elements() * first.stride())
                .contains(&code)
    })?;
    let first = entries[entry].first();
    Some(Pos {
        table,
        entry,
        elem: (code - first.field_code()) / first.stride(),
    })
}

/// `md_get_next_element_in_context`: the next element after `from` (or the first, from the
/// null id) that a guest may read, or FIELD_ID_NA. Within an entry the caller's id moves on by
/// its stride; a new entry starts at that entry's own id.
fn md_next_element(ctx: Context, from: Option<(Pos, FieldId)>) -> u64 {
    let tables = ctx.tables();
    let (mut pos, mut id) = match from {
        Some(at) => at,
        None => {
            let start = Pos {
                table: 0,
                entry: 0,
                elem: 0,
            };
            if start.entry(ctx).readable() {
                return start.entry(ctx).id;
            }
            (start, start.entry(ctx).first())
        }
    };
    loop {
        let entry = pos.entry(ctx);
        if pos.elem + 1 < entry.elements() {
            pos.elem += 1;
            id = id.with_field_code(id.field_code() + entry.first().stride());
        } else if pos.entry + 1 < tables[pos.table].len() {
            pos = Pos {
                entry: pos.entry + 1,
                elem: 0,
                ..pos
            };
            id = pos.entry(ctx).first();
        } else if pos.table + 1 < tables.len() {
            pos = Pos {
                table: pos.table + 1,
                entry: 0,
                elem: 0,
            };
            id = pos.entry(ctx).first();
        } else {
            return FIELD_ID_NA;
        }
        if pos.entry(ctx).readable() {
            return id.0;
        }
    }
}

/// One vCPU's guest-visible TDVPS fields.
#[derive(Clone, Debug)]
pub(crate) struct VpFields {
    cpuid_supervisor_ve: u64,
    cpuid_user_ve: u64,
    l2_ctls: [u64; 4],
    /// TDH.VP.INIT arms no deadline: all ones.
    tsc_deadline: [u64; 4],
    cpuid_control: Vec<u64>,
}

impl Default for VpFields {
    fn default() -> VpFields {
        VpFields {
            cpuid_supervisor_ve: 0,
            cpuid_user_ve: 0,
            l2_ctls: [0; 4],
            tsc_deadline: [u64::MAX; 4],
            cpuid_control: vec![0; 128],
        }
    }
}

impl VpFields {
    /// The element a guest may write, if tdxlab keeps it.
    fn slot(&mut self, entry: u64, elem: u64) -> Option<&mut u64> {
        let i = elem as usize;
        match entry {
            tdvps::CPUID_SUPERVISOR_VE => Some(&mut self.cpuid_supervisor_ve),
            tdvps::CPUID_USER_VE => Some(&mut self.cpuid_user_ve),
            tdvps::L2_CTLS => self.l2_ctls.get_mut(i),
            tdvps::TSC_DEADLINE => self.tsc_deadline.get_mut(i),
            tdvps::CPUID_CONTROL => self.cpuid_control.get_mut(i),
            _ => None,
        }
    }
}

/// The TD-scope fields a guest may change.
#[derive(Clone, Debug)]
pub(crate) struct TdFields {
    td_ctls: u64,
    notify_enables: u64,
}

impl TdFields {
    /// As TDH.MNG.INIT leaves them: PENDING_VE_DISABLE from ATTRIBUTES.SEPT_VE_DISABLE.
    pub(crate) fn new(attributes: u64) -> TdFields {
        let sept_ve_disable = attributes & shared_abi::td::attributes::SEPT_VE_DISABLE != 0;
        TdFields {
            td_ctls: if sept_ve_disable {
                TD_CTLS_PENDING_VE_DISABLE
            } else {
                0
            },
            notify_enables: 0,
        }
    }
}

/// A metadata operation's result: the status, or the value and the next id.
type MdResult<T> = Result<T, TdxStatus>;

impl TdxModule {
    /// CONFIG_FLAGS as TD_PARAMS carried it from KVM.
    fn config_flags(&self) -> u64 {
        let max_gpaw = if self.params().gpaw.bits() == 52 {
            CONFIG_FLAGS_MAX_GPAW
        } else {
            0
        };
        CONFIG_FLAGS_NO_RBP_MOD | max_gpaw
    }

    /// The current value of a TD-context element (`md_td_get_element`, before the masks).
    fn td_element(&self, g: &super::SeamInner, pos: Pos) -> u64 {
        let p = self.params();
        match pos.entry(Context::Td).id {
            tdcs::NUM_VCPUS => p.num_vcpus as u64,
            tdcs::NUM_L2_VMS => 0,
            tdcs::ATTRIBUTES => p.attributes,
            tdcs::MAX_VCPUS => p.max_vcpus as u64,
            tdcs::GPAW => u64::from(p.gpaw.bits() == 52),
            tdcs::NOTIFY_ENABLES => g.td_fields.notify_enables,
            tdcs::CONFIG_FLAGS => self.config_flags(),
            tdcs::TD_CTLS => g.td_fields.td_ctls,
            tdcs::MRTD => g.mrtd.digest().map_or(0, |m| {
                let at = pos.elem as usize * 8;
                u64::from_le_bytes(m[at..at + 8].try_into().unwrap_or_default())
            }),
            _ => 0,
        }
    }

    /// The value of a global element a guest may read. SYS_ATTRIBUTES is what the host gave
    /// TDH.SYS.INIT (Linux passes 0); the migration fields read 0 in module 1.5.
    fn sys_element(pos: Pos) -> u64 {
        match pos.entry(Context::Sys).id {
            sys::VENDOR_ID => 0x8086,
            sys::MINOR_VERSION => sys::MODULE_MINOR,
            sys::MAJOR_VERSION => sys::MODULE_MAJOR,
            sys::NUM_TDX_FEATURES => sys::NUM_FEATURES,
            sys::TDX_FEATURES0 => sys::FEATURES0,
            sys::GUEST_L2_GPA_ATTR_MASK => sys::L2_GPA_ATTR_MASK,
            _ => 0,
        }
    }

    /// The current value of a vCPU-context element.
    fn vp_element(g: &mut super::SeamInner, vcpu: u32, pos: Pos) -> u64 {
        let entry = pos.entry(Context::Vp).id;
        if entry == tdvps::VCPU_INDEX {
            return vcpu as u64;
        }
        let Some(fields) = g.vp_fields.get_mut(vcpu as usize) else {
            return 0;
        };
        fields.slot(entry, pos.elem).map_or(0, |v| *v)
    }

    /// Find an element for a guest access, with the checks the context makes before the masks:
    /// a CPUID_VALUES id must have bits 31:17 clear, and the module cannot say which leaves
    /// exist here (every leaf is NOT_READABLE to a guest, as the known ones are); a TD VMCS
    /// id may not name a field's HIGH half.
    fn md_element(&self, ctx: Context, id: FieldId) -> MdResult<Pos> {
        let pos = md_find(ctx, id).ok_or(TdxStatus::METADATA_FIELD_ID_INCORRECT)?;
        let bad_cpuid =
            ctx == Context::Td && id.class_code() == CPUID_CLASS && id.0 & 0xfffe_0000 != 0;
        let vmcs_high = ctx == Context::Vp && pos.table == 0 && id.field_code() & 1 != 0;
        if bad_cpuid || vmcs_high {
            return Err(TdxStatus::METADATA_FIELD_ID_INCORRECT);
        }
        Ok(pos)
    }

    /// `md_read_element` for a guest: the value under the entry's guest read mask.
    fn md_guest_read(&self, ctx: Context, vcpu: u32, id: FieldId) -> MdResult<(Pos, u64)> {
        let pos = self.md_element(ctx, id)?;
        let entry = pos.entry(ctx);
        if entry.guest_rd == 0 {
            return Err(TdxStatus::METADATA_FIELD_NOT_READABLE);
        }
        let mut g = self.lock();
        let value = match ctx {
            Context::Sys => Self::sys_element(pos),
            Context::Td => self.td_element(&g, pos),
            Context::Vp => Self::vp_element(&mut g, vcpu, pos),
        };
        Ok((pos, value & entry.first().size_mask() & entry.guest_rd))
    }

    /// `md_td_write_element` for a guest: the old value under the read mask.
    fn md_td_guest_write(&self, id: FieldId, value: u64, request: u64) -> MdResult<u64> {
        let pos = self.md_element(Context::Td, id)?;
        let entry = pos.entry(Context::Td);
        let combined = entry.guest_wr & request;
        if combined == 0 {
            return Err(TdxStatus::METADATA_FIELD_NOT_WRITABLE);
        }
        let mut g = self.lock();
        let old = self.td_element(&g, pos) & entry.first().size_mask();
        check_forbidden_bits_unchanged(old, value, request, entry.guest_wr)?;
        let new = (old & !combined) | (value & combined);
        match entry.id {
            // The guest may flip PENDING_VE_DISABLE only with CONFIG_FLAGS.FLEXIBLE_PENDING_VE,
            // which KVM never sets.
            tdcs::TD_CTLS => {
                let flexible = self.config_flags() & CONFIG_FLAGS_FLEXIBLE_PENDING_VE != 0;
                if !flexible && (new ^ old) & TD_CTLS_PENDING_VE_DISABLE != 0 {
                    return Err(TdxStatus::METADATA_FIELD_VALUE_NOT_VALID);
                }
                g.td_fields.td_ctls = new;
            }
            tdcs::NOTIFY_ENABLES => g.td_fields.notify_enables = new,
            // No other TD field has guest-writable bits.
            _ => return Err(TdxStatus::METADATA_FIELD_NOT_WRITABLE),
        }
        Ok(old & entry.guest_rd)
    }

    /// `md_vp_write_element` for a guest: a write of the whole element starts from 0, a
    /// partial one from the old value; the old value under the read mask is returned.
    fn md_vp_guest_write(&self, vcpu: u32, id: FieldId, value: u64, request: u64) -> MdResult<u64> {
        let pos = self.md_element(Context::Vp, id)?;
        let entry = pos.entry(Context::Vp);
        let combined = entry.guest_wr & request;
        if combined == 0 {
            return Err(TdxStatus::METADATA_FIELD_NOT_WRITABLE);
        }
        let mut g = self.lock();
        let old = Self::vp_element(&mut g, vcpu, pos) & entry.first().size_mask();
        let base = if combined == entry.first().size_mask() {
            0
        } else {
            old
        };
        check_forbidden_bits_unchanged(base, value, request, entry.guest_wr)?;
        let new = (base & !combined) | (value & combined);
        // L2_CTLS and TSC_DEADLINE of VM 0, or of an L2 VM that does not exist, are stored
        // with no further effect (`md_vp_element_special_wr_handle`).
        let slot = g
            .vp_fields
            .get_mut(vcpu as usize)
            .and_then(|f| f.slot(entry.id, pos.elem))
            .ok_or(TdxStatus::METADATA_FIELD_NOT_WRITABLE)?;
        *slot = new & entry.first().size_mask();
        Ok(old & entry.guest_rd)
    }

    /// TDG.VM.RD (`tdg_vm_rd`): RDX the field id, RCX the VM (0: the TD itself); R8 the
    /// value. Version 1 also returns the next readable element's id in RDX (FIELD_ID_NA
    /// after the last and on failure), and the null id asks for the first.
    pub(super) fn tdg_vm_rd(&self, vcpu: u32, regs: &mut Regs, version: u8) {
        let input = FieldId(regs.rdx);
        if version > 0 {
            regs.rdx = FIELD_ID_NA;
        }
        regs.r8 = 0;
        regs.rax = status(self.tdg_vm_rd_checked(vcpu, regs, input, version));
    }

    fn tdg_vm_rd_checked(
        &self,
        vcpu: u32,
        regs: &mut Regs,
        input: FieldId,
        version: u8,
    ) -> MdResult<()> {
        if version > 1 {
            return Err(TdxStatus::OPERAND_INVALID.with_details(operand::RAX));
        }
        if regs.rcx != 0 {
            return Err(TdxStatus::OPERAND_INVALID.with_details(operand::RCX));
        }
        let id = input.with_context(Context::Td);
        if version > 0 && is_null(id) {
            regs.rdx = md_next_element(Context::Td, None);
            return Err(TdxStatus::METADATA_FIRST_FIELD_ID_IN_CONTEXT);
        }
        if !id.is_single_element() {
            return Err(TdxStatus::METADATA_FIELD_ID_INCORRECT);
        }
        let (pos, value) = self.md_guest_read(Context::Td, vcpu, id)?;
        if version > 0 {
            regs.rdx = md_next_element(Context::Td, Some((pos, id)));
        }
        regs.r8 = value;
        Ok(())
    }

    /// TDG.VM.WR (`tdg_vm_wr`): RDX the field id, RCX the VM, R8 the value, R9 the bits to
    /// write; R8 the old value.
    pub(super) fn tdg_vm_wr(&self, regs: &mut Regs) {
        let (input, value, request) = (FieldId(regs.rdx), regs.r8, regs.r9);
        regs.r8 = 0;
        let result = (|| {
            if regs.rcx != 0 {
                return Err(TdxStatus::OPERAND_INVALID.with_details(operand::RCX));
            }
            let id = input.with_context(Context::Td);
            if !id.is_single_element() {
                return Err(TdxStatus::METADATA_FIELD_ID_INCORRECT);
            }
            self.md_td_guest_write(id, value, request)
        })();
        if let Ok(old) = result {
            regs.r8 = old;
        }
        regs.rax = status(result.map(drop));
    }

    /// TDG.VP.RD (`tdg_vp_rd`): RDX the field id (RCX must be 0); R8 the value, RDX the next
    /// readable element's id (FIELD_ID_NA after the last and on failure); the null id asks
    /// for the first.
    pub(super) fn tdg_vp_rd(&self, vcpu: u32, regs: &mut Regs) {
        let input = FieldId(regs.rdx);
        regs.rdx = FIELD_ID_NA;
        regs.r8 = 0;
        let result = (|| {
            if regs.rcx != 0 {
                return Err(TdxStatus::OPERAND_INVALID.with_details(operand::RCX));
            }
            let id = input.with_context(Context::Vp);
            if is_null(id) {
                regs.rdx = md_next_element(Context::Vp, None);
                return Err(TdxStatus::METADATA_FIRST_FIELD_ID_IN_CONTEXT);
            }
            if !id.is_single_element() {
                return Err(TdxStatus::METADATA_FIELD_ID_INCORRECT);
            }
            let (pos, value) = self.md_guest_read(Context::Vp, vcpu, id)?;
            regs.rdx = md_next_element(Context::Vp, Some((pos, id)));
            regs.r8 = value;
            Ok(())
        })();
        regs.rax = status(result);
    }

    /// TDG.SYS.RD (module 1.5 `tdg_sys_rd`): RDX the field id (context forced to SYS); R8 the
    /// value, RDX the next guest-readable element (FIELD_ID_NA after the last and on
    /// failure). The null id answers the first readable one, VENDOR_ID, with
    /// METADATA_FIRST_FIELD_ID_IN_CONTEXT; a field the guest may not read is
    /// METADATA_FIELD_NOT_READABLE; an id in no entry METADATA_FIELD_ID_INCORRECT.
    pub(super) fn tdg_sys_rd(&self, regs: &mut Regs) {
        let id = FieldId(regs.rdx).with_context(Context::Sys);
        regs.rdx = FIELD_ID_NA;
        regs.r8 = 0;
        let result = (|| {
            if is_null(id) {
                regs.rdx = md_next_element(Context::Sys, None);
                return Err(TdxStatus::METADATA_FIRST_FIELD_ID_IN_CONTEXT);
            }
            if !id.is_single_element() {
                return Err(TdxStatus::METADATA_FIELD_ID_INCORRECT);
            }
            let (pos, value) = self.md_guest_read(Context::Sys, 0, id)?;
            regs.rdx = md_next_element(Context::Sys, Some((pos, id)));
            regs.r8 = value;
            Ok(())
        })();
        regs.rax = status(result);
    }

    /// TDG.VP.CPUIDVE.SET (module 1.5 `tdg_vp_cpuidve_set`, leaf 5): RCX bit 0 sets this
    /// vCPU's CPUID_SUPERVISOR_VE, bit 1 its CPUID_USER_VE (the TDVPS fields TDG.VP.RD/WR
    /// reach too); any other bit is OPERAND_INVALID on RCX and changes nothing. The emulated
    /// module only keeps them: CPUID on stock KVM never becomes a #VE (docs/emulation.md).
    pub(super) fn tdg_vp_cpuidve_set(&self, vcpu: u32, regs: &mut Regs) {
        const SUPERVISOR: u64 = 1 << 0;
        const USER: u64 = 1 << 1;
        let control = regs.rcx;
        regs.rax = if control & !(SUPERVISOR | USER) != 0 {
            TdxStatus::OPERAND_INVALID.with_details(operand::RCX).0
        } else {
            if let Some(f) = self.lock().vp_fields.get_mut(vcpu as usize) {
                f.cpuid_supervisor_ve = control & SUPERVISOR;
                f.cpuid_user_ve = (control & USER) >> 1;
            }
            0
        };
    }

    /// TDG.VP.WR (`tdg_vp_wr`): RDX the field id (RCX must be 0), R8 the value, R9 the bits to
    /// write; R8 the old value.
    pub(super) fn tdg_vp_wr(&self, vcpu: u32, regs: &mut Regs) {
        let (input, value, request) = (FieldId(regs.rdx), regs.r8, regs.r9);
        regs.r8 = 0;
        let result = (|| {
            if regs.rcx != 0 {
                return Err(TdxStatus::OPERAND_INVALID.with_details(operand::RCX));
            }
            let id = input.with_context(Context::Vp);
            if !id.is_single_element() {
                return Err(TdxStatus::METADATA_FIELD_ID_INCORRECT);
            }
            self.md_vp_guest_write(vcpu, id, value, request)
        })();
        if let Ok(old) = result {
            regs.r8 = old;
        }
        regs.rax = status(result.map(drop));
    }
}

/// `is_null_field_id`: all ones but for the context code.
fn is_null(id: FieldId) -> bool {
    id.0 | FieldId::CONTEXT_MASK == FIELD_ID_NA
}

/// RAX for a metadata call.
fn status(r: MdResult<()>) -> u64 {
    match r {
        Ok(()) => 0,
        Err(s) => s.0,
    }
}

/// `md_check_forbidden_bits_unchanged`: requested bits outside the write mask must keep their
/// value.
fn check_forbidden_bits_unchanged(
    old: u64,
    value: u64,
    request: u64,
    wr_mask: u64,
) -> MdResult<()> {
    let forbidden = request & !wr_mask;
    if old & forbidden != value & forbidden {
        return Err(TdxStatus::METADATA_FIELD_VALUE_NOT_VALID);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seam::{NullPrivateMem, TdParams, TdcallExit};
    use shared_abi::tdcall::{leaf_rax, TdcallLeaf};
    use shared_abi::Gpaw;
    use std::sync::Arc;

    fn td() -> Arc<TdxModule> {
        TdxModule::runnable(
            TdParams {
                gpaw: Gpaw::GPAW_48,
                attributes: shared_abi::td::attributes::SEPT_VE_DISABLE,
                num_vcpus: 2,
                max_vcpus: 2,
            },
            Arc::new(NullPrivateMem),
        )
    }

    /// One TDCALL: (RAX, RDX, R8).
    fn call(
        td: &TdxModule,
        vcpu: u32,
        leaf: TdcallLeaf,
        version: u8,
        r: [u64; 4],
    ) -> (u64, u64, u64) {
        let mut regs = Regs {
            rax: leaf_rax(leaf, version),
            rcx: r[0],
            rdx: r[1],
            r8: r[2],
            r9: r[3],
            ..Regs::default()
        };
        assert_eq!(td.tdcall(vcpu, &mut regs), TdcallExit::Done);
        (regs.rax, regs.rdx, regs.r8)
    }

    fn vm_rd(td: &TdxModule, version: u8, id: u64) -> (u64, u64, u64) {
        call(td, 0, TdcallLeaf::VmRd, version, [0, id, 0, 0])
    }

    fn vm_wr(td: &TdxModule, id: u64, value: u64, mask: u64) -> (u64, u64) {
        let (rax, _, r8) = call(td, 0, TdcallLeaf::VmWr, 0, [0, id, value, mask]);
        (rax, r8)
    }

    const NOT_READABLE: u64 = TdxStatus::METADATA_FIELD_NOT_READABLE.0;
    const NOT_WRITABLE: u64 = TdxStatus::METADATA_FIELD_NOT_WRITABLE.0;
    const NOT_VALID: u64 = TdxStatus::METADATA_FIELD_VALUE_NOT_VALID.0;
    const INCORRECT: u64 = TdxStatus::METADATA_FIELD_ID_INCORRECT.0;

    /// CONFIG_FLAGS, TD_CTLS and NOTIFY_ENABLES as module 1.5 keeps them for a guest, with
    /// the ids Linux uses (no context or size bits).
    #[test]
    fn vm_rd_wr_config_flags_td_ctls_notify_enables() {
        let td = td();
        let (config, td_ctls, notify) = (
            0x1110_0003_0000_0016,
            0x1110_0003_0000_0017,
            0x9100_0000_0000_0010,
        );
        // KVM's TD_PARAMS: NO_RBP_MOD; TDH.MNG.INIT: PENDING_VE_DISABLE from SEPT_VE_DISABLE.
        assert_eq!(vm_rd(&td, 0, config), (0, config, 1 << 2));
        assert_eq!(vm_rd(&td, 0, td_ctls), (0, td_ctls, 1));
        assert_eq!(vm_rd(&td, 0, notify), (0, notify, 0));
        // NOTIFY_ENABLES bit 0 is the guest's; other bits may be named only unchanged.
        assert_eq!(vm_wr(&td, notify, 1, 1), (0, 0));
        assert_eq!(vm_rd(&td, 0, notify).2, 1);
        assert_eq!(
            vm_wr(&td, notify, 1, u64::MAX),
            (0, 1),
            "unchanged bits may be named"
        );
        assert_eq!(
            vm_wr(&td, notify, 3, 3).0,
            NOT_VALID,
            "bit 1 is not the guest's"
        );
        assert_eq!(vm_wr(&td, notify, 2, 2).0, NOT_WRITABLE);
        // CONFIG_FLAGS is read-only; TD_CTLS.PENDING_VE_DISABLE is fixed without
        // FLEXIBLE_PENDING_VE, and 1.5 lets a guest write no other TD_CTLS bit.
        assert_eq!(vm_wr(&td, config, 0, u64::MAX).0, NOT_WRITABLE);
        assert_eq!(vm_wr(&td, td_ctls, 0, 1).0, NOT_VALID);
        assert_eq!(vm_wr(&td, td_ctls, 1, 1), (0, 1), "no change is fine");
        assert_eq!(
            vm_wr(&td, td_ctls, 1 << 1, 1 << 1).0,
            NOT_WRITABLE,
            "ENUM_TOPOLOGY"
        );
    }

    /// Ids the module does not know, fields a guest may not read, and the checks before them.
    #[test]
    fn vm_rd_unknown_and_unreadable_ids_answer_as_module_1_5() {
        let td = td();
        assert_eq!(
            vm_rd(&td, 0, 0x9100_0000_0000_0019).0,
            INCORRECT,
            "TOPOLOGY_ENUM_CONFIGURED is not in 1.5"
        );
        assert_eq!(
            vm_rd(&td, 0, 0x2510_0003_0000_0000).0,
            INCORRECT,
            "no L2 VM"
        );
        assert_eq!(
            vm_rd(&td, 0, 0x8010_0000_0000_0001).0,
            NOT_READABLE,
            "FATAL"
        );
        assert_eq!(vm_rd(&td, 0, 0x1110_0003_0000_0004).0, NOT_READABLE, "EPTP");
        assert_eq!(
            vm_rd(&td, 0, 0x9410_0003_0000_0000).0,
            NOT_READABLE,
            "CPUID_VALUES"
        );
        assert_eq!(
            vm_rd(&td, 0, 0x1110_0003_0100_0016).0,
            INCORRECT,
            "reserved bits"
        );
        assert_eq!(
            vm_rd(&td, 0, 0x1110_0007_0000_0016).0,
            INCORRECT,
            "LAST_ELEMENT_IN_FIELD"
        );
        let (rax, _, _) = call(
            &td,
            0,
            TdcallLeaf::VmRd,
            0,
            [1, 0x1110_0003_0000_0016, 0, 0],
        );
        assert_eq!(
            rax,
            TdxStatus::OPERAND_INVALID.with_details(operand::RCX).0,
            "VM 1"
        );
        assert_eq!(
            vm_rd(&td, 2, 0).0,
            TdxStatus::OPERAND_INVALID.with_details(operand::RAX).0
        );
        let (rax, _, _) = call(
            &td,
            0,
            TdcallLeaf::VmWr,
            1,
            [0, 0x9100_0000_0000_0010, 1, 1],
        );
        assert_eq!(
            rax,
            TdxStatus::OPERAND_INVALID.with_details(operand::RAX).0,
            "VM.WR has no version 1"
        );
        assert_eq!(
            vm_rd(&td, 0, 0x9010_0002_0000_0001),
            (0, 0x9010_0002_0000_0001, 2),
            "NUM_VCPUS"
        );
    }

    /// Version 1 walks the readable elements: the null id gives the first, each read the next.
    #[test]
    fn vm_rd_version_1_walks_the_guest_readable_elements() {
        let td = td();
        let first = vm_rd(&td, 1, FIELD_ID_NA);
        assert_eq!(
            first,
            (
                TdxStatus::METADATA_FIRST_FIELD_ID_IN_CONTEXT.0,
                0x8010_0003_0000_0020,
                0
            )
        );
        assert_eq!(
            vm_rd(&td, 1, 0x8010_0003_0000_0020).1,
            0x8010_0003_0000_0021,
            "TD_UUID's next element"
        );
        // After NOTIFY_ENABLES, HP_LOCK_TIMEOUT and VM_CTLS are skipped.
        assert_eq!(
            vm_rd(&td, 1, 0x9110_0003_0000_0010).1,
            0x1110_0003_0000_0016
        );
        // SERVTD_BINDINGS_TABLE's last element is the last readable one.
        assert_eq!(vm_rd(&td, 1, 0x9910_0003_0000_008F).1, FIELD_ID_NA);
        assert_eq!(
            vm_rd(&td, 1, 0x8010_0000_0000_0001),
            (NOT_READABLE, FIELD_ID_NA, 0)
        );
        // Walk it all: every id read succeeds, and the walk ends.
        let (mut id, mut n) = (first.1, 0);
        while id != FIELD_ID_NA {
            let (rax, next, _) = vm_rd(&td, 1, id);
            assert_eq!(rax, 0, "{id:#x}");
            (id, n) = (next, n + 1);
        }
        // TD_UUID 4, NUM_VCPUS, NUM_L2_VMS, ATTRIBUTES, XFAM, MAX_VCPUS, GPAW,
        // TSC_FREQUENCY, NOTIFY_ENABLES, CONFIG_FLAGS, TD_CTLS, MRTD..MROWNERCONFIG 4×6,
        // RTMR 4×6, PRE_IMPORT_UUID 4, SERVTD_HASH 6, SERVTD_NUM, bindings 16.
        assert_eq!(n, 4 + 10 + 24 + 24 + 4 + 6 + 1 + 16);
    }

    /// Guest-controlled ids never panic the host: every table id with each bit flipped, on
    /// every metadata leaf and vCPU (one past the last too), answers a status the module has.
    #[test]
    fn any_id_on_any_metadata_leaf_answers_a_module_status() {
        let td = td();
        let ids = (TDR_TDCS
            .iter()
            .chain(TD_VMCS)
            .chain(TDVPS)
            .chain(GLOBAL_SYS))
        .flat_map(|e| {
            (0..64)
                .map(move |bit| e.id ^ (1 << bit))
                .chain([e.id, e.id + 1])
        })
        .chain([0, FIELD_ID_NA, 0x9110_0003_00FF_FFFF]);
        let leaves = [
            TdcallLeaf::SysRd,
            TdcallLeaf::VmRd,
            TdcallLeaf::VmWr,
            TdcallLeaf::VpRd,
            TdcallLeaf::VpWr,
        ];
        for id in ids {
            for (leaf, vcpu) in leaves.iter().zip([0, 0, 1, 2, 0]) {
                for version in [0, 1] {
                    let (rax, _, _) =
                        call(&td, vcpu, *leaf, version, [0, id, id, id.rotate_left(7)]);
                    let known = rax == 0
                        || TdxStatus::KNOWN.iter().any(|(_, s)| {
                            s.0 == rax
                                || s.with_details(operand::RAX).0 == rax
                                || s.with_details(operand::RCX).0 == rax
                        });
                    assert!(known, "{leaf:?} v{version} {id:#x}: {rax:#x}");
                }
            }
        }
    }

    /// TDG.VP.RD/WR: the vCPU index, the CPUID #VE controls; the TD VMCS is not the guest's.
    #[test]
    fn vp_rd_wr_as_module_1_5() {
        let td = td();
        let vp_rd = |vcpu: u32, id: u64| call(&td, vcpu, TdcallLeaf::VpRd, 0, [0, id, 0, 0]);
        let vp_wr = |id: u64, v: u64, m: u64| call(&td, 1, TdcallLeaf::VpWr, 0, [0, id, v, m]);
        let (vcpu_index, supervisor_ve) = (0xA020_0002_0000_0002, 0xA020_0000_0000_0007);
        assert_eq!(
            vp_rd(0, FIELD_ID_NA),
            (
                TdxStatus::METADATA_FIRST_FIELD_ID_IN_CONTEXT.0,
                vcpu_index,
                0
            )
        );
        assert_eq!(vp_rd(1, vcpu_index), (0, supervisor_ve, 1));
        assert_eq!(vp_wr(supervisor_ve, 1, 0xff).0, 0);
        assert_eq!(vp_rd(1, supervisor_ve).2, 1);
        assert_eq!(vp_rd(0, supervisor_ve).2, 0, "per vCPU");
        assert_eq!(vp_wr(vcpu_index, 0, u64::MAX).0, NOT_WRITABLE);
        assert_eq!(
            vp_rd(0, 0xA020_0003_0000_0058).2,
            u64::MAX,
            "TSC_DEADLINE unarmed"
        );
        assert_eq!(
            vp_rd(0, 0x0024_0001_0000_0000).0,
            NOT_READABLE,
            "the VMCS's VPID"
        );
        assert_eq!(
            vp_rd(0, 0x0024_0003_0000_2001).0,
            INCORRECT,
            "a VMCS field's HIGH half"
        );
        assert_eq!(vp_rd(0, 0x2520_0003_0000_0000).0, INCORRECT, "no L2 VM");
        let (rax, rdx, _) = call(&td, 0, TdcallLeaf::VpRd, 0, [1, vcpu_index, 0, 0]);
        assert_eq!(
            (rax, rdx),
            (
                TdxStatus::OPERAND_INVALID.with_details(operand::RCX).0,
                FIELD_ID_NA
            )
        );
    }

    /// TDG.SYS.RD as module 1.5 answers a guest: the walk from the null id visits exactly the
    /// guest-readable global fields, from VENDOR_ID; TDX_FEATURES0 is the 1.5 module's;
    /// a host-only field is NOT_READABLE and an id in no entry FIELD_ID_INCORRECT.
    #[test]
    fn sys_rd_walks_module_1_5_guest_readable_fields() {
        let td = td();
        let sys_rd = |id: u64| call(&td, 0, TdcallLeaf::SysRd, 0, [0, id, 0, 0]);
        let first = sys_rd(FIELD_ID_NA);
        assert_eq!(
            first,
            (
                TdxStatus::METADATA_FIRST_FIELD_ID_IN_CONTEXT.0,
                sys::VENDOR_ID,
                0
            )
        );
        let (mut id, mut seen) = (first.1, Vec::new());
        while id != FIELD_ID_NA {
            let (rax, next, value) = sys_rd(id);
            assert_eq!(rax, 0, "{id:#x}");
            seen.push((id, value));
            id = next;
        }
        assert_eq!(
            seen,
            [
                (sys::VENDOR_ID, 0x8086),
                (sys::MINOR_VERSION, 5),
                (sys::MAJOR_VERSION, 1),
                (0x0A00_0002_0000_0000, 0), // SYS_ATTRIBUTES
                (sys::NUM_TDX_FEATURES, 1),
                (sys::TDX_FEATURES0, 0xF_0EBF),
                (0xA000_0003_0000_0000, 0), // MIG_ATTRIBUTES
                (0x2000_0001_0000_0001, 0), // MIN_EXPORT_VERSION
                (0x2000_0001_0000_0002, 0),
                (0x2000_0001_0000_0003, 0),
                (0x2000_0001_0000_0004, 0), // MAX_IMPORT_VERSION
                (sys::GUEST_L2_GPA_ATTR_MASK, 0x807F),
            ]
        );
        // The context code is the module's to set.
        assert_eq!(sys_rd(sys::TDX_FEATURES0 | 1 << 52).2, 0xF_0EBF);
        // BUILD_NUM and a CMR base exist but are the host's; PKG_FMS element 8 does not.
        assert_eq!(
            sys_rd(0x8800_0001_0000_0002),
            (NOT_READABLE, FIELD_ID_NA, 0)
        );
        assert_eq!(sys_rd(0x9000_0003_0000_0085).0, NOT_READABLE);
        assert_eq!(sys_rd(0x0000_0002_0000_0009), (INCORRECT, FIELD_ID_NA, 0));
        // LAST_ELEMENT_IN_FIELD set: not a single element.
        assert_eq!(sys_rd(sys::VENDOR_ID | 1 << 34).0, INCORRECT);
    }

    /// TDG.VP.CPUIDVE.SET sets the calling vCPU's two CPUID #VE controls, which TDG.VP.RD
    /// reads back; a reserved bit is OPERAND_INVALID on RCX and changes nothing.
    #[test]
    fn vp_cpuidve_set_as_module_1_5() {
        let td = td();
        let set = |vcpu: u32, control: u64| {
            call(&td, vcpu, TdcallLeaf::VpCpuidveSet, 0, [control, 0, 0, 0]).0
        };
        let rd = |vcpu: u32, id: u64| call(&td, vcpu, TdcallLeaf::VpRd, 0, [0, id, 0, 0]).2;
        let controls = |vcpu| {
            (
                rd(vcpu, tdvps::CPUID_SUPERVISOR_VE),
                rd(vcpu, tdvps::CPUID_USER_VE),
            )
        };
        assert_eq!(set(1, 0b11), 0);
        assert_eq!(controls(1), (1, 1));
        assert_eq!(controls(0), (0, 0), "per vCPU");
        assert_eq!(set(1, 0b10), 0);
        assert_eq!(controls(1), (0, 1));
        assert_eq!(
            set(1, 0b101),
            TdxStatus::OPERAND_INVALID.with_details(operand::RCX).0
        );
        assert_eq!(controls(1), (0, 1), "a refused call changes nothing");
        assert_eq!(set(2, 1 << 63), set(1, 0b100));
    }
}
