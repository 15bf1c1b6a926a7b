//! Building the TD: QEMU's part of creating a TDX VM from a TDVF image (`hw/i386/tdvf.c`,
//! `target/i386/kvm/tdx.c`) on a stock KVM VM — checks, memory and memslots, the three
//! models, the initial private pages, the vCPUs in the TD start state and the TD HOB.

use super::account::Accounting;
use super::backing::Backing;
use super::config::{RunConfig, MAX_MEM, MAX_TD_HOB, MIN_MEM};
use super::ctx::Counters;
use super::kvm_backend::{KvmBackend, KvmPrivateMem, VcpuCtl};
use super::ram::RamLayout;
use super::td_setup::{build_td_hob, create_vcpu, td_cpuid};
use super::userfaultfd::Uffd;
use crate::kvm::{FaultOutcome, Kvm, KvmConfig};
use crate::seam::measure::CHUNK;
use crate::seam::{TdParams, TdxModule};
use crate::vmm::{GuestIo, Injector, Vmm};
use anyhow::{bail, Context};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{VcpuFd, VmFd};
use shared_abi::layout::hob::TdxlabHob;
use shared_abi::layout::tdvf::{SectionType, TdvfMetadata, ATTR_MR_EXTEND};
use shared_abi::td::attributes::SEPT_VE_DISABLE;
use shared_abi::{Gpa, Gpaw, PageLevel};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The identity-mapped TSS KVM needs below 4 GiB for real-mode emulation on Intel
/// (KVM_SET_TSS_ADDR); three pages just below the firmware window's usual base.
pub(super) const TSS_ADDR: usize = 0xFEFF_D000;

/// A built TD, ready to run.
///
/// Fields drop in declaration order: the VM (and with it its memslots) goes before the
/// backings and the firmware window its memslots point into.
pub struct Td<'c> {
    pub(super) vm: VmFd,
    /// The vCPUs, taken by `run` (each moves into its thread).
    pub(super) vcpus: Vec<VcpuFd>,
    pub(super) cfg: &'c RunConfig,
    pub(super) gpaw: Gpaw,
    /// The built-in guest runs (its RIPs can be named): compared once, here.
    pub(super) builtin: bool,
    /// One seed for every injector: the stress seed (fixed for `run`).
    pub(super) seed: u64,
    pub(super) seam: Arc<TdxModule>,
    pub(super) kvm: Arc<Kvm>,
    pub(super) vmm: Arc<Vmm>,
    pub(super) backend: Arc<KvmBackend>,
    pub(super) counters: Arc<Counters>,
    /// Exits and host costs, in total and per measured window.
    pub(super) account: Arc<Accounting>,
    /// mmu-notifier invalidations injected (`--inject host-invalidate-hz`).
    pub(super) invalidations: AtomicU64,
    pub(super) uffd: Arc<Uffd>,
    pub(super) private: Arc<Backing>,
    pub(super) shared: Arc<Backing>,
    /// A booted Linux kernel's patched TDCALL sites (empty for a TDVF image).
    pub(super) linux: super::linux_boot::LinuxSites,
    _firmware: GuestMemoryMmap,
}

/// Check the configuration against the host and the image, then build the TD.
pub fn build(cfg: &RunConfig) -> anyhow::Result<Td<'_>> {
    if let Some(k) = &cfg.kernel {
        return super::linux_boot::build(cfg, k);
    }
    let meta = TdvfMetadata::parse(&cfg.image)
        .map_err(|e| anyhow::anyhow!("the image is not a loadable TDVF image: {e}"))?;
    check_doorbell(&cfg.image)?;
    let gpaw = check(cfg)?;
    let ram = RamLayout::q35(cfg.mem_bytes);
    let layout = Layout::of(&meta, ram.below_4g, cfg.image.len() as u64)?;
    let kvm = kvm_ioctls::Kvm::new().context("cannot open /dev/kvm")?;
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
    vm.set_tss_address(TSS_ADDR).context("KVM_SET_TSS_ADDR")?;
    // No in-kernel irqchip: the guest takes no interrupts, and without a local APIC in the
    // kernel KVM reports a raw HLT to userspace (`KVM_EXIT_HLT`) instead of halting the vCPU
    // itself, so the host can turn it into the #VE the TDX module raises (`ve::inject_hlt_ve`).
    let mem = Memory::new(cfg)?;
    mem.add_memslots(&vm, gpaw, &ram, layout.image_base)?;
    let mut td = models(cfg, gpaw, vm, mem);
    td.add_initial_pages(&meta)?;
    // vCPUs in the TD start state (created before finalization, as QEMU does).
    let cpuid = td_cpuid(&kvm)?;
    td.set_cpuid_model(&cpuid);
    for i in 0..cfg.vcpus {
        let v = create_vcpu(&td.vm, i, &cpuid, layout.hob.0, gpaw)?;
        td.vcpus.push(v);
    }
    let guest = guest_config(cfg, &td.vcpus[0]);
    let hob = build_td_hob(
        layout.hob.0,
        layout.hob.1,
        &ram.ranges(),
        &layout.accepted,
        &guest,
    )?;
    td.private.write(layout.hob.0, &hob);
    td.seam
        .tdh_mr_finalize()
        .map_err(|s| anyhow::anyhow!("TDH.MR.FINALIZE: {s}"))?;
    Ok(td)
}

/// Only a guest that speaks tdxlab's emulation doorbell can run on the emulated host (on a
/// stock KVM VM there is no TDCALL instruction): say so before booting anything else.
fn check_doorbell(image: &[u8]) -> anyhow::Result<()> {
    use shared_abi::doorbell::DOORBELL_ABI_VERSION;
    match crate::image::doorbell_abi(image) {
        Some(DOORBELL_ABI_VERSION) => Ok(()),
        Some(v) => bail!(
            "the image speaks doorbell ABI {v}; this tdxlab speaks {DOORBELL_ABI_VERSION} (rebuild the guest)"
        ),
        None => bail!(
            "the image has no tdxlab doorbell entry in its OVMF table: only doorbell-aware guests run on the emulated host (boot other TDVF images in QEMU's TDX mode on TDX hardware)"
        ),
    }
}

/// The flags and the host: vCPUs, RAM, a usable KVM, and the TD's GPAW.
pub(super) fn check(cfg: &RunConfig) -> anyhow::Result<Gpaw> {
    if !(1..=super::config::MAX_VCPUS).contains(&cfg.vcpus) {
        bail!(
            "--vcpus {} is out of range (1..={})",
            cfg.vcpus,
            super::config::MAX_VCPUS
        );
    }
    let mem = cfg.mem_bytes;
    if !mem.is_multiple_of(2 << 20) || !(MIN_MEM..=MAX_MEM).contains(&mem) {
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
    let gpaw = crate::caps::td_gpaw(cfg.gpaw, caps.maxphyaddr)?;
    // Both aliases of RAM and the firmware window must lie below the shared bit.
    let end = RamLayout::q35(mem).extent().max(1 << 32);
    if end > gpaw.shared_mask() {
        bail!(
            "GPAW {} puts the shared bit at {:#x}, below the end of RAM and the firmware window ({end:#x})",
            gpaw.bits(),
            gpaw.shared_mask(),
        );
    }
    Ok(gpaw)
}

/// Where the image puts things: the firmware window, the private pages QEMU adds, the HOB.
struct Layout {
    image_base: u64,
    /// TD_HOB and TEMP_MEM: zeroed and added (accepted) private memory inside RAM.
    accepted: Vec<(u64, u64)>,
    /// The TD_HOB section (GPA, size).
    hob: (u64, u64),
}

impl Layout {
    /// QEMU's `tdx_finalize_vm` view of the sections; BFV/CFV are already in the firmware
    /// window (the image is mapped there as a whole).
    fn of(meta: &TdvfMetadata, mem: u64, image_size: u64) -> anyhow::Result<Layout> {
        let image_base = (1u64 << 32) - image_size;
        let (mut accepted, mut hob) = (Vec::new(), None);
        for s in meta.sections() {
            // TdvfMetadata::parse checked that no section wraps; the sum cannot overflow.
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
                    if s.kind() == Some(SectionType::TdHob) && hob.is_none() {
                        if s.memory_size > MAX_TD_HOB {
                            bail!(
                                "the image's TD_HOB section is {} KiB; tdxlab builds a TD HOB of at most {} KiB",
                                s.memory_size >> 10,
                                MAX_TD_HOB >> 10
                            );
                        }
                        hob = Some((s.memory_address, s.memory_size));
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
        let hob = hob.context("the image has no TD_HOB section")?;
        Ok(Layout {
            image_base,
            accepted,
            hob,
        })
    }
}

/// Guest memory: the two aliases' backings (both start unreachable: a page is mapped only
/// once the model has a leaf for it, and every touch of an unmapped page reaches the host
/// through the userfaultfd) and the firmware window holding the image.
pub(super) struct Memory {
    uffd: Arc<Uffd>,
    private: Arc<Backing>,
    shared: Arc<Backing>,
    firmware: GuestMemoryMmap,
    fw_base: GuestAddress,
}

impl Memory {
    pub(super) fn new(cfg: &RunConfig) -> anyhow::Result<Memory> {
        // Each backing spans the GPA space up to the end of RAM (offset = private GPA); the
        // hole below 4 GiB is never in a memslot, so never allocated.
        let mem = RamLayout::q35(cfg.mem_bytes).extent();
        let uffd = Arc::new(crate::caps::open_userfaultfd()?);
        let private = Arc::new(Backing::new("tdxlab-private", mem, uffd.clone())?);
        let shared = Arc::new(Backing::new("tdxlab-shared", mem, uffd.clone())?);
        let size = cfg.image.len();
        let fw_base = GuestAddress((1u64 << 32) - size as u64);
        let firmware = GuestMemoryMmap::<()>::from_ranges(&[(fw_base, size)]).map_err(|e| {
            anyhow::anyhow!("cannot map the {} KiB firmware window: {e}", size >> 10)
        })?;
        vm_memory::Bytes::write_slice(&firmware, &cfg.image, fw_base)
            .map_err(|e| anyhow::anyhow!("copying the image into the firmware window: {e}"))?;
        Ok(Memory {
            uffd,
            private,
            shared,
            firmware,
            fw_base,
        })
    }

    /// Slot 0: the private alias at GPA 0; slot 1: the shared alias at the shared bit;
    /// slot 2: the firmware window below 4 GiB.
    pub(super) fn add_memslots(
        &self,
        vm: &VmFd,
        gpaw: Gpaw,
        ram: &RamLayout,
        image_base: u64,
    ) -> anyhow::Result<()> {
        let fw_addr = vm_memory::GuestMemoryBackend::get_host_address(&self.firmware, self.fw_base)
            .map_err(|e| anyhow::anyhow!("the firmware window: {e}"))?;
        let fw_len = (1u64 << 32) - image_base;
        let mut slots = vec![(image_base, fw_addr as u64, fw_len)];
        for (gpa, len) in ram.ranges() {
            slots.push((gpa, self.private.slot_addr() + gpa, len));
            slots.push((gpaw.shared_mask() | gpa, self.shared.slot_addr() + gpa, len));
        }
        for (i, (gpa, addr, len)) in slots.into_iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: i as u32,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: len,
                userspace_addr: addr,
            };
            // SAFETY: each region is a live mapping of `len` bytes owned by the `Td` that
            // also owns the VM, and `Td` drops the VM first (its field order).
            unsafe { vm.set_user_memory_region(region) }
                .with_context(|| format!("memslot at {gpa:#x}"))?;
        }
        Ok(())
    }
}

/// The TD's three roles over its memory: the TDX module, KVM's MMU and the VMM.
/// Test-only switch (environment, never a flag): `TDXLAB_TEST_TD_ATTRIBUTES=0x…` gives the TD
/// these ATTRIBUTES instead of SEPT_VE_DISABLE, to show the guest refusing a misconfigured TD
/// as Linux does.
pub const TEST_TD_ATTRIBUTES_ENV: &str = "TDXLAB_TEST_TD_ATTRIBUTES";

/// The TD's ATTRIBUTES: SEPT_VE_DISABLE, as QEMU sets it by default (`sept-ve-disable=on`),
/// unless the test switch says otherwise.
fn td_attributes() -> u64 {
    std::env::var(TEST_TD_ATTRIBUTES_ENV)
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or(SEPT_VE_DISABLE)
}

pub(super) fn models(cfg: &RunConfig, gpaw: Gpaw, vm: VmFd, mem: Memory) -> Td<'_> {
    let seed = cfg.stress.as_ref().map_or(0, |s| s.seed);
    let params = TdParams {
        gpaw,
        attributes: td_attributes(),
        num_vcpus: cfg.vcpus,
        // KVM 6.16 `tdx_vm_init` + `setup_tdparams`: the host's present CPUs (QEMU 10.1 sets no
        // KVM_CAP_MAX_VCPUS). Raised to the vCPU count, as tdxlab runs more vCPUs than CPUs
        // where KVM would refuse them (docs/emulation.md).
        max_vcpus: crate::kvm::tdx_vm_init_max_vcpus(
            &std::fs::read_to_string("/sys/devices/system/cpu/present").unwrap_or_default(),
        )
        .max(cfg.vcpus),
    };
    let window = mem.fw_base.0..1 << 32;
    let private = KvmPrivateMem(mem.private.clone(), window.clone());
    let module = TdxModule::new(params, Arc::new(private));
    let seam = Arc::new(module.with_accept_busy(cfg.inject.busy, 0xb05e ^ seed));
    let backend = Arc::new(KvmBackend {
        private: mem.private.clone(),
        shared: mem.shared.clone(),
        vcpus: (0..cfg.vcpus).map(|_| VcpuCtl::default()).collect(),
        kicks: AtomicU64::new(0),
        kick_waits: AtomicU64::new(0),
        hold_out: AtomicBool::new(false),
        fenced: AtomicBool::new(false),
    });
    let mut kc = KvmConfig::td(RamLayout::q35(cfg.mem_bytes).extent() >> 12, gpaw);
    kc.policy = cfg.policy;
    kc.private_max_level = cfg.inject.private_page_size;
    kc.beyond = cfg.beyond;
    kc.firmware = window.start >> 12..window.end >> 12;
    let kvm = Arc::new(Kvm::new(kc, Some(seam.clone()), backend.clone()));
    let retry = Injector::new(cfg.inject.retry, 0x7d78_6c61 ^ seed);
    let counters = Arc::new(Counters::default());
    let account = Arc::new(Accounting::new(counters.clone(), backend.clone()));
    let mut vmm = Vmm::new(kvm.clone(), cfg.strict, retry);
    vmm.marks = Some(account.clone());
    vmm.ram_gfns = Some(
        (RamLayout::q35(cfg.mem_bytes).ranges().into_iter())
            .map(|(gpa, len)| (gpa >> 12, (gpa + len) >> 12))
            .collect(),
    );
    vmm.io = Some(GuestIo::new(cfg.vcpus, cfg.echo).with_platform(cfg.vcpus, cfg.debug_exit));
    vmm.plant_leak.store(cfg.plant_leak, Relaxed);
    vmm.shared_view = Some(mem.shared.clone());
    vmm.map = cfg.map.clone();
    Td {
        vm,
        vcpus: Vec::new(),
        cfg,
        gpaw,
        builtin: cfg.image == crate::GUEST_IMAGE,
        seed,
        seam,
        kvm,
        vmm: Arc::new(vmm),
        backend,
        counters,
        account,
        invalidations: AtomicU64::new(0),
        uffd: mem.uffd,
        private: mem.private,
        shared: mem.shared,
        linux: Default::default(),
        _firmware: mem.firmware,
    }
}

impl Td<'_> {
    /// Give KVM's model the CPUID table the vCPUs get: KVM answers TDVMCALL<Instruction.CPUID>
    /// from the table userspace set (the binding spells the flag as the kernel header does:
    /// SIGNIFCANT).
    pub(super) fn set_cpuid_model(&self, cpuid: &kvm_bindings::CpuId) {
        self.kvm.kvm_set_cpuid(
            (cpuid.as_slice().iter())
                .map(|e| crate::kvm::CpuidEntry {
                    function: e.function,
                    index: e.index,
                    significant_index: e.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
                    regs: [e.eax, e.ebx, e.ecx, e.edx],
                })
                .collect(),
        );
    }

    /// QEMU's KVM_TDX_INIT_MEM_REGION for every section (QEMU never looks at PAGE_AUG), in the
    /// metadata's order (`tdx_init_fw_mem_region`): each page through KVM's fault path, which adds it with
    /// TDH.MEM.PAGE.ADD before the TD is finalized, then — for a section with MR_EXTEND —
    /// its sixteen 256-byte chunks measured with TDH.MR.EXTEND (`tdx_gmem_post_populate`).
    /// The firmware window's pages are what the image holds there; the others start zeroed.
    /// What is measured is what QEMU copies ([`TdvfMetadata::qemu_source`]).
    fn add_initial_pages(&self, meta: &TdvfMetadata) -> anyhow::Result<()> {
        for s in meta.sections() {
            let mut bytes = meta.qemu_source(&s).to_vec();
            bytes.resize(s.memory_size.div_ceil(4096) as usize * 4096, 0);
            for (i, page) in bytes.chunks(4096).enumerate() {
                let p = s.memory_address + (i as u64) * 4096;
                match self.kvm.kvm_mmu_page_fault(Gpa(p), PageLevel::Size4K) {
                    FaultOutcome::Mapped => {}
                    other => bail!("adding private page {p:#x}: {other:?}"),
                }
                if s.attributes & ATTR_MR_EXTEND == 0 {
                    continue;
                }
                for (c, chunk) in page.chunks(CHUNK).enumerate() {
                    let at = Gpa(p + (c * CHUNK) as u64);
                    let chunk = chunk.try_into().expect("pages split into whole chunks");
                    (self.seam.tdh_mr_extend(at, chunk))
                        .map_err(|e| anyhow::anyhow!("TDH.MR.EXTEND at {at}: {e}"))?;
                }
            }
        }
        let failed = self.seam.stats.map_failures.load(Relaxed);
        if failed != 0 {
            bail!("{failed} initial private pages could not be mapped for the guest");
        }
        Ok(())
    }
}

/// The tdxlab HOB's workload fields. A timed workload's duration is handed over in TSC
/// cycles at the rate KVM runs the guest's TSC (KVM_GET_TSC_KHZ).
fn guest_config(cfg: &RunConfig, vcpu0: &VcpuFd) -> TdxlabHob {
    let mut h = TdxlabHob {
        flags: cfg.flags,
        workload: cfg.workload,
        ..Default::default()
    };
    h.ops = cfg.bench_samples;
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
    let (t, c) = (std::time::Instant::now(), super::rdtsc());
    std::thread::sleep(Duration::from_millis(20));
    ((super::rdtsc() - c) as f64 / t.elapsed().as_secs_f64() / 1e3) as u64
}
