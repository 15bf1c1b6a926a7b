//! Guest-memory faults through userfaultfd: how the host learns that the guest touched a page
//! it may not reach yet, on every KVM (docs/emulation.md, "Memory and enforcement").
//!
//! A guest access to a page the slot view has no entry for makes KVM's fault-in (GUP, or
//! PVM's shadow-paging walk) wait inside the kernel and queue a userfaultfd event that names
//! the host address (hence the GPA) and the faulting thread. Two host threads serve them:
//! - the reader ([`FaultService::read_faults`]) drains the userfaultfd, marks the faulting
//!   vCPU as out of the TD (it took an EPT-violation exit, so kicks need not wait for it), and
//!   queues each page once; it takes no MMU lock, so it never waits behind a zap;
//! - the server ([`FaultService::serve_faults`]) runs each queued page through the EPT
//!   violation path — KVM's fault path installs the leaf, which maps the page and wakes the
//!   vCPU — or refuses it: the reason goes to the vCPU, and guest memory is fenced so that
//!   the vCPU leaves KVM_RUN and stops the TD with its RIP.

use super::ctx::Counters;
use super::kvm_backend::KvmBackend;
use super::userfaultfd::{event_buffer, Uffd};
use crate::exit::ExitKind;
use crate::kvm::{Alias, FaultOutcome};
use crate::seam::TdxModule;
use crate::vmm::{resolve_ept_violation, GuestExit, Vmm, FAULT_PROGRESS_TIMEOUT};
use shared_abi::sept::SeptState;
use shared_abi::{Gpa, PageLevel};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the service threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// One page the guest touched: which alias, and its offset (= private-alias GPA).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct Fault {
    alias: Alias,
    off: u64,
}

/// Why the host refused a guest access: the exit kind and the message.
type Refusal = (ExitKind, String);

/// The two threads' shared state.
pub(super) struct FaultService<'a> {
    pub(super) uffd: &'a Uffd,
    pub(super) backend: &'a KvmBackend,
    pub(super) seam: &'a TdxModule,
    pub(super) vmm: &'a Vmm,
    pub(super) counters: &'a Counters,
    /// Queued pages and the vCPUs (with their KVM_RUN count) waiting on each.
    pub(super) pending: Mutex<HashMap<Fault, Vec<(u32, u64)>>>,
}

impl FaultService<'_> {
    fn io(&self) -> &crate::vmm::GuestIo {
        self.vmm.io.as_ref().expect("machine VMMs have I/O")
    }

    /// The reader thread: until `stop`, drain the userfaultfd into `tx`.
    pub(super) fn read_faults(&self, stop: &AtomicBool, tx: Sender<Fault>) {
        let mut buf = event_buffer(64);
        let mut poll = libc::pollfd {
            fd: self.uffd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        while !stop.load(SeqCst) {
            // SAFETY: one pollfd, valid for the call.
            let n = unsafe { libc::poll(&mut poll, 1, POLL.as_millis() as i32) };
            if n <= 0 {
                continue; // timeout, or EINTR from a kick signal
            }
            let faults = match self.uffd.read_pagefaults(&mut buf) {
                Ok(faults) => faults,
                Err(e) => return self.host_error(format!("reading the userfaultfd: {e}")),
            };
            for f in faults {
                self.queue(f.addr, f.thread_id as i32, &tx);
            }
        }
    }

    /// Record a fault: mark its vCPU as out of the TD, and queue the page unless it is queued.
    fn queue(&self, addr: u64, tid: i32, tx: &Sender<Fault>) {
        self.counters.memory_faults.fetch_add(1, Relaxed);
        let fault = if let Some(off) = self.backend.private.slot_offset(addr) {
            Fault {
                alias: Alias::Private,
                off: off & !0xfff,
            }
        } else if let Some(off) = self.backend.shared.slot_offset(addr) {
            Fault {
                alias: Alias::Shared,
                off: off & !0xfff,
            }
        } else {
            return self.host_error(format!(
                "a userfaultfd fault at {addr:#x}, outside guest memory"
            ));
        };
        // A stale event (PVM repeats a fault's event while a signal is pending) can mark a
        // vCPU that already runs again as outside the TD until the server resumes it. That
        // only makes the model's epoch accounting early: the page a removal takes was
        // already unmapped (and KVM's TLBs flushed) at BLOCK.
        let waiter = self.backend.vcpu_of_tid(tid).and_then(|i| {
            self.backend.vcpus[i as usize]
                .fault_exit(self.seam, i)
                .map(|run| (i, run))
        });
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let first = !pending.contains_key(&fault);
        pending.entry(fault).or_default().extend(waiter);
        if first {
            // The server only stops when the TD does; a send that fails finds it gone.
            tx.send(fault).ok();
        }
    }

    /// The server thread: until `stop`, serve each queued page.
    pub(super) fn serve_faults(&self, stop: &AtomicBool, rx: Receiver<Fault>) {
        while !stop.load(SeqCst) {
            let fault = match rx.recv_timeout(POLL) {
                Ok(f) => f,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let waiters = |s: &Self| {
                s.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&fault)
                    .unwrap_or_default()
            };
            let first_vcpu = self.pending_vcpu(fault);
            let began = super::account::thread_cpu_ns();
            self.counters.memory_faults_served.fetch_add(1, Relaxed);
            match self.ept_violation(fault, first_vcpu) {
                Ok(()) => {
                    // Counted before the wake: a vCPU that ends a window right after sees it.
                    let spent = super::account::thread_cpu_ns().saturating_sub(began);
                    self.counters.host_cpu_ns.fetch_add(spent, Relaxed);
                    for (i, run) in waiters(self) {
                        self.backend.vcpus[i as usize].fault_resume(self.seam, i, run);
                    }
                    let b = self.backend.backing(fault.alias);
                    if let Err(e) = b.wake(fault.off, 4096) {
                        return self.host_error(e.to_string());
                    }
                }
                Err(refusal) => return self.refuse(first_vcpu, refusal, stop),
            }
        }
    }

    fn pending_vcpu(&self, fault: Fault) -> Option<u32> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.get(&fault)?.first().map(|(i, _)| *i)
    }

    /// The EPT violation for a page the guest touched (docs/emulation.md): shared → KVM's
    /// fault path installs the direct leaf (and maps the page), converting implicitly on an
    /// attribute mismatch unless --strict; private → a MAPPED page is mapped again (counted:
    /// the host should never have lost it), a PENDING one is "access before accept" (the TD
    /// has SEPT_VE_DISABLE), a FREE one is AUGed first, a BLOCKED one waits for its removal.
    fn ept_violation(&self, fault: Fault, vcpu: Option<u32>) -> Result<(), Refusal> {
        let kvm = self.vmm.kvm();
        let gpaw = kvm.config().gpaw;
        let shared = fault.alias == Alias::Shared;
        let gpa = if shared {
            gpaw.to_shared(Gpa(fault.off))
        } else {
            Gpa(fault.off)
        };
        let who = vcpu.map_or(String::new(), |i| format!("vCPU {i}: "));
        let since = Instant::now();
        loop {
            if since.elapsed() > FAULT_PROGRESS_TIMEOUT {
                let secs = FAULT_PROGRESS_TIMEOUT.as_secs();
                return Err((
                    ExitKind::Fatal,
                    format!("{who}gpa {gpa} still faulting after {secs} s"),
                ));
            }
            if !shared {
                match self.seam.remap_if_mapped(gpa) {
                    Err(e) => return Err((ExitKind::HostError, format!("{who}{e}"))),
                    Ok(Some((SeptState::Mapped, _))) => {
                        self.counters.exits_on_mapped.fetch_add(1, SeqCst);
                        return Ok(());
                    }
                    Ok(Some((state, _))) if state != SeptState::Blocked => {
                        let (off, name) = (fault.off, state.name());
                        return Err((
                            ExitKind::Fatal,
                            format!("{who}access before accept: private gpa {off:#x} is {name}"),
                        ));
                    }
                    _ => {}
                }
            }
            match kvm.kvm_mmu_page_fault(gpa, PageLevel::Size4K) {
                FaultOutcome::Mapped if shared => return Ok(()),
                FaultOutcome::Mapped | FaultOutcome::Retry => std::thread::yield_now(),
                FaultOutcome::MemoryFault { .. } => {
                    let index = vcpu.unwrap_or(u32::MAX);
                    resolve_ept_violation(self.vmm, index, gpa, PageLevel::Size4K)
                        .map_err(|e| (ExitKind::Fatal, e.to_string()))?;
                }
                FaultOutcome::Error(e) => {
                    return Err((ExitKind::Fatal, format!("{who}EPT violation at {gpa}: {e}")))
                }
            }
        }
    }

    /// Refuse the access: hand the reason to the faulting vCPU (it reports it with its RIP
    /// once out of KVM_RUN), fence guest memory so that it gets out, and make sure the TD
    /// stops even if no vCPU reports.
    fn refuse(&self, vcpu: Option<u32>, (kind, message): Refusal, stop: &AtomicBool) {
        match vcpu {
            Some(i) => {
                *self.backend.vcpus[i as usize]
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((kind, message.clone()))
            }
            None => self.finish(kind, message.clone()),
        }
        if let Err(e) = self.backend.fence() {
            return self.host_error(e.to_string());
        }
        let since = Instant::now();
        while !stop.load(SeqCst) && since.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(POLL);
        }
        self.finish(kind, message);
    }

    fn finish(&self, kind: ExitKind, message: String) {
        self.io().finish(GuestExit {
            kind,
            code: 0,
            message,
        });
    }

    /// The service itself failed: stop the TD (fenced, so no vCPU waits in a fault).
    fn host_error(&self, message: String) {
        self.finish(
            ExitKind::HostError,
            format!("guest-memory fault service: {message}"),
        );
        self.backend.fence().ok();
    }
}
