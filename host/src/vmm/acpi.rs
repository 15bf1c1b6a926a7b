//! The ACPI tables QEMU builds for a q35 machine, as few of them as a guest needs to find its
//! CPUs and power off: FACS, DSDT (with `_S5`), FADT, MADT and the RSDT, plus the RSDP, and
//! the loader script that places, links and checksums them in guest memory (QEMU's
//! `hw/i386/acpi-build.c`: `acpi_build`, `build_fadt`, `build_madt`, `build_rsdt`,
//! `build_rsdp`; the loader is `hw/acpi/bios-linker-loader.c`). Values follow QEMU's q35:
//! ICH9's PM block at 0x600, SCI on IRQ 9, the I/O APIC at 0xFEC00000, `_S5` = {0, 0, 0, 0}.
//!
//! Tables hold offsets inside their blob where the guest must put addresses; the loader's
//! ADD_POINTER commands add the blob's address there, and ADD_CHECKSUM fixes each checksum
//! afterwards — so the blobs themselves carry zero checksums.

use shared_abi::fw_cfg::{file, pm, zone, Command};

/// The three fw_cfg files of QEMU's ACPI build.
pub struct AcpiBlobs {
    /// `etc/acpi/rsdp`.
    pub rsdp: Vec<u8>,
    /// `etc/acpi/tables`.
    pub tables: Vec<u8>,
    /// `etc/table-loader`.
    pub loader: Vec<u8>,
}

const HEADER: usize = 36;
/// `ACPI_BUILD_TABLE_SIZE`: `acpi_build` pads `etc/acpi/tables` to a multiple of 128 KiB, so
/// the blob's size (migrated as a RAM block) does not change between QEMU versions.
const ACPI_BUILD_TABLE_SIZE: usize = 0x20000;
/// `ACPI_BUILD_ALIGN_SIZE`: and `etc/table-loader` to a multiple of 4 KiB.
const ACPI_BUILD_ALIGN_SIZE: usize = 0x1000;
/// The FADT revision QEMU's q35 uses (ACPI 2.0 layout, 244 bytes).
const FADT_REVISION: u8 = 3;
const FADT_LEN: usize = 244;
const LAPIC_BASE: u32 = 0xFEE0_0000;
const IOAPIC_BASE: u32 = 0xFEC0_0000;
const SCI_IRQ: u16 = 9;
/// `ICH9_RST_CNT_IOPORT`: ICH9's reset control register, and the value that resets.
const RST_CNT_PORT: u16 = 0xCF9;
const RST_CNT_RESET: u8 = 0xF;
/// `RTC_CENTURY`: the CMOS index of the century byte.
const RTC_CENTURY: u8 = 0x32;
/// FADT flags (`ACPI_FADT_F_*`).
mod fadt_flag {
    pub const WBINVD: u32 = 1 << 0;
    pub const PROC_C1: u32 = 1 << 2;
    pub const SLP_BUTTON: u32 = 1 << 5;
    pub const RTC_S4: u32 = 1 << 7;
    pub const RESET_REG_SUP: u32 = 1 << 10;
    pub const USE_PLATFORM_CLOCK: u32 = 1 << 15;
    pub const FORCE_APIC_CLUSTER_MODEL: u32 = 1 << 18;
}
/// IAPC_BOOT_ARCH's 8042 bit (`ACPI_FADT_ARCH_8042`): q35 has an i8042.
const IAPC_BOOT_ARCH_8042: u16 = 1 << 1;
/// `ACPI_BUILD_PCI_IRQS` (`x86_machine_initfn`'s `pci_irq_mask`): the ISA IRQs q35 routes
/// PCI interrupts to, each overridden level-triggered and active high in the MADT.
const PCI_IRQS: [u8; 4] = [5, 9, 10, 11];
/// The MADT revision: QEMU reports 3 since 8.1 (`acpi_build_madt`, "ACPI: i386: bump MADT to
/// revision 3": the x2APIC structures it can emit are revision 3's).
const MADT_REVISION: u8 = 3;

/// A table's 36-byte header with QEMU's OEM fields; length and checksum are filled later.
fn header(signature: &[u8; 4], revision: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER);
    h.extend_from_slice(signature);
    h.extend_from_slice(&[0; 4]); // length
    h.push(revision);
    h.push(0); // checksum: the loader's ADD_CHECKSUM
    h.extend_from_slice(b"BOCHS ");
    h.extend_from_slice(b"BXPC    ");
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(b"BXPC");
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t
}

/// The DSDT: only `Name (_S5, Package (0x04) { Zero, Zero, Zero, Zero })` in the root
/// scope, QEMU's own encoding of the soft-off state.
fn dsdt() -> Vec<u8> {
    let mut t = header(b"DSDT", 1);
    t.extend_from_slice(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0]);
    finish(t)
}

/// A Generic Address Structure in system I/O space.
fn gas_io(port: u16, bits: u8, access_size: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    (g[0], g[1], g[2], g[3]) = (1, bits, 0, access_size);
    g[4..12].copy_from_slice(&(port as u64).to_le_bytes());
    g
}

/// The FADT flags of QEMU 10.1's q35 (`init_common_fadt_data` and, for ICH9,
/// `acpi_get_pm_info`'s RESET_REG_SUP): cluster mode only above 8 CPUs (`-smp maxcpus`, which
/// is the vCPU count here).
fn fadt_flags(max_cpus: u32) -> u32 {
    use fadt_flag::*;
    let cluster = if max_cpus > 8 {
        FORCE_APIC_CLUSTER_MODEL
    } else {
        0
    };
    WBINVD | PROC_C1 | SLP_BUTTON | RTC_S4 | USE_PLATFORM_CLOCK | RESET_REG_SUP | cluster
}

/// The FADT with the q35 PM block; FIRMWARE_CTRL, DSDT and X_DSDT hold blob offsets. Laid
/// out as QEMU 10.1's `build_fadt` (hw/acpi/aml-build.c) writes revision 3.
fn fadt(facs_at: u32, dsdt_at: u32, max_cpus: u32) -> Vec<u8> {
    let mut t = header(b"FACP", FADT_REVISION);
    t.resize(FADT_LEN, 0);
    let put = |t: &mut Vec<u8>, at: usize, v: &[u8]| t[at..at + v.len()].copy_from_slice(v);
    put(&mut t, 36, &facs_at.to_le_bytes());
    put(&mut t, 40, &dsdt_at.to_le_bytes());
    t[45] = 1; // INT_MODEL (reserved since ACPI 2.0): QEMU writes 1, "Multiple APIC"
    put(&mut t, 46, &SCI_IRQ.to_le_bytes());
    // SMI_CMD, ACPI_ENABLE, ACPI_DISABLE stay 0: QEMU 10.1's `init_common_fadt_data`
    // (`hw/i386/acpi-build.c`) fills them (0xB2, 2, 3) only with SMM enabled, and a TD has
    // SMM off. The chipset is then in ACPI mode from reset (PM1_CNT.SCI_EN set), so an OS
    // has no SMI handshake to do.
    put(&mut t, 56, &(pm::PM1A_EVT_BLK as u32).to_le_bytes());
    put(&mut t, 64, &(pm::PM1A_CNT_BLK as u32).to_le_bytes());
    put(&mut t, 76, &(pm::PM_TMR_BLK as u32).to_le_bytes());
    put(&mut t, 80, &(pm::GPE0_BLK as u32).to_le_bytes());
    (t[88], t[89], t[91], t[92]) = (4, 2, 4, 16); // PM1_EVT, PM1_CNT, PM_TMR, GPE0 lengths
    put(&mut t, 96, &0x0FFFu16.to_le_bytes()); // P_LVL2_LAT: C2 unsupported
    put(&mut t, 98, &0x0FFFu16.to_le_bytes()); // P_LVL3_LAT: C3 unsupported
    t[108] = RTC_CENTURY;
    put(&mut t, 109, &IAPC_BOOT_ARCH_8042.to_le_bytes());
    put(&mut t, 112, &fadt_flags(max_cpus).to_le_bytes());
    put(&mut t, 116, &gas_io(RST_CNT_PORT, 8, 0)); // RESET_REG
    t[128] = RST_CNT_RESET;
    put(&mut t, 140, &(dsdt_at as u64).to_le_bytes()); // X_DSDT
    put(&mut t, 148, &gas_io(pm::PM1A_EVT_BLK, 32, 0));
    put(&mut t, 172, &gas_io(pm::PM1A_CNT_BLK, 16, 0));
    put(&mut t, 208, &gas_io(pm::PM_TMR_BLK, 32, 0));
    put(&mut t, 220, &gas_io(pm::GPE0_BLK, 128, 0));
    finish(t)
}

/// The MADT as QEMU 10.1's `acpi_build_madt` (hw/i386/acpi-common.c) builds it for q35: one
/// local APIC per vCPU, the I/O APIC, the interrupt source overrides — IRQ 0 on GSI 2
/// (`apic_xrupt_override`, which KVM's irqchip allows) and each of `pci_irq_mask`'s IRQs on
/// itself, level-triggered and active high — and the LINT1 NMI of every processor.
fn madt(vcpus: u32) -> Vec<u8> {
    let mut t = header(b"APIC", MADT_REVISION);
    t.extend_from_slice(&LAPIC_BASE.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: dual 8259s present
    for i in 0..vcpus {
        t.extend_from_slice(&[0, 8, i as u8, i as u8]);
        t.extend_from_slice(&1u32.to_le_bytes()); // enabled
    }
    t.extend_from_slice(&[1, 12, 0, 0]);
    t.extend_from_slice(&IOAPIC_BASE.to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    let pci = PCI_IRQS.map(|irq| (irq, u32::from(irq), 0x000Du16));
    for (irq, gsi, flags) in [(0u8, 2u32, 0u16)].into_iter().chain(pci) {
        t.extend_from_slice(&[2, 10, 0, irq]);
        t.extend_from_slice(&gsi.to_le_bytes());
        t.extend_from_slice(&flags.to_le_bytes());
    }
    t.extend_from_slice(&[4, 6, 0xFF, 0, 0, 1]); // all processors, flags 0, LINT1
    finish(t)
}

fn facs() -> Vec<u8> {
    let mut t = vec![0u8; 64];
    t[0..4].copy_from_slice(b"FACS");
    t[4..8].copy_from_slice(&64u32.to_le_bytes());
    t
}

/// `acpi_align_size`: zero-pad `blob` to a multiple of `align`. (The loader's commands are
/// 128-byte records and a zero command is none, so the padded script runs the same.)
fn acpi_align_size(blob: &mut Vec<u8>, align: usize) {
    blob.resize(blob.len().next_multiple_of(align), 0);
}

/// The three files for a q35 machine with `vcpus` vCPUs.
pub fn build_q35(vcpus: u32) -> AcpiBlobs {
    let tables_f = file::ACPI_TABLES.as_bytes();
    let rsdp_f = file::ACPI_RSDP.as_bytes();
    let mut tables = facs();
    let mut cmds = vec![
        Command::Allocate {
            file: rsdp_f,
            align: 16,
            zone: zone::FSEG,
        },
        Command::Allocate {
            file: tables_f,
            align: 64,
            zone: zone::HIGH,
        },
    ];
    let pointer = |offset: usize, size: u8| Command::AddPointer {
        dest: tables_f,
        src: tables_f,
        offset: offset as u32,
        size,
    };
    let append = |tables: &mut Vec<u8>, t: Vec<u8>, cmds: &mut Vec<Command<'_>>| {
        let at = tables.len();
        cmds.push(Command::AddChecksum {
            file: tables_f,
            offset: (at + 9) as u32,
            start: at as u32,
            length: t.len() as u32,
        });
        tables.extend_from_slice(&t);
        at
    };
    let dsdt_at = append(&mut tables, dsdt(), &mut cmds);
    let fadt_at = tables.len();
    cmds.extend([
        pointer(fadt_at + 36, 4),
        pointer(fadt_at + 40, 4),
        pointer(fadt_at + 140, 8),
    ]);
    append(&mut tables, fadt(0, dsdt_at as u32, vcpus), &mut cmds);
    let madt_at = append(&mut tables, madt(vcpus), &mut cmds);
    let mut rsdt = header(b"RSDT", 1);
    let rsdt_at = tables.len();
    for (i, entry) in [fadt_at, madt_at].into_iter().enumerate() {
        rsdt.extend_from_slice(&(entry as u32).to_le_bytes());
        cmds.push(pointer(rsdt_at + HEADER + 4 * i, 4));
    }
    append(&mut tables, finish(rsdt), &mut cmds);
    // Pointers are patched before checksums are computed: QEMU's loader order.
    cmds.sort_by_key(|c| match c {
        Command::Allocate { .. } => 0,
        Command::AddPointer { .. } => 1,
        _ => 2,
    });
    let mut rsdp = Vec::with_capacity(20);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum
    rsdp.extend_from_slice(b"BOCHS ");
    rsdp.push(0); // revision 0: ACPI 1.0, an RSDT
    rsdp.extend_from_slice(&(rsdt_at as u32).to_le_bytes());
    cmds.push(Command::AddPointer {
        dest: rsdp_f,
        src: tables_f,
        offset: 16,
        size: 4,
    });
    cmds.push(Command::AddChecksum {
        file: rsdp_f,
        offset: 8,
        start: 0,
        length: 20,
    });
    let mut loader: Vec<u8> = cmds.iter().flat_map(|c| c.encode()).collect();
    acpi_align_size(&mut loader, ACPI_BUILD_ALIGN_SIZE);
    acpi_align_size(&mut tables, ACPI_BUILD_TABLE_SIZE);
    AcpiBlobs {
        rsdp,
        tables,
        loader,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(t: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([t[at], t[at + 1]])
    }
    fn u32_at(t: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(t[at..at + 4].try_into().unwrap())
    }

    /// The FADT's flags, boot architecture, century and reset register as QEMU 10.1 fills
    /// them for q35: the platform clock and RESET_REG_SUP set, cluster mode above 8 CPUs.
    #[test]
    fn fadt_flags_and_boot_arch_as_qemu_10_1_q35() {
        let t = fadt(0, 0, 2);
        assert_eq!(t.len(), FADT_LEN);
        assert_eq!(t[45], 1, "INT_MODEL");
        assert_eq!(t[108], 0x32, "CENTURY");
        assert_eq!(u16_at(&t, 109), 0x0002, "IAPC_BOOT_ARCH: 8042");
        assert_eq!(u32_at(&t, 112), 0x84A5, "flags");
        assert_eq!(
            u32_at(&fadt(0, 0, 9), 112),
            0x484A5,
            "FORCE_APIC_CLUSTER_MODEL"
        );
        assert_eq!(t[116..128], gas_io(0xCF9, 8, 0), "RESET_REG");
        assert_eq!(t[128], 0xF, "RESET_VALUE");
    }

    /// The q35 MADT of one vCPU is QEMU's 120 bytes (tests/data/acpi/q35/APIC): five
    /// overrides — IRQ 0 on GSI 2, then 5, 9, 10 and 11 level-triggered, active high.
    #[test]
    fn madt_overrides_as_qemu_10_1_q35() {
        let t = madt(1);
        assert_eq!((t.len(), t[8]), (120, 3), "length and revision");
        let mut overrides = Vec::new();
        let mut at = HEADER + 8; // past the local APIC address and the flags
        while at < t.len() {
            if t[at] == 2 {
                overrides.push((t[at + 3], u32_at(&t, at + 4), u16_at(&t, at + 8)));
            }
            at += t[at + 1] as usize;
        }
        assert_eq!(
            overrides,
            [
                (0, 2, 0),
                (5, 5, 0xD),
                (9, 9, 0xD),
                (10, 10, 0xD),
                (11, 11, 0xD)
            ]
        );
    }

    /// The fw_cfg blobs are QEMU 10.1's sizes: `etc/acpi/tables` padded to 128 KiB,
    /// `etc/table-loader` to 4 KiB, the RSDP its 20 bytes.
    #[test]
    fn blobs_padded_as_qemu_acpi_build() {
        for vcpus in [1, 64] {
            let b = build_q35(vcpus);
            assert_eq!(b.tables.len(), 0x20000);
            assert_eq!(b.loader.len(), 0x1000);
            assert_eq!(b.rsdp.len(), 20);
        }
    }
}
