//! `tdxlab caps`: what this host offers for emulating TDX, and whether it is enough.
//!
//! The emulation needs stock KVM (any VM type), a userfaultfd that can catch the kernel's own
//! faults on shmem (how the host learns which page the guest touched), and a GPA width to
//! give the TD: GPAW 52 where the host addresses 52 bits, 48 where it addresses at least 48,
//! and otherwise a non-architectural GPAW equal to the host's MAXPHYADDR (the shared bit must
//! be a bit the CPU lets guest page tables use). The other capabilities are reported because
//! they tell a reader how far this KVM is from running real TDs.

use crate::exit::{EXIT_HOST, EXIT_OK};
pub use crate::td::userfaultfd::UffdOpenError;
use crate::td::userfaultfd::{Uffd, GUEST_MEMORY_FEATURES};
use kvm_bindings::{
    KVM_CAP_EXIT_HYPERCALL, KVM_CAP_GUEST_MEMFD, KVM_CAP_MEMORY_ATTRIBUTES,
    KVM_CAP_MEMORY_FAULT_INFO, KVM_CAP_VM_TYPES,
};
use serde::Serialize;
use shared_abi::Gpaw;

/// Bit of KVM_CAP_VM_TYPES for KVM_X86_TDX_VM.
const KVM_X86_TDX_VM: u32 = 5;
/// How the host learns which page a guest touched (docs/emulation.md).
pub(crate) const ENFORCEMENT: &str = "userfaultfd (MISSING+MINOR on the memslot views)";

/// The GPAW an emulated TD gets on a host with `maxphyaddr` bits: 52 or 48 where the host can
/// back the shared alias there, else a non-architectural width equal to `maxphyaddr`.
pub(crate) fn default_gpaw(maxphyaddr: u8) -> Option<Gpaw> {
    match maxphyaddr {
        52.. => Some(Gpaw::GPAW_52),
        48..=51 => Some(Gpaw::GPAW_48),
        bits => Gpaw::emulated(bits),
    }
}

/// Why a TD cannot have the GPAW asked for (or any, on this host).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GpawError {
    /// The host addresses too little for any emulated TD.
    #[error("host MAXPHYADDR is {0} bits; an emulated TD needs at least {min}", min = Gpaw::MIN_EMULATED_BITS)]
    HostTooNarrow(u8),
    /// `--gpaw` outside what tdxlab emulates.
    #[error("--gpaw {0} is outside {min}..=52", min = Gpaw::MIN_EMULATED_BITS)]
    OutOfRange(u8),
    /// `--gpaw` wider than the host's MAXPHYADDR.
    #[error("--gpaw {bits} needs a host MAXPHYADDR of at least {bits} bits (this host: {host})")]
    WiderThanHost {
        /// Asked for.
        bits: u8,
        /// The host's MAXPHYADDR.
        host: u8,
    },
}

/// The TD's GPAW: `forced` (`--gpaw`) when the host can address it, else the default.
pub fn td_gpaw(forced: Option<u8>, maxphyaddr: u8) -> Result<Gpaw, GpawError> {
    match forced {
        None => default_gpaw(maxphyaddr).ok_or(GpawError::HostTooNarrow(maxphyaddr)),
        Some(bits) => {
            let g = Gpaw::emulated(bits).ok_or(GpawError::OutOfRange(bits))?;
            if bits > maxphyaddr {
                return Err(GpawError::WiderThanHost {
                    bits,
                    host: maxphyaddr,
                });
            }
            Ok(g)
        }
    }
}

/// "48 (shared bit 47)" or "39 (non-architectural; shared bit 38)".
pub(crate) fn describe_gpaw(g: Gpaw) -> String {
    if g.is_architectural() {
        format!("{} (shared bit {})", g.bits(), g.shared_bit())
    } else {
        format!(
            "{} (non-architectural; shared bit {})",
            g.bits(),
            g.shared_bit()
        )
    }
}

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
    /// The GPAW an emulated TD gets here (None: the host cannot run one).
    pub td_gpaw: Option<u8>,
    /// The TD's shared bit (`td_gpaw - 1`).
    pub shared_bit: Option<u32>,
    /// Whether `td_gpaw` is one the TDX module never reports (48 and 52 are architectural).
    pub gpaw_non_architectural: bool,
    /// How the host learns which page the guest touched.
    pub enforcement: &'static str,
    /// Why a userfaultfd could not be opened, if it could not.
    pub userfaultfd_error: Option<String>,
    /// Whether KVM could run real TDs (KVM_X86_TDX_VM offered).
    pub real_tdx: bool,
    /// Why this KVM cannot boot a Linux kernel as the TD (`run --kernel`), if it cannot.
    pub linux_td_unsupported: Option<&'static str>,
    /// Problems that stop emulated TDs from running; empty when the host is usable.
    pub problems: Vec<String>,
}

/// Host physical-address width (CPUID 0x80000008 EAX[7:0]).
pub(crate) fn host_maxphyaddr() -> u8 {
    let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max_ext < 0x8000_0008 {
        return 36; // the architectural default when the leaf is missing
    }
    (core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xFF) as u8
}

/// /dev/kvm could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open /dev/kvm: {err}{hint}", err = .0, hint = kvm_open_hint(.0))]
pub struct KvmOpenError(#[source] pub kvm_ioctls::Error);

/// What to do about the usual reasons.
fn kvm_open_hint(e: &kvm_ioctls::Error) -> &'static str {
    match e.errno() {
        libc::EACCES | libc::EPERM => {
            " (join the kvm group: sudo usermod -aG kvm $USER, then log in again)"
        }
        libc::ENOENT => {
            " (no KVM here: load kvm_intel or kvm_amd, or enable nested virtualization)"
        }
        _ => "",
    }
}

/// The KVM API version every KVM since Linux 2.6.22 reports (`KVM_API_VERSION`).
const KVM_API_VERSION: i32 = 12;

/// Open /dev/kvm and read the capabilities.
pub(crate) fn probe_kvm() -> Result<KvmCaps, KvmOpenError> {
    let kvm = kvm_ioctls::Kvm::new().map_err(KvmOpenError)?;
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
pub(crate) fn probe() -> HostCaps {
    let kvm = probe_kvm();
    let maxphyaddr = host_maxphyaddr();
    let mut problems = Vec::new();
    match &kvm {
        Err(e) => problems.push(format!("no usable /dev/kvm: {e}")),
        Ok(k) if k.api_version != KVM_API_VERSION => problems.push(format!(
            "/dev/kvm is not KVM: KVM_GET_API_VERSION answered {} (KVM answers {KVM_API_VERSION})",
            k.api_version
        )),
        Ok(_) => {}
    }
    let gpaw = td_gpaw(None, maxphyaddr);
    if let Err(e) = &gpaw {
        problems.push(e.to_string());
    }
    let userfaultfd_error = open_userfaultfd().err().map(|e| e.to_string());
    if let Some(e) = &userfaultfd_error {
        problems.push(e.clone());
    }
    let real_tdx = kvm
        .as_ref()
        .map(|k| k.vm_types >> KVM_X86_TDX_VM & 1 != 0)
        .unwrap_or(false);
    let (kvm, kvm_error) = match kvm {
        Ok(k) => (Some(k), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let gpaw = gpaw.ok();
    HostCaps {
        kvm,
        kvm_error,
        maxphyaddr,
        td_gpaw: gpaw.map(|g| g.bits()),
        shared_bit: gpaw.map(|g| g.shared_bit()),
        gpaw_non_architectural: gpaw.is_some_and(|g| !g.is_architectural()),
        enforcement: ENFORCEMENT,
        userfaultfd_error,
        real_tdx,
        linux_td_unsupported: linux_td_unsupported(),
        problems,
    }
}

/// `tdxlab caps [--json]`: exit 0 when emulated TDs can run here, 3 otherwise.
pub fn run(json: bool) -> anyhow::Result<u8> {
    let caps = probe();
    if json {
        crate::outln!("{}", crate::output::json("caps", &caps)?)?;
    } else {
        crate::output::write_str(&render(&caps))?;
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
        Some(k) if k.api_version != KVM_API_VERSION => {
            s += &format!(
                "  /dev/kvm                   NOT KVM: KVM_GET_API_VERSION answered {}\n",
                k.api_version
            );
        }
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
    s += &format!("  host MAXPHYADDR            {} bits\n", c.maxphyaddr);
    s += &match c.td_gpaw.and_then(Gpaw::emulated) {
        Some(g) => format!("  TD GPAW                    {}\n", describe_gpaw(g)),
        None => format!(
            "  TD GPAW                    NONE: an emulated TD needs MAXPHYADDR >= {}\n",
            Gpaw::MIN_EMULATED_BITS
        ),
    };
    s += &match &c.userfaultfd_error {
        None => format!("  enforcement                {}: ok\n", c.enforcement),
        Some(e) => format!("  enforcement                UNUSABLE: {e}\n"),
    };
    s += &match c.linux_td_unsupported {
        None => {
            "  Linux as a TD (--kernel)   yes (an unmodified kernel runs on this KVM)\n".to_string()
        }
        Some(why) => format!("  Linux as a TD (--kernel)   no: {why}\n"),
    };
    s += if c.problems.is_empty() {
        "verdict: this host can run emulated TDs\n"
    } else {
        "verdict: this host cannot run emulated TDs\n"
    };
    s
}

/// Why this host's KVM cannot run an unmodified Linux kernel as the TD, if it cannot: PVM
/// (`kvm_pvm`, a software KVM whose guests run deprivileged) runs only PVM-aware kernels.
pub fn linux_td_unsupported() -> Option<&'static str> {
    std::path::Path::new("/sys/module/kvm_pvm")
        .exists()
        .then_some("its KVM is PVM (kvm_pvm), which runs only PVM-aware guest kernels; boot Linux TDs on a stock kvm_intel or kvm_amd (scripts/kvm-lane.sh does)")
}

/// A userfaultfd for guest memory, as the enforcement (`td::uffd`) needs it: kernel-mode
/// faults included (KVM faults pages in from the kernel), MINOR faults on shmem, and the
/// faulting thread's id in each event. Opening one is also the capability check.
pub(crate) fn open_userfaultfd() -> Result<Uffd, UffdOpenError> {
    Uffd::open(GUEST_MEMORY_FEATURES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpaw_wider_than_the_host_is_refused_whatever_the_host() {
        assert_eq!(
            td_gpaw(Some(49), 48),
            Err(GpawError::WiderThanHost { bits: 49, host: 48 })
        );
        assert_eq!(td_gpaw(Some(30), 48), Err(GpawError::OutOfRange(30)));
        assert_eq!(td_gpaw(None, 30), Err(GpawError::HostTooNarrow(30)));
        assert_eq!(td_gpaw(None, 46).map(|g| g.bits()), Ok(46));
        assert_eq!(td_gpaw(None, 52).map(|g| g.bits()), Ok(52));
    }

    #[test]
    fn a_refused_dev_kvm_says_how_to_get_access() {
        let e = KvmOpenError(kvm_ioctls::Error::new(libc::EACCES));
        assert!(e.to_string().contains("join the kvm group"), "{e}");
        let e = KvmOpenError(kvm_ioctls::Error::new(libc::ENOENT));
        assert!(e.to_string().contains("load kvm_intel or kvm_amd"), "{e}");
        let e = KvmOpenError(kvm_ioctls::Error::new(libc::EIO));
        assert!(
            !e.to_string().contains("(join") && !e.to_string().contains("(no KVM"),
            "{e}"
        );
    }
}
