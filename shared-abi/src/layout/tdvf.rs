//! The TDVF descriptor and its section entries, validated with QEMU's rules (`hw/i386/tdvf.c`).

use super::ovmf::{OvmfTable, OvmfTableError};
use super::{rd_u32, rd_u64, wr};

/// "TDVF" as a little-endian u32.
pub const TDVF_SIGNATURE: u32 = 0x4656_4454;
/// The only descriptor version QEMU accepts.
pub const TDVF_VERSION: u32 = 1;
/// Descriptor size in bytes.
pub const DESCRIPTOR_SIZE: usize = 16;
/// Section entry size in bytes.
pub const SECTION_SIZE: usize = 32;
/// Image sizes must be a non-zero multiple of this (QEMU `x86_bios_rom_init`).
pub const IMAGE_SIZE_ALIGN: usize = 64 << 10;
/// Section attribute: measure the contents into MRTD (TDH.MR.EXTEND).
pub const ATTR_MR_EXTEND: u32 = 1 << 0;
/// Section attribute: PAGE_AUG (defined by the TDVF design guide; QEMU never reads it and adds
/// every section with TDH.MEM.PAGE.ADD, and so does tdxlab).
pub const ATTR_PAGE_AUG: u32 = 1 << 1;

/// A section type.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u32)]
pub enum SectionType {
    /// Boot firmware volume: code.
    Bfv = 0,
    /// Configuration firmware volume.
    Cfv = 1,
    /// Where the host writes the TD HOB.
    TdHob = 2,
    /// Zeroed, accepted memory (stacks, page tables, mailbox).
    TempMem = 3,
    /// td-shim only: rejected by QEMU.
    PermMem = 4,
    /// td-shim only: rejected by QEMU.
    Payload = 5,
    /// td-shim only: rejected by QEMU.
    PayloadParam = 6,
    /// td-shim only: rejected by QEMU.
    TdInfo = 7,
    /// td-shim only: rejected by QEMU.
    TdParams = 8,
}

impl SectionType {
    /// Decode a type value.
    pub const fn from_u32(v: u32) -> Option<SectionType> {
        Some(match v {
            0 => SectionType::Bfv,
            1 => SectionType::Cfv,
            2 => SectionType::TdHob,
            3 => SectionType::TempMem,
            4 => SectionType::PermMem,
            5 => SectionType::Payload,
            6 => SectionType::PayloadParam,
            7 => SectionType::TdInfo,
            8 => SectionType::TdParams,
            _ => return None,
        })
    }
    /// The name `inspect` prints: "BFV", "CFV", "TD_HOB", "TEMP_MEM", ...
    pub const fn name(self) -> &'static str {
        match self {
            SectionType::Bfv => "BFV",
            SectionType::Cfv => "CFV",
            SectionType::TdHob => "TD_HOB",
            SectionType::TempMem => "TEMP_MEM",
            SectionType::PermMem => "PERM_MEM",
            SectionType::Payload => "PAYLOAD",
            SectionType::PayloadParam => "PAYLOAD_PARAM",
            SectionType::TdInfo => "TD_INFO",
            SectionType::TdParams => "TD_PARAMS",
        }
    }
    /// True for the four types QEMU loads.
    pub const fn qemu_supported(self) -> bool {
        (self as u32) <= 3
    }
}

/// The 16-byte TDVF descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TdvfDescriptor {
    /// Must be [`TDVF_SIGNATURE`].
    pub signature: u32,
    /// `16 + 32 * n`.
    pub length: u32,
    /// Must be 1.
    pub version: u32,
    /// Number of section entries.
    pub num_sections: u32,
}

impl TdvfDescriptor {
    /// A valid descriptor for `n` sections.
    pub const fn new(n: u32) -> TdvfDescriptor {
        TdvfDescriptor {
            signature: TDVF_SIGNATURE,
            length: (DESCRIPTOR_SIZE + SECTION_SIZE * n as usize) as u32,
            version: TDVF_VERSION,
            num_sections: n,
        }
    }
    /// Little-endian bytes.
    pub fn encode(&self) -> [u8; DESCRIPTOR_SIZE] {
        let mut b = [0; DESCRIPTOR_SIZE];
        b[0..4].copy_from_slice(&self.signature.to_le_bytes());
        b[4..8].copy_from_slice(&self.length.to_le_bytes());
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.num_sections.to_le_bytes());
        b
    }
    /// Read 16 bytes at `off` (no validation).
    pub fn decode(b: &[u8], off: usize) -> Option<TdvfDescriptor> {
        Some(TdvfDescriptor {
            signature: rd_u32(b, off)?,
            length: rd_u32(b, off + 4)?,
            version: rd_u32(b, off + 8)?,
            num_sections: rd_u32(b, off + 12)?,
        })
    }
}

/// One 32-byte section entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TdvfSection {
    /// Offset of the raw data in the image file.
    pub data_offset: u32,
    /// Raw data bytes in the file.
    pub raw_size: u32,
    /// Target GPA.
    pub memory_address: u64,
    /// Guest memory covered.
    pub memory_size: u64,
    /// Raw type value (see [`SectionType`]).
    pub section_type: u32,
    /// Attributes ([`ATTR_MR_EXTEND`], [`ATTR_PAGE_AUG`]).
    pub attributes: u32,
}

impl TdvfSection {
    /// Little-endian bytes.
    pub fn encode(&self) -> [u8; SECTION_SIZE] {
        let mut b = [0; SECTION_SIZE];
        b[0..4].copy_from_slice(&self.data_offset.to_le_bytes());
        b[4..8].copy_from_slice(&self.raw_size.to_le_bytes());
        b[8..16].copy_from_slice(&self.memory_address.to_le_bytes());
        b[16..24].copy_from_slice(&self.memory_size.to_le_bytes());
        b[24..28].copy_from_slice(&self.section_type.to_le_bytes());
        b[28..32].copy_from_slice(&self.attributes.to_le_bytes());
        b
    }
    /// Read 32 bytes at `off` (no validation).
    pub fn decode(b: &[u8], off: usize) -> Option<TdvfSection> {
        Some(TdvfSection {
            data_offset: rd_u32(b, off)?,
            raw_size: rd_u32(b, off + 4)?,
            memory_address: rd_u64(b, off + 8)?,
            memory_size: rd_u64(b, off + 16)?,
            section_type: rd_u32(b, off + 24)?,
            attributes: rd_u32(b, off + 28)?,
        })
    }
    /// The decoded type, if known.
    pub const fn kind(&self) -> Option<SectionType> {
        SectionType::from_u32(self.section_type)
    }
    /// Check this section with QEMU's per-section rules.
    pub fn validate(&self, index: usize) -> Result<(), TdvfError> {
        let kind = match self.kind() {
            Some(k) if k.qemu_supported() => k,
            _ => {
                return Err(TdvfError::UnsupportedSectionType {
                    index,
                    section_type: self.section_type,
                })
            }
        };
        let raw_needed = matches!(kind, SectionType::Bfv | SectionType::Cfv);
        if raw_needed == (self.raw_size == 0) {
            return Err(TdvfError::BadRawSize {
                index,
                kind,
                raw_size: self.raw_size,
            });
        }
        if self.memory_size < self.raw_size as u64 {
            return Err(TdvfError::MemorySmallerThanRaw { index });
        }
        if self.memory_address.checked_add(self.memory_size).is_none() {
            return Err(TdvfError::SectionWraps {
                index,
                memory_address: self.memory_address,
                memory_size: self.memory_size,
            });
        }
        if self.memory_address & 0xFFF != 0 || self.memory_size & 0xFFF != 0 {
            return Err(TdvfError::MisalignedSection {
                index,
                memory_address: self.memory_address,
                memory_size: self.memory_size,
            });
        }
        Ok(())
    }
}

/// Why an image is not a loadable TDVF image (QEMU's checks plus KVM's page alignment).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TdvfError {
    /// Zero size or not a multiple of 64 KiB.
    #[error("bad length: image size {0:#x} is not a non-zero multiple of 64 KiB")]
    BadImageSize(usize),
    /// The OVMF table is missing or malformed.
    #[error("{0}")]
    Table(#[from] OvmfTableError),
    /// No TDX metadata offset entry.
    #[error("Cannot find TDX_METADATA_OFFSET_GUID in the OVMF table")]
    NoMetadataOffset,
    /// The descriptor offset points outside the image.
    #[error("TDVF descriptor offset {0:#x} lies outside the image")]
    DescriptorOutOfBounds(u64),
    /// Wrong signature.
    #[error("Invalid TDVF signature {0:#010x} (expected \"TDVF\")")]
    BadSignature(u32),
    /// Version other than 1.
    #[error("Invalid TDVF version {0} (expected 1)")]
    BadVersion(u32),
    /// Length does not equal 16 + 32 * N or runs past the image.
    #[error("Invalid TDVF descriptor length {length} for {num_sections} sections")]
    BadDescriptorLength {
        /// The claimed length.
        length: u32,
        /// The claimed section count.
        num_sections: u32,
    },
    /// QEMU requires at least two sections.
    #[error("TDVF has {0} sections; at least 2 are required")]
    TooFewSections(u32),
    /// A type QEMU rejects.
    #[error("TDVF contains unsupported section type {section_type} (section {index})")]
    UnsupportedSectionType {
        /// Section index.
        index: usize,
        /// Raw type.
        section_type: u32,
    },
    /// BFV/CFV need raw data; TD_HOB/TEMP_MEM must have none.
    #[error("section {index} ({}) has invalid raw data size {raw_size:#x}", kind.name())]
    BadRawSize {
        /// Section index.
        index: usize,
        /// Its type.
        kind: SectionType,
        /// Raw size.
        raw_size: u32,
    },
    /// MemoryDataSize < RawDataSize.
    #[error("section {index}: memory size is smaller than its raw data")]
    MemorySmallerThanRaw {
        /// Section index.
        index: usize,
    },
    /// Address + size runs past the end of the address space.
    #[error("section {index}: address {memory_address:#x} + size {memory_size:#x} wraps around the address space")]
    SectionWraps {
        /// Section index.
        index: usize,
        /// Guest address.
        memory_address: u64,
        /// Bytes.
        memory_size: u64,
    },
    /// Address or size not 4 KiB aligned.
    #[error("misaligned section {index}: address {memory_address:#x} size {memory_size:#x} (need 4 KiB)")]
    MisalignedSection {
        /// Section index.
        index: usize,
        /// Address.
        memory_address: u64,
        /// Size.
        memory_size: u64,
    },
    /// Raw data outside the file, or a data offset KVM cannot map (not 4 KiB aligned).
    #[error("section {index}: raw data at {data_offset:#x}+{raw_size:#x} is misaligned or outside the image")]
    BadDataOffset {
        /// Section index.
        index: usize,
        /// Offset.
        data_offset: u32,
        /// Size.
        raw_size: u32,
    },
    /// A BFV/CFV whose MemoryDataSize bytes from DataOffset — what QEMU copies into the TD —
    /// run past the image's end (QEMU would read beyond its mapping of the image).
    #[error("section {index}: QEMU copies {memory_size:#x} bytes (MemoryDataSize) from offset {data_offset:#x}, past the image's end")]
    SourcePastImage {
        /// Section index.
        index: usize,
        /// Offset.
        data_offset: u32,
        /// Bytes copied.
        memory_size: u64,
    },
    /// No TD_HOB section.
    #[error("missing TD_HOB: TDVF metadata doesn't specify TD_HOB location")]
    MissingTdHob,
}

/// A validated TDVF image's metadata.
#[derive(Clone, Copy, Debug)]
pub struct TdvfMetadata<'a> {
    image: &'a [u8],
    /// File offset of the descriptor.
    pub descriptor_offset: usize,
    /// The descriptor.
    pub descriptor: TdvfDescriptor,
}

impl<'a> TdvfMetadata<'a> {
    /// Parse and validate `image` as QEMU would before loading it as TDX firmware.
    pub fn parse(image: &'a [u8]) -> Result<TdvfMetadata<'a>, TdvfError> {
        if image.is_empty() || !image.len().is_multiple_of(IMAGE_SIZE_ALIGN) {
            return Err(TdvfError::BadImageSize(image.len()));
        }
        let table = OvmfTable::parse(image)?;
        let entry = table
            .find(super::guid::TDX_METADATA_OFFSET)
            .ok_or(TdvfError::NoMetadataOffset)?;
        let dist = rd_u32(entry.data, 0).ok_or(TdvfError::NoMetadataOffset)? as u64;
        let off = (image.len() as u64)
            .checked_sub(dist)
            .filter(|o| o + DESCRIPTOR_SIZE as u64 <= image.len() as u64)
            .ok_or(TdvfError::DescriptorOutOfBounds(dist))? as usize;
        let d = TdvfDescriptor::decode(image, off).ok_or(TdvfError::DescriptorOutOfBounds(dist))?;
        if d.signature != TDVF_SIGNATURE {
            return Err(TdvfError::BadSignature(d.signature));
        }
        if d.version != TDVF_VERSION {
            return Err(TdvfError::BadVersion(d.version));
        }
        let expect = (d.num_sections as u64) * SECTION_SIZE as u64 + DESCRIPTOR_SIZE as u64;
        if d.length as u64 != expect || off as u64 + expect > image.len() as u64 {
            return Err(TdvfError::BadDescriptorLength {
                length: d.length,
                num_sections: d.num_sections,
            });
        }
        if d.num_sections < 2 {
            return Err(TdvfError::TooFewSections(d.num_sections));
        }
        let meta = TdvfMetadata {
            image,
            descriptor_offset: off,
            descriptor: d,
        };
        let mut has_hob = false;
        for (i, s) in meta.sections().enumerate() {
            s.validate(i)?;
            let end = s.data_offset as u64 + s.raw_size as u64;
            if s.raw_size != 0 && (s.data_offset & 0xFFF != 0 || end > image.len() as u64) {
                return Err(TdvfError::BadDataOffset {
                    index: i,
                    data_offset: s.data_offset,
                    raw_size: s.raw_size,
                });
            }
            let copied = s.data_offset as u64 + s.memory_size;
            if matches!(s.kind(), Some(SectionType::Bfv | SectionType::Cfv))
                && copied > image.len() as u64
            {
                return Err(TdvfError::SourcePastImage {
                    index: i,
                    data_offset: s.data_offset,
                    memory_size: s.memory_size,
                });
            }
            has_hob |= s.kind() == Some(SectionType::TdHob);
        }
        if !has_hob {
            return Err(TdvfError::MissingTdHob);
        }
        Ok(meta)
    }

    /// The section entries in metadata order.
    pub fn sections(&self) -> impl Iterator<Item = TdvfSection> + 'a {
        let (image, base) = (self.image, self.descriptor_offset + DESCRIPTOR_SIZE);
        (0..self.descriptor.num_sections as usize)
            .map_while(move |i| TdvfSection::decode(image, base + i * SECTION_SIZE))
    }

    /// The bytes QEMU copies into the TD for section `s` (`tdx_finalize_vm` and
    /// `tdx_init_fw_mem_region` in QEMU 10.1's target/i386/kvm/tdx.c: the source of
    /// KVM_TDX_INIT_MEM_REGION is the image at DataOffset, MemoryDataSize bytes long): for a
    /// BFV or CFV the image from its data offset for its whole memory size — past RawDataSize
    /// when that is smaller, not zeros ([`TdvfMetadata::parse`] checked it stays inside the
    /// image); for TD_HOB and TEMP_MEM nothing (QEMU adds them zeroed).
    pub fn qemu_source(&self, s: &TdvfSection) -> &'a [u8] {
        if !matches!(s.kind(), Some(SectionType::Bfv | SectionType::Cfv)) {
            return &[];
        }
        let start = s.data_offset as usize;
        start
            .checked_add(s.memory_size as usize)
            .and_then(|end| self.image.get(start..end))
            .unwrap_or(&[])
    }

    /// The raw data of section `s` in the image (empty for a section without any: its
    /// data offset is not checked, and may point anywhere).
    pub fn raw_data(&self, s: &TdvfSection) -> &'a [u8] {
        let start = s.data_offset as usize;
        start
            .checked_add(s.raw_size as usize)
            .and_then(|end| self.image.get(start..end))
            .unwrap_or(&[])
    }
}

/// Write a descriptor and its sections at `off` of `image`; `None` if they do not fit.
pub fn write_descriptor(image: &mut [u8], off: usize, sections: &[TdvfSection]) -> Option<()> {
    wr(
        image,
        off,
        &TdvfDescriptor::new(u32::try_from(sections.len()).ok()?).encode(),
    )?;
    for (i, s) in sections.iter().enumerate() {
        wr(image, off + DESCRIPTOR_SIZE + i * SECTION_SIZE, &s.encode())?;
    }
    Some(())
}
