//! The emulated TD on KVM (`tdxlab run`): QEMU's part of booting a TDVF image in TDX mode,
//! on a stock KVM VM.
//!
//! Memory: a memfd backs the private alias `[0, mem)`, another the shared alias
//! `[0 | bit 47, mem | bit 47)` (see `backing`), and a mapping of the image the firmware window
//! `[4 GiB − image, 4 GiB)`. The image is loaded as QEMU loads it (td-boot.md §2), the TD HOB
//! built as QEMU builds it plus tdxlab's emulation HOB (`td_setup`), every vCPU started at
//! 0xFFFFFFF0 in the TD start state, and each vCPU thread (`vcpu`) serves its exits: TDCALLs
//! through the doorbell, EPT violations, #VE (`ve`). This file sets the TD up and runs it.

use super::kvm_backend::{on_kick, KvmBackend, KvmPrivateMem, Mapping, VcpuCtl};
use super::td_setup::{build_td_hob, create_vcpu, td_cpuid};
use super::vcpu::{vcpu_loop, Counters, Ctx};
use super::{Backing, GuestExit, GuestIo, Injector, Vmm};
use crate::kvm::{Kvm, KvmConfig, ZapPolicy};
use crate::seam::{TdParams, TdxModule};
use anyhow::{bail, Context};
use kvm_bindings::kvm_userspace_memory_region;
use serde::Serialize;
use shared_abi::layout::tdvf::{SectionType, TdvfMetadata};
use shared_abi::td::attributes::SEPT_VE_DISABLE;
use shared_abi::{Gpa, Gpaw, PageLevel};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
/// Largest RAM the emulated TD takes (all of it below the 32-bit PCI hole for now).
pub const MAX_MEM: u64 = 2 * GIB;
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
    /// Probability that the host cuts a MapGPA short with RETRY (fault injection).
    pub inject_retry: f64,
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
    let gpaw = Gpaw::GPAW_48;
    let image_size = cfg.image.len() as u64;
    let image_base = (1u64 << 32) - image_size;

    let kvm = kvm_ioctls::Kvm::new().context("cannot open /dev/kvm")?;
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
    vm.set_tss_address(TSS_ADDR).context("KVM_SET_TSS_ADDR")?;
    vm.create_irq_chip().context("KVM_CREATE_IRQCHIP")?;

    // Both aliases start unreachable: a page is mapped only once the model has a leaf for it.
    let private = Arc::new(Backing::new("tdxlab-private", mem, false)?);
    let shared = Arc::new(Backing::new("tdxlab-shared", mem, false)?);
    let firmware = Mapping::new(image_size)?;
    firmware.write(0, &cfg.image);
    let slots = [
        (0u64, private.slot_addr(), mem),
        (gpaw.shared_mask(), shared.slot_addr(), mem),
        (image_base, firmware.ptr as u64, image_size),
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
    let seam = Arc::new(TdxModule::new(
        params,
        Arc::new(KvmPrivateMem(private.clone())),
    ));
    let backend = Arc::new(KvmBackend {
        private: private.clone(),
        shared: shared.clone(),
        vcpus: (0..cfg.vcpus).map(|_| VcpuCtl::default()).collect(),
        kicks: AtomicU64::new(0),
    });
    let mut kc = KvmConfig::td(pages);
    kc.policy = cfg.policy;
    let kvm_model = Arc::new(Kvm::new(kc, Some(seam.clone()), backend.clone()));
    let mut vmm = Vmm::new(
        kvm_model.clone(),
        cfg.strict,
        Injector::new(cfg.inject_retry, 0x7d78_6c61),
    );
    vmm.io = Some(GuestIo::new(cfg.vcpus, cfg.echo));
    vmm.plant_leak.store(cfg.plant_leak, Relaxed);
    let vmm = Arc::new(vmm);

    // QEMU's tdx_finalize_vm: TD_HOB and TEMP_MEM are zeroed and added (accepted) private
    // memory inside RAM; BFV/CFV are copied from the image (already in the firmware window).
    let mut accepted: Vec<(u64, u64)> = Vec::new();
    let mut hob_at = None;
    for s in meta.sections() {
        match s.kind() {
            Some(SectionType::TdHob | SectionType::TempMem) => {
                if s.memory_address + s.memory_size > mem {
                    bail!(
                        "--mem {} MiB is too small: the image needs RAM up to {:#x}",
                        mem >> 20,
                        s.memory_address + s.memory_size
                    );
                }
                accepted.push((s.memory_address, s.memory_size));
                if s.kind() == Some(SectionType::TdHob) && hob_at.is_none() {
                    hob_at = Some((s.memory_address, s.memory_size));
                }
            }
            Some(SectionType::Bfv | SectionType::Cfv) if s.memory_address < image_base => {
                bail!(
                    "image section at {:#x} lies outside the firmware window",
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
        private.set_accessible(gpa, size, true);
    }
    let hob = build_td_hob(hob_gpa, hob_size, mem, &accepted, cfg.flags, cfg.workload)?;
    private.write(hob_gpa, &hob);
    seam.tdh_mr_finalize()
        .map_err(|s| anyhow::anyhow!("TDH.MR.FINALIZE: {s}"))?;

    // vCPUs in the TD start state.
    let cpuid = td_cpuid(&kvm)?;
    let mut vcpus = Vec::new();
    for i in 0..cfg.vcpus {
        vcpus.push(create_vcpu(&vm, i, &cpuid, hob_gpa)?);
    }

    vmm_sys_util::signal::register_signal_handler(vmm_sys_util::signal::SIGRTMIN(), on_kick).ok();
    let counters = Counters::default();
    let boot_at = Instant::now();
    let first_line = Arc::new(Mutex::new(None::<Instant>));
    let io = || vmm.io.as_ref().expect("set above");
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (i, vcpu) in vcpus.into_iter().enumerate() {
            let ctx = Ctx {
                firmware: (&firmware, image_base),
                bench: cfg.workload == crate::pack::WORKLOAD_BENCH_DOORBELL,
                seam: &seam,
                vmm: &vmm,
                counters: &counters,
                backend: &backend,
                mem,
            };
            handles.push(s.spawn(move || {
                // SAFETY: pthread_self has no preconditions.
                let me = unsafe { libc::pthread_self() };
                ctx.backend.vcpus[i].thread.store(me as u64, SeqCst);
                vcpu_loop(i as u32, vcpu, &ctx)
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
            if boot_at.elapsed() > cfg.timeout {
                io().finish(GuestExit {
                    kind: "timeout",
                    code: 0,
                    message: format!(
                        "the guest did not finish within {} s",
                        cfg.timeout.as_secs()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Force every vCPU thread out of KVM_RUN (a parked vCPU sits in HLT in the kernel).
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
        kind: "host_error",
        code: 0,
        message: "the TD stopped without an exit".into(),
    });
    if exit.kind == "timeout" {
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
    Ok(RunReport {
        exit,
        vcpus: cfg.vcpus,
        mem_bytes: mem,
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
        map_gpa_retries_injected: vmm.inject.retries.load(Relaxed),
        host_checks: vmm.host_checks.load(Relaxed),
        host_check_mismatches: vmm.host_check_mismatches.load(Relaxed),
        elapsed_s: start.elapsed().as_secs_f64(),
        console,
        tsc_hz,
        accept_all_s,
    })
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}
