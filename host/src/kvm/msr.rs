//! TDVMCALL<Instruction.RDMSR/WRMSR>: the MSRs KVM emulates for a TD (Linux 6.16
//! `arch/x86/kvm/vmx/tdx.c`: `tdx_has_emulated_msr`, `tdx_get_msr`, `tdx_set_msr`, then
//! `kvm_get_msr_common` / `kvm_set_msr_common` in `x86.c`, `kvm_mtrr_*` in `mtrr.c`, the
//! machine-check banks in `get_msr_mce` / `set_msr_mce`). KVM fails every other MSR, and the
//! TDVMCALL then answers INVALID_OPERAND (`tdx_complete_emulated_msr`).
//!
//! The vCPUs start at KVM's reset values, with the machine-check capability QEMU sets
//! (`KVM_X86_SETUP_MCE` with `MCE_CAP_DEF | MCE_BANKS_DEF`: MCG_CTL_P, MCG_SER_P, 10 banks;
//! no LMCE, no CMCI). tdxlab creates no in-kernel LAPIC, so the x2APIC registers fail as
//! they do in KVM without one (`kvm_x2apic_msr_read`), and TSC_DEADLINE reads 0 and ignores
//! writes (`kvm_get_lapic_tscdeadline_msr`).

use super::Kvm;
use shared_abi::VmcallStatus;
use tdcall::Regs;

const MSR_IA32_APICBASE: u32 = 0x1b;
const MSR_IA32_FEAT_CTL: u32 = 0x3a;
const MSR_IA32_UCODE_REV: u32 = 0x8b;
const MSR_PLATFORM_INFO: u32 = 0xce;
const MSR_MTRRCAP: u32 = 0xfe;
const MSR_IA32_ARCH_CAPABILITIES: u32 = 0x10a;
const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;
const MSR_IA32_MCG_CAP: u32 = 0x179;
const MSR_IA32_MCG_STATUS: u32 = 0x17a;
const MSR_IA32_MCG_CTL: u32 = 0x17b;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_POWER_CTL: u32 = 0x1fc;
/// MTRRphysBase0 … MTRRphysMask7 (KVM_NR_VAR_MTRR = 8).
const MTRR_VAR: std::ops::RangeInclusive<u32> = 0x200..=0x20f;
const MSR_MTRRFIX64K_00000: u32 = 0x250;
const MSR_MTRRFIX16K_80000: u32 = 0x258;
const MSR_MTRRFIX16K_A0000: u32 = 0x259;
const MTRR_FIX4K: std::ops::RangeInclusive<u32> = 0x268..=0x26f;
const MSR_IA32_CR_PAT: u32 = 0x277;
const MSR_IA32_MC0_CTL2: u32 = 0x280;
const MSR_MTRRDEFTYPE: u32 = 0x2ff;
const MSR_IA32_MC0_CTL: u32 = 0x400;
const MSR_IA32_MCG_EXT_CTL: u32 = 0x4d0;
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
const APIC_BASE_MSR: u32 = 0x800;
const MSR_EFER: u32 = 0xc000_0080;
const MSR_KVM_POLL_CONTROL: u32 = 0x4b56_4d05;

/// KVM_MAX_MCE_BANKS: the range of bank MSRs `tdx_has_emulated_msr` names.
const KVM_MAX_MCE_BANKS: u32 = 32;
/// QEMU's `MCE_BANKS_DEF`.
const MCE_BANKS: u32 = 10;
/// MCG_CAP as QEMU sets it: MCG_SER_P (24) | MCG_CTL_P (8) | 10 banks.
const MCG_CAP: u64 = 1 << 24 | 1 << 8 | MCE_BANKS as u64;
const MCG_CTL_P: u64 = 1 << 8;
/// KVM's reset values: `microcode_version`, PAT, MISC_ENABLE (PEBS and BTS unavailable),
/// PLATFORM_INFO (CPUID faulting), a TD vCPU's EFER (SCE, LME, LMA, NX).
const UCODE_REV_RESET: u64 = 0x1_0000_0000;
const PAT_RESET: u64 = 0x0007_0406_0007_0406;
const MISC_ENABLE_RESET: u64 = 1 << 12 | 1 << 11;
/// MISC_ENABLE bits a guest may not change (`MSR_IA32_MISC_ENABLE_PMU_RO_MASK`) and the
/// one whose writes are ignored (`MSR_IA32_MISC_ENABLE_EMON`).
const MISC_ENABLE_PMU_RO: u64 = 1 << 12 | 1 << 11;
const MISC_ENABLE_EMON: u64 = 1 << 7;
const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;
const TD_EFER: u64 = 1 << 0 | 1 << 8 | 1 << 10 | 1 << 11;
/// MTRRcap: WC, FIX, 8 variable ranges (`0x500 | KVM_NR_VAR_MTRR`).
const MTRRCAP: u64 = 0x500 | 8;
/// A TD's APIC base: the default address, x2APIC mode (EXTD | EN), BSP on vCPU 0
/// (`tdx_vcpu_init`).
const APIC_BASE_X2APIC: u64 = 0xfee0_0000 | 1 << 10 | 1 << 11;
const APIC_BASE_BSP: u64 = 1 << 8;

/// x2APIC registers the CPU virtualizes for a TD, which KVM cannot emulate: TPR, PPR, EOI,
/// and the first register of ISR, TMR and IRR. 6.16 writes the ranges as
/// `X2APIC_MSR(APIC_ISR) ... X2APIC_MSR(APIC_ISR + APIC_ISR_NR)`, and the shift inside
/// `X2APIC_MSR` drops APIC_ISR_NR, so each range is its first MSR only (fixed upstream
/// after 6.16 as "KVM: TDX: Fix APIC MSR ranges in tdx_has_emulated_msr()"). The others
/// fail later anyway: tdxlab has no in-kernel LAPIC.
fn x2apic_cpu_virtualized(index: u32) -> bool {
    matches!(
        index - APIC_BASE_MSR,
        0x08 | 0x0a | 0x0b | 0x10 | 0x18 | 0x20
    )
}

/// `tdx_has_emulated_msr`.
pub fn tdx_has_emulated_msr(index: u32) -> bool {
    match index {
        MSR_IA32_UCODE_REV
        | MSR_IA32_ARCH_CAPABILITIES
        | MSR_IA32_POWER_CTL
        | MSR_IA32_CR_PAT
        | MSR_MTRRCAP
        | MSR_MTRRDEFTYPE
        | MSR_IA32_TSC_DEADLINE
        | MSR_IA32_MISC_ENABLE
        | MSR_PLATFORM_INFO
        | MSR_MISC_FEATURES_ENABLES
        | MSR_IA32_APICBASE
        | MSR_EFER
        | MSR_IA32_FEAT_CTL
        | MSR_IA32_MCG_CAP
        | MSR_IA32_MCG_STATUS
        | MSR_IA32_MCG_CTL
        | MSR_IA32_MCG_EXT_CTL
        | MSR_KVM_POLL_CONTROL => true,
        // MTRRphysBase_MSR(0) ... MSR_MTRRfix4K_F8000.
        0x200..=0x26f => true,
        i if (MSR_IA32_MC0_CTL..MSR_IA32_MC0_CTL + 4 * KVM_MAX_MCE_BANKS).contains(&i) => true,
        i if (MSR_IA32_MC0_CTL2..MSR_IA32_MC0_CTL2 + KVM_MAX_MCE_BANKS).contains(&i) => true,
        i if (APIC_BASE_MSR..=APIC_BASE_MSR + 0xff).contains(&i) => !x2apic_cpu_virtualized(i),
        _ => false,
    }
}

/// One vCPU's emulated MSR state (`vcpu->arch`).
#[derive(Clone, Debug)]
pub(super) struct VcpuMsrs {
    power_ctl: u64,
    pat: u64,
    misc_enable: u64,
    misc_features_enables: u64,
    mtrr_var: [u64; 16],
    mtrr_fixed: [u64; 11],
    mtrr_deftype: u64,
    mcg_status: u64,
    mcg_ctl: u64,
    /// MCi_CTL, STATUS, ADDR, MISC of each bank.
    mce_banks: [u64; 4 * MCE_BANKS as usize],
    poll_control: u64,
}

impl Default for VcpuMsrs {
    fn default() -> VcpuMsrs {
        let mut mce_banks = [0; 4 * MCE_BANKS as usize];
        // KVM_X86_SETUP_MCE sets every MCi_CTL to all ones, and MCG_CTL too (MCG_CTL_P).
        mce_banks.iter_mut().step_by(4).for_each(|c| *c = u64::MAX);
        VcpuMsrs {
            power_ctl: 0,
            pat: PAT_RESET,
            misc_enable: MISC_ENABLE_RESET,
            misc_features_enables: 0,
            mtrr_var: [0; 16],
            mtrr_fixed: [0; 11],
            mtrr_deftype: 0,
            mcg_status: 0,
            mcg_ctl: u64::MAX,
            mce_banks,
            poll_control: 1,
        }
    }
}

/// A failed MSR access (KVM's `return 1`): the TDVMCALL answers INVALID_OPERAND.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MsrFault;

type MsrResult<T> = Result<T, MsrFault>;

/// `kvm_pat_valid`: every byte a memory type 0, 1, 4, 5, 6 or 7.
fn kvm_pat_valid(data: u64) -> bool {
    data & 0xF8F8_F8F8_F8F8_F8F8 == 0 && (data | ((data & 0x0202_0202_0202_0202) << 1)) == data
}

/// `valid_mtrr_type`: UC, WC, WT, WP, WB.
fn valid_mtrr_type(t: u64) -> bool {
    t < 8 && (1 << t) & 0x73 != 0
}

/// The slot of a fixed-range MTRR (`find_mtrr`): 64K, 16K × 2, 4K × 8.
fn mtrr_fixed_slot(index: u32) -> Option<usize> {
    match index {
        MSR_MTRRFIX64K_00000 => Some(0),
        MSR_MTRRFIX16K_80000 | MSR_MTRRFIX16K_A0000 => {
            Some(1 + (index - MSR_MTRRFIX16K_80000) as usize)
        }
        i if MTRR_FIX4K.contains(&i) => Some(3 + (i - MTRR_FIX4K.start()) as usize),
        _ => None,
    }
}

impl VcpuMsrs {
    /// `kvm_mtrr_valid`: type fields valid, reserved bits clear (a variable range's base and
    /// mask may not set bits at or above MAXPHYADDR).
    fn mtrr_valid(index: u32, data: u64, maxphyaddr: u32) -> bool {
        if index == MSR_MTRRDEFTYPE {
            return data & !0xcff == 0 && valid_mtrr_type(data & 0xff);
        }
        if mtrr_fixed_slot(index).is_some() {
            return (0..8).all(|i| valid_mtrr_type((data >> (i * 8)) & 0xff));
        }
        let reserved = u64::MAX.checked_shl(maxphyaddr).unwrap_or(0);
        if index.is_multiple_of(2) {
            valid_mtrr_type(data & 0xff) && data & (reserved | 0xf00) == 0
        } else {
            data & (reserved | 0x7ff) == 0
        }
    }

    fn mtrr(&mut self, index: u32) -> Option<&mut u64> {
        match index {
            MSR_MTRRDEFTYPE => Some(&mut self.mtrr_deftype),
            i if MTRR_VAR.contains(&i) => Some(&mut self.mtrr_var[(i - 0x200) as usize]),
            i => mtrr_fixed_slot(i).map(|s| &mut self.mtrr_fixed[s]),
        }
    }

    /// A machine-check bank MSR's slot, if the bank exists (QEMU's 10).
    fn mce_bank(index: u32) -> Option<usize> {
        let off = index.checked_sub(MSR_IA32_MC0_CTL)?;
        (off < 4 * MCE_BANKS).then_some(off as usize)
    }

    fn get(&mut self, vcpu: u32, index: u32) -> MsrResult<u64> {
        match index {
            MSR_IA32_UCODE_REV => Ok(UCODE_REV_RESET),
            MSR_IA32_POWER_CTL => Ok(self.power_ctl),
            MSR_IA32_CR_PAT => Ok(self.pat),
            MSR_MTRRCAP => Ok(MTRRCAP),
            MSR_IA32_TSC_DEADLINE => Ok(0),
            MSR_IA32_MISC_ENABLE => Ok(self.misc_enable),
            MSR_PLATFORM_INFO => Ok(PLATFORM_INFO_CPUID_FAULT),
            MSR_MISC_FEATURES_ENABLES => Ok(self.misc_features_enables),
            MSR_IA32_APICBASE => Ok(APIC_BASE_X2APIC | if vcpu == 0 { APIC_BASE_BSP } else { 0 }),
            MSR_EFER => Ok(TD_EFER),
            // FEAT_CTL_LOCKED; LMCE_ENABLED only with MCG_LMCE_P, which QEMU leaves off.
            MSR_IA32_FEAT_CTL => Ok(1),
            MSR_IA32_MCG_CAP => Ok(MCG_CAP),
            MSR_IA32_MCG_STATUS => Ok(self.mcg_status),
            MSR_IA32_MCG_CTL => Ok(self.mcg_ctl),
            MSR_KVM_POLL_CONTROL => Ok(self.poll_control),
            i if Self::mce_bank(i).is_some() => Ok(self.mce_banks[Self::mce_bank(i).unwrap_or(0)]),
            i => self.mtrr(i).map(|m| *m).ok_or(MsrFault),
        }
    }

    fn set(&mut self, index: u32, data: u64, maxphyaddr: u32) -> MsrResult<()> {
        match index {
            // A guest's microcode-revision write is dropped, not refused.
            MSR_IA32_UCODE_REV => {}
            MSR_IA32_POWER_CTL => self.power_ctl = data,
            MSR_IA32_CR_PAT if kvm_pat_valid(data) => self.pat = data,
            MSR_IA32_TSC_DEADLINE => {}
            MSR_IA32_MISC_ENABLE => {
                if (self.misc_enable ^ data) & MISC_ENABLE_PMU_RO != 0 {
                    return Err(MsrFault);
                }
                self.misc_enable = data & !MISC_ENABLE_EMON | self.misc_enable & MISC_ENABLE_EMON;
            }
            // Only CPUID faulting, which PLATFORM_INFO offers.
            MSR_MISC_FEATURES_ENABLES if data <= 1 => self.misc_features_enables = data,
            MSR_IA32_MCG_STATUS => self.mcg_status = data,
            MSR_IA32_MCG_CTL if MCG_CAP & MCG_CTL_P != 0 && (data == 0 || data == u64::MAX) => {
                self.mcg_ctl = data
            }
            MSR_KVM_POLL_CONTROL if data <= 1 => self.poll_control = data,
            i if Self::mce_bank(i).is_some() => {
                let slot = Self::mce_bank(i).unwrap_or(0);
                // MCi_CTL takes 0 or all ones (bits 10 and 0 may be clear); MCi_STATUS only 0
                // from an Intel guest (`can_set_mci_status`).
                let bad_ctl = slot % 4 == 0 && data != 0 && (data | 1 << 10 | 1) != u64::MAX;
                let bad_status = slot % 4 == 1 && data != 0;
                if bad_ctl || bad_status {
                    return Err(MsrFault);
                }
                self.mce_banks[slot] = data;
            }
            i if self.mtrr(i).is_some() && Self::mtrr_valid(i, data, maxphyaddr) => {
                if let Some(m) = self.mtrr(i) {
                    *m = data;
                }
            }
            // Read-only (APIC base, EFER, FEAT_CTL, MTRRcap, MCG_CAP, PLATFORM_INFO,
            // ARCH_CAPABILITIES), gated off (MCG_EXT_CTL without LMCE, MCi_CTL2 without
            // CMCI, the x2APIC without an in-kernel LAPIC), or an invalid value.
            _ => return Err(MsrFault),
        }
        Ok(())
    }
}

impl Kvm {
    /// The guest's MAXPHYADDR (CPUID 0x80000008 EAX[7:0]), for the MTRRs' reserved bits.
    fn cpuid_maxphyaddr(&self) -> u32 {
        match self.kvm_cpuid(0x8000_0008, 0)[0] & 0xff {
            0 => 36,
            n => n,
        }
    }

    /// `tdx_get_msr` for the guest (never host-initiated).
    pub(super) fn tdx_get_msr(&self, vcpu: u32, index: u32) -> MsrResult<u64> {
        if !tdx_has_emulated_msr(index) {
            return Err(MsrFault);
        }
        if index == MSR_IA32_ARCH_CAPABILITIES {
            // Only with the CPUID bit (7.0:EDX[29]); KVM's value is the host's, filtered,
            // which userspace cannot read: tdxlab reports no capability.
            let has = self.kvm_cpuid(7, 0)[3] & (1 << 29) != 0;
            return if has { Ok(0) } else { Err(MsrFault) };
        }
        let mut msrs = self.msrs.lock().unwrap_or_else(|e| e.into_inner());
        msrs.entry(vcpu).or_default().get(vcpu, index)
    }

    /// `tdx_set_msr` for the guest.
    pub(super) fn tdx_set_msr(&self, vcpu: u32, index: u32, data: u64) -> MsrResult<()> {
        if !tdx_has_emulated_msr(index) {
            return Err(MsrFault);
        }
        let maxphyaddr = self.cpuid_maxphyaddr();
        let mut msrs = self.msrs.lock().unwrap_or_else(|e| e.into_inner());
        msrs.entry(vcpu).or_default().set(index, data, maxphyaddr)
    }

    /// TDVMCALL<Instruction.RDMSR>: R12 the MSR (cut to 32 bits, as ECX), the value in R11
    /// (`tdx_complete_emulated_msr`).
    pub(super) fn tdx_emulate_rdmsr(&self, vcpu: u32, regs: &mut Regs) {
        match self.tdx_get_msr(vcpu, regs.r12 as u32) {
            Ok(v) => (regs.r10, regs.r11) = (0, v),
            Err(MsrFault) => regs.r10 = VmcallStatus::INVALID_OPERAND.0,
        }
    }

    /// TDVMCALL<Instruction.WRMSR>: R12 the MSR, R13 the value (EDX:EAX).
    pub(super) fn tdx_emulate_wrmsr(&self, vcpu: u32, regs: &mut Regs) {
        regs.r10 = match self.tdx_set_msr(vcpu, regs.r12 as u32, regs.r13) {
            Ok(()) => 0,
            Err(MsrFault) => VmcallStatus::INVALID_OPERAND.0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emulated_set_is_kvms() {
        for msr in [
            0x8b, 0x10a, 0x1fc, 0x277, 0xfe, 0x200, 0x26f, 0x2ff, 0x6e0, 0x1a0, 0xce,
        ] {
            assert!(tdx_has_emulated_msr(msr), "{msr:#x}");
        }
        for msr in [
            0x140,
            0x1b,
            0xc000_0080,
            0x3a,
            0x179,
            0x17a,
            0x17b,
            0x4d0,
            0x400,
            0x47f,
        ] {
            assert!(tdx_has_emulated_msr(msr), "{msr:#x}");
        }
        assert!(tdx_has_emulated_msr(0x280) && tdx_has_emulated_msr(0x29f));
        assert!(tdx_has_emulated_msr(MSR_KVM_POLL_CONTROL));
        // The x2APIC: ID and LVT timer yes; TPR, PPR, EOI, ISR, TMR, IRR no.
        assert!(tdx_has_emulated_msr(0x802) && tdx_has_emulated_msr(0x832));
        for msr in [0x808, 0x80a, 0x80b, 0x810, 0x818, 0x820] {
            assert!(!tdx_has_emulated_msr(msr), "{msr:#x}");
        }
        // 6.16's ranges collapse to their first MSR.
        assert!(tdx_has_emulated_msr(0x811) && tdx_has_emulated_msr(0x827));
        for msr in [0x10, 0x35, 0x480, 0x2a0, 0xc000_0100, 0x900] {
            assert!(!tdx_has_emulated_msr(msr), "{msr:#x}");
        }
    }

    #[test]
    fn reads_writes_and_refusals_as_kvm() {
        let mut m = VcpuMsrs::default();
        assert_eq!(m.get(0, MSR_IA32_APICBASE), Ok(0xfee0_0d00));
        assert_eq!(m.get(1, MSR_IA32_APICBASE), Ok(0xfee0_0c00));
        assert_eq!(m.get(0, MSR_EFER), Ok(0xd01));
        assert_eq!(m.set(MSR_EFER, 0xd01, 48), Err(MsrFault), "read-only");
        assert_eq!(m.get(0, MSR_MTRRCAP), Ok(0x508));
        assert_eq!(
            m.set(MSR_IA32_CR_PAT, 0x0202_0202_0202_0202, 48),
            Err(MsrFault)
        );
        assert_eq!(m.set(MSR_IA32_CR_PAT, 0x0606_0606_0606_0606, 48), Ok(()));
        assert_eq!(m.get(0, MSR_IA32_CR_PAT), Ok(0x0606_0606_0606_0606));
        assert_eq!(m.set(MSR_MTRRDEFTYPE, 0xc06, 48), Ok(()));
        assert_eq!(m.set(MSR_MTRRDEFTYPE, 0xc02, 48), Err(MsrFault), "type 2");
        assert_eq!(
            m.set(0x200, 1 << 48 | 6, 48),
            Err(MsrFault),
            "above MAXPHYADDR"
        );
        assert_eq!(m.set(0x201, 0xffff_f000 | 1 << 11, 48), Ok(()));
        assert_eq!(m.get(0, 0x210), Err(MsrFault), "no such MTRR");
        assert_eq!(
            m.set(MSR_IA32_MISC_ENABLE, 0, 48),
            Err(MsrFault),
            "PMU bits"
        );
        assert_eq!(m.set(MSR_IA32_MISC_ENABLE, 0x1881, 48), Ok(()));
        assert_eq!(m.get(0, MSR_IA32_MISC_ENABLE), Ok(0x1801), "EMON ignored");
        assert_eq!(m.get(0, 0x400), Ok(u64::MAX));
        assert_eq!(m.set(0x401, 1, 48), Err(MsrFault), "MCi_STATUS");
        assert_eq!(m.get(0, 0x400 + 4 * 10), Err(MsrFault), "bank 10 absent");
        assert_eq!(m.get(0, 0x280), Err(MsrFault), "no CMCI");
        assert_eq!(m.get(0, MSR_IA32_MCG_EXT_CTL), Err(MsrFault), "no LMCE");
        assert_eq!(m.set(MSR_KVM_POLL_CONTROL, 2, 48), Err(MsrFault));
        assert_eq!(m.get(0, 0x802), Err(MsrFault), "no in-kernel LAPIC");
    }
}
