//! What a vCPU thread works with ([`Ctx`]), what it counts ([`Counters`]) and how it fails
//! ([`VcpuError`]): shared by the exit loop (`vcpu`), #VE delivery (`ve`) and the fault
//! service (`uffd`).

use super::kvm_backend::KvmBackend;
use crate::exit::ExitKind;
use crate::seam::TdxModule;
use crate::vmm::{TdcallError, Vmm};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// What the vCPU threads and the fault service count, for the run report.
#[derive(Default)]
pub(super) struct Counters {
    /// EPT-violation exits on private pages already MAPPED (pages the host failed to map).
    pub(super) exits_on_mapped: AtomicU64,
    /// Guest-memory faults read from the userfaultfd (duplicates included).
    pub(super) memory_faults: AtomicU64,
    /// Pages the fault service served (each queued page once).
    pub(super) memory_faults_served: AtomicU64,
    /// #VEs injected for raw port I/O and raw HLT (each a raw-instruction exit).
    pub(super) ves: AtomicU64,
    /// Of those, raw HLTs.
    pub(super) hlt_ves: AtomicU64,
    /// Doorbell exits (every TDCALL; measurement marks not counted).
    pub(super) doorbell_exits: AtomicU64,
    /// Doorbell exits carrying TDVMCALL<MapGPA>.
    pub(super) map_gpa_exits: AtomicU64,
    /// Other exits: the bare benchmark port.
    pub(super) other_exits: AtomicU64,
    /// Host CPU time spent outside KVM_RUN, ns: the vCPU threads between a KVM_RUN's return
    /// and the next entry, and the fault service per served page (thread CPU clocks).
    pub(super) host_cpu_ns: AtomicU64,
    /// TDCALLs by leaf name.
    pub(super) tdcalls: Mutex<BTreeMap<&'static str, u64>>,
    /// TDVMCALLs by sub-function name.
    pub(super) tdvmcalls: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    /// One more event.
    pub(super) fn bump(a: &AtomicU64) {
        a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One more call named `name` in a by-name count.
    pub(super) fn count(m: &Mutex<BTreeMap<&'static str, u64>>, name: &'static str) {
        *m.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name)
            .or_default() += 1;
    }
}

/// Why a vCPU thread could not serve an exit; the TD stops with it.
#[derive(Debug, thiserror::Error)]
pub(super) enum VcpuError {
    /// A vCPU ioctl failed.
    #[error("vCPU {vcpu}: {call} failed: {source}")]
    Ioctl {
        vcpu: u32,
        call: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The TDCALL behind the doorbell could not be completed.
    #[error(transparent)]
    Tdcall(#[from] TdcallError),
}

impl VcpuError {
    /// `map_err` adapter for a failed ioctl.
    pub(super) fn ioctl(vcpu: u32, call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        move |source| VcpuError::Ioctl { vcpu, call, source }
    }

    /// How the TD stops: a failed ioctl is the host's failure, a TDCALL the guest's.
    pub(super) fn kind(&self) -> ExitKind {
        match self {
            VcpuError::Ioctl { .. } => ExitKind::HostError,
            VcpuError::Tdcall(_) => ExitKind::Fatal,
        }
    }
}

/// What a vCPU thread works with.
pub(super) struct Ctx<'a> {
    /// The doorbell benchmark runs: the bare bench port is answered by re-entering.
    pub(super) bench: bool,
    /// The built-in guest runs: its RIPs can be named (`crate::symbols`).
    pub(super) builtin: bool,
    pub(super) seam: &'a TdxModule,
    pub(super) vmm: &'a Vmm,
    pub(super) counters: &'a Counters,
    pub(super) backend: &'a KvmBackend,
    /// A booted Linux kernel's patched TDCALL sites (empty for a TDVF image).
    pub(super) linux: &'a super::linux_boot::LinuxSites,
}
