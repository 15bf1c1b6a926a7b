//! Powering off the way a guest on QEMU does: load QEMU's ACPI tables from fw_cfg (its
//! `etc/table-loader` script places and links them), find them with the `acpi` crate, read
//! the FADT's PM1a control block and the DSDT's `_S5` sleep type, and write
//! SLP_TYP | SLP_EN there (ACPI spec, "Sleeping/Wake Control"; Linux's
//! `acpi_enter_sleep_state`). Only the pass path uses it, when the isa-debug-exit device
//! is absent: QEMU then exits with status 0 on the S5 request.

mod fw_cfg;

use acpi::{address::AddressSpace, fadt::Fadt, madt::Madt, AcpiHandler, PhysicalMapping};
use core::fmt;
use shared_abi::fw_cfg::{apply_loader, file, find_s5_slp_typ, pm, LoaderError, LoaderFiles};

/// Why the guest could not power off.
#[derive(Debug)]
pub enum PowerOffError {
    /// No fw_cfg device, or no ACPI files in it.
    NoTables,
    /// The loader script could not be applied.
    Loader(LoaderError),
    /// The tables did not parse.
    Acpi(acpi::AcpiError),
    /// The DSDT has no `_S5` with a constant sleep type.
    NoS5,
    /// The PM1a control block is not an I/O port.
    NotIo,
    /// The write to PM1a_CNT failed or came back.
    StillRunning,
}

impl fmt::Display for PowerOffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerOffError::NoTables => f.write_str("no fw_cfg device with ACPI tables"),
            PowerOffError::Loader(e) => write!(f, "etc/table-loader: {e}"),
            PowerOffError::Acpi(e) => write!(f, "ACPI tables: {e:?}"),
            PowerOffError::NoS5 => f.write_str("the DSDT declares no _S5"),
            PowerOffError::NotIo => f.write_str("PM1a_CNT is not in I/O space"),
            PowerOffError::StillRunning => f.write_str("the S5 request did not stop the machine"),
        }
    }
}

/// Physical memory is identity-mapped where the loader put the tables (the heap).
#[derive(Clone)]
struct Identity;

impl AcpiHandler for Identity {
    unsafe fn map_physical_region<T>(&self, at: usize, size: usize) -> PhysicalMapping<Self, T> {
        let p = core::ptr::NonNull::new(at as *mut T).expect("ACPI tables are never at 0");
        // SAFETY: the caller passes a table's address inside the identity-mapped heap.
        unsafe { PhysicalMapping::new(at, p, size, size, Identity) }
    }

    fn unmap_physical_region<T>(_: &PhysicalMapping<Self, T>) {}
}

/// Load the tables, find PM1a_CNT and `_S5`, and request S5. Returns only on failure.
pub fn power_off() -> PowerOffError {
    match s5_request() {
        Ok(s5) => {
            let cnt = acpi_enable(&s5);
            // As ACPICA's `acpi_hw_legacy_sleep`: keep PM1_CNT's other bits (SCI_EN), replace
            // SLP_TYP, set SLP_EN.
            let value = (cnt & !(pm::SLP_TYP_MASK | pm::SLP_EN))
                | ((s5.typ as u16 & 7) << pm::SLP_TYP_SHIFT)
                | pm::SLP_EN;
            let _ = crate::arch::tdx().io_write(2, s5.cnt_port, value as u32);
            PowerOffError::StillRunning
        }
        Err(e) => e,
    }
}

/// What an S5 request needs from the tables.
struct S5Request {
    /// PM1a_CNT's port.
    cnt_port: u16,
    /// `_S5`'s SLP_TYPa.
    typ: u8,
    /// The FADT's SMI_CMD port and ACPI_ENABLE value: 0 when the chipset is in ACPI mode
    /// from reset (QEMU with SMM off, as for a TD).
    smi_cmd: u32,
    acpi_enable: u8,
}

/// Put the chipset in ACPI mode if it is not (ACPICA's `acpi_enable`): with PM1_CNT.SCI_EN
/// clear and an SMI command port, write ACPI_ENABLE there and wait for SCI_EN. QEMU's TD
/// platform starts in ACPI mode with no SMI port, so this only reads PM1a_CNT. Returns
/// PM1a_CNT's value.
fn acpi_enable(s5: &S5Request) -> u16 {
    let read = || {
        crate::arch::tdx()
            .io_read(2, s5.cnt_port)
            .map_or(0, |v| v as u16)
    };
    let mut cnt = read();
    if cnt & pm::SCI_EN == 0 && s5.smi_cmd != 0 && s5.smi_cmd <= u16::MAX as u32 {
        println!(
            "ACPI: legacy mode; SMI handshake: {:#x} to port {:#x}",
            s5.acpi_enable, s5.smi_cmd
        );
        let _ = crate::arch::tdx().io_write(1, s5.smi_cmd as u16, s5.acpi_enable as u32);
        for _ in 0..1000 {
            cnt = read();
            if cnt & pm::SCI_EN != 0 {
                break;
            }
        }
    }
    cnt
}

/// Where and with what sleep type to request S5.
fn s5_request() -> Result<S5Request, PowerOffError> {
    if !fw_cfg::present() {
        return Err(PowerOffError::NoTables);
    }
    let dir = fw_cfg::Dir::read().ok_or(PowerOffError::NoTables)?;
    let script = (dir.read_file(file::TABLE_LOADER.as_bytes())).ok_or(PowerOffError::NoTables)?;
    let mut files = fw_cfg::HeapFiles::new(dir);
    apply_loader(&script, &mut files).map_err(PowerOffError::Loader)?;
    let (rsdp, _) = files
        .file(file::ACPI_RSDP.as_bytes())
        .ok_or(PowerOffError::NoTables)?;
    // SAFETY: the loader placed a checksummed RSDP there, and the tables it points at stay.
    let tables = unsafe { acpi::AcpiTables::from_rsdp(Identity, rsdp as usize) }
        .map_err(PowerOffError::Acpi)?;
    let fadt = tables.find_table::<Fadt>().map_err(PowerOffError::Acpi)?;
    let (smi_cmd, acpi_enable) = (fadt.smi_cmd_port, fadt.acpi_enable);
    let cnt = fadt.pm1a_control_block().map_err(PowerOffError::Acpi)?;
    if cnt.address_space != AddressSpace::SystemIo {
        return Err(PowerOffError::NotIo);
    }
    let dsdt = tables.dsdt().map_err(PowerOffError::Acpi)?;
    // SAFETY: the DSDT's AML lies inside the loaded tables.
    let aml =
        unsafe { core::slice::from_raw_parts(dsdt.address as *const u8, dsdt.length as usize) };
    let typ = find_s5_slp_typ(aml).ok_or(PowerOffError::NoS5)?;
    let cpus = tables.find_table::<Madt>().map_or(0, |m| {
        (m.get().entries())
            .filter(|e| matches!(e, acpi::madt::MadtEntry::LocalApic(_)))
            .count()
    });
    println!(
        "ACPI: {cpus} CPUs in the MADT; powering off: S5 (SLP_TYP {typ}) to PM1a_CNT {:#x}",
        cnt.address
    );
    Ok(S5Request {
        cnt_port: cnt.address as u16,
        typ,
        smi_cmd,
        acpi_enable,
    })
}
