//! The emulated TD on KVM (`tdxlab run`, `stress`, `bench`): QEMU's part of booting a TDVF
//! image in TDX mode, on a stock KVM VM.
//!
//! Memory: a memfd backs the private alias `[0, mem)`, another the shared alias
//! `[0 | shared bit, mem | shared bit)` (`backing`; the shared bit is GPAW − 1, from the
//! host's MAXPHYADDR or `--gpaw`), and a mapping of the image the firmware window
//! `[4 GiB − image, 4 GiB)`. Reachability of each page is enforced through userfaultfd
//! (`uffd`, over the kernel's API in `userfaultfd`). A run has three steps, Firecracker-style:
//!
//! - [`build`] (`build.rs`): check the flags and the host, load the image as QEMU loads it
//!   (`hw/i386/tdvf.c`), wire the three roles (the TDX module `seam`, KVM's MMU `kvm`, the
//!   VMM `vmm`), add the initial private pages, create the vCPUs in the TD start state and
//!   build the TD HOB (`td_setup`);
//! - [`Td::run`] (`run.rs`): a thread per vCPU serving its exits (`vcpu`: TDCALLs through
//!   the doorbell, #VE for raw I/O in `ve`), the fault service threads, and a watcher;
//! - [`RunReport::collect`] (`report.rs`): every role's counters and the audit (`audit`).

mod account;
mod audit;
mod backing;
mod build;
mod config;
mod contain;
mod ctx;
mod invalidate;
mod kvm_backend;
mod linux_boot;
mod linux_tdcall;
mod measured;
mod ram;
mod report;
mod run;
mod td_setup;
mod uffd;
pub(crate) mod userfaultfd;
mod vcpu;
mod ve;

pub use account::{ExitCounts, WindowCounts};
pub use backing::Backing;
pub use build::{build, Td, TEST_TD_ATTRIBUTES_ENV};
pub use config::{
    InjectConfig, LinuxKernel, Progress, RunConfig, Settings, StressParams, MAX_MEM, MAX_TD_HOB,
    MAX_VCPUS, MIN_MEM,
};
pub use contain::{install_panic_hook, TEST_PANIC_ENV};
pub use measured::Measured;
pub use ram::RamLayout;
pub use report::{RunReport, Zaps};
pub use run::Ended;

use std::time::Instant;

/// Boot and run a TD until it exits, fails, or times out.
pub fn run(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    run_with_progress(cfg, &|_| {})
}

/// [`run`], calling `progress` about four times a second while the TD runs.
pub(crate) fn run_with_progress(
    cfg: &RunConfig,
    progress: &(dyn Fn(Progress) + Sync),
) -> anyhow::Result<RunReport> {
    let start = (Instant::now(), rdtsc());
    let mut td = build(cfg)?;
    tracing::info!(target: "td", vcpus = cfg.vcpus, mem_mib = cfg.mem_bytes >> 20, gpaw = td.gpaw.bits(), build_ms = start.0.elapsed().as_millis() as u64, "TD built");
    let ended = td.run(progress)?;
    tracing::info!(target: "td", kind = %ended.exit.kind, ran_s = %format_args!("{:.2}", ended.ran_s), "TD stopped: {}", ended.exit.message);
    let r = RunReport::collect(&td, ended, start)?;
    tracing::info!(target: "td", findings = r.audit.len(), audit_s = %format_args!("{:.3}", r.audit_s), "end-of-run audit");
    Ok(r)
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}
