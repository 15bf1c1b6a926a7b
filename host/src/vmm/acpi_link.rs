//! QEMU's ACPI tables placed in guest memory the way firmware places them: the fw_cfg loader
//! script (`etc/table-loader`, QEMU's `hw/acpi/bios-linker-loader.c`) executed on the host,
//! for a TD that boots a kernel directly and so has no firmware to run it (`run --kernel`).
//! ALLOCATE puts each file at an address the caller chose, ADD_POINTER adds a file's address
//! into another, ADD_CHECKSUM makes a range sum to zero — as OVMF's and SeaBIOS's loaders do.

use super::acpi::AcpiBlobs;
use shared_abi::fw_cfg::{file, Command, COMMAND_SIZE};

/// Why a loader script could not be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// A command names a file the build did not produce.
    #[error("the loader names an unknown file {0:?}")]
    UnknownFile(String),
    /// A pointer or checksum reaches outside its file.
    #[error("a loader command reaches outside {0:?}")]
    OutOfBounds(String),
}

/// The RSDP and the tables, linked for `rsdp_at` and `tables_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedAcpi {
    /// The RSDP's bytes, for `rsdp_at`.
    pub rsdp: Vec<u8>,
    /// The tables' bytes, for `tables_at`.
    pub tables: Vec<u8>,
}

/// Run `blobs.loader` with the RSDP at `rsdp_at` and the tables at `tables_at`.
pub fn link(blobs: &AcpiBlobs, rsdp_at: u64, tables_at: u64) -> Result<LinkedAcpi, LinkError> {
    let mut out = LinkedAcpi {
        rsdp: blobs.rsdp.clone(),
        tables: blobs.tables.clone(),
    };
    for chunk in blobs.loader.chunks_exact(COMMAND_SIZE) {
        let c: &[u8; COMMAND_SIZE] = chunk.try_into().expect("chunks_exact");
        match Command::decode(c) {
            Command::AddPointer {
                dest,
                src,
                offset,
                size,
            } => {
                let base = address_of(src, rsdp_at, tables_at)?;
                let d = out.file_mut(dest)?;
                add_pointer(d, offset as usize, size as usize, base)
                    .ok_or_else(|| LinkError::OutOfBounds(lossy(dest)))?;
            }
            Command::AddChecksum {
                file: f,
                offset,
                start,
                length,
            } => {
                let d = out.file_mut(f)?;
                checksum(d, offset as usize, start as usize, length as usize)
                    .ok_or_else(|| LinkError::OutOfBounds(lossy(f)))?;
            }
            // Placement is the caller's: the addresses passed in.
            Command::Allocate { .. } | Command::Unknown(_) => {}
        }
    }
    Ok(out)
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn address_of(name: &[u8], rsdp_at: u64, tables_at: u64) -> Result<u64, LinkError> {
    match name {
        n if n == file::ACPI_RSDP.as_bytes() => Ok(rsdp_at),
        n if n == file::ACPI_TABLES.as_bytes() => Ok(tables_at),
        other => Err(LinkError::UnknownFile(lossy(other))),
    }
}

impl LinkedAcpi {
    fn file_mut(&mut self, name: &[u8]) -> Result<&mut Vec<u8>, LinkError> {
        match name {
            n if n == file::ACPI_RSDP.as_bytes() => Ok(&mut self.rsdp),
            n if n == file::ACPI_TABLES.as_bytes() => Ok(&mut self.tables),
            other => Err(LinkError::UnknownFile(lossy(other))),
        }
    }
}

/// `d[at..at + size] += base`, little-endian, as the loader's ADD_POINTER.
fn add_pointer(d: &mut [u8], at: usize, size: usize, base: u64) -> Option<()> {
    let field = d.get_mut(at..at.checked_add(size)?)?;
    let mut v = [0u8; 8];
    v.get_mut(..size)?.copy_from_slice(field);
    let sum = u64::from_le_bytes(v).wrapping_add(base).to_le_bytes();
    field.copy_from_slice(&sum[..size]);
    Some(())
}

/// `d[at] -= sum(d[start..start + len])`, as the loader's ADD_CHECKSUM.
fn checksum(d: &mut [u8], at: usize, start: usize, len: usize) -> Option<()> {
    let sum = d
        .get(start..start.checked_add(len)?)?
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b));
    let c = d.get_mut(at)?;
    *c = c.wrapping_sub(sum);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u64 {
        u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
    }

    /// Linked for fixed addresses, QEMU's tables are what the guest's own loader makes of them:
    /// the RSDP names the RSDT at its address, every table sums to zero, and the RSDT names
    /// the FADT and the MADT, whose signatures are there.
    #[test]
    fn the_linked_tables_point_at_each_other_and_sum_to_zero() {
        let blobs = super::super::acpi::build_q35(2);
        let (rsdp_at, tables_at) = (0xE_0000, 0x7FF_0000);
        let l = link(&blobs, rsdp_at, tables_at).unwrap();
        assert_eq!(l.rsdp[..20].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let rsdt = (u32_at(&l.rsdp, 16) - tables_at) as usize;
        assert_eq!(&l.tables[rsdt..rsdt + 4], b"RSDT");
        let len = u32_at(&l.tables, rsdt + 4) as usize;
        assert_eq!(
            l.tables[rsdt..rsdt + len]
                .iter()
                .fold(0u8, |a, b| a.wrapping_add(*b)),
            0
        );
        let entries: Vec<&[u8]> = (36..len)
            .step_by(4)
            .map(|o| {
                let t = (u32_at(&l.tables, rsdt + o) - tables_at) as usize;
                &l.tables[t..t + 4]
            })
            .collect();
        assert_eq!(entries, [b"FACP", b"APIC"]);
    }

    #[test]
    fn pointers_and_checksums_stay_inside_their_files() {
        let mut d = vec![1u8, 2, 3];
        assert_eq!(add_pointer(&mut d, 2, 4, 5), None);
        assert_eq!(checksum(&mut d, 0, 1, 5), None);
        assert_eq!(add_pointer(&mut d, 0, 2, 0x0101), Some(()));
        assert_eq!(d, [2, 3, 3]);
    }
}
