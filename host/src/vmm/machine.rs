//! The emulated TD on KVM (`tdxlab run`): QEMU's part of booting a TDVF image in TDX mode,
//! on a stock KVM VM.
//!
//! Memory: a memfd backs the private alias `[0, mem)`, another the shared alias
//! `[0 | shared bit, mem | shared bit)` (see `backing`; the shared bit is GPAW − 1, from the
//! host's MAXPHYADDR or `--gpaw`), and a mapping of the image the firmware window
//! `[4 GiB − image, 4 GiB)`. The image is loaded as QEMU loads it (`hw/i386/tdvf.c`), the TD HOB
//! built as QEMU builds it plus tdxlab's emulation HOB (`td_setup`), every vCPU started at
//! 0xFFFFFFF0 in the TD start state, and each vCPU thread (`vcpu`) serves its exits: TDCALLs
//! through the doorbell, EPT violations, #VE (`ve`). This file sets the TD up and runs it.

use super::contain::{contained, StopSignals};
use super::kvm_backend::{on_kick, KvmBackend, KvmPrivateMem, VcpuCtl};
use super::td_setup::{build_td_hob, create_vcpu, td_cpuid};
use super::uffd::FaultService;
use super::vcpu::{vcpu_loop, Counters, Ctx};
use super::{Backing, GuestExit, GuestIo, Injector, Vmm};
use crate::exit::ExitKind;
use crate::kvm::{Kvm, KvmConfig, ZapPolicy};
use crate::seam::{TdParams, TdxModule};
use anyhow::{bail, Context};
use kvm_bindings::kvm_userspace_memory_region;
use serde::Serialize;
use shared_abi::layout::hob::TdxlabHob;
use shared_abi::layout::tdvf::{SectionType, TdvfMetadata};
use shared_abi::td::attributes::SEPT_VE_DISABLE;
use shared_abi::{Gpa, PageLevel};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
/// Largest RAM the emulated TD takes (all of it below the 32-bit PCI hole for now).
pub const MAX_MEM: u64 = 2 * GIB;
/// The largest TD_HOB section tdxlab fills (OVMF's is 8 KiB; the list is a few hundred
/// bytes): the host allocates the section's size to build it.
pub const MAX_TD_HOB: u64 = 1 << 20;
/// Smallest RAM: the image's TEMP_MEM and TD_HOB sections must fit.
pub const MIN_MEM: u64 = 16 << 20;
const TSS_ADDR: usize = 0xFEFF_D000;

/// What `tdxlab run` boots.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The TDVF image.
    pub image: Vec<u8>,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM bytes.
    pub mem_bytes: u64,
    /// Zap semantics of the MMU model.
    pub policy: ZapPolicy,
    /// Refuse implicit conversions.
    pub strict: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// Guest configuration flags (shared_abi::layout::hob::config).
    pub flags: u32,
    /// Echo guest console lines.
    pub echo: bool,
    /// Which guest workload (`pack::WORKLOAD_*`).
    pub workload: u32,
    /// Test-only: make the host leak a private byte before each SYNC_PRIVATE check.
    pub plant_leak: bool,
    /// Fault injection.
    pub inject: InjectConfig,
    /// The stress workload's parameters (with `workload` = `pack::WORKLOAD_STRESS`).
    pub stress: Option<StressParams>,
    /// Force the TD's GPAW (`--gpaw`); `None` picks it from the host (`caps::default_gpaw`).
    pub gpaw: Option<u8>,
}

/// What `--inject` asks for; every injected event is counted in the report.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectConfig {
    /// Probability that MapGPA answers RETRY part-way through a chunk.
    pub retry: f64,
    /// Probability that TDG.MEM.PAGE.ACCEPT answers OPERAND_BUSY.
    pub busy: f64,
    /// The largest page KVM maps private memory with (4K is KVM today: 2 MiB accepts get
    /// PAGE_SIZE_MISMATCH and fall back).
    pub private_page_size: PageLevel,
    /// mmu-notifier invalidations of shared memory per second (0: none).
    pub host_invalidate_hz: u32,
}

impl Default for InjectConfig {
    fn default() -> InjectConfig {
        InjectConfig {
            retry: 0.0,
            busy: 0.0,
            private_page_size: PageLevel::Size4K,
            host_invalidate_hz: 0,
        }
    }
}

impl InjectConfig {
    /// Is anything injected?
    pub fn any(&self) -> bool {
        self.retry > 0.0 || self.busy > 0.0 || self.host_invalidate_hz > 0
    }
}

/// The stress workload's parameters, handed to the guest in the tdxlab HOB.
#[derive(Clone, Debug, PartialEq)]
pub struct StressParams {
    /// Which scenario.
    pub scenario: shared_abi::stress::Scenario,
    /// Seed of the per-vCPU operation sequences.
    pub seed: u64,
    /// How long to keep repeating (at least one pass).
    pub seconds: f64,
    /// Most operations per vCPU (0: no limit).
    pub ops: u32,
    /// vCPU 0 measures the doorbell floor and the 4K / 2M round trips first.
    pub measure: bool,
}

/// Live counters, handed to the progress callback a few times a second.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Since the vCPUs started.
    pub elapsed_s: f64,
    /// MapGPA and implicit conversions so far.
    pub conversions: u64,
    /// Pages whose attribute changed so far.
    pub pages_converted: u64,
    /// Host checks served so far.
    pub host_checks: u64,
    /// Host checks that failed so far.
    pub mismatches: u64,
}

/// The report of `tdxlab run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// How the TD ended.
    pub exit: GuestExit,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM bytes.
    pub mem_bytes: u64,
    /// The TD's guest physical-address width.
    pub gpaw: u8,
    /// The TD's shared bit (`gpaw - 1`).
    pub shared_bit: u32,
    /// True when `gpaw` is not one the TDX module reports (a host MAXPHYADDR below 48).
    pub gpaw_non_architectural: bool,
    /// From starting the vCPUs to the guest's first console line.
    pub boot_ms: f64,
    /// TDCALLs by leaf.
    pub tdcalls: BTreeMap<String, u64>,
    /// TDVMCALLs by sub-function.
    pub tdvmcalls: BTreeMap<String, u64>,
    /// Bytes the guest accepted.
    pub accepted_bytes: u64,
    /// MapGPA conversions to shared.
    pub conversions_to_shared: u64,
    /// MapGPA conversions to private.
    pub conversions_to_private: u64,
    /// EPT violations served.
    pub ept_violations: u64,
    /// Leaves zapped (4K units).
    pub zaps: Zaps,
    /// Kick-all-vCPUs requests.
    pub kicks: u64,
    /// #VEs injected (raw port I/O the module turned into #VE).
    pub ves_injected: u64,
    /// EPT-violation exits on private pages that were already accepted (MAPPED): pages the
    /// host failed to map. Must stay 0.
    pub exits_on_mapped_private: u64,
    /// Guest-memory faults the host read from the userfaultfd (a guest touch of a page it
    /// could not reach yet; duplicates included).
    pub memory_faults: u64,
    /// Pages the fault service ran through the EPT-violation path.
    pub memory_faults_served: u64,
    /// MapGPA RETRYs the host injected.
    pub map_gpa_retries_injected: u64,
    /// Host checks (SYNC_SHARED / SYNC_PRIVATE) served.
    pub host_checks: u64,
    /// Host checks that found something other than what the guest expected.
    pub host_check_mismatches: u64,
    /// Wall time.
    pub elapsed_s: f64,
    /// The guest's console.
    pub console: Vec<String>,
    /// The TSC rate measured during the run (guest cycle counts divide by this).
    pub tsc_hz: f64,
    /// With --accept-all: how long accepting all RAM took.
    pub accept_all_s: Option<f64>,
    /// MapGPA and implicit conversions (each hypercall chunk or memory-fault exit).
    pub conversions: u64,
    /// Pages whose attribute the VMM changed.
    pub pages_converted: u64,
    /// Implicit conversions (memory-fault exits QEMU-style converted).
    pub implicit_conversions: u64,
    /// TDH.MEM.PAGE.DEMOTEs: 2 MiB private mappings split because part of one was zapped.
    pub demotes: u64,
    /// Injected events by name (retry, busy, host_invalidate) and the accepts that got
    /// PAGE_SIZE_MISMATCH.
    pub injected: BTreeMap<String, u64>,
    /// What the end-of-run audit found: each a violated invariant (docs/model.md) (a leak or a
    /// lost guarantee). Empty on a clean run.
    pub audit: Vec<String>,
    /// VMAs the two memslot views of RAM span at the end of the run: 2 whatever the guest
    /// made reachable (the userfaultfd enforcement never splits a mapping; per-page mprotect
    /// did, up to vm.max_map_count).
    pub memslot_vmas: u64,
    /// Stdout's reader went away while the console was echoed (not part of the report).
    #[serde(skip)]
    pub stdout_closed: bool,
}

/// Zapped leaves per root.
#[derive(Debug, Clone, Serialize)]
pub struct Zaps {
    /// Mirror (private).
    pub mirror: u64,
    /// Direct (shared).
    pub direct: u64,
}

/// Boot and run a TD until it exits, fails, or times out.
pub fn run(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    run_with_progress(cfg, &|_| {})
}

/// [`run`], calling `progress` about four times a second while the TD runs.
pub fn run_with_progress(
    cfg: &RunConfig,
    progress: &(dyn Fn(Progress) + Sync),
) -> anyhow::Result<RunReport> {
    let start = Instant::now();
    let tsc_start = rdtsc();
    let meta = TdvfMetadata::parse(&cfg.image)
        .map_err(|e| anyhow::anyhow!("the image is not a loadable TDVF image: {e}"))?;
    if !(1..=crate::pack::MAX_VCPUS as u32).contains(&cfg.vcpus) {
        bail!(
            "--vcpus {} is out of range (1..={})",
            cfg.vcpus,
            crate::pack::MAX_VCPUS
        );
    }
    if cfg.mem_bytes % (2 << 20) != 0 || !(MIN_MEM..=MAX_MEM).contains(&cfg.mem_bytes) {
        bail!(
            "--mem must be a multiple of 2 MiB between {} MiB and {} MiB",
            MIN_MEM >> 20,
            MAX_MEM >> 20
        );
    }
    let caps = crate::caps::probe();
    if !caps.problems.is_empty() {
        bail!(
            "this host cannot run emulated TDs: {}",
            caps.problems.join("; ")
        );
    }
    let mem = cfg.mem_bytes;
    let pages = mem >> 12;
    let gpaw = crate::caps::td_gpaw(cfg.gpaw, caps.maxphyaddr).map_err(anyhow::Error::msg)?;
    let image_size = cfg.image.len() as u64;
    let image_base = (1u64 << 32) - image_size;
    // Both aliases of RAM and the firmware window must lie below the shared bit.
    if mem.max(1 << 32) > gpaw.shared_mask() {
        bail!(
            "GPAW {} puts the shared bit at {:#x}, below the end of RAM and the firmware window ({:#x})",
            gpaw.bits(),
            gpaw.shared_mask(),
            mem.max(1 << 32)
        );
    }

    let kvm = kvm_ioctls::Kvm::new().context("cannot open /dev/kvm")?;
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
    vm.set_tss_address(TSS_ADDR).context("KVM_SET_TSS_ADDR")?;
    vm.create_irq_chip().context("KVM_CREATE_IRQCHIP")?;

    // Both aliases start unreachable: a page is mapped only once the model has a leaf for it,
    // and every touch of an unmapped page reaches the host through the userfaultfd.
    let uffd = Arc::new(super::uffd::open_userfaultfd().map_err(anyhow::Error::msg)?);
    let private = Arc::new(Backing::new("tdxlab-private", mem, uffd.clone())?);
    let shared = Arc::new(Backing::new("tdxlab-shared", mem, uffd.clone())?);
    let fw_base = vm_memory::GuestAddress(image_base);
    let firmware = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(fw_base, image_size as usize)])
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot map the {} KiB firmware window: {e}",
                image_size >> 10
            )
        })?;
    vm_memory::Bytes::write_slice(&firmware, &cfg.image, fw_base)
        .map_err(|e| anyhow::anyhow!("copying the image into the firmware window: {e}"))?;
    let fw_addr = vm_memory::GuestMemoryBackend::get_host_address(&firmware, fw_base)
        .map_err(|e| anyhow::anyhow!("the firmware window: {e}"))?;
    let slots = [
        (0u64, private.slot_addr(), mem),
        (gpaw.shared_mask(), shared.slot_addr(), mem),
        (image_base, fw_addr as u64, image_size),
    ];
    for (i, (gpa, addr, len)) in slots.iter().enumerate() {
        let region = kvm_userspace_memory_region {
            slot: i as u32,
            flags: 0,
            guest_phys_addr: *gpa,
            memory_size: *len,
            userspace_addr: *addr,
        };
        // SAFETY: the mapping outlives the VM (both dropped at the end of this function, VM first).
        unsafe { vm.set_user_memory_region(region) }
            .with_context(|| format!("memslot at {gpa:#x}"))?;
    }

    // The TD: its module, KVM's MMU and the VMM, over the private backing.
    let params = TdParams {
        gpaw,
        attributes: SEPT_VE_DISABLE,
        num_vcpus: cfg.vcpus,
    };
    // One seed for every injector: the stress seed (fixed for `run`).
    let seed = cfg.stress.as_ref().map_or(0, |s| s.seed);
    let mut module = TdxModule::new(params, Arc::new(KvmPrivateMem(private.clone())));
    if cfg.inject.busy > 0.0 {
        module.inject_accept_busy =
            Some(crate::inject::Chance::new(cfg.inject.busy, 0xb05e ^ seed));
    }
    let seam = Arc::new(module);
    let backend = Arc::new(KvmBackend {
        private: private.clone(),
        shared: shared.clone(),
        vcpus: (0..cfg.vcpus).map(|_| VcpuCtl::default()).collect(),
        kicks: AtomicU64::new(0),
        fenced: AtomicBool::new(false),
    });
    let mut kc = KvmConfig::td(pages, gpaw);
    kc.policy = cfg.policy;
    kc.private_max_level = cfg.inject.private_page_size;
    let kvm_model = Arc::new(Kvm::new(kc, Some(seam.clone()), backend.clone()));
    let mut vmm = Vmm::new(
        kvm_model.clone(),
        cfg.strict,
        Injector::new(cfg.inject.retry, 0x7d78_6c61 ^ seed),
    );
    vmm.io = Some(GuestIo::new(cfg.vcpus, cfg.echo));
    vmm.plant_leak.store(cfg.plant_leak, Relaxed);
    let vmm = Arc::new(vmm);

    // QEMU's tdx_finalize_vm: TD_HOB and TEMP_MEM are zeroed and added (accepted) private
    // memory inside RAM; BFV/CFV are copied from the image (already in the firmware window).
    let mut accepted: Vec<(u64, u64)> = Vec::new();
    let mut hob_at = None;
    for s in meta.sections() {
        // TdvfMetadata::parse checked that no section wraps; the sums below cannot overflow.
        let end = s.memory_address + s.memory_size;
        match s.kind() {
            Some(SectionType::TdHob | SectionType::TempMem) => {
                if end > mem {
                    bail!(
                        "--mem {} MiB is too small: the image needs RAM up to {end:#x}",
                        mem >> 20
                    );
                }
                accepted.push((s.memory_address, s.memory_size));
                if s.kind() == Some(SectionType::TdHob) && hob_at.is_none() {
                    if s.memory_size > MAX_TD_HOB {
                        bail!(
                            "the image's TD_HOB section is {} KiB; tdxlab builds a TD HOB of at most {} KiB",
                            s.memory_size >> 10,
                            MAX_TD_HOB >> 10
                        );
                    }
                    hob_at = Some((s.memory_address, s.memory_size));
                }
            }
            Some(SectionType::Bfv | SectionType::Cfv)
                if s.memory_address < image_base || end > 1 << 32 =>
            {
                bail!(
                    "image section [{:#x}, {end:#x}) lies outside the firmware window",
                    s.memory_address
                )
            }
            _ => {}
        }
    }
    let (hob_gpa, hob_size) = hob_at.expect("TdvfMetadata::parse checked for a TD_HOB");
    for &(gpa, size) in &accepted {
        for p in (gpa..gpa + size).step_by(4096) {
            match kvm_model.kvm_mmu_page_fault(Gpa(p), PageLevel::Size4K) {
                crate::kvm::FaultOutcome::Mapped => {}
                other => bail!("adding private page {p:#x}: {other:?}"),
            }
        }
    }
    let failed = seam.stats.map_failures.load(Relaxed);
    if failed != 0 {
        bail!("{failed} initial private pages could not be mapped for the guest");
    }
    // vCPUs in the TD start state (created before finalization, as QEMU does).
    let cpuid = td_cpuid(&kvm)?;
    let mut vcpus = Vec::new();
    for i in 0..cfg.vcpus {
        vcpus.push(create_vcpu(&vm, i, &cpuid, hob_gpa, gpaw)?);
    }
    let guest = guest_config(cfg, &vcpus[0]);
    let hob = build_td_hob(hob_gpa, hob_size, mem, &accepted, &guest)?;
    private.write(hob_gpa, &hob);
    seam.tdh_mr_finalize()
        .map_err(|s| anyhow::anyhow!("TDH.MR.FINALIZE: {s}"))?;

    // Kicks are SIGRTMIN to a vCPU thread; without the (empty) handler the signal's default
    // action would kill the process, so a handler that cannot be installed stops here.
    vmm_sys_util::signal::register_signal_handler(vmm_sys_util::signal::SIGRTMIN(), on_kick)
        .context("installing the SIGRTMIN handler that kicks vCPUs out of KVM_RUN")?;
    let counters = Counters::default();
    let boot_at = Instant::now();
    let first_line = Arc::new(Mutex::new(None::<Instant>));
    let io = || vmm.io.as_ref().expect("set above");
    let invalidations = AtomicU64::new(0);
    let mut last_progress = Instant::now();
    let signals = StopSignals::install().context("installing the SIGINT/SIGTERM handlers")?;
    let faults = FaultService {
        uffd: &uffd,
        backend: &backend,
        seam: &seam,
        vmm: &vmm,
        counters: &counters,
        pending: Mutex::new(HashMap::new()),
    };
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let (faults, stop, b) = (&faults, &io().stop, &*backend);
        s.spawn(move || contained("the fault reader", io(), b, || faults.read_faults(stop, tx)));
        s.spawn(move || {
            contained("the fault server", io(), b, || {
                faults.serve_faults(stop, rx)
            })
        });
        if cfg.inject.host_invalidate_hz > 0 {
            let (kvm, io, n) = (&kvm_model, io(), &invalidations);
            let hz = cfg.inject.host_invalidate_hz;
            s.spawn(move || {
                contained("the host-invalidation thread", io, b, || {
                    if let Err(e) = host_invalidator(kvm, hz, seed, &io.stop, n) {
                        io.finish(GuestExit {
                            kind: ExitKind::HostError,
                            code: 0,
                            message: format!("mmu-notifier invalidation failed: {e}"),
                        });
                    }
                })
            });
        }
        let mut handles = Vec::new();
        for (i, vcpu) in vcpus.into_iter().enumerate() {
            let ctx = Ctx {
                bench: cfg.workload == crate::pack::WORKLOAD_BENCH_DOORBELL,
                seam: &seam,
                vmm: &vmm,
                counters: &counters,
                backend: &backend,
            };
            handles.push(s.spawn(move || {
                // SAFETY: pthread_self and gettid have no preconditions.
                let (me, tid) = unsafe { (libc::pthread_self(), libc::gettid()) };
                ctx.backend.vcpus[i].thread.store(me, SeqCst);
                ctx.backend.vcpus[i].tid.store(tid, SeqCst);
                let what = format!("vCPU {i}'s thread");
                contained(&what, io(), ctx.backend, || vcpu_loop(i as u32, vcpu, &ctx))
            }));
        }
        while !io().stop.load(SeqCst) {
            if first_line
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
                && !io()
                    .output
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
            {
                *first_line.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
            if let Some(sig) = signals.received() {
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                io().finish(GuestExit {
                    kind: ExitKind::Interrupted,
                    code: sig as u64,
                    message: format!("stopped by {name}"),
                });
            }
            if boot_at.elapsed() > cfg.timeout {
                io().finish(GuestExit {
                    kind: ExitKind::Timeout,
                    code: 0,
                    message: format!(
                        "the guest did not finish within {} s",
                        cfg.timeout.as_secs()
                    ),
                });
            }
            if last_progress.elapsed() >= Duration::from_millis(250) {
                last_progress = Instant::now();
                progress(Progress {
                    elapsed_s: boot_at.elapsed().as_secs_f64(),
                    conversions: vmm.conversions(),
                    pages_converted: vmm.pages_converted.load(Relaxed),
                    host_checks: vmm.host_checks.load(Relaxed),
                    mismatches: vmm.host_check_mismatches.load(Relaxed),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Force every vCPU thread out of KVM_RUN: a parked vCPU sits in HLT in the kernel
        // (a signal gets it out), one in a guest-memory fault waits on the userfaultfd (the
        // fence gets it out: a signal does not on PVM).
        if let Err(e) = backend.fence() {
            io().finish(GuestExit {
                kind: ExitKind::HostError,
                code: 0,
                message: format!("stopping the TD: {e}"),
            });
        }
        while handles.iter().any(|h| !h.is_finished()) {
            // Scoped threads are joined only when the scope ends, so every registered id is
            // still valid; a finished thread just ignores the signal.
            for v in &backend.vcpus {
                backend.signal(v);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let io = vmm.io.as_ref().expect("set above");
    let mut exit = io.exit().unwrap_or(GuestExit {
        kind: ExitKind::HostError,
        code: 0,
        message: "the TD stopped without an exit".into(),
    });
    if exit.kind == ExitKind::Timeout {
        let where_: Vec<String> = backend
            .vcpus
            .iter()
            .enumerate()
            .map(|(i, v)| format!("vCPU {i} at RIP {:#x}", v.stopped_rip.load(SeqCst)))
            .collect();
        exit.message = format!("{}; {}", exit.message, where_.join(", "));
    }
    let console = io.output.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let boot_ms = first_line
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|t| (t - boot_at).as_secs_f64() * 1e3)
        .unwrap_or(0.0);
    let k = &kvm_model.stats;
    let tsc_hz = (rdtsc() - tsc_start) as f64 / start.elapsed().as_secs_f64();
    let accept_all_s = console.iter().find_map(|l| {
        let rest = l.strip_prefix("accepted all RAM: ")?;
        let cycles: f64 = rest.split(" in ").nth(1)?.split(' ').next()?.parse().ok()?;
        Some(cycles / tsc_hz)
    });
    let tdcalls = counters
        .tdcalls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let tdvmcalls = counters
        .tdvmcalls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut injected = BTreeMap::new();
    for (name, n, on) in [
        (
            "retry",
            vmm.inject.retries.load(Relaxed),
            cfg.inject.retry > 0.0,
        ),
        (
            "busy",
            seam.stats.accept_busy_injected.load(Relaxed),
            cfg.inject.busy > 0.0,
        ),
        (
            "host_invalidate",
            invalidations.load(Relaxed),
            cfg.inject.host_invalidate_hz > 0,
        ),
        (
            "page_size_mismatch",
            seam.stats.accept_size_mismatch.load(Relaxed),
            true,
        ),
    ] {
        if on {
            injected.insert(name.to_string(), n);
        }
    }
    // The audit runs with every vCPU stopped: nothing moves under it.
    let audit = super::audit::audit(&kvm_model, &seam, &private, &shared);
    let memslot_vmas = (private.slot_vmas()? + shared.slot_vmas()?) as u64;
    Ok(RunReport {
        exit,
        vcpus: cfg.vcpus,
        mem_bytes: mem,
        gpaw: gpaw.bits(),
        shared_bit: gpaw.shared_bit(),
        gpaw_non_architectural: !gpaw.is_architectural(),
        boot_ms,
        tdcalls: tdcalls
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        tdvmcalls: tdvmcalls
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        accepted_bytes: seam.stats.accepted_4k.load(Relaxed) * 4096,
        conversions_to_shared: vmm.conversions_to_shared.load(Relaxed),
        conversions_to_private: vmm.conversions_to_private.load(Relaxed),
        ept_violations: k.faults.load(Relaxed),
        zaps: Zaps {
            mirror: k.zapped_mirror.load(Relaxed),
            direct: k.zapped_direct.load(Relaxed),
        },
        kicks: backend.kicks.load(Relaxed),
        ves_injected: counters.ves.load(Relaxed),
        exits_on_mapped_private: counters.exits_on_mapped.load(Relaxed),
        memory_faults: counters.memory_faults.load(Relaxed),
        memory_faults_served: counters.memory_faults_served.load(Relaxed),
        map_gpa_retries_injected: vmm.inject.retries.load(Relaxed),
        host_checks: vmm.host_checks.load(Relaxed),
        host_check_mismatches: vmm.host_check_mismatches.load(Relaxed),
        elapsed_s: start.elapsed().as_secs_f64(),
        console,
        tsc_hz,
        accept_all_s,
        conversions: vmm.conversions(),
        pages_converted: vmm.pages_converted.load(Relaxed),
        implicit_conversions: vmm.implicit_conversions.load(Relaxed),
        demotes: seam.stats.demote.load(Relaxed),
        injected,
        audit,
        memslot_vmas,
        stdout_closed: io.stdout_closed.load(Relaxed),
    })
}

/// The tdxlab HOB's workload fields. A timed workload's duration is handed over in TSC
/// cycles at the rate KVM runs the guest's TSC (KVM_GET_TSC_KHZ).
fn guest_config(cfg: &RunConfig, vcpu0: &kvm_ioctls::VcpuFd) -> TdxlabHob {
    let mut h = TdxlabHob {
        flags: cfg.flags,
        workload: cfg.workload,
        ..Default::default()
    };
    if let Some(st) = &cfg.stress {
        let khz = vcpu0
            .get_tsc_khz()
            .map(u64::from)
            .unwrap_or_else(|_| calibrate_tsc_khz());
        h.param = st.scenario as u32;
        h.seed = st.seed;
        h.ops = st.ops;
        h.duration_tsc = (st.seconds.max(0.0) * khz as f64 * 1e3) as u64;
        h.options = if st.measure {
            shared_abi::stress::options::MEASURE
        } else {
            0
        };
    }
    h
}

/// The host's TSC rate when KVM cannot say: count cycles over 20 ms.
fn calibrate_tsc_khz() -> u64 {
    let (t, c) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(20));
    ((rdtsc() - c) as f64 / t.elapsed().as_secs_f64() / 1e3) as u64
}

/// `--inject host-invalidate-hz=N`: N times a second the host changes a random 2 MiB block
/// of guest memory behind KVM's back (as a page migration or swap would), so KVM zaps its
/// shared leaves there through the mmu notifier (SHARED filter). Contents are kept; the
/// guest's next access faults the pages back in.
fn host_invalidator(
    kvm: &Kvm,
    hz: u32,
    seed: u64,
    stop: &std::sync::atomic::AtomicBool,
    n: &AtomicU64,
) -> Result<(), crate::kvm::KvmBug> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1a7a);
    let blocks = (kvm.config().mem_pages >> 9).max(1);
    let period = Duration::from_secs_f64(1.0 / hz as f64);
    let mut next = Instant::now() + period;
    while !stop.load(SeqCst) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(5)));
            continue;
        }
        next += period;
        let start = rng.random_range(0..blocks) << 9;
        let end = (start + 512).min(kvm.config().mem_pages);
        kvm.kvm_mmu_notifier_invalidate_range(start, end, || {})?;
        n.fetch_add(1, Relaxed);
    }
    Ok(())
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}
