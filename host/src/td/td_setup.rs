//! Building the TD as QEMU and the TDX module do: the TD HOB, the CPUID table, and vCPUs in
//! the TD start state.

use anyhow::Context;
use kvm_bindings::{kvm_msr_entry, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{VcpuFd, VmFd};
use shared_abi::doorbell::{DEFAULT_DOORBELL_PORT, DOORBELL_ABI_VERSION};
use shared_abi::layout::guid::TDXLAB_HOB;
use shared_abi::layout::hob::{
    resource_attr, resource_type, HobWriter, ResourceDescriptor, TdxlabHob,
};
use shared_abi::layout::Guid;
use shared_abi::td::{TDX_SIGNATURE_EBX, TDX_SIGNATURE_ECX, TDX_SIGNATURE_EDX};

/// The local APIC's base address (x2APIC mode is enabled on top of it).
const APIC_BASE: u64 = 0xFEE0_0000;

/// QEMU's TD HOB (`hw/i386/tdvf-hob.c`) plus tdxlab's emulation HOB.
pub(super) fn build_td_hob(
    base: u64,
    size: u64,
    ram: &[(u64, u64)],
    accepted: &[(u64, u64)],
    guest: &TdxlabHob,
) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut w = HobWriter::new(&mut buf, base)?;
    let mut ranges: Vec<(u64, u64, u32)> = Vec::new();
    let mut acc = accepted.to_vec();
    acc.sort();
    // Per RAM range (QEMU's tdx_init_ram_entries): the added pages as system memory, the
    // rest unaccepted.
    for &(start, len) in ram {
        let end = start + len;
        let mut at = start;
        for &(s, l) in acc.iter().filter(|(s, _)| *s >= start && *s < end) {
            if s > at {
                ranges.push((at, s - at, resource_type::MEMORY_UNACCEPTED));
            }
            ranges.push((s, l, resource_type::SYSTEM_MEMORY));
            at = s + l;
        }
        if at < end {
            ranges.push((at, end - at, resource_type::MEMORY_UNACCEPTED));
        }
    }
    for (start, length, ty) in ranges {
        w.resource(&ResourceDescriptor {
            owner: Guid([0; 16]),
            resource_type: ty,
            attributes: resource_attr::RAM,
            start,
            length,
        })?;
    }
    let tdxlab = TdxlabHob {
        version: DOORBELL_ABI_VERSION,
        doorbell_port: DEFAULT_DOORBELL_PORT,
        ..*guest
    };
    w.guid_extension(TDXLAB_HOB, &tdxlab.encode())?;
    w.finish()?;
    Ok(buf)
}

/// KVM's supported CPUID plus the TDX signature leaf 0x21 and the hypervisor and x2APIC bits.
pub(super) fn td_cpuid(kvm: &kvm_ioctls::Kvm) -> anyhow::Result<CpuId> {
    let base = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .context("KVM_GET_SUPPORTED_CPUID")?;
    let mut entries: Vec<_> = base.as_slice().to_vec();
    for e in entries.iter_mut() {
        match e.function {
            0 => e.eax = e.eax.max(0x21),
            1 => e.ecx |= 1 << 31 | 1 << 21,
            _ => {}
        }
    }
    entries.retain(|e| e.function != 0x21);
    entries.push(kvm_bindings::kvm_cpuid_entry2 {
        function: 0x21,
        index: 0,
        flags: 0,
        eax: 0,
        ebx: TDX_SIGNATURE_EBX,
        ecx: TDX_SIGNATURE_ECX,
        edx: TDX_SIGNATURE_EDX,
        ..Default::default()
    });
    CpuId::from_entries(&entries).map_err(|e| anyhow::anyhow!("CPUID table: {e:?}"))
}

/// The CPUID table a Linux TD gets: [`td_cpuid`] (leaf 0x21, x2APIC, the hypervisor bit)
/// shaped as QEMU's TDX machine shapes it for Linux, because on stock KVM CPUID never
/// reaches the host as a #VE — KVM answers it from this table:
/// - TSC-deadline timer on (KVM emulates it in its local APIC), MONITOR/MWAIT off (leaf 5
///   gone): Linux idles through TDVMCALL<HLT>;
/// - no PMU (leaf 0xA zeroed, AMD's PERFCTR_CORE and leaf 0x80000022 gone): perf NMIs could
///   land between a #VE and its TDG.VP.VEINFO.GET;
/// - KVM's paravirtual features off (leaf 0x40000001 EAX = 0): kvmclock, steal time, PV EOI
///   and async PF make KVM write guest memory behind the TDX module model (QEMU's
///   `TDX_SUPPORTED_KVM_FEATURES` drops kvmclock too).
pub(super) fn linux_cpuid(kvm: &kvm_ioctls::Kvm) -> anyhow::Result<CpuId> {
    const MONITOR: u32 = 1 << 3;
    const TSC_DEADLINE: u32 = 1 << 24;
    const AMD_PERFCTR_CORE: u32 = 1 << 23;
    let base = td_cpuid(kvm)?;
    let mut entries: Vec<_> = base.as_slice().to_vec();
    entries.retain(|e| !matches!(e.function, 0x5 | 0x8000_0022));
    for e in entries.iter_mut() {
        match e.function {
            1 => e.ecx = (e.ecx | TSC_DEADLINE) & !MONITOR,
            0xA => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0),
            0x4000_0001 => e.eax = 0,
            0x8000_0001 => e.ecx &= !AMD_PERFCTR_CORE,
            _ => {}
        }
    }
    CpuId::from_entries(&entries).map_err(|e| anyhow::anyhow!("CPUID table: {e:?}"))
}

/// `cpuid` as vCPU `index` sees it: its APIC ID in leaf 1 (EBX[31:24]), its x2APIC ID in the
/// topology leaves 0xB and 0x1F (EDX) and AMD's 0x8000001E (EAX), as QEMU writes them per
/// vCPU (`cpu_x86_cpuid`). KVM's supported table carries the host CPU's IDs, which disagree
/// with the local APIC KVM gives the vCPU (Linux: "APIC ID mismatch").
fn with_apic_id(cpuid: &CpuId, index: u32) -> anyhow::Result<CpuId> {
    let mut entries = cpuid.as_slice().to_vec();
    for e in entries.iter_mut() {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00FF_FFFF) | (index << 24),
            0xB | 0x1F => e.edx = index,
            0x8000_001E => e.eax = index,
            _ => {}
        }
    }
    CpuId::from_entries(&entries).map_err(|e| anyhow::anyhow!("CPUID table: {e:?}"))
}

/// A vCPU in the TD start state (the TDX module's initial vCPU state, as TDVF expects it).
pub(super) fn create_vcpu(
    vm: &VmFd,
    index: u32,
    cpuid: &CpuId,
    hob: u64,
    gpaw: shared_abi::Gpaw,
) -> anyhow::Result<VcpuFd> {
    let vcpu = vm
        .create_vcpu(index as u64)
        .with_context(|| format!("KVM_CREATE_VCPU {index}"))?;
    vcpu.set_cpuid2(&with_apic_id(cpuid, index)?)
        .context("KVM_SET_CPUID2")?;
    let mut s = vcpu.get_sregs().context("KVM_GET_SREGS")?;
    td_start_sregs(&mut s);
    vcpu.set_sregs(&s).context("KVM_SET_SREGS")?;
    // The TDX module's initial GPRs (TDX module spec, "Initial State of Guest GPRs"):
    // RBX = GPAW, RCX/R8 = the TD HOB, RSI = the vCPU index, RDX = CPUID(1).EAX.
    let regs = kvm_bindings::kvm_regs {
        rip: RESET_VECTOR,
        rflags: RFLAGS_FIXED,
        rbx: gpaw.bits() as u64,
        rcx: hob,
        r8: hob,
        rsi: index as u64,
        rdx: core::arch::x86_64::__cpuid(1).eax as u64,
        ..Default::default()
    };
    vcpu.set_regs(&regs).context("KVM_SET_REGS")?;
    let bsp = if index == 0 { APIC_BASE_BSP } else { 0 };
    let msrs = Msrs::from_entries(&[
        kvm_msr_entry {
            index: MSR_IA32_APICBASE,
            data: APIC_BASE | APIC_BASE_ENABLE | APIC_BASE_X2APIC | bsp,
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_IA32_FMASK,
            data: FMASK_TD_START,
            ..Default::default()
        },
    ])
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let set = vcpu
        .set_msrs(&msrs)
        .context("KVM_SET_MSRS (x2APIC base, FMASK)")?;
    anyhow::ensure!(
        set == 2,
        "KVM_SET_MSRS set {set} of 2 MSRs (x2APIC base, FMASK)"
    );
    // A TD has no INIT/SIPI: every vCPU is runnable at once (KVM would park APs until SIPI).
    let runnable = kvm_bindings::kvm_mp_state {
        mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
    };
    vcpu.set_mp_state(runnable).context("KVM_SET_MP_STATE")?;
    Ok(vcpu)
}

/// Where every TD vCPU starts: the reset vector, 16 bytes below 4 GiB.
const RESET_VECTOR: u64 = 0xFFFF_FFF0;
/// RFLAGS bit 1 is always set.
const RFLAGS_FIXED: u64 = 1 << 1;
/// CR0.PE (protected mode) and CR0.NE (native FPU errors); paging off.
const CR0_PE_NE: u64 = (1 << 0) | (1 << 5);
/// CR4.MCE.
const CR4_MCE: u64 = 1 << 6;
/// CR4.PAE (lane only, see below).
const CR4_PAE: u64 = 1 << 5;
/// EFER.SCE (syscall), EFER.LME (long mode enable, not yet active), EFER.NXE.
const EFER_SCE_LME_NXE: u64 = (1 << 0) | (1 << 8) | (1 << 11);
/// Segment types: execute/read code, read/write data, both accessed; a busy 32-bit TSS.
const SEG_CODE_XRA: u8 = 0xB;
const SEG_DATA_RWA: u8 = 0x3;
const SEG_TSS_BUSY: u8 = 0xB;
/// System segment type of an LDT.
const SEG_LDT: u8 = 0x2;
/// IA32_FMASK and the value the module gives it at TDH.VP.INIT (`IA32_FMASK_MSR_RESET_STATE`,
/// src/common/x86_defs/msr_defs.h; set in tdh_vp_init.c): RFLAGS.IF and RFLAGS.AC cleared on
/// SYSCALL.
const MSR_IA32_FMASK: u32 = 0xC000_0084;
const FMASK_TD_START: u64 = 0x2_0200;
/// IA32_APIC_BASE and its BSP, x2APIC-enable and global-enable bits.
const MSR_IA32_APICBASE: u32 = 0x1B;
const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;

/// The TD start state's segments and descriptor tables, as the TDX module 1.5 writes them at
/// TDH.VP.INIT (`td_vmcs_migrated_state_init_map`, src/common/data_structures/td_vmcs_init.c):
/// that table sets only limits and access rights, so every selector and base stays 0 — CS
/// and DS/ES/FS/GS/SS flat 4 GiB (AR 0xC09B, 0xC093), TR a busy 32-bit TSS (limit 0xFFFF, AR
/// 0x8B), LDTR unusable (limit 0xFFFF, AR 0x10082), GDTR limit 0xFFFF and IDTR limit 0.
/// Paging off, EFER.LME already set.
fn td_start_sregs(s: &mut kvm_bindings::kvm_sregs) {
    let code = kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector: 0,
        type_: SEG_CODE_XRA,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_bindings::kvm_segment {
        type_: SEG_DATA_RWA,
        ..code
    };
    s.cs = code;
    (s.ds, s.es, s.fs, s.gs, s.ss) = (data, data, data, data, data);
    let system = kvm_bindings::kvm_segment {
        limit: 0xFFFF,
        s: 0,
        db: 0,
        g: 0,
        ..code
    };
    s.tr = kvm_bindings::kvm_segment {
        type_: SEG_TSS_BUSY,
        ..system
    };
    s.ldt = kvm_bindings::kvm_segment {
        type_: SEG_LDT,
        unusable: 1,
        ..system
    };
    s.gdt = kvm_bindings::kvm_dtable {
        base: 0,
        limit: 0xFFFF,
        padding: [0; 3],
    };
    s.idt = kvm_bindings::kvm_dtable {
        base: 0,
        limit: 0,
        padding: [0; 3],
    };
    s.cr0 = CR0_PE_NE;
    s.cr4 = CR4_MCE;
    s.efer = EFER_SCE_LME_NXE;
    // Lane only (scripts/kvm-lane.sh): QEMU's TCG emulation of SVM restores the host's CR0
    // before its CR4 and EFER on #VMEXIT, so with this start state (EFER.LME set, CR4.PAE
    // clear) the nested host kernel loses paging at the TD's first exit. CR4.PAE changes
    // nothing until the guest turns paging on (and it sets PAE itself before that); real
    // hardware never needs this, so the real start state stays the default.
    if std::env::var_os("TDXLAB_LANE_CR4_PAE").is_some() {
        s.cr4 |= CR4_PAE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::td::RamLayout;

    #[test]
    fn each_vcpu_sees_its_own_apic_id() {
        let entry = |function, ebx, edx, eax| kvm_bindings::kvm_cpuid_entry2 {
            function,
            eax,
            ebx,
            edx,
            ..Default::default()
        };
        let t = CpuId::from_entries(&[
            entry(1, 0x0708_0800, 0, 0),
            entry(0xB, 0, 5, 0),
            entry(0x8000_001E, 0, 0, 9),
        ])
        .unwrap();
        let v = with_apic_id(&t, 3).unwrap();
        let e = v.as_slice();
        assert_eq!((e[0].ebx, e[1].edx, e[2].eax), (0x0308_0800, 3, 3));
    }

    /// A segment's VMCS access-rights word (SDM Vol. 3, "Guest Register State"; KVM's
    /// `vmx_segment_access_rights`).
    fn vmx_ar(s: &kvm_bindings::kvm_segment) -> u32 {
        u32::from(s.type_)
            | u32::from(s.s) << 4
            | u32::from(s.dpl) << 5
            | u32::from(s.present) << 7
            | u32::from(s.avl) << 12
            | u32::from(s.l) << 13
            | u32::from(s.db) << 14
            | u32::from(s.g) << 15
            | u32::from(s.unusable) << 16
    }

    /// The start state is the module's `td_vmcs_migrated_state_init_map`: selectors and bases
    /// 0, the limits and access rights it lists, IDTR limit 0.
    #[test]
    fn the_start_segments_are_the_modules() {
        let mut s = kvm_bindings::kvm_sregs::default();
        td_start_sregs(&mut s);
        let segs = [s.cs, s.ds, s.es, s.fs, s.gs, s.ss, s.tr, s.ldt];
        let got: Vec<(u16, u64, u32, u32)> = segs
            .iter()
            .map(|g| (g.selector, g.base, g.limit, vmx_ar(g)))
            .collect();
        let flat = 0xFFFF_FFFF;
        assert_eq!(
            got,
            [
                (0, 0, flat, 0xC09B),
                (0, 0, flat, 0xC093),
                (0, 0, flat, 0xC093),
                (0, 0, flat, 0xC093),
                (0, 0, flat, 0xC093),
                (0, 0, flat, 0xC093),
                (0, 0, 0xFFFF, 0x8B),
                (0, 0, 0xFFFF, 0x1_0082),
            ]
        );
        assert_eq!((s.gdt.base, s.gdt.limit), (0, 0xFFFF));
        assert_eq!((s.idt.base, s.idt.limit), (0, 0));
        // CR0 0x21 and EFER 0x901 as the module's tables; CR4 without the VMXE bit the
        // module sets (a guest reads it through the CR4 shadow as clear).
        assert_eq!((s.cr0, s.cr4, s.efer), (0x21, 0x40, 0x901));
    }
    use shared_abi::layout::hob::HobList;

    /// 8 GiB as q35 lays it out: the HOB's RAM resources cover [0, 2 GiB) — the added pages
    /// as system memory, the rest unaccepted — and [4 GiB, 10 GiB) unaccepted; nothing in the
    /// 32-bit PCI hole.
    #[test]
    fn the_hob_has_one_resource_set_per_q35_ram_range_and_nothing_in_the_hole() {
        let ram = RamLayout::q35(8 << 30).ranges();
        let accepted = [(0x10_0000, 0x10_0000), (0x20_0000, 0x2000)];
        let hob = build_td_hob(0x20_0000, 0x2000, &ram, &accepted, &TdxlabHob::default()).unwrap();
        let list = HobList::parse(&hob).unwrap();
        let got: Vec<(u64, u64, u32)> = list
            .resources()
            .map(|r| (r.start, r.length, r.resource_type))
            .collect();
        let (u, s) = (
            resource_type::MEMORY_UNACCEPTED,
            resource_type::SYSTEM_MEMORY,
        );
        assert_eq!(
            got,
            [
                (0, 0x10_0000, u),
                (0x10_0000, 0x10_0000, s),
                (0x20_0000, 0x2000, s),
                (0x20_2000, (2 << 30) - 0x20_2000, u),
                (4 << 30, 6 << 30, u),
            ]
        );
    }
}
