//! Booting a Linux kernel as the TD (`tdxlab run --kernel`): what QEMU's direct kernel boot
//! and the TDX module's initial memory would give a TD that has no TDVF firmware.
//!
//! - Memory: every RAM page is initial TD memory (TDH.MEM.PAGE.ADD before TDH.MR.FINALIZE),
//!   private and accepted. Without EFI, Linux knows no unaccepted memory
//!   (`init_unaccepted_memory` reads only an EFI table), so nothing may be left pending.
//! - The kernel: the vmlinux's PT_LOAD segments at their physical addresses (rust-vmm's
//!   `linux-loader`), MR.EXTENDed as Linux shipped them, then each TDCALL site patched
//!   (`linux::tdcall_sites`) so a stock KVM exits on it.
//! - The PVH boot protocol: `hvm_start_info` with the memory map, the command line and the
//!   initrd as module 0 (linux-loader's `PvhBootConfigurator`), EBX pointing at it, entry at
//!   `XEN_ELFNOTE_PHYS32_ENTRY` in 32-bit protected mode with paging off — the TD start
//!   state already is that mode.
//! - The platform: KVM's in-kernel local APIC (split irqchip, as QEMU's TDX machine), the
//!   application processors waiting for INIT/SIPI as KVM creates them.

use super::build::{check, models, Memory, Td, TSS_ADDR};
use super::config::{LinuxKernel, RunConfig};
use super::ram::RamLayout;
use super::td_setup::{create_vcpu, linux_cpuid};
use crate::kvm::FaultOutcome;
use crate::linux::{tdcall_sites, vmlinux::Vmlinux};
use anyhow::{bail, Context};
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{elf::Elf, KernelLoader, PvhBootCapability};
use shared_abi::{Gpa, PageLevel};
use vm_memory::{Bytes, GuestAddress};

/// `hvm_start_info.magic` (Xen's include/public/arch-x86/hvm/start_info.h).
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// Where the boot structures go: start_info, the module list, the memory map, the command
/// line — low pages Linux's PVH entry reads before it relocates anything.
const START_INFO: u64 = 0x6000;
const MODLIST: u64 = 0x6800;
const MEMMAP: u64 = 0x7000;
const CMDLINE: u64 = 0x8000;
/// The longest command line (one page, less its NUL).
pub const MAX_CMDLINE: usize = 4095;
/// E820 types (`E820_TYPE_RAM`, `E820_TYPE_RESERVED`, `E820_TYPE_ACPI`).
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const E820_ACPI: u32 = 3;
/// The ACPI tables' region at the top of RAM below 4 GiB: typed ACPI in the memory map, so
/// Linux maps it private (it maps *reserved* ranges shared under TDX, `ioremap`'s
/// `__ioremap_check_encrypted`); the RSDP in its last page.
const ACPI_REGION: u64 = 256 << 10;
/// The legacy VGA/BIOS hole Linux's PVH code marks reserved itself.
const ISA_HOLE: (u64, u64) = (0xA_0000, 0x10_0000);
const PAGE: u64 = 4096;

/// What the host must know of a booted kernel: where its patched TDCALLs are.
#[derive(Clone, Debug, Default)]
pub struct LinuxSites {
    /// The virtual addresses of the patched sites (RIP on the OUT is site + 2, after it
    /// site + 4).
    pub vaddrs: Vec<u64>,
    /// The TD's shared bit, as a mask (MMIO through the shared alias).
    pub shared_mask: u64,
}

impl LinuxSites {
    /// Whether an OUT to the patch port at `rip` is one of the patched TDCALLs.
    pub fn is_patched_out(&self, rip: u64) -> bool {
        self.vaddrs
            .iter()
            .any(|&s| rip == s + 2 || rip == s + tdcall_sites::PATCH.len() as u64)
    }
}

/// Build a TD that boots `k`.
pub(super) fn build<'c>(cfg: &'c RunConfig, k: &LinuxKernel) -> anyhow::Result<Td<'c>> {
    let gpaw = check(cfg)?;
    let vmlinux = Vmlinux::parse(&k.vmlinux).context("the kernel")?;
    let sites = tdcall_sites::find(&vmlinux).context("the kernel's TDCALLs")?;
    if sites.is_empty() {
        bail!("the kernel has no TDCALL: it was built without CONFIG_INTEL_TDX_GUEST");
    }
    let pvh = vmlinux
        .pvh_entry
        .context("the kernel has no PVH entry (XEN_ELFNOTE_PHYS32_ENTRY; CONFIG_PVH)")?;
    let ram = RamLayout::q35(cfg.mem_bytes);
    let kvm = kvm_ioctls::Kvm::new().context("cannot open /dev/kvm")?;
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
    vm.set_tss_address(TSS_ADDR).context("KVM_SET_TSS_ADDR")?;
    enable_split_irqchip(&vm)?;
    let mem = Memory::new(cfg)?;
    let image_base = (1u64 << 32) - cfg.image.len() as u64;
    mem.add_memslots(&vm, gpaw, &ram, image_base)?;
    let mut td = models(cfg, gpaw, vm, mem);
    td.builtin = false;
    td.linux = LinuxSites {
        vaddrs: sites.iter().map(|s| s.vaddr).collect(),
        shared_mask: gpaw.shared_mask(),
    };
    add_all_ram(&td, &ram)?;
    load_kernel(&td, &k.vmlinux, &vmlinux, &sites)?;
    let initrd = load_initrd(&td, &ram, k.initrd.as_deref())?;
    let rsdp = write_acpi(&td, &ram, cfg.vcpus)?;
    let cpuid = linux_cpuid(&kvm)?;
    td.set_cpuid_model(&cpuid);
    for i in 0..cfg.vcpus {
        let v = create_vcpu(&td.vm, i, &cpuid, 0, gpaw)?;
        if i == 0 {
            let mut r = v.get_regs().context("KVM_GET_REGS")?;
            (r.rip, r.rbx) = (pvh, START_INFO);
            (r.rcx, r.r8, r.rsi, r.rdx) = (0, 0, 0, 0);
            v.set_regs(&r).context("KVM_SET_REGS (PVH entry)")?;
        } else {
            // An application processor waits for INIT/SIPI, as KVM creates it with an
            // in-kernel local APIC (Linux brings it up through its real-mode trampoline).
            let wait = kvm_bindings::kvm_mp_state {
                mp_state: kvm_bindings::KVM_MP_STATE_UNINITIALIZED,
            };
            v.set_mp_state(wait).context("KVM_SET_MP_STATE")?;
        }
        td.vcpus.push(v);
    }
    let khz = td.vcpus[0].get_tsc_khz().context("KVM_GET_TSC_KHZ")?;
    write_start_info(&td, &ram, &with_tsc_khz(&k.cmdline, khz), initrd, rsdp)?;
    td.seam
        .tdh_mr_finalize()
        .map_err(|s| anyhow::anyhow!("TDH.MR.FINALIZE: {s}"))?;
    Ok(td)
}

/// KVM_CAP_SPLIT_IRQCHIP: the local APICs in KVM, the I/O APIC and PIC (none here) in
/// userspace — QEMU's `kernel-irqchip=split`, which its TDX machine requires.
fn enable_split_irqchip(vm: &kvm_ioctls::VmFd) -> anyhow::Result<()> {
    let mut cap = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
        ..Default::default()
    };
    cap.args[0] = 24; // IOAPIC pins, as QEMU's
    vm.enable_cap(&cap)
        .context("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)")
}

/// The command line with `tsc_early_khz=` KVM's TSC rate appended unless it has one: the
/// platform has no PIT to calibrate the TSC against, and Linux reads the rate from CPUID
/// (leaf 0x15) only on Intel — a TD on real hardware always has it there.
fn with_tsc_khz(cmdline: &str, khz: u32) -> String {
    if cmdline
        .split_whitespace()
        .any(|w| w.starts_with("tsc_early_khz="))
    {
        cmdline.to_string()
    } else {
        format!("{cmdline} tsc_early_khz={khz}")
            .trim_start()
            .to_string()
    }
}

/// TDH.MEM.PAGE.ADD of every RAM page through KVM's fault path (the TD is not finalized, so
/// each fault adds its page): all of RAM is private and accepted at the first instruction.
fn add_all_ram(td: &Td, ram: &RamLayout) -> anyhow::Result<()> {
    for (gpa, len) in ram.ranges() {
        for p in (gpa..gpa + len).step_by(PAGE as usize) {
            match td.kvm.kvm_mmu_page_fault(Gpa(p), PageLevel::Size4K) {
                FaultOutcome::Mapped => {}
                other => bail!("adding private page {p:#x}: {other:?}"),
            }
        }
    }
    Ok(())
}

/// The vmlinux into private memory at its physical addresses, each loaded page MR.EXTENDed
/// with the bytes Linux shipped, then the TDCALL sites patched.
fn load_kernel(
    td: &Td,
    file: &[u8],
    k: &Vmlinux,
    sites: &[tdcall_sites::Site],
) -> anyhow::Result<()> {
    let mem = td.private.guest_memory();
    let loaded = Elf::load(mem, None, &mut std::io::Cursor::new(file), None)
        .map_err(|e| anyhow::anyhow!("loading the vmlinux: {e}"))?;
    if !matches!(loaded.pvh_boot_cap, PvhBootCapability::PvhEntryPresent(_)) {
        bail!("linux-loader found no PVH entry in the vmlinux");
    }
    for s in &k.segments {
        let first = s.paddr & !(PAGE - 1);
        for page in (first..s.paddr + s.filesz).step_by(PAGE as usize) {
            for c in 0..PAGE / crate::seam::measure::CHUNK as u64 {
                let at = page + c * crate::seam::measure::CHUNK as u64;
                let mut chunk = [0u8; crate::seam::measure::CHUNK];
                mem.read_slice(&mut chunk, GuestAddress(at))
                    .map_err(|e| anyhow::anyhow!("reading the kernel at {at:#x}: {e}"))?;
                td.seam
                    .tdh_mr_extend(Gpa(at), &chunk)
                    .map_err(|e| anyhow::anyhow!("TDH.MR.EXTEND at {at:#x}: {e}"))?;
            }
        }
    }
    for s in sites {
        mem.write_slice(&tdcall_sites::PATCH, GuestAddress(s.paddr))
            .map_err(|e| anyhow::anyhow!("patching the TDCALL at {:#x}: {e}", s.paddr))?;
    }
    Ok(())
}

/// The initrd at the top of RAM below 4 GiB, page-aligned; its (GPA, size).
fn load_initrd(
    td: &Td,
    ram: &RamLayout,
    initrd: Option<&[u8]>,
) -> anyhow::Result<Option<(u64, u64)>> {
    let Some(bytes) = initrd else { return Ok(None) };
    let size = bytes.len() as u64;
    let top = acpi_region(ram).0.min(1 << 31);
    let at = top
        .checked_sub(size.div_ceil(PAGE) * PAGE)
        .filter(|a| *a >= 64 << 20);
    let at = at.context("the initrd does not fit in RAM above the kernel: give more --mem")?;
    td.private
        .guest_memory()
        .write_slice(bytes, GuestAddress(at))
        .map_err(|e| anyhow::anyhow!("writing the initrd: {e}"))?;
    Ok(Some((at, size)))
}

/// The PVH boot structures: start_info, the initrd as module 0, the E820 map, the command
/// line, the RSDP's address.
fn write_start_info(
    td: &Td,
    ram: &RamLayout,
    cmdline: &str,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> anyhow::Result<()> {
    if cmdline.len() > MAX_CMDLINE {
        bail!(
            "--append is {} bytes; the most is {MAX_CMDLINE}",
            cmdline.len()
        );
    }
    let mem = td.private.guest_memory();
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    mem.write_slice(&line, GuestAddress(CMDLINE))
        .map_err(|e| anyhow::anyhow!("writing the command line: {e}"))?;
    let memmap = e820(ram);
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        nr_modules: u32::from(initrd.is_some()),
        modlist_paddr: MODLIST,
        cmdline_paddr: CMDLINE,
        rsdp_paddr: rsdp,
        memmap_paddr: MEMMAP,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&info, GuestAddress(START_INFO));
    params.set_sections(&memmap, GuestAddress(MEMMAP));
    if let Some((paddr, size)) = initrd {
        let m = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        params.set_modules(&[m], GuestAddress(MODLIST));
    }
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| anyhow::anyhow!("writing the PVH start info: {e}"))
}

/// Where the ACPI tables go: the last [`ACPI_REGION`] bytes of RAM below 4 GiB.
fn acpi_region(ram: &RamLayout) -> (u64, u64) {
    (ram.below_4g - ACPI_REGION, ram.below_4g)
}

/// QEMU's q35 ACPI tables (`vmm::build_q35`: FADT with the PM block Linux powers off
/// through, MADT with a local APIC per vCPU and the I/O APIC), linked by the host for their
/// place in private memory as firmware would link them. Returns the RSDP's address.
fn write_acpi(td: &Td, ram: &RamLayout, vcpus: u32) -> anyhow::Result<u64> {
    let (start, end) = acpi_region(ram);
    let rsdp_at = end - PAGE;
    let blobs = crate::vmm::build_q35(vcpus);
    if blobs.tables.len() as u64 > rsdp_at - start {
        bail!("QEMU's ACPI tables need {} bytes", blobs.tables.len());
    }
    let linked = crate::vmm::link_acpi(&blobs, rsdp_at, start)?;
    let mem = td.private.guest_memory();
    mem.write_slice(&linked.tables, GuestAddress(start))
        .and_then(|()| mem.write_slice(&linked.rsdp, GuestAddress(rsdp_at)))
        .map_err(|e| anyhow::anyhow!("writing the ACPI tables: {e}"))?;
    Ok(rsdp_at)
}

/// The E820 map: RAM around the legacy hole (reserved), as QEMU's q35 reports it, and the
/// ACPI tables' region.
fn e820(ram: &RamLayout) -> Vec<hvm_memmap_table_entry> {
    let entry = |addr: u64, size: u64, type_: u32| hvm_memmap_table_entry {
        addr,
        size,
        type_,
        reserved: 0,
    };
    let mut map = vec![
        entry(0, ISA_HOLE.0, E820_RAM),
        entry(ISA_HOLE.0, ISA_HOLE.1 - ISA_HOLE.0, E820_RESERVED),
    ];
    let acpi = acpi_region(ram);
    for (gpa, len) in ram.ranges() {
        let start = gpa.max(ISA_HOLE.1);
        let end = if gpa + len == acpi.1 {
            acpi.0
        } else {
            gpa + len
        };
        if start < end {
            map.push(entry(start, end - start, E820_RAM));
        }
    }
    map.push(entry(acpi.0, acpi.1 - acpi.0, E820_ACPI));
    map.sort_by_key(|e| e.addr);
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_map_is_ram_around_the_legacy_hole_and_the_acpi_tables() {
        let ram = RamLayout::q35(256 << 20);
        let m: Vec<(u64, u64, u32)> = e820(&ram)
            .iter()
            .map(|e| (e.addr, e.size, e.type_))
            .collect();
        assert_eq!(
            m,
            [
                (0, 0xA_0000, E820_RAM),
                (0xA_0000, 0x6_0000, E820_RESERVED),
                (0x10_0000, (256 << 20) - 0x10_0000 - ACPI_REGION, E820_RAM),
                ((256 << 20) - ACPI_REGION, ACPI_REGION, E820_ACPI),
            ]
        );
    }

    #[test]
    fn the_tsc_rate_is_added_unless_given() {
        assert_eq!(
            with_tsc_khz("console=ttyS0", 2_000_000),
            "console=ttyS0 tsc_early_khz=2000000"
        );
        assert_eq!(with_tsc_khz("", 5), "tsc_early_khz=5");
        let given = "console=ttyS0 tsc_early_khz=1";
        assert_eq!(with_tsc_khz(given, 5), given);
    }

    #[test]
    fn only_the_out_of_a_patched_site_is_a_tdcall() {
        let s = LinuxSites {
            vaddrs: vec![0xffff_ffff_81c7_e72e],
            shared_mask: 1 << 47,
        };
        assert!(s.is_patched_out(0xffff_ffff_81c7_e730)); // on the OUT (stock KVM)
        assert!(s.is_patched_out(0xffff_ffff_81c7_e732)); // after it (PVM)
        assert!(!s.is_patched_out(0xffff_ffff_81c7_e72e));
        assert!(!s.is_patched_out(0x1000));
    }
}
