//! The KVM backend of the MMU model: guest-memory mappings, the private memory the TDX module
//! model zeroes, and kicks that force vCPU threads out of KVM_RUN.

use super::Backing;
use crate::kvm::{Alias, Backend};
use crate::seam::{Hpa, PrivateMem};
use anyhow::bail;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

/// An anonymous host mapping backing guest memory.
pub(super) struct Mapping {
    pub(super) ptr: *mut u8,
    pub(super) len: usize,
}
// SAFETY: the mapping is plain memory shared with the guest; all host access is through
// raw pointers by design (the guest writes it concurrently anyway).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(super) fn new(len: u64) -> anyhow::Result<Mapping> {
        // SAFETY: a fresh private anonymous mapping; checked for failure.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!(
                "cannot map {} MiB of guest memory: {}",
                len >> 20,
                std::io::Error::last_os_error()
            );
        }
        Ok(Mapping {
            ptr: p as *mut u8,
            len: len as usize,
        })
    }
    pub(super) fn write(&self, off: u64, bytes: &[u8]) {
        assert!(off as usize + bytes.len() <= self.len);
        // SAFETY: in bounds (asserted) of a live mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off as usize), bytes.len())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Private memory as the TDX module model sees it: the private backing's host view.
pub(super) struct KvmPrivateMem(pub(super) Arc<Backing>);

impl PrivateMem for KvmPrivateMem {
    fn zero(&self, hpa: Hpa, pages: u64) {
        self.0.zero(hpa * 4096, pages * 4096);
    }
    fn read(&self, hpa: Hpa, offset: u64) -> u64 {
        let mut b = [0u8; 8];
        self.0.read(hpa * 4096 + offset, &mut b);
        u64::from_le_bytes(b)
    }
    fn write(&self, hpa: Hpa, offset: u64, v: u64) {
        self.0.write(hpa * 4096 + offset, &v.to_le_bytes());
    }
}

/// Per-vCPU state a kicker needs.
#[derive(Default)]
pub(super) struct VcpuCtl {
    /// Inside KVM_RUN (guest mode).
    pub(super) in_run: AtomicBool,
    /// KVM_RUN returns so far.
    pub(super) exits: AtomicU64,
    /// The thread, for signals (0 until it registered).
    pub(super) thread: AtomicU64,
    /// RIP when the vCPU was stopped from outside (for timeout diagnostics).
    pub(super) stopped_rip: AtomicU64,
}

/// The KVM backend of the MMU model.
pub(super) struct KvmBackend {
    pub(super) private: Arc<Backing>,
    pub(super) shared: Arc<Backing>,
    pub(super) vcpus: Vec<VcpuCtl>,
    pub(super) kicks: AtomicU64,
}

impl KvmBackend {
    fn backing(&self, alias: Alias) -> &Backing {
        match alias {
            Alias::Private => &self.private,
            Alias::Shared => &self.shared,
        }
    }
    pub(super) fn signal(&self, v: &VcpuCtl) {
        let t = v.thread.load(SeqCst);
        if t != 0 {
            // SAFETY: a registered vCPU thread of this process; the handler does nothing, so
            // KVM_RUN returns EINTR.
            unsafe { libc::pthread_kill(t as libc::pthread_t, vmm_sys_util::signal::SIGRTMIN()) };
        }
    }
}

impl Backend for KvmBackend {
    fn set_accessible(&self, alias: Alias, gfn: u64, npages: u64, accessible: bool) {
        self.backing(alias)
            .set_accessible(gfn * 4096, npages * 4096, accessible);
    }
    fn discard(&self, alias: Alias, gfn: u64, npages: u64) {
        self.backing(alias).punch_hole(gfn * 4096, npages * 4096);
    }
    /// Force every vCPU in KVM_RUN out with a signal and wait until it has left: it leaves
    /// its TD epoch on the way out. (KVM's own TLBs were already flushed by the mprotect
    /// that unmapped the page, through the host kernel's mmu notifier.)
    fn kick_all_vcpus(&self, _flush_tlb: bool) {
        self.kicks.fetch_add(1, Relaxed);
        for v in &self.vcpus {
            let seen = v.exits.load(SeqCst);
            while v.in_run.load(SeqCst) && v.exits.load(SeqCst) == seen {
                self.signal(v);
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }
    fn shared_pfn(&self, gfn: u64) -> u64 {
        gfn
    }
    fn shared_read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        if gpa + buf.len() as u64 > self.shared.len as u64 {
            return false;
        }
        self.shared.read(gpa, buf);
        true
    }
    fn shared_write(&self, gpa: u64, buf: &[u8]) -> bool {
        if gpa + buf.len() as u64 > self.shared.len as u64 {
            return false;
        }
        self.shared.write(gpa, buf);
        true
    }
}

pub(super) extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
