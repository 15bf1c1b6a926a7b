//! Exit accounting: what each kind of host work a TD causes costs, counted in total and per
//! measured window (the guest's MARK host checks around each step of a round trip).
//!
//! Counts, not times, are what this machine can report honestly: under PVM every guest
//! instruction is emulated, but the number of exits, kicks and system calls a conversion
//! takes is the design's, and the host CPU time outside KVM_RUN is the model's own cost.

use super::ctx::Counters;
use super::kvm_backend::KvmBackend;
use crate::vmm::{MarkSink, Vmm};
use serde::Serialize;
use shared_abi::hostcheck::Window;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Every counter a conversion moves, at one moment or summed over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExitCounts {
    /// TDCALL exits through the doorbell (each TDCALL is one; marks are not counted).
    pub doorbell: u64,
    /// Of those, TDVMCALL<MapGPA>.
    pub map_gpa: u64,
    /// Guest-memory faults served (EPT violations on a guest access: a first touch).
    pub memory_faults: u64,
    /// Raw port-I/O exits the TDX module turned into #VE.
    pub raw_io: u64,
    /// HLT and the benchmark's bare port.
    pub other: u64,
    /// EPT violations resolved inside a TDCALL's exit (an ACCEPT's fault, AUG and the
    /// re-executed ACCEPT): not exits of their own.
    pub ept_violations_in_tdcall: u64,
    /// Kick-all-vCPUs requests (TRACK, remote TLB flushes).
    pub kicks: u64,
    /// vCPUs those kicks had to signal and wait for.
    pub kick_waits: u64,
    /// fallocate, madvise, mprotect and userfaultfd ioctls on guest memory.
    pub mem_syscalls: u64,
    /// Host CPU time outside KVM_RUN, ns.
    pub host_cpu_ns: u64,
}

impl ExitCounts {
    /// Exits to the host: doorbell, memory faults, raw I/O and the others.
    pub fn exits(&self) -> u64 {
        self.doorbell + self.memory_faults + self.raw_io + self.other
    }

    fn zip(self, o: ExitCounts, f: impl Fn(u64, u64) -> u64) -> ExitCounts {
        ExitCounts {
            doorbell: f(self.doorbell, o.doorbell),
            map_gpa: f(self.map_gpa, o.map_gpa),
            memory_faults: f(self.memory_faults, o.memory_faults),
            raw_io: f(self.raw_io, o.raw_io),
            other: f(self.other, o.other),
            ept_violations_in_tdcall: f(self.ept_violations_in_tdcall, o.ept_violations_in_tdcall),
            kicks: f(self.kicks, o.kicks),
            kick_waits: f(self.kick_waits, o.kick_waits),
            mem_syscalls: f(self.mem_syscalls, o.mem_syscalls),
            host_cpu_ns: f(self.host_cpu_ns, o.host_cpu_ns),
        }
    }
}

/// One measured window over all its samples.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct WindowCounts {
    /// Times the window was measured (one per round trip).
    pub samples: u64,
    /// The counts summed over them.
    pub total: ExitCounts,
}

/// The runner's accounting: reads the counters of every role that a TD moves.
pub(super) struct Accounting {
    counters: Arc<Counters>,
    backend: Arc<KvmBackend>,
    /// Windows begun and not ended yet, by vCPU.
    open: Mutex<HashMap<(u32, Window), ExitCounts>>,
    windows: Mutex<BTreeMap<&'static str, WindowCounts>>,
}

impl Accounting {
    pub(super) fn new(counters: Arc<Counters>, backend: Arc<KvmBackend>) -> Accounting {
        Accounting {
            counters,
            backend,
            open: Mutex::new(HashMap::new()),
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every counter now.
    pub(super) fn snapshot(&self, vmm: &Vmm) -> ExitCounts {
        let (c, b) = (&*self.counters, &*self.backend);
        let ld = |a: &AtomicU64| a.load(Relaxed);
        ExitCounts {
            doorbell: ld(&c.doorbell_exits),
            map_gpa: ld(&c.map_gpa_exits),
            memory_faults: ld(&c.memory_faults_served),
            raw_io: ld(&c.ves) - ld(&c.hlt_ves),
            other: ld(&c.other_exits) + ld(&c.hlt_ves),
            ept_violations_in_tdcall: vmm.ept_violations.load(Relaxed),
            kicks: ld(&b.kicks),
            kick_waits: ld(&b.kick_waits),
            mem_syscalls: ld(&b.private.syscalls) + ld(&b.shared.syscalls),
            host_cpu_ns: ld(&c.host_cpu_ns),
        }
    }

    /// The windows measured, by name.
    pub(super) fn windows(&self) -> BTreeMap<String, WindowCounts> {
        let w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        w.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }
}

impl MarkSink for Accounting {
    fn mark(&self, vmm: &Vmm, vcpu: u32, window: Window, end: bool) {
        let now = self.snapshot(vmm);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if !end {
            open.insert((vcpu, window), now);
            return;
        }
        // An end without its start (a guest's mistake) measures nothing.
        let Some(begun) = open.remove(&(vcpu, window)) else {
            return;
        };
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let acc = w.entry(window.name()).or_default();
        acc.samples += 1;
        acc.total = acc
            .total
            .zip(now.zip(begun, u64::saturating_sub), u64::saturating_add);
    }
}

/// This thread's CPU time, ns (CLOCK_THREAD_CPUTIME_ID).
pub(super) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
