//! The emulated TD on KVM (`tdxlab run`): QEMU's part of booting a TDVF image in TDX mode,
//! on a stock KVM VM.
//!
//! Memory: one anonymous mapping backs the private alias `[0, mem)`, another the shared alias
//! `[mem | bit 47)`, a third the firmware window `[4 GiB − image, 4 GiB)`. The image is loaded
//! as QEMU loads it (td-boot.md §2), the TD HOB built as QEMU builds it plus tdxlab's emulation
//! HOB, every vCPU started at 0xFFFFFFF0 in the TD start state, and each TDCALL (the guest's
//! `out` to the doorbell port) served by the TDX module model, KVM's MMU model and the VMM.

use super::{handle_tdcall, Backing, GuestExit, GuestIo, Injector, Vmm};
use crate::kvm::{Alias, Backend, Kvm, KvmConfig, ZapPolicy};
use crate::seam::{Hpa, PrivateMem, TdParams, TdxModule};
use anyhow::{bail, Context};
use kvm_bindings::{
    kvm_msr_entry, kvm_userspace_memory_region, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use serde::Serialize;
use shared_abi::doorbell::{DEFAULT_DOORBELL_PORT, DOORBELL_ABI_VERSION};
use shared_abi::layout::guid::TDXLAB_HOB;
use shared_abi::layout::hob::{
    resource_attr, resource_type, HobWriter, ResourceDescriptor, TdxlabHob,
};
use shared_abi::layout::tdvf::{SectionType, TdvfMetadata};
use shared_abi::layout::Guid;
use shared_abi::td::{
    attributes::SEPT_VE_DISABLE, TDX_SIGNATURE_EBX, TDX_SIGNATURE_ECX, TDX_SIGNATURE_EDX,
};
use shared_abi::tdcall::{decode_rax, TdcallLeaf};
use shared_abi::vmcall::Subfunction;
use shared_abi::{Gpa, Gpaw, PageLevel};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
/// Largest RAM the emulated TD takes (all of it below the 32-bit PCI hole for now).
pub const MAX_MEM: u64 = 2 * GIB;
/// Smallest RAM: the image's TEMP_MEM and TD_HOB sections must fit.
pub const MIN_MEM: u64 = 16 << 20;
const TSS_ADDR: usize = 0xFEFF_D000;
const APIC_BASE: u64 = 0xFEE0_0000;

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

/// An anonymous host mapping backing guest memory.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}
// SAFETY: the mapping is plain memory shared with the guest; all host access is through
// raw pointers by design (the guest writes it concurrently anyway).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(len: u64) -> anyhow::Result<Mapping> {
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
    fn write(&self, off: u64, bytes: &[u8]) {
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
struct KvmPrivateMem(Arc<Backing>);

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
struct VcpuCtl {
    /// Inside KVM_RUN (guest mode).
    in_run: AtomicBool,
    /// KVM_RUN returns so far.
    exits: AtomicU64,
    /// The thread, for signals (0 until it registered).
    thread: AtomicU64,
    /// RIP when the vCPU was stopped from outside (for timeout diagnostics).
    stopped_rip: AtomicU64,
}

/// The KVM backend of the MMU model.
struct KvmBackend {
    private: Arc<Backing>,
    shared: Arc<Backing>,
    vcpus: Vec<VcpuCtl>,
    kicks: AtomicU64,
}

impl KvmBackend {
    fn backing(&self, alias: Alias) -> &Backing {
        match alias {
            Alias::Private => &self.private,
            Alias::Shared => &self.shared,
        }
    }
    fn signal(&self, v: &VcpuCtl) {
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

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

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
    let mut vmm = Vmm::new(kvm_model.clone(), cfg.strict, Injector::none());
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
        tdcalls,
        tdvmcalls,
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

#[derive(Default)]
struct Counters {
    ves: AtomicU64,
    tdcalls: Mutex<BTreeMap<String, u64>>,
    tdvmcalls: Mutex<BTreeMap<String, u64>>,
}

/// QEMU's TD HOB (td-boot.md §3) plus tdxlab's emulation HOB.
fn build_td_hob(
    base: u64,
    size: u64,
    mem: u64,
    accepted: &[(u64, u64)],
    flags: u32,
    workload: u32,
) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut w = HobWriter::new(&mut buf, base)?;
    let mut ranges: Vec<(u64, u64, u32)> = Vec::new();
    let mut acc = accepted.to_vec();
    acc.sort();
    let mut at = 0;
    for (s, l) in acc {
        if s > at {
            ranges.push((at, s - at, resource_type::MEMORY_UNACCEPTED));
        }
        ranges.push((s, l, resource_type::SYSTEM_MEMORY));
        at = s + l;
    }
    if at < mem {
        ranges.push((at, mem - at, resource_type::MEMORY_UNACCEPTED));
    }
    for (start, length, ty) in ranges {
        w.resource(&ResourceDescriptor {
            owner: Guid([0; 16]),
            resource_type: ty,
            attributes: resource_attr::RAM,
            start,
            length,
        })?;
    }
    let tdxlab = TdxlabHob {
        version: DOORBELL_ABI_VERSION,
        doorbell_port: DEFAULT_DOORBELL_PORT,
        flags,
        workload,
        param: 0,
        seed: 0,
    };
    w.guid_extension(TDXLAB_HOB, &tdxlab.encode())?;
    w.finish()?;
    Ok(buf)
}

/// KVM's supported CPUID plus the TDX signature leaf 0x21 and the hypervisor and x2APIC bits.
fn td_cpuid(kvm: &kvm_ioctls::Kvm) -> anyhow::Result<CpuId> {
    let base = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .context("KVM_GET_SUPPORTED_CPUID")?;
    let mut entries: Vec<_> = base.as_slice().to_vec();
    for e in entries.iter_mut() {
        match e.function {
            0 => e.eax = e.eax.max(0x21),
            1 => e.ecx |= 1 << 31 | 1 << 21,
            _ => {}
        }
    }
    entries.retain(|e| e.function != 0x21);
    entries.push(kvm_bindings::kvm_cpuid_entry2 {
        function: 0x21,
        index: 0,
        flags: 0,
        eax: 0,
        ebx: TDX_SIGNATURE_EBX,
        ecx: TDX_SIGNATURE_ECX,
        edx: TDX_SIGNATURE_EDX,
        ..Default::default()
    });
    CpuId::from_entries(&entries).map_err(|e| anyhow::anyhow!("CPUID table: {e:?}"))
}

/// A vCPU in the TD start state (td-boot.md §4).
fn create_vcpu(vm: &VmFd, index: u32, cpuid: &CpuId, hob: u64) -> anyhow::Result<VcpuFd> {
    let vcpu = vm
        .create_vcpu(index as u64)
        .with_context(|| format!("KVM_CREATE_VCPU {index}"))?;
    vcpu.set_cpuid2(cpuid).context("KVM_SET_CPUID2")?;
    let mut s = vcpu.get_sregs().context("KVM_GET_SREGS")?;
    let code = kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector: 0x08,
        type_: 0xB,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_bindings::kvm_segment {
        selector: 0x10,
        type_: 0x3,
        ..code
    };
    s.cs = code;
    (s.ds, s.es, s.fs, s.gs, s.ss) = (data, data, data, data, data);
    s.tr = kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xFFFF,
        selector: 0,
        type_: 0xB,
        present: 1,
        s: 0,
        db: 0,
        g: 0,
        ..code
    };
    s.cr0 = 0x21;
    s.cr4 = 0x40;
    s.efer = 0x901;
    vcpu.set_sregs(&s).context("KVM_SET_SREGS")?;
    let regs = kvm_bindings::kvm_regs {
        rip: 0xFFFF_FFF0,
        rflags: 0x2,
        rbx: 48,
        rcx: hob,
        r8: hob,
        rsi: index as u64,
        rdx: core::arch::x86_64::__cpuid(1).eax as u64,
        ..Default::default()
    };
    vcpu.set_regs(&regs).context("KVM_SET_REGS")?;
    let apic = APIC_BASE | 0xC00 | if index == 0 { 0x100 } else { 0 };
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: 0x1B,
        data: apic,
        ..Default::default()
    }])
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    vcpu.set_msrs(&msrs).context("KVM_SET_MSRS (x2APIC base)")?;
    // A TD has no INIT/SIPI: every vCPU is runnable at once (KVM would park APs until SIPI).
    let runnable = kvm_bindings::kvm_mp_state {
        mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
    };
    vcpu.set_mp_state(runnable).context("KVM_SET_MP_STATE")?;
    Ok(vcpu)
}

/// What a vCPU thread works with.
struct Ctx<'a> {
    /// The firmware window's mapping and where it starts.
    firmware: (&'a Mapping, u64),
    /// The doorbell benchmark runs: the bare bench port is answered by re-entering.
    bench: bool,
    seam: &'a TdxModule,
    vmm: &'a Vmm,
    counters: &'a Counters,
    backend: &'a KvmBackend,
    mem: u64,
}

fn vcpu_loop(index: u32, mut vcpu: VcpuFd, ctx: &Ctx) {
    let io = ctx.vmm.io.as_ref().expect("machine VMMs have I/O");
    let fatal = |kind: &'static str, message: String| {
        io.finish(GuestExit {
            kind,
            code: 0,
            message,
        })
    };
    let ctl = &ctx.backend.vcpus[index as usize];
    while !io.stop.load(SeqCst) {
        // Each KVM_RUN is a TD entry in the current epoch; returning is a TD exit. Order
        // matters, as with KVM's vcpu->mode: be visibly in guest mode before joining the
        // epoch, so a kicker right after TDH.MEM.TRACK either waits for this vCPU or this vCPU
        // joins the new epoch; and leave the epoch before the kicker may stop waiting.
        ctl.in_run.store(true, SeqCst);
        ctx.seam.td_vcpu_enter(index);
        let result = vcpu.run();
        ctx.seam.td_vcpu_exit(index);
        ctl.exits.fetch_add(1, SeqCst);
        ctl.in_run.store(false, SeqCst);
        let exit = match result {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                if io.stop.load(SeqCst) {
                    ctl.stopped_rip
                        .store(vcpu.get_regs().map(|r| r.rip).unwrap_or(0), SeqCst);
                }
                continue;
            }
            Err(e) => return fatal("host_error", format!("vCPU {index}: KVM_RUN failed: {e}")),
        };
        // The exit borrows the vCPU's run area; anything that needs RIP is reported after.
        let mut rung = false;
        let mut raw_io: Option<(u16, u8, bool)> = None;
        let outcome: Option<(&'static str, String)> = match exit {
            VcpuExit::IoOut(DEFAULT_DOORBELL_PORT, _) => {
                rung = true;
                None
            }
            VcpuExit::IoOut(crate::pack::BENCH_BARE_PORT, _) if ctx.bench => None,
            VcpuExit::IoOut(port, data) => {
                raw_io = Some((port, data.len() as u8, false));
                None
            }
            VcpuExit::IoIn(port, data) => {
                raw_io = Some((port, data.len() as u8, true));
                None
            }
            VcpuExit::MmioRead(gpa, data) => ept_violation(index, gpa, Access::Read(data), ctx)
                .err()
                .map(|e| ("fatal", e)),
            VcpuExit::MmioWrite(gpa, data) => ept_violation(index, gpa, Access::Write(data), ctx)
                .err()
                .map(|e| ("fatal", e)),
            VcpuExit::Hlt => None,
            VcpuExit::Shutdown => Some(("triple_fault", format!("vCPU {index} triple-faulted"))),
            VcpuExit::FailEntry(reason, cpu) => Some((
                "host_error",
                format!("vCPU {index}: VM entry failed (reason {reason:#x}, cpu {cpu})"),
            )),
            VcpuExit::InternalError => {
                Some(("host_error", format!("vCPU {index}: KVM internal error")))
            }
            other => Some((
                "host_error",
                format!("vCPU {index}: unexpected exit {other:?}"),
            )),
        };
        let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
        if let Some((kind, message)) = outcome {
            return fatal(kind, format!("{message} (RIP {rip:#x})"));
        }
        if let Some((port, size, is_in)) = raw_io {
            let r = if is_in {
                inject_in_ve(index, &mut vcpu, ctx, port, size)
            } else {
                inject_io_ve(index, &vcpu, ctx, port, size, false)
            };
            if let Err(e) = r {
                return fatal("fatal", e);
            }
        }
        if rung {
            if let Err(e) = doorbell(index, &vcpu, ctx) {
                return fatal("fatal", e);
            }
        }
    }
}

/// Raw port I/O in a TD is not executed: the TDX module turns it into a #VE (exit reason 30,
/// the I/O exit qualification, the instruction length) for the guest to serve through
/// TDVMCALL<Instruction.IO>. KVM reports an OUT exit with RIP already past the instruction, so
/// decode its length backwards (IN/OUT with DX: 1 byte; with imm8: 2; 0x66 prefix: +1),
/// put RIP back on it (which also cancels KVM's completion of an IN), and inject vector 20.
fn inject_io_ve(
    index: u32,
    vcpu: &VcpuFd,
    ctx: &Ctx,
    port: u16,
    size: u8,
    is_in: bool,
) -> Result<(), String> {
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    let after = regs.rip;
    let mut code = [0u8; 3];
    read_guest(ctx, after.wrapping_sub(3), &mut code);
    let wide = size > 1;
    let dx_op = match (is_in, wide) {
        (true, false) => 0xEC,
        (true, true) => 0xED,
        (false, false) => 0xEE,
        (false, true) => 0xEF,
    };
    let len: usize = if code[2] == dx_op && regs.rdx as u16 == port {
        1
    } else if code[1] == dx_op - 8 && code[2] as u16 == port {
        2
    } else {
        return Err(format!("vCPU {index}: raw port I/O to {port:#x} at RIP {after:#x} with an instruction the host cannot decode"));
    };
    let prefixed = size == 2 && code[3 - len - 1] == 0x66;
    let len = (len + prefixed as usize) as u64;
    regs.rip = after - len;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    deliver_io_ve(index, vcpu, ctx, (port, size, is_in), len)
}

/// A raw IN: KVM reports it with RIP still on the instruction and completes it on the next
/// KVM_RUN (writing the exit's data into AL/AX/EAX and skipping it), so the #VE can only be
/// delivered after it. Feed KVM the guest's own RAX bytes (an IN that changes nothing), and
/// inject the #VE with `instr_len` 0: the guest's handler does the IN through TDVMCALL and
/// resumes where it is. (Real TDX reports the IN's length with RIP on it; the handler is the
/// same code either way.)
fn inject_in_ve(
    index: u32,
    vcpu: &mut VcpuFd,
    ctx: &Ctx,
    port: u16,
    size: u8,
) -> Result<(), String> {
    let rax = vcpu
        .get_regs()
        .map_err(|e| format!("KVM_GET_REGS: {e}"))?
        .rax;
    let run = vcpu.get_kvm_run();
    // SAFETY: for KVM_EXIT_IO the `io` member of the exit union is valid; its data lives at
    // data_offset inside the vCPU's kvm_run mapping, `size` bytes long.
    unsafe {
        let off = run.__bindgen_anon_1.io.data_offset as usize;
        let base = run as *mut kvm_bindings::kvm_run as *mut u8;
        std::ptr::copy_nonoverlapping(rax.to_le_bytes().as_ptr(), base.add(off), size as usize);
    }
    deliver_io_ve(index, vcpu, ctx, (port, size, true), 0)
}

/// What the TDX module does for an instruction it refuses: fill this vCPU's VEINFO (exit
/// reason 30 with the I/O qualification and `instr_len`) and inject vector 20.
fn deliver_io_ve(
    index: u32,
    vcpu: &VcpuFd,
    ctx: &Ctx,
    (port, size, is_in): (u16, u8, bool),
    instr_len: u64,
) -> Result<(), String> {
    let ve = shared_abi::ve::VeInfo {
        exit_reason: shared_abi::ve::exit_reason::IO,
        exit_qualification: shared_abi::ve::IoQualification {
            size,
            is_in,
            is_string: false,
            port,
        }
        .encode(),
        gla: 0,
        gpa: 0,
        instr_len: instr_len as u32,
        instr_info: 0,
    };
    ctx.seam.inject_ve(index, ve);
    let mut ev = vcpu
        .get_vcpu_events()
        .map_err(|e| format!("KVM_GET_VCPU_EVENTS: {e}"))?;
    ev.exception.injected = 1;
    ev.exception.nr = shared_abi::ve::X86_TRAP_VE;
    ev.exception.has_error_code = 0;
    ev.exception.error_code = 0;
    vcpu.set_vcpu_events(&ev)
        .map_err(|e| format!("KVM_SET_VCPU_EVENTS: {e}"))?;
    ctx.counters.ves.fetch_add(1, Relaxed);
    Ok(())
}

/// Read guest memory by guest-physical address (firmware window or private RAM).
fn read_guest(ctx: &Ctx, gpa: u64, out: &mut [u8]) {
    let (fw, base) = ctx.firmware;
    if gpa >= base && gpa + out.len() as u64 <= 1 << 32 {
        // SAFETY: inside the firmware mapping (bounds checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                fw.ptr.add((gpa - base) as usize),
                out.as_mut_ptr(),
                out.len(),
            )
        };
    } else if gpa + (out.len() as u64) <= ctx.mem {
        ctx.backend.private.read(gpa, out);
    }
}

/// The guest access that left KVM_RUN as an MMIO exit.
enum Access<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// A guest access to a page the host keeps unmapped: DESIGN.md's EPT violation. Resolve it
/// through KVM's fault path (and the VMM's implicit conversion unless --strict), then complete
/// the access from the backing; KVM finishes the instruction on the next KVM_RUN.
fn ept_violation(index: u32, gpa: u64, access: Access, ctx: &Ctx) -> Result<(), String> {
    let gpaw = Gpaw::GPAW_48;
    let shared = gpaw.is_shared(Gpa(gpa));
    let pgpa = gpaw.to_private(Gpa(gpa)).0;
    if pgpa >= ctx.mem || gpa >> 48 != 0 {
        return Err(format!("vCPU {index}: access to unbacked gpa {gpa:#x}"));
    }
    let since = Instant::now();
    loop {
        if since.elapsed() > super::FAULT_PROGRESS_TIMEOUT {
            return Err(format!(
                "vCPU {index}: gpa {gpa:#x} still faulting after {} s",
                super::FAULT_PROGRESS_TIMEOUT.as_secs()
            ));
        }
        if !shared {
            match ctx.seam.leaf_state(Gpa(pgpa)) {
                Some((shared_abi::sept::SeptState::Mapped, _)) => break,
                Some((state, _)) if state != shared_abi::sept::SeptState::Blocked => {
                    return Err(format!(
                        "vCPU {index}: access before accept: private gpa {pgpa:#x} is {}",
                        state.name()
                    ));
                }
                _ => {}
            }
        }
        let fault = ctx
            .vmm
            .kvm()
            .kvm_mmu_page_fault(Gpa(gpa), PageLevel::Size4K);
        match fault {
            crate::kvm::FaultOutcome::Mapped if shared => break,
            crate::kvm::FaultOutcome::Mapped | crate::kvm::FaultOutcome::Retry => {}
            crate::kvm::FaultOutcome::MemoryFault { .. } => {
                super::resolve_ept_violation(ctx.vmm, index, Gpa(gpa), PageLevel::Size4K)
                    .map_err(|e| e.to_string())?;
            }
            crate::kvm::FaultOutcome::Error(e) => {
                return Err(format!("vCPU {index}: EPT violation at {gpa:#x}: {e}"))
            }
        }
    }
    let backing = if shared {
        &ctx.backend.shared
    } else {
        &ctx.backend.private
    };
    match access {
        Access::Read(data) => backing.read(pgpa, data),
        Access::Write(data) => backing.write(pgpa, data),
    }
    Ok(())
}

/// The emulation doorbell: every TDCALL register in place, RDX carried in RBP.
fn doorbell(index: u32, vcpu: &VcpuFd, ctx: &Ctx) -> Result<(), String> {
    let (seam, vmm, counters) = (ctx.seam, ctx.vmm, ctx.counters);
    let mut k = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    let mut r = tdcall::Regs {
        rax: k.rax,
        rcx: k.rcx,
        rdx: k.rbp,
        rbx: k.rbx,
        rsi: k.rsi,
        rdi: k.rdi,
        r8: k.r8,
        r9: k.r9,
        r10: k.r10,
        r11: k.r11,
        r12: k.r12,
        r13: k.r13,
        r14: k.r14,
        r15: k.r15,
    };
    let name = decode_rax(r.rax)
        .and_then(|(l, _)| TdcallLeaf::from_number(l))
        .map(|l| l.name())
        .unwrap_or("unknown");
    *counters
        .tdcalls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.into())
        .or_default() += 1;
    if r.rax == 0 {
        let sub = Subfunction::from_number(r.r11)
            .map(|s| s.name())
            .unwrap_or("unknown");
        *counters
            .tdvmcalls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sub.into())
            .or_default() += 1;
    }
    handle_tdcall(seam, vmm, index, &mut r).map_err(|e| e.to_string())?;
    (k.rax, k.rcx, k.rbp, k.rbx, k.rsi, k.rdi) = (r.rax, r.rcx, r.rdx, r.rbx, r.rsi, r.rdi);
    (k.r8, k.r9, k.r10, k.r11, k.r12, k.r13, k.r14, k.r15) =
        (r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15);
    vcpu.set_regs(&k).map_err(|e| format!("KVM_SET_REGS: {e}"))
}
