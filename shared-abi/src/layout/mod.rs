//! Layouts the host's loader writes and the guest parses: the OVMF GUIDed table, the TDVF
//! descriptor and sections, and the TD HOB list (Intel's TDVF design guide; QEMU's
//! `hw/i386/tdvf.c` and `tdvf-hob.c`).
//!
//! Parsers take byte slices and never panic on malformed input; writers fill caller buffers.

pub mod guid;
pub mod hob;
pub mod ovmf;
pub mod tdvf;

pub use guid::Guid;

pub(crate) fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
pub(crate) fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
pub(crate) fn rd_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}
pub(crate) fn wr(b: &mut [u8], off: usize, bytes: &[u8]) -> Option<()> {
    b.get_mut(off..off.checked_add(bytes.len())?)?
        .copy_from_slice(bytes);
    Some(())
}
