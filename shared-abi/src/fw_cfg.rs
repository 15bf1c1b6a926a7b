//! QEMU's firmware configuration device (fw_cfg) as a guest reads it through I/O ports, the
//! ACPI table loader script it carries (`etc/table-loader`), and the q35 power-management
//! registers a guest powers off with. Sources: QEMU's `docs/specs/fw_cfg.rst`,
//! `include/standard-headers/linux/qemu_fw_cfg.h`, `hw/acpi/bios-linker-loader.c` (the
//! command layout) and `hw/acpi/core.c` (`acpi_pm1_cnt_write`); ICH9's PMBASE 0x600 from
//! `hw/isa/lpc_ich9.c`.
//!
//! The loader is allocation-free: a guest hands it its own buffers through [`LoaderFiles`],
//! so the guest and the host's tests run the very same code.

/// Selector register (16-bit write).
pub const SELECTOR_PORT: u16 = 0x510;
/// Data register (8-bit reads, advancing through the selected item).
pub const DATA_PORT: u16 = 0x511;

/// Item keys.
pub mod key {
    /// "QEMU".
    pub const SIGNATURE: u16 = 0x0000;
    /// Feature bits (little-endian u32): bit 0 the I/O-port interface, bit 1 DMA.
    pub const ID: u16 = 0x0001;
    /// The file directory: a big-endian u32 count, then [`super::DIR_ENTRY_SIZE`]-byte entries.
    pub const FILE_DIR: u16 = 0x0019;
    /// The first file's selector.
    pub const FILE_FIRST: u16 = 0x0020;
}

/// The signature item's bytes.
pub const SIGNATURE: [u8; 4] = *b"QEMU";
/// ID bit 0: the traditional (port) interface.
pub const ID_TRADITIONAL: u32 = 1;
/// ID bit 1: the DMA interface (`FW_CFG_VERSION_DMA`), which QEMU's q35 offers.
pub const ID_DMA: u32 = 2;

/// The DMA interface (`docs/specs/fw_cfg.rst`, "DMA interface"): the big-endian 64-bit
/// address of an [`dma::Access`] is written to [`dma::PORT`] (high half) and `PORT + 4`
/// (low half, which starts the transfer); reading the port gives [`dma::SIGNATURE`].
pub mod dma {
    /// The DMA address register (`FW_CFG_IO_BASE + 4`).
    pub const PORT: u16 = 0x514;
    /// Its low half: a write here runs the transfer.
    pub const PORT_LOW: u16 = PORT + 4;
    /// What the register reads as (`FW_CFG_DMA_SIGNATURE`, big-endian).
    pub const SIGNATURE: [u8; 8] = *b"QEMU CFG";
    /// `FW_CFG_DMA_CTL_*`: the control word's bits; the selector is in bits 31:16.
    pub const CTL_ERROR: u32 = 0x01;
    /// Read into guest memory.
    pub const CTL_READ: u32 = 0x02;
    /// Skip bytes.
    pub const CTL_SKIP: u32 = 0x04;
    /// Select the key in bits 31:16 first.
    pub const CTL_SELECT: u32 = 0x08;
    /// Write from guest memory.
    pub const CTL_WRITE: u32 = 0x10;
    /// The size of an [`Access`] in guest memory.
    pub const ACCESS_SIZE: usize = 16;

    /// `FWCfgDmaAccess`: control, length and address, all big-endian.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Access {
        /// `CTL_*` bits, the selector in bits 31:16; the device leaves 0 or `CTL_ERROR`.
        pub control: u32,
        /// Bytes to transfer.
        pub length: u32,
        /// Guest-physical address of the data.
        pub address: u64,
    }

    impl Access {
        /// The structure's bytes.
        pub fn encode(&self) -> [u8; ACCESS_SIZE] {
            let mut b = [0u8; ACCESS_SIZE];
            b[0..4].copy_from_slice(&self.control.to_be_bytes());
            b[4..8].copy_from_slice(&self.length.to_be_bytes());
            b[8..16].copy_from_slice(&self.address.to_be_bytes());
            b
        }
        /// Parse the structure's bytes.
        pub fn decode(b: &[u8; ACCESS_SIZE]) -> Access {
            let be32 = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[8..16]);
            Access {
                control: be32(0),
                length: be32(4),
                address: u64::from_be_bytes(a),
            }
        }
    }
}
/// A file directory entry: size (BE u32), select (BE u16), reserved (u16), name (56 bytes).
pub const DIR_ENTRY_SIZE: usize = 64;
/// Longest file name, NUL included.
pub const FILE_NAME_SIZE: usize = 56;

/// The files QEMU's ACPI build publishes.
pub mod file {
    /// The RSDP.
    pub const ACPI_RSDP: &str = "etc/acpi/rsdp";
    /// Every other table, one blob.
    pub const ACPI_TABLES: &str = "etc/acpi/tables";
    /// The loader script that places and links them.
    pub const TABLE_LOADER: &str = "etc/table-loader";
}

/// One loader command's size.
pub const COMMAND_SIZE: usize = 128;

/// Loader command numbers (`BiosLinkerLoaderEntry`).
pub mod command {
    /// Allocate memory for a file and read it in.
    pub const ALLOCATE: u32 = 1;
    /// Add a file's address to a little-endian field of another.
    pub const ADD_POINTER: u32 = 2;
    /// Fix a checksum byte so that a range sums to zero.
    pub const ADD_CHECKSUM: u32 = 3;
}

/// ALLOCATE zones: high memory, or the F segment (for the RSDP a legacy BIOS scans).
pub mod zone {
    /// Anywhere.
    pub const HIGH: u8 = 1;
    /// 0xF0000–0xFFFFF.
    pub const FSEG: u8 = 2;
}

/// A decoded loader command; file names are NUL-trimmed byte strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Place `file` at an address aligned to `align` in `zone`.
    Allocate {
        file: &'a [u8],
        align: u32,
        zone: u8,
    },
    /// `dest[offset..offset + size] += address of src` (little-endian).
    AddPointer {
        dest: &'a [u8],
        src: &'a [u8],
        offset: u32,
        size: u8,
    },
    /// `file[offset] -= sum(file[start..start + length])`.
    AddChecksum {
        file: &'a [u8],
        offset: u32,
        start: u32,
        length: u32,
    },
    /// A command this loader does not know (QEMU's loaders skip them).
    Unknown(u32),
}

fn name(b: &[u8]) -> &[u8] {
    let b = &b[..FILE_NAME_SIZE];
    &b[..b.iter().position(|c| *c == 0).unwrap_or(b.len())]
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a> Command<'a> {
    /// Decode one [`COMMAND_SIZE`]-byte command.
    pub fn decode(c: &'a [u8; COMMAND_SIZE]) -> Command<'a> {
        let body = &c[4..];
        match u32_at(c, 0) {
            command::ALLOCATE => Command::Allocate {
                file: name(body),
                align: u32_at(body, 56),
                zone: body[60],
            },
            command::ADD_POINTER => Command::AddPointer {
                dest: name(body),
                src: name(&body[56..]),
                offset: u32_at(body, 112),
                size: body[116],
            },
            command::ADD_CHECKSUM => Command::AddChecksum {
                file: name(body),
                offset: u32_at(body, 56),
                start: u32_at(body, 60),
                length: u32_at(body, 64),
            },
            other => Command::Unknown(other),
        }
    }

    /// Encode into a [`COMMAND_SIZE`]-byte command (names longer than 55 bytes are cut).
    pub fn encode(&self) -> [u8; COMMAND_SIZE] {
        let mut c = [0u8; COMMAND_SIZE];
        let put_name = |c: &mut [u8; COMMAND_SIZE], at: usize, n: &[u8]| {
            let n = &n[..n.len().min(FILE_NAME_SIZE - 1)];
            c[at..at + n.len()].copy_from_slice(n);
        };
        let put_u32 = |c: &mut [u8; COMMAND_SIZE], at: usize, v: u32| {
            c[at..at + 4].copy_from_slice(&v.to_le_bytes())
        };
        match *self {
            Command::Allocate { file, align, zone } => {
                put_u32(&mut c, 0, command::ALLOCATE);
                put_name(&mut c, 4, file);
                put_u32(&mut c, 60, align);
                c[64] = zone;
            }
            Command::AddPointer {
                dest,
                src,
                offset,
                size,
            } => {
                put_u32(&mut c, 0, command::ADD_POINTER);
                put_name(&mut c, 4, dest);
                put_name(&mut c, 60, src);
                put_u32(&mut c, 116, offset);
                c[120] = size;
            }
            Command::AddChecksum {
                file,
                offset,
                start,
                length,
            } => {
                put_u32(&mut c, 0, command::ADD_CHECKSUM);
                put_name(&mut c, 4, file);
                put_u32(&mut c, 60, offset);
                put_u32(&mut c, 64, start);
                put_u32(&mut c, 68, length);
            }
            Command::Unknown(n) => put_u32(&mut c, 0, n),
        }
        c
    }
}

/// Why a loader script could not be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoaderError {
    /// A command names a file that was never allocated.
    #[error("the loader names a file it did not allocate")]
    UnknownFile,
    /// A pointer or checksum range lies outside its file, or a pointer is not 1, 2, 4 or 8
    /// bytes wide.
    #[error("a loader command reaches outside its file")]
    OutOfRange,
    /// The guest could not place a file.
    #[error("the guest could not allocate a loader file")]
    NoMemory,
}

/// Where the loader's files live: the guest reads each into memory it owns.
pub trait LoaderFiles {
    /// Allocate `file` (aligned to `align`) and read it in; its guest-physical address.
    fn allocate(&mut self, file: &[u8], align: u32, zone: u8) -> Result<u64, LoaderError>;
    /// An allocated file's address and bytes.
    fn file(&mut self, file: &[u8]) -> Option<(u64, &mut [u8])>;
}

/// Run a loader script (`etc/table-loader`'s bytes) over `files`.
pub fn apply_loader(script: &[u8], files: &mut impl LoaderFiles) -> Result<(), LoaderError> {
    for c in script.chunks_exact(COMMAND_SIZE) {
        let c: &[u8; COMMAND_SIZE] = c.try_into().expect("chunks_exact gives whole commands");
        match Command::decode(c) {
            Command::Allocate { file, align, zone } => {
                files.allocate(file, align, zone)?;
            }
            Command::AddPointer {
                dest,
                src,
                offset,
                size,
            } => add_pointer(files, dest, src, offset as usize, size as usize)?,
            Command::AddChecksum {
                file,
                offset,
                start,
                length,
            } => add_checksum(
                files,
                file,
                offset as usize,
                start as usize,
                length as usize,
            )?,
            Command::Unknown(_) => {}
        }
    }
    Ok(())
}

fn add_pointer(
    files: &mut impl LoaderFiles,
    dest: &[u8],
    src: &[u8],
    offset: usize,
    size: usize,
) -> Result<(), LoaderError> {
    let (base, _) = files.file(src).ok_or(LoaderError::UnknownFile)?;
    let (_, d) = files.file(dest).ok_or(LoaderError::UnknownFile)?;
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(LoaderError::OutOfRange);
    }
    let field = offset
        .checked_add(size)
        .and_then(|end| d.get_mut(offset..end))
        .ok_or(LoaderError::OutOfRange)?;
    let mut v = [0u8; 8];
    v[..size].copy_from_slice(field);
    let sum = u64::from_le_bytes(v).wrapping_add(base);
    field.copy_from_slice(&sum.to_le_bytes()[..size]);
    Ok(())
}

fn add_checksum(
    files: &mut impl LoaderFiles,
    file: &[u8],
    offset: usize,
    start: usize,
    length: usize,
) -> Result<(), LoaderError> {
    let (_, f) = files.file(file).ok_or(LoaderError::UnknownFile)?;
    let range = start
        .checked_add(length)
        .and_then(|end| f.get(start..end))
        .ok_or(LoaderError::OutOfRange)?;
    let sum = range.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    let at = f.get_mut(offset).ok_or(LoaderError::OutOfRange)?;
    *at = at.wrapping_sub(sum);
    Ok(())
}

/// The q35 (ICH9) ACPI power-management block the FADT points at.
pub mod pm {
    /// PM1a event block (status, enable).
    pub const PM1A_EVT_BLK: u16 = 0x600;
    /// PM1a control register (16-bit).
    pub const PM1A_CNT_BLK: u16 = 0x604;
    /// The PM timer.
    pub const PM_TMR_BLK: u16 = 0x608;
    /// GPE0 block.
    pub const GPE0_BLK: u16 = 0x620;
    /// PM1_CNT.SLP_EN: enter the sleep state in SLP_TYP.
    pub const SLP_EN: u16 = 1 << 13;
    /// PM1_CNT.SCI_EN: the chipset is in ACPI mode (power events raise SCIs, not SMIs).
    /// QEMU's ICH9 sets it at reset when SMM is off (`acpi_pm1_cnt_reset` with `acpi_only`,
    /// `hw/acpi/core.c`), as it is for a TD.
    pub const SCI_EN: u16 = 1 << 0;
    /// PM1_CNT.SLP_TYP's mask.
    pub const SLP_TYP_MASK: u16 = 7 << SLP_TYP_SHIFT;
    /// PM1_CNT.SLP_TYP's position (3 bits).
    pub const SLP_TYP_SHIFT: u32 = 10;
    /// The SLP_TYP QEMU's q35 DSDT gives S5 (`_S5` = Package { 0, 0, 0, 0 }): soft off.
    pub const S5_SLP_TYP: u8 = 0;
}

/// The value of `_S5`'s first element (SLP_TYPa) in an AML stream: the `Name(_S5, Package
/// {…})` a DSDT declares, found by its byte pattern (NameOp, "_S5_", PackageOp) rather
/// than by running an AML interpreter, as small kernels do. `None` if absent or not an
/// integer constant.
pub fn find_s5_slp_typ(aml: &[u8]) -> Option<u8> {
    const NAME_OP: u8 = 0x08;
    const PACKAGE_OP: u8 = 0x12;
    let at = aml
        .windows(6)
        .position(|w| w[0] == NAME_OP && &w[1..5] == b"_S5_" && w[5] == PACKAGE_OP)?;
    let rest = aml.get(at + 6..)?;
    // PkgLength: the top two bits of its lead byte count the bytes that follow it.
    let len_bytes = 1 + (*rest.first()? >> 6) as usize;
    let elements = rest.get(len_bytes + 1..)?; // skip PkgLength and NumElements
    match *elements.first()? {
        0x00 => Some(0),                  // ZeroOp
        0x01 => Some(1),                  // OneOp
        0x0A => elements.get(1).copied(), // BytePrefix
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files([(&'static [u8], u64, [u8; 32]); 2]);

    impl LoaderFiles for Files {
        fn allocate(&mut self, file: &[u8], _: u32, _: u8) -> Result<u64, LoaderError> {
            self.file(file).map(|f| f.0).ok_or(LoaderError::NoMemory)
        }
        fn file(&mut self, file: &[u8]) -> Option<(u64, &mut [u8])> {
            let f = self.0.iter_mut().find(|f| f.0 == file)?;
            Some((f.1, &mut f.2[..]))
        }
    }

    #[test]
    fn commands_round_trip_through_their_encoding() {
        let cs = [
            Command::Allocate {
                file: b"etc/acpi/tables",
                align: 64,
                zone: zone::HIGH,
            },
            Command::AddPointer {
                dest: b"etc/acpi/rsdp",
                src: b"etc/acpi/tables",
                offset: 16,
                size: 4,
            },
            Command::AddChecksum {
                file: b"etc/acpi/rsdp",
                offset: 8,
                start: 0,
                length: 20,
            },
        ];
        for c in cs {
            assert_eq!(Command::decode(&c.encode()), c);
        }
    }

    #[test]
    fn the_loader_links_and_checksums() {
        let mut files = Files([(b"a", 0x1000, [0; 32]), (b"b", 0x2000_0000, [0; 32])]);
        files.0[0].2[4] = 0x10; // an offset inside b
        files.0[0].2[12] = 7;
        let script: [[u8; COMMAND_SIZE]; 3] = [
            Command::AddPointer {
                dest: b"a",
                src: b"b",
                offset: 4,
                size: 4,
            }
            .encode(),
            Command::AddChecksum {
                file: b"a",
                offset: 0,
                start: 0,
                length: 32,
            }
            .encode(),
            Command::Unknown(99).encode(),
        ];
        apply_loader(script.as_flattened(), &mut files).unwrap();
        let a = files.0[0].2;
        assert_eq!(u32::from_le_bytes(a[4..8].try_into().unwrap()), 0x2000_0010);
        assert_eq!(a.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        let bad = Command::AddPointer {
            dest: b"a",
            src: b"b",
            offset: 30,
            size: 4,
        }
        .encode();
        assert_eq!(apply_loader(&bad, &mut files), Err(LoaderError::OutOfRange));
        let unknown = Command::AddChecksum {
            file: b"c",
            offset: 0,
            start: 0,
            length: 1,
        }
        .encode();
        assert_eq!(
            apply_loader(&unknown, &mut files),
            Err(LoaderError::UnknownFile)
        );
    }

    #[test]
    fn s5_is_found_in_qemus_encoding() {
        // Name (_S5, Package (0x04) { Zero, Zero, Zero, Zero }), after some other AML.
        let aml = [
            0x10, 0x05, 0x5C, 0x00, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0,
        ];
        assert_eq!(find_s5_slp_typ(&aml), Some(0));
        let byte = [
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x07, 0x04, 0x0A, 0x05, 0, 0, 0,
        ];
        assert_eq!(find_s5_slp_typ(&byte), Some(5));
        assert_eq!(find_s5_slp_typ(&aml[..9]), None);
    }
}
