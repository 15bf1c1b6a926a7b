//! `tdxlab caps`: what this host offers for emulating TDX, and whether it is enough.
//!
//! The emulation needs only stock KVM (any VM type) and a host MAXPHYADDR of at least 48, so
//! that shared-alias memslots at GPA | bit 47 are legal. The other capabilities are reported
//! because they tell a reader how far this KVM is from running real TDs.

use crate::cli::{EXIT_HOST, EXIT_OK};
use kvm_bindings::{
    KVM_CAP_EXIT_HYPERCALL, KVM_CAP_GUEST_MEMFD, KVM_CAP_MEMORY_ATTRIBUTES,
    KVM_CAP_MEMORY_FAULT_INFO, KVM_CAP_VM_TYPES,
};
use serde::Serialize;

/// The GPA width the emulated TD uses; the host must address at least this much.
pub const REQUIRED_MAXPHYADDR: u8 = 48;
/// Bit of KVM_CAP_VM_TYPES for KVM_X86_TDX_VM.
const KVM_X86_TDX_VM: u32 = 5;

/// What KVM reports.
#[derive(Debug, Clone, Serialize)]
pub struct KvmCaps {
    /// KVM_GET_API_VERSION (12 on every modern kernel).
    pub api_version: i32,
    /// KVM_CAP_VM_TYPES bitmap.
    pub vm_types: i32,
    /// KVM_CAP_EXIT_HYPERCALL bitmap (bit 12 = KVM_HC_MAP_GPA_RANGE).
    pub exit_hypercall: i32,
    /// KVM_CAP_MEMORY_ATTRIBUTES on the default VM type.
    pub memory_attributes: i32,
    /// KVM_CAP_GUEST_MEMFD.
    pub guest_memfd: i32,
    /// KVM_CAP_MEMORY_FAULT_INFO.
    pub memory_fault_info: i32,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct HostCaps {
    /// KVM's answers, when /dev/kvm could be used.
    pub kvm: Option<KvmCaps>,
    /// Why /dev/kvm could not be used.
    pub kvm_error: Option<String>,
    /// Host MAXPHYADDR from CPUID 0x80000008.
    pub maxphyaddr: u8,
    /// Whether KVM could run real TDs (KVM_X86_TDX_VM offered).
    pub real_tdx: bool,
    /// Problems that stop emulated TDs from running; empty when the host is usable.
    pub problems: Vec<String>,
}

/// Host physical-address width (CPUID 0x80000008 EAX[7:0]).
pub fn host_maxphyaddr() -> u8 {
    let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max_ext < 0x8000_0008 {
        return 36; // the architectural default when the leaf is missing
    }
    (core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xFF) as u8
}

/// Open /dev/kvm and read the capabilities.
pub fn probe_kvm() -> Result<KvmCaps, String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let cap = |c: u32| kvm.check_extension_raw(c as _);
    Ok(KvmCaps {
        api_version: kvm.get_api_version(),
        vm_types: cap(KVM_CAP_VM_TYPES),
        exit_hypercall: cap(KVM_CAP_EXIT_HYPERCALL),
        memory_attributes: cap(KVM_CAP_MEMORY_ATTRIBUTES),
        guest_memfd: cap(KVM_CAP_GUEST_MEMFD),
        memory_fault_info: cap(KVM_CAP_MEMORY_FAULT_INFO),
    })
}

/// Probe everything and list what stops emulated TDs.
pub fn probe() -> HostCaps {
    let kvm = probe_kvm();
    let maxphyaddr = host_maxphyaddr();
    let mut problems = Vec::new();
    match &kvm {
        Err(e) => problems.push(format!("no usable /dev/kvm: {e}")),
        Ok(k) if k.api_version != 12 => {
            problems.push(format!("KVM API version {} (need 12)", k.api_version))
        }
        Ok(_) => {}
    }
    if maxphyaddr < REQUIRED_MAXPHYADDR {
        problems.push(format!(
            "host MAXPHYADDR is {maxphyaddr} bits; the emulated TD needs {REQUIRED_MAXPHYADDR} (shared bit 47)"
        ));
    }
    let real_tdx = kvm
        .as_ref()
        .map(|k| k.vm_types >> KVM_X86_TDX_VM & 1 != 0)
        .unwrap_or(false);
    let (kvm, kvm_error) = match kvm {
        Ok(k) => (Some(k), None),
        Err(e) => (None, Some(e)),
    };
    HostCaps {
        kvm,
        kvm_error,
        maxphyaddr,
        real_tdx,
        problems,
    }
}

/// `tdxlab caps [--json]`: exit 0 when emulated TDs can run here, 3 otherwise.
pub fn run(json: bool) -> anyhow::Result<u8> {
    let caps = probe();
    if json {
        println!("{}", serde_json::to_string_pretty(&caps)?);
    } else {
        print!("{}", render(&caps));
    }
    if caps.problems.is_empty() {
        Ok(EXIT_OK)
    } else {
        if !json {
            eprintln!(
                "tdxlab: this host cannot run emulated TDs: {}",
                caps.problems.join("; ")
            );
        }
        Ok(EXIT_HOST)
    }
}

fn render(c: &HostCaps) -> String {
    let mut s = String::from("tdxlab host capability check\n");
    match &c.kvm {
        Some(k) => {
            s += &format!(
                "  /dev/kvm                   ok, KVM API version {}\n",
                k.api_version
            );
            s += &format!(
                "  VM types                   {:#x}{}\n",
                k.vm_types,
                if c.real_tdx {
                    " (KVM_X86_TDX_VM offered: real TDX possible)"
                } else {
                    " (no TDX VM type: TDX is emulated in userspace)"
                }
            );
            s += &format!(
                "  KVM_CAP_EXIT_HYPERCALL     {:#x}{}\n",
                k.exit_hypercall,
                if k.exit_hypercall & (1 << 12) != 0 {
                    " (MAP_GPA_RANGE exits available)"
                } else {
                    ""
                }
            );
            s += &format!(
                "  KVM_CAP_MEMORY_ATTRIBUTES  {:#x}{}\n",
                k.memory_attributes,
                if k.memory_attributes == 0 {
                    " (private/shared tracked by tdxlab's own kvm/ model)"
                } else {
                    ""
                }
            );
            s += &format!("  KVM_CAP_GUEST_MEMFD        {}\n", k.guest_memfd);
            s += &format!("  KVM_CAP_MEMORY_FAULT_INFO  {}\n", k.memory_fault_info);
        }
        None => {
            let e = c.kvm_error.as_deref().unwrap_or("unknown error");
            s += &format!("  /dev/kvm                   UNUSABLE: {e}\n")
        }
    }
    s += &format!(
        "  host MAXPHYADDR            {} bits (need >= {REQUIRED_MAXPHYADDR})\n",
        c.maxphyaddr
    );
    s += if c.problems.is_empty() {
        "verdict: this host can run emulated TDs\n"
    } else {
        "verdict: this host cannot run emulated TDs\n"
    };
    s
}
