//! The KVM backend of the MMU model: guest-memory mappings, the private memory the TDX module
//! model zeroes, and kicks that force vCPU threads out of KVM_RUN.

use super::backing::{Backing, BackingError};
use crate::kvm::{Alias, Backend, BackendError};
use crate::seam::{CpuMapError, Hpa, PrivateMem, TdxModule};
use shared_abi::Gpa;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Private memory as the TDX module model sees it: the private backing's host view, and its
/// slot view for what the module lets the CPU reach; and the firmware window's GPAs, which
/// the CPU reaches through their own memslot (the image, as QEMU copied it for PAGE.ADD).
pub(super) struct KvmPrivateMem(pub(super) Arc<Backing>, pub(super) std::ops::Range<u64>);

impl PrivateMem for KvmPrivateMem {
    fn zero(&self, hpa: Hpa, pages: u64) {
        self.0.zero(hpa * 4096, pages * 4096);
    }
    fn release(&self, hpa: Hpa, pages: u64) {
        // A hole reads as zeroes; the next accept allocates a fresh page (Backing::map). A
        // failed punch falls back to zeroing in place, so the frame is cleared either way.
        if self.0.punch_hole(hpa * 4096, pages * 4096).is_err() {
            self.0.zero(hpa * 4096, pages * 4096);
        }
    }
    fn read(&self, hpa: Hpa, offset: u64) -> u64 {
        let mut b = [0u8; 8];
        self.0.read(hpa * 4096 + offset, &mut b);
        u64::from_le_bytes(b)
    }
    fn write(&self, hpa: Hpa, offset: u64, v: u64) {
        self.0.write(hpa * 4096 + offset, &v.to_le_bytes());
    }
    /// The private memslot maps GFN n to frame n of the backing, so that is the only
    /// translation the emulated CPU can be given.
    fn map(&self, gpa: Gpa, hpa: Hpa, pages: u64) -> Result<(), CpuMapError> {
        if self.1.contains(&gpa.0) {
            return Ok(());
        }
        if gpa.0 >> 12 != hpa {
            return Err(CpuMapError(
                format!(
                    "private gpa {gpa} cannot map frame {hpa:#x}: the memslot maps it to frame {:#x}",
                    gpa.0 >> 12
                )
                .into(),
            ));
        }
        self.0
            .map(gpa.0, pages * 4096)
            .map_err(|e| CpuMapError(Box::new(e)))
    }
    fn unmap(&self, gpa: Gpa, pages: u64) -> Result<(), CpuMapError> {
        if self.1.contains(&gpa.0) {
            return Ok(());
        }
        self.0
            .unmap(gpa.0, pages * 4096)
            .map_err(|e| CpuMapError(Box::new(e)))
    }
}

/// Per-vCPU state a kicker and the fault service need.
#[derive(Default)]
pub(super) struct VcpuCtl {
    /// Inside KVM_RUN (guest mode, or waiting in a fault).
    pub(super) in_run: AtomicBool,
    /// Waiting in a guest-memory fault the host has seen: an EPT-violation TD exit, so
    /// outside the TD and its epoch (KVM's vCPU is OUTSIDE_GUEST_MODE while it faults in
    /// a page); kicks do not wait for it.
    pub(super) in_fault: AtomicBool,
    /// KVM_RUN returns so far.
    pub(super) exits: AtomicU64,
    /// Serialises the TD entry/exit bookkeeping of the vCPU thread and the fault service.
    mode: Mutex<()>,
    /// The thread, for signals (0 until it registered).
    pub(super) thread: AtomicU64,
    /// The thread's kernel id, to tell whose fault a userfaultfd event is (0 until known).
    pub(super) tid: AtomicI32,
    /// RIP when the vCPU was stopped from outside (for timeout diagnostics).
    pub(super) stopped_rip: AtomicU64,
    /// Why the host refused this vCPU's access (kind, message), for the vCPU thread to
    /// report with its RIP once the fence gets it out of KVM_RUN.
    pub(super) refused: Mutex<Option<(crate::exit::ExitKind, String)>>,
}

impl VcpuCtl {
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// TD entry, just before KVM_RUN: visibly in guest mode before joining the epoch, so a
    /// kicker right after TDH.MEM.TRACK either waits for this vCPU or sees it join the new
    /// epoch (the order of KVM's `vcpu->mode`).
    pub(super) fn enter(&self, seam: &TdxModule, index: u32) {
        let _m = self.lock();
        self.in_run.store(true, SeqCst);
        seam.td_vcpu_enter(index);
    }

    /// TD exit, just after KVM_RUN: leave the epoch before a kicker may stop waiting.
    pub(super) fn exit(&self, seam: &TdxModule, index: u32) {
        let _m = self.lock();
        seam.td_vcpu_exit(index);
        self.exits.fetch_add(1, SeqCst);
        self.in_fault.store(false, SeqCst);
        self.in_run.store(false, SeqCst);
    }

    /// The host saw this vCPU fault on guest memory: it has left the TD until the fault is
    /// served. Returns the KVM_RUN it faulted in, `None` when it is not in KVM_RUN or
    /// already counted as faulting.
    pub(super) fn fault_exit(&self, seam: &TdxModule, index: u32) -> Option<u64> {
        let _m = self.lock();
        if !self.in_run.load(SeqCst) || self.in_fault.load(SeqCst) {
            return None;
        }
        seam.td_vcpu_exit(index);
        self.in_fault.store(true, SeqCst);
        Some(self.exits.load(SeqCst))
    }

    /// The fault is served: re-enter the TD in the current epoch before the vCPU is woken,
    /// unless it left KVM_RUN meanwhile (a signal on stock KVM). Kickers read the flags
    /// without the lock, so "outside" is withdrawn before the vCPU joins the epoch (and, in
    /// `fault_exit`, claimed only after it left): a kicker may wait needlessly, never skip
    /// a vCPU that is inside.
    pub(super) fn fault_resume(&self, seam: &TdxModule, index: u32, run: u64) {
        let _m = self.lock();
        if self.in_fault.load(SeqCst) && self.exits.load(SeqCst) == run {
            self.in_fault.store(false, SeqCst);
            seam.td_vcpu_enter(index);
        }
    }
}

/// The KVM backend of the MMU model.
pub(super) struct KvmBackend {
    pub(super) private: Arc<Backing>,
    pub(super) shared: Arc<Backing>,
    pub(super) vcpus: Vec<VcpuCtl>,
    /// Kick-all requests (TRACK and remote TLB flushes).
    pub(super) kicks: AtomicU64,
    /// vCPUs a kick had to signal and wait for (those inside the TD at the time).
    pub(super) kick_waits: AtomicU64,
    /// KVM's `wait_for_sept_zap`: no vCPU enters the TD while a contended SEAMCALL retries.
    pub(super) hold_out: AtomicBool,
    /// Guest memory is fenced (the TD is being stopped): exits caused by it are expected.
    pub(super) fenced: AtomicBool,
}

impl KvmBackend {
    pub(super) fn backing(&self, alias: Alias) -> &Backing {
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
    /// Take all guest memory away from the vCPUs at once, so every vCPU leaves KVM_RUN at
    /// its next access, a faulting one included (see [`Backing::fence`]).
    pub(super) fn fence(&self) -> Result<(), BackingError> {
        self.fenced.store(true, SeqCst);
        self.private.fence()?;
        self.shared.fence()
    }
    /// The vCPU whose thread has kernel id `tid`.
    pub(super) fn vcpu_of_tid(&self, tid: i32) -> Option<u32> {
        self.vcpus
            .iter()
            .position(|v| tid != 0 && v.tid.load(SeqCst) == tid)
            .map(|i| i as u32)
    }
}

fn backend_error(e: BackingError) -> BackendError {
    BackendError::new(e)
}

impl Backend for KvmBackend {
    fn set_accessible(
        &self,
        alias: Alias,
        gfn: u64,
        npages: u64,
        accessible: bool,
    ) -> Result<(), BackendError> {
        let b = self.backing(alias);
        let (off, len) = (gfn * 4096, npages * 4096);
        if accessible {
            b.map(off, len).map_err(backend_error)
        } else {
            b.unmap(off, len).map_err(backend_error)
        }
    }
    fn discard(&self, alias: Alias, gfn: u64, npages: u64) -> Result<(), BackendError> {
        self.backing(alias)
            .punch_hole(gfn * 4096, npages * 4096)
            .map_err(backend_error)
    }
    /// Force every vCPU in KVM_RUN out with a signal and wait until it has left: it leaves
    /// its TD epoch on the way out. A vCPU waiting in a guest-memory fault has left already.
    /// (KVM's own TLBs were already flushed by the madvise that unmapped the page, through
    /// the host kernel's mmu notifier.)
    fn kick_all_vcpus(&self, _flush_tlb: bool) {
        self.kicks.fetch_add(1, Relaxed);
        for v in &self.vcpus {
            let seen = v.exits.load(SeqCst);
            let mut waited = false;
            while v.in_run.load(SeqCst)
                && !v.in_fault.load(SeqCst)
                && v.exits.load(SeqCst) == seen
                && !self.fenced.load(SeqCst)
            {
                self.signal(v);
                waited = true;
                std::thread::sleep(Duration::from_micros(20));
            }
            self.kick_waits.fetch_add(waited as u64, Relaxed);
        }
    }
    fn shared_pfn(&self, gfn: u64) -> u64 {
        gfn
    }
    fn hold_vcpus_out(&self, hold: bool) {
        self.hold_out.store(hold, SeqCst);
    }
}

pub(super) extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
