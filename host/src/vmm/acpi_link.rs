//! QEMU's ACPI tables placed in guest memory the way firmware places them: the fw_cfg loader
//! script (`etc/table-loader`, QEMU's `hw/acpi/bios-linker-loader.c`) executed on the host,
//! for a TD that boots a kernel directly and so has no firmware to run it (`run --kernel`).
//! The script runs through the same loader the built-in guest uses
//! (`shared_abi::fw_cfg::apply_loader`); only the placement differs: each ALLOCATE puts its
//! file at an address the caller chose.

use super::acpi::AcpiBlobs;
use shared_abi::fw_cfg::{apply_loader, file, LoaderError, LoaderFiles};

/// The RSDP and the tables, linked for `rsdp_at` and `tables_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedAcpi {
    /// The RSDP's bytes, for `rsdp_at`.
    pub rsdp: Vec<u8>,
    /// The tables' bytes, for `tables_at`.
    pub tables: Vec<u8>,
}

/// The two files at fixed addresses.
struct Placed {
    linked: LinkedAcpi,
    rsdp_at: u64,
    tables_at: u64,
}

impl LoaderFiles for Placed {
    /// The files are already in hand and their addresses chosen: ALLOCATE only checks the
    /// name.
    fn allocate(&mut self, name: &[u8], _align: u32, _zone: u8) -> Result<u64, LoaderError> {
        self.file(name)
            .map(|(at, _)| at)
            .ok_or(LoaderError::UnknownFile)
    }

    fn file(&mut self, name: &[u8]) -> Option<(u64, &mut [u8])> {
        match name {
            n if n == file::ACPI_RSDP.as_bytes() => Some((self.rsdp_at, &mut self.linked.rsdp)),
            n if n == file::ACPI_TABLES.as_bytes() => {
                Some((self.tables_at, &mut self.linked.tables))
            }
            _ => None,
        }
    }
}

/// Run `blobs.loader` with the RSDP at `rsdp_at` and the tables at `tables_at`.
pub fn link(blobs: &AcpiBlobs, rsdp_at: u64, tables_at: u64) -> Result<LinkedAcpi, LoaderError> {
    let mut placed = Placed {
        linked: LinkedAcpi {
            rsdp: blobs.rsdp.clone(),
            tables: blobs.tables.clone(),
        },
        rsdp_at,
        tables_at,
    };
    apply_loader(&blobs.loader, &mut placed)?;
    Ok(placed.linked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u64 {
        u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    /// Linked for fixed addresses, QEMU's tables are what a firmware's loader makes of them:
    /// the RSDP names the RSDT at its address, every table sums to zero, and the RSDT names
    /// the FADT and the MADT, whose signatures are there.
    #[test]
    fn the_linked_tables_point_at_each_other_and_sum_to_zero() {
        let blobs = super::super::acpi::build_q35(2);
        let (rsdp_at, tables_at) = (0xE_0000, 0x7FF_0000);
        let l = link(&blobs, rsdp_at, tables_at).unwrap();
        assert_eq!(sum(&l.rsdp[..20]), 0);
        let rsdt = (u32_at(&l.rsdp, 16) - tables_at) as usize;
        assert_eq!(&l.tables[rsdt..rsdt + 4], b"RSDT");
        let len = u32_at(&l.tables, rsdt + 4) as usize;
        assert_eq!(sum(&l.tables[rsdt..rsdt + len]), 0);
        let entries: Vec<&[u8]> = (36..len)
            .step_by(4)
            .map(|o| {
                let t = (u32_at(&l.tables, rsdt + o) - tables_at) as usize;
                &l.tables[t..t + 4]
            })
            .collect();
        assert_eq!(entries, [b"FACP", b"APIC"]);
    }

    /// A script naming a file the build did not produce is refused, not skipped.
    #[test]
    fn an_unknown_file_is_refused() {
        let mut blobs = super::super::acpi::build_q35(1);
        let bogus = shared_abi::fw_cfg::Command::AddChecksum {
            file: b"etc/acpi/bogus",
            offset: 0,
            start: 0,
            length: 1,
        };
        blobs.loader.extend_from_slice(&bogus.encode());
        assert_eq!(
            link(&blobs, 0xE_0000, 0x7FF_0000),
            Err(LoaderError::UnknownFile)
        );
    }
}
