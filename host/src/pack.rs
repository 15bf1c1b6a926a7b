//! Pack the guest ELF into `tdxlab-guest.bin`, a TDVF-style image that passes QEMU's checks:
//! the loadable segments at their place in the firmware window, then, in the last page, the
//! TDX metadata GUID, the TDVF descriptor with its BFV / TEMP_MEM / TD_HOB sections, the OVMF
//! GUIDed table, and a reset vector at end−16 that jumps to `_start32`.
//!
//! Shared by the host's build script (which packs the image it embeds) and the library.

use object::{Object, ObjectSegment, ObjectSymbol};
use shared_abi::layout::guid;
use shared_abi::layout::ovmf::write_table;
use shared_abi::layout::tdvf::{
    write_descriptor, SectionType, TdvfMetadata, TdvfSection, ATTR_MR_EXTEND,
};

pub use crate::guest_layout::*;

/// Why the guest ELF could not be packed into an image.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The ELF could not be read.
    #[error("guest ELF: {0}")]
    Elf(#[from] object::Error),
    /// A loadable segment outside the image's window.
    #[error("guest segment [{addr:#x}, {end:#x}) lies outside the firmware window")]
    SegmentOutsideWindow {
        /// Start.
        addr: u64,
        /// End.
        end: u64,
    },
    /// No `_start32` symbol for the reset vector to jump to.
    #[error("guest ELF has no _start32")]
    NoEntry,
    /// The metadata page is too small.
    #[error("{0} does not fit in the metadata page")]
    DoesNotFit(&'static str),
    /// The result does not pass the checks the host applies (QEMU's).
    #[error("packed image fails QEMU's checks: {0}")]
    FailsQemuChecks(shared_abi::layout::tdvf::TdvfError),
}

/// Offset of the TDVF descriptor in the image (after the metadata GUID).
pub const DESCRIPTOR_OFFSET: usize = (METADATA_PAGE - IMAGE_BASE) as usize + 16;

/// The sections the tdxlab image declares.
pub fn sections() -> [TdvfSection; 3] {
    [
        TdvfSection {
            data_offset: 0,
            raw_size: IMAGE_SIZE as u32,
            memory_address: IMAGE_BASE,
            memory_size: IMAGE_SIZE,
            section_type: SectionType::Bfv as u32,
            attributes: ATTR_MR_EXTEND,
        },
        TdvfSection {
            data_offset: 0,
            raw_size: 0,
            memory_address: TEMP_MEM_BASE,
            memory_size: TEMP_MEM_SIZE,
            section_type: SectionType::TempMem as u32,
            attributes: 0,
        },
        TdvfSection {
            data_offset: 0,
            raw_size: 0,
            memory_address: TD_HOB_BASE,
            memory_size: TD_HOB_SIZE,
            section_type: SectionType::TdHob as u32,
            attributes: 0,
        },
    ]
}

/// Build the image from the guest's ELF.
pub fn pack(elf: &[u8]) -> Result<Vec<u8>, PackError> {
    let file = object::File::parse(elf)?;
    let mut image = vec![0u8; IMAGE_SIZE as usize];
    for seg in file.segments() {
        let data = seg.data()?;
        if data.is_empty() {
            continue; // .bss lives in TEMP_MEM, zeroed by the host
        }
        let (addr, end) = (seg.address(), seg.address() + data.len() as u64);
        if addr < IMAGE_BASE || end > METADATA_PAGE {
            return Err(PackError::SegmentOutsideWindow { addr, end });
        }
        let off = (addr - IMAGE_BASE) as usize;
        image[off..off + data.len()].copy_from_slice(data);
    }
    let entry = file
        .symbols()
        .find(|s| s.name() == Ok("_start32"))
        .map(|s| s.address())
        .ok_or(PackError::NoEntry)?;
    let meta = (METADATA_PAGE - IMAGE_BASE) as usize;
    image[meta..meta + 16].copy_from_slice(&guid::TDX_METADATA.0);
    write_descriptor(&mut image, DESCRIPTOR_OFFSET, &sections())
        .ok_or(PackError::DoesNotFit("the TDVF descriptor"))?;
    let dist = (IMAGE_SIZE as usize - DESCRIPTOR_OFFSET) as u32;
    let abi = shared_abi::doorbell::DOORBELL_ABI_VERSION.to_le_bytes();
    write_table(
        &mut image[meta..],
        &[
            (guid::TDX_METADATA_OFFSET, &dist.to_le_bytes()),
            (guid::TDXLAB_DOORBELL, &abi),
        ],
    )
    .ok_or(PackError::DoesNotFit("the OVMF table"))?;
    let end = image.len();
    image[end - 0x14..end - 0x10].copy_from_slice(b"VTF\0");
    // Reset vector at 0xFFFFFFF0: jmp rel32 _start32, then HLTs.
    let rel = entry.wrapping_sub(0xFFFF_FFF0 + 5) as u32;
    image[end - 16] = 0xE9;
    image[end - 15..end - 11].copy_from_slice(&rel.to_le_bytes());
    image[end - 11..].fill(0xF4);
    TdvfMetadata::parse(&image).map_err(PackError::FailsQemuChecks)?;
    Ok(image)
}
