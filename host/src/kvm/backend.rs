//! The one small interface between the hypervisor MMU and the outside world.
//!
//! Two implementations: the KVM backend (real guest memory: userfaultfd-controlled mappings,
//! hole punching, signals to vCPU threads) and the simulator's (in-process frames and
//! software TLBs).

/// A backend operation that failed (a system call on guest memory, say); the backend's own
/// error is the source. KVM treats it as a `KVM_BUG_ON`: the VM is marked dead and the TD
/// stops with the message.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(#[source] pub std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl BackendError {
    /// Wrap the backend's error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> BackendError {
        BackendError(std::sync::Arc::new(e))
    }
}

/// Two failures are the same when they say the same (the models compare outcomes).
impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}
impl Eq for BackendError {}

/// Which alias of a GFN.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Alias {
    /// The private alias (shared bit clear), backed by guest_memfd.
    Private,
    /// The shared alias (GPA | shared bit), backed by ordinary host memory.
    Shared,
}

/// What the MMU needs done outside itself.
pub trait Backend: Send + Sync {
    /// Make `npages` frames from `gfn` of `alias` reachable by the guest or not (a leaf was
    /// installed or zapped).
    fn set_accessible(
        &self,
        alias: Alias,
        gfn: u64,
        npages: u64,
        accessible: bool,
    ) -> Result<(), BackendError>;
    /// Discard the contents of `alias`'s backing for the range (QEMU's discard / punch-hole).
    fn discard(&self, alias: Alias, gfn: u64, npages: u64) -> Result<(), BackendError>;
    /// Force every vCPU out of guest mode and wait until each has left or re-entered
    /// (`kvm_make_all_cpus_request(..., KVM_REQ_OUTSIDE_GUEST_MODE)`); with `flush_tlb` each
    /// also flushes its TLB before re-entering (`kvm_flush_remote_tlbs`).
    fn kick_all_vcpus(&self, flush_tlb: bool);
    /// The host frame backing shared `gfn` now (what GUP returns).
    fn shared_pfn(&self, gfn: u64) -> u64;
    /// The guest_memfd frame backing private `gfn` (`kvm_gmem_get_pfn`).
    fn private_pfn(&self, gfn: u64) -> u64 {
        gfn
    }
    /// Keep every vCPU from entering the TD (`hold`), or let them in again: KVM's
    /// `wait_for_sept_zap` while a contended SEAMCALL is retried (`tdx_no_vcpus_enter_start`
    /// / `_stop`). A vCPU that would enter meanwhile waits instead.
    fn hold_vcpus_out(&self, _hold: bool) {}
}

/// A backend that does nothing, for model-only tests, benches and the zap table.
#[derive(Default)]
pub struct NullBackend;

impl Backend for NullBackend {
    fn set_accessible(&self, _: Alias, _: u64, _: u64, _: bool) -> Result<(), BackendError> {
        Ok(())
    }
    fn discard(&self, _: Alias, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn kick_all_vcpus(&self, _: bool) {}
    fn shared_pfn(&self, gfn: u64) -> u64 {
        gfn
    }
}
