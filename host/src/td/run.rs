//! Running a built TD: the vCPU threads and the host's helper threads, each contained, and a
//! watcher that reports progress and stops the TD on its exit, a signal or the timeout.

use super::build::Td;
use super::config::Progress;
use super::contain::{contained, StopSignals};
use super::ctx::Ctx;
use super::kvm_backend::on_kick;
use super::uffd::FaultService;
use super::vcpu::vcpu_loop;
use crate::exit::ExitKind;
use crate::vmm::{GuestExit, GuestIo};
use anyhow::Context;
use kvm_ioctls::VcpuFd;
use std::collections::HashMap;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Mutex;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

/// How a run ended, beyond what the models count.
pub struct Ended {
    /// How the TD stopped (a timeout names each vCPU's RIP).
    pub exit: GuestExit,
    /// From starting the vCPUs to the guest's first console line (0 if none).
    pub boot_ms: f64,
    /// When the vCPUs started.
    pub boot_at: Instant,
    /// From starting the vCPUs to the last one stopping.
    pub ran_s: f64,
}

impl Td<'_> {
    /// Run until the TD exits, fails, is interrupted or times out, calling `progress` about
    /// four times a second.
    pub fn run(&mut self, progress: &(dyn Fn(Progress) + Sync)) -> anyhow::Result<Ended> {
        // Kicks are SIGRTMIN to a vCPU thread; without the (empty) handler the signal's
        // default action would kill the process, so a handler that cannot be installed
        // stops here.
        vmm_sys_util::signal::register_signal_handler(vmm_sys_util::signal::SIGRTMIN(), on_kick)
            .context("installing the SIGRTMIN handler that kicks vCPUs out of KVM_RUN")?;
        let signals = StopSignals::install().context("installing the SIGINT/SIGTERM handlers")?;
        let vcpus = std::mem::take(&mut self.vcpus);
        let td: &Td = self;
        let boot_at = Instant::now();
        let mut first_line = None;
        let faults = FaultService {
            uffd: &td.uffd,
            backend: &td.backend,
            seam: &td.seam,
            vmm: &td.vmm,
            counters: &td.counters,
            pending: Mutex::new(HashMap::new()),
        };
        std::thread::scope(|s| {
            td.spawn_helpers(s, &faults);
            let handles = td.spawn_vcpus(s, vcpus);
            first_line = td.watch(boot_at, &signals, progress);
            td.stop_vcpus(&handles);
        });
        // The last column: the conversions since the watcher's last sample belong on the
        // map too (its totals add up to the report's).
        if let Some(m) = &self.cfg.map {
            m.sample(&self.kvm, &self.seam);
        }
        let mut exit = self.io().exit().unwrap_or(GuestExit {
            kind: ExitKind::HostError,
            code: 0,
            message: "the TD stopped without an exit".into(),
        });
        if exit.kind == ExitKind::Timeout {
            let rips: Vec<String> = (self.backend.vcpus.iter().enumerate())
                .map(|(i, v)| {
                    let rip = v.stopped_rip.load(SeqCst);
                    format!(
                        "vCPU {i} at {}",
                        crate::symbols::describe_rip(rip, self.builtin)
                    )
                })
                .collect();
            exit.message = format!("{}; {}", exit.message, rips.join(", "));
        }
        let boot_ms = first_line.map_or(0.0, |t: Instant| (t - boot_at).as_secs_f64() * 1e3);
        let ran_s = boot_at.elapsed().as_secs_f64();
        Ok(Ended {
            exit,
            boot_ms,
            boot_at,
            ran_s,
        })
    }

    pub(super) fn io(&self) -> &GuestIo {
        self.vmm
            .io
            .as_ref()
            .expect("a TD's VMM has I/O (build sets it)")
    }

    /// The fault reader and server, and the host-invalidation thread when asked for.
    fn spawn_helpers<'s>(&'s self, s: &'s Scope<'s, '_>, faults: &'s FaultService<'s>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (io, stop, b) = (self.io(), &self.io().stop, &*self.backend);
        s.spawn(move || contained("the fault reader", io, b, || faults.read_faults(stop, tx)));
        s.spawn(move || contained("the fault server", io, b, || faults.serve_faults(stop, rx)));
        let hz = self.cfg.inject.host_invalidate_hz;
        if hz > 0 {
            let (kvm, n, seed) = (&*self.kvm, &self.invalidations, self.seed);
            s.spawn(move || {
                contained("the host-invalidation thread", io, b, || {
                    if let Err(e) = super::invalidate::host_invalidator(kvm, hz, seed, stop, n) {
                        io.finish(GuestExit {
                            kind: ExitKind::HostError,
                            code: 0,
                            message: format!("mmu-notifier invalidation failed: {e}"),
                        });
                    }
                })
            });
        }
    }

    /// One thread per vCPU, each registered for kicks before it first enters.
    fn spawn_vcpus<'s>(
        &'s self,
        s: &'s Scope<'s, '_>,
        vcpus: Vec<VcpuFd>,
    ) -> Vec<ScopedJoinHandle<'s, ()>> {
        let bench = self.cfg.workload == crate::guest_layout::WORKLOAD_BENCH_DOORBELL;
        let io = self.io();
        (vcpus.into_iter().enumerate())
            .map(|(i, vcpu)| {
                let ctx = Ctx {
                    bench,
                    builtin: self.builtin,
                    seam: &self.seam,
                    vmm: &self.vmm,
                    counters: &self.counters,
                    backend: &self.backend,
                    linux: &self.linux,
                };
                s.spawn(move || {
                    // SAFETY: pthread_self and gettid have no preconditions.
                    let (me, tid) = unsafe { (libc::pthread_self(), libc::gettid()) };
                    ctx.backend.vcpus[i].thread.store(me, SeqCst);
                    ctx.backend.vcpus[i].tid.store(tid, SeqCst);
                    let what = format!("vCPU {i}'s thread");
                    contained(&what, io, ctx.backend, || vcpu_loop(i as u32, vcpu, &ctx))
                })
            })
            .collect()
    }

    /// Until the TD stops: note the first console line, turn a signal or the timeout into
    /// the TD's exit, and report progress. Returns when the first console line came.
    fn watch(
        &self,
        boot_at: Instant,
        signals: &StopSignals,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Option<Instant> {
        let io = self.io();
        let (mut first_line, mut last_progress) = (None, Instant::now());
        while !io.stop.load(SeqCst) {
            if first_line.is_none()
                && !io
                    .output
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
            {
                first_line = Some(Instant::now());
            }
            if let Some(sig) = signals.received() {
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                io.finish(GuestExit {
                    kind: ExitKind::Interrupted,
                    code: sig as u64,
                    message: format!("stopped by {name}"),
                });
            }
            if boot_at.elapsed() > self.cfg.timeout {
                let secs = self.cfg.timeout.as_secs();
                io.finish(GuestExit {
                    kind: ExitKind::Timeout,
                    code: 0,
                    message: format!("the guest did not finish within {secs} s"),
                });
            }
            if last_progress.elapsed() >= Duration::from_millis(250) {
                last_progress = Instant::now();
                progress(self.progress(boot_at));
                if let Some(m) = &self.cfg.map {
                    m.sample(&self.kvm, &self.seam);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        first_line
    }

    fn progress(&self, boot_at: Instant) -> Progress {
        let vmm = &self.vmm;
        Progress {
            elapsed_s: boot_at.elapsed().as_secs_f64(),
            conversions: vmm.conversions(),
            pages_converted: vmm.pages_converted.load(Relaxed),
            host_checks: vmm.host_checks.load(Relaxed),
            mismatches: vmm.host_check_mismatches.load(Relaxed),
            stress_marks: {
                let m = &self.io().marks;
                let ld = |a: &std::sync::atomic::AtomicU32| a.load(Relaxed);
                (ld(&m.started), ld(&m.sweeping), ld(&m.results))
            },
        }
    }

    /// Force every vCPU thread out of KVM_RUN and wait for each: a parked vCPU sits in HLT
    /// in the kernel (a signal gets it out), one in a guest-memory fault waits on the
    /// userfaultfd (the fence gets it out: a signal does not on PVM).
    fn stop_vcpus(&self, handles: &[ScopedJoinHandle<'_, ()>]) {
        if let Err(e) = self.backend.fence() {
            self.io().finish(GuestExit {
                kind: ExitKind::HostError,
                code: 0,
                message: format!("stopping the TD: {e}"),
            });
        }
        while handles.iter().any(|h| !h.is_finished()) {
            // Scoped threads are joined only when the scope ends, so every registered id is
            // still valid; a finished thread just ignores the signal.
            for v in &self.backend.vcpus {
                self.backend.signal(v);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
