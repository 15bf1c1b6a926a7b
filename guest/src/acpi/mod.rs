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
        Ok((port, value)) => {
            let _ = crate::arch::tdx().io_write(2, port, value as u32);
            PowerOffError::StillRunning
        }
        Err(e) => e,
    }
}

/// The port and value that request S5.
fn s5_request() -> Result<(u16, u16), PowerOffError> {
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
    let cnt = (tables.find_table::<Fadt>())
        .and_then(|f| f.pm1a_control_block())
        .map_err(PowerOffError::Acpi)?;
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
    let value = ((typ as u16 & 7) << pm::SLP_TYP_SHIFT) | pm::SLP_EN;
    Ok((cnt.address as u16, value))
}
