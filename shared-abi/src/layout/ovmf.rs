//! The OVMF GUIDed table at the end of a firmware image, walked as QEMU's
//! `pc_system_ovmf_table_find` does.
//!
//! ```text
//!   ... [data][u16 len][GUID] ... [data][u16 len][GUID] [u16 total][footer GUID] [32 bytes]
//!                                                        end-0x32    end-0x30      end
//! ```

use super::guid::{OVMF_TABLE_FOOTER, TDX_METADATA_OFFSET};
use super::{rd_u16, rd_u32, wr, Guid};

/// Offset of the footer GUID from the end of the image.
pub const FOOTER_FROM_END: usize = 0x30;
/// Size of an entry's trailer: u16 length + GUID.
pub const ENTRY_TRAILER: usize = 18;
/// Smallest image QEMU parses the table of (TARGET_PAGE_SIZE).
pub const MIN_IMAGE_SIZE: usize = 4096;

/// Why an image has no usable OVMF table.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum OvmfTableError {
    /// Image smaller than 4 KiB: QEMU skips the table.
    #[error("image of {0} bytes is too small for an OVMF table (QEMU needs at least 4096)")]
    TooSmall(usize),
    /// No footer GUID at end−48.
    #[error("bad footer: no OVMF table footer GUID at end-48")]
    BadFooter,
    /// The table's total length is below 18 or runs past the image start.
    #[error("bad OVMF table length {0}")]
    BadLength(u16),
    /// An entry's length is below 18 or larger than what remains.
    #[error("malformed OVMF table entry at offset {offset:#x} (length {len})")]
    BadEntry {
        /// File offset of the entry's GUID.
        offset: usize,
        /// Its claimed length.
        len: u16,
    },
}

/// One table entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OvmfEntry<'a> {
    /// The entry's GUID.
    pub guid: Guid,
    /// File offset of the data.
    pub data_offset: usize,
    /// The entry's data.
    pub data: &'a [u8],
}

/// A located OVMF table.
#[derive(Clone, Copy, Debug)]
pub struct OvmfTable<'a> {
    image: &'a [u8],
    /// File offset of the first entry byte.
    start: usize,
    /// File offset one past the last entry byte (the total-length field).
    end: usize,
}

impl<'a> OvmfTable<'a> {
    /// Locate the table in `image`.
    pub fn parse(image: &'a [u8]) -> Result<OvmfTable<'a>, OvmfTableError> {
        let size = image.len();
        if size < MIN_IMAGE_SIZE {
            return Err(OvmfTableError::TooSmall(size));
        }
        if Guid::read(image, size - FOOTER_FROM_END) != Some(OVMF_TABLE_FOOTER) {
            return Err(OvmfTableError::BadFooter);
        }
        let len_off = size - FOOTER_FROM_END - 2;
        let total = rd_u16(image, len_off).ok_or(OvmfTableError::BadFooter)?;
        let entries = (total as usize)
            .checked_sub(ENTRY_TRAILER)
            .filter(|n| *n <= len_off)
            .ok_or(OvmfTableError::BadLength(total))?;
        Ok(OvmfTable {
            image,
            start: len_off - entries,
            end: len_off,
        })
    }

    /// The entries, last first (the order QEMU walks them). Yields an error and stops at the
    /// first malformed entry.
    pub fn entries(&self) -> impl Iterator<Item = Result<OvmfEntry<'a>, OvmfTableError>> + 'a {
        let (image, start) = (self.image, self.start);
        let mut cursor = Some(self.end);
        core::iter::from_fn(move || {
            let c = cursor?;
            if c == start {
                cursor = None;
                return None;
            }
            let remaining = c - start;
            let len = if remaining >= ENTRY_TRAILER {
                rd_u16(image, c - ENTRY_TRAILER)
            } else {
                None
            };
            match len {
                Some(len) if len as usize >= ENTRY_TRAILER && len as usize <= remaining => {
                    let guid = Guid::read(image, c - 16).expect("within the table");
                    let data_offset = c - len as usize;
                    cursor = Some(data_offset);
                    Some(Ok(OvmfEntry {
                        guid,
                        data_offset,
                        data: &image[data_offset..c - ENTRY_TRAILER],
                    }))
                }
                _ => {
                    cursor = None;
                    Some(Err(OvmfTableError::BadEntry {
                        offset: c.saturating_sub(16),
                        len: len.unwrap_or(0),
                    }))
                }
            }
        })
    }

    /// The entry with `guid`, as QEMU finds it (`None` when absent or behind a malformed entry).
    pub fn find(&self, guid: Guid) -> Option<OvmfEntry<'a>> {
        self.entries()
            .map_while(Result::ok)
            .find(|e| e.guid == guid)
    }

    /// The TDVF descriptor's file offset from the TDX metadata offset entry
    /// (`image_size - value`), or `None` when the entry is absent, short or points outside.
    pub fn tdx_descriptor_offset(&self) -> Option<usize> {
        let e = self.find(TDX_METADATA_OFFSET)?;
        let dist = rd_u32(e.data, 0)? as usize;
        self.image.len().checked_sub(dist)
    }
}

/// Write a table ending at `tail.len() - FOOTER_FROM_END + 16` of `tail`, which must be the
/// last bytes of the image. `entries` are written first to last (the last one ends just before
/// the total length). Returns the file-relative start of the table within `tail`, or `None` if
/// it does not fit.
pub fn write_table(tail: &mut [u8], entries: &[(Guid, &[u8])]) -> Option<usize> {
    let footer = tail.len().checked_sub(FOOTER_FROM_END)?;
    wr(tail, footer, &OVMF_TABLE_FOOTER.0)?;
    let len_off = footer.checked_sub(2)?;
    let mut cursor = len_off;
    for (guid, data) in entries.iter().rev() {
        let len = data.len() + ENTRY_TRAILER;
        cursor = cursor.checked_sub(len)?;
        wr(tail, cursor, data)?;
        wr(
            tail,
            cursor + data.len(),
            &u16::try_from(len).ok()?.to_le_bytes(),
        )?;
        wr(tail, cursor + data.len() + 2, &guid.0)?;
    }
    let total = u16::try_from(len_off - cursor + ENTRY_TRAILER).ok()?;
    wr(tail, len_off, &total.to_le_bytes())?;
    Some(cursor)
}
