//! The TD HOB list QEMU writes into the TD_HOB section (`hw/i386/tdvf-hob.c`): one PHIT, one
//! resource descriptor per RAM range sorted by address, then End-of-list; plus tdxlab's
//! GUID-extension HOB that tells an emulated TD where its doorbell is.

use super::guid::TDXLAB_HOB;
use super::{rd_u16, rd_u32, rd_u64, wr, Guid};

/// EFI_HOB_TYPE_HANDOFF (PHIT).
pub const HOB_TYPE_HANDOFF: u16 = 0x0001;
/// EFI_HOB_TYPE_RESOURCE_DESCRIPTOR.
pub const HOB_TYPE_RESOURCE_DESCRIPTOR: u16 = 0x0003;
/// EFI_HOB_TYPE_GUID_EXTENSION.
pub const HOB_TYPE_GUID_EXTENSION: u16 = 0x0004;
/// EFI_HOB_TYPE_END_OF_HOB_LIST.
pub const HOB_TYPE_END_OF_HOB_LIST: u16 = 0xFFFF;
/// Generic header size.
pub const HEADER_SIZE: usize = 8;
/// PHIT size.
pub const PHIT_SIZE: usize = 56;
/// Resource descriptor size.
pub const RESOURCE_SIZE: usize = 48;
/// PHIT version QEMU writes.
pub const PHIT_VERSION: u32 = 0x0009;

/// Resource types.
pub mod resource_type {
    /// EFI_RESOURCE_SYSTEM_MEMORY: accepted RAM.
    pub const SYSTEM_MEMORY: u32 = 0;
    /// EFI_RESOURCE_MEMORY_MAPPED_IO.
    pub const MEMORY_MAPPED_IO: u32 = 1;
    /// EFI_RESOURCE_IO.
    pub const IO: u32 = 2;
    /// EFI_RESOURCE_FIRMWARE_DEVICE.
    pub const FIRMWARE_DEVICE: u32 = 3;
    /// EFI_RESOURCE_MEMORY_MAPPED_IO_PORT.
    pub const MMIO_PORT: u32 = 4;
    /// EFI_RESOURCE_MEMORY_RESERVED.
    pub const MEMORY_RESERVED: u32 = 5;
    /// EFI_RESOURCE_IO_RESERVED.
    pub const IO_RESERVED: u32 = 6;
    /// EFI_RESOURCE_MEMORY_UNACCEPTED: RAM the guest must accept before use.
    pub const MEMORY_UNACCEPTED: u32 = 7;
}

/// Resource attribute bits.
pub mod resource_attr {
    /// PRESENT.
    pub const PRESENT: u32 = 0x1;
    /// INITIALIZED.
    pub const INITIALIZED: u32 = 0x2;
    /// TESTED.
    pub const TESTED: u32 = 0x4;
    /// UNCACHEABLE.
    pub const UNCACHEABLE: u32 = 0x400;
    /// WRITE_BACK_CACHEABLE.
    pub const WRITE_BACK_CACHEABLE: u32 = 0x2000;
    /// What QEMU writes for every RAM range.
    pub const RAM: u32 = PRESENT | INITIALIZED | TESTED;
}

/// A resource descriptor HOB.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ResourceDescriptor {
    /// Owner GUID (QEMU: zero).
    pub owner: Guid,
    /// A [`resource_type`] value.
    pub resource_type: u32,
    /// [`resource_attr`] bits.
    pub attributes: u32,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
}

/// The PHIT HOB fields QEMU fills.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Phit {
    /// Version (0x9).
    pub version: u32,
    /// Boot mode (0).
    pub boot_mode: u32,
    /// GPA just past the End HOB.
    pub end_of_hob_list: u64,
}

/// tdxlab's emulation GUID-extension HOB data: present only in an emulated TD.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TdxlabHob {
    /// [`crate::doorbell::DOORBELL_ABI_VERSION`].
    pub version: u16,
    /// The doorbell I/O port.
    pub doorbell_port: u16,
    /// Guest configuration flags ([`config`]).
    pub flags: u32,
    /// Which workload the guest runs (defined by the guest).
    pub workload: u32,
    /// Workload parameter (the stress workload: a [`crate::stress::Scenario`]).
    pub param: u32,
    /// Seed for seeded workloads.
    pub seed: u64,
    /// How long a timed workload runs, in TSC cycles (0: one pass).
    pub duration_tsc: u64,
    /// Most operations per vCPU of a seeded workload (0: no limit).
    pub ops: u32,
    /// Workload-specific option bits (the stress workload: [`crate::stress::options`]).
    pub options: u32,
}

/// [`TdxlabHob::flags`] bits.
pub mod config {
    /// Accept all RAM at boot instead of lazily.
    pub const ACCEPT_ALL: u32 = 1 << 0;
    /// Deliberately touch private memory before accepting it (negative test).
    pub const TOUCH_UNACCEPTED: u32 = 1 << 1;
    /// Deliberately access a page through the wrong alias (negative test).
    pub const ALIAS_MISMATCH: u32 = 1 << 2;
    /// Deliberately never finish (negative test of the host's timeout).
    pub const HANG: u32 = 1 << 3;
    /// Deliberately raise an exception (negative test of the guest's IDT).
    pub const FAULT: u32 = 1 << 4;
    /// Execute raw IN/OUT, which a TD cannot: served through #VE (test of the #VE path).
    pub const RAW_IO: u32 = 1 << 5;
    /// Deliberately triple-fault (test of the host's shutdown handling).
    pub const TRIPLE_FAULT: u32 = 1 << 6;
    /// Execute a raw HLT with interrupts off, which a TD cannot: a #VE, then TDVMCALL<HLT>,
    /// which blocks for good (test of the host's timeout on a halted vCPU).
    pub const HALT: u32 = 1 << 7;
    /// The host traces (`--trace`): send the guest's own conversion steps over the console
    /// as [`super::TRACE_LINE`] lines.
    pub const TRACE: u32 = 1 << 8;
}

/// A console line carrying one of the guest's steps for the host's trace:
/// `trace: <gpa hex> <bytes> <what>`, never printed as console output.
pub const TRACE_LINE: &str = "trace: ";

/// Encoded size of [`TdxlabHob`].
pub const TDXLAB_HOB_DATA_SIZE: usize = 40;

impl TdxlabHob {
    /// Little-endian bytes.
    pub fn encode(&self) -> [u8; TDXLAB_HOB_DATA_SIZE] {
        let mut b = [0; TDXLAB_HOB_DATA_SIZE];
        b[0..2].copy_from_slice(&self.version.to_le_bytes());
        b[2..4].copy_from_slice(&self.doorbell_port.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.workload.to_le_bytes());
        b[12..16].copy_from_slice(&self.param.to_le_bytes());
        b[16..24].copy_from_slice(&self.seed.to_le_bytes());
        b[24..32].copy_from_slice(&self.duration_tsc.to_le_bytes());
        b[32..36].copy_from_slice(&self.ops.to_le_bytes());
        b[36..40].copy_from_slice(&self.options.to_le_bytes());
        b
    }
    /// Decode; `None` when short.
    pub fn decode(b: &[u8]) -> Option<TdxlabHob> {
        Some(TdxlabHob {
            version: rd_u16(b, 0)?,
            doorbell_port: rd_u16(b, 2)?,
            flags: rd_u32(b, 4)?,
            workload: rd_u32(b, 8)?,
            param: rd_u32(b, 12)?,
            seed: rd_u64(b, 16)?,
            duration_tsc: rd_u64(b, 24)?,
            ops: rd_u32(b, 32)?,
            options: rd_u32(b, 36)?,
        })
    }
}

/// One HOB of a list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Hob<'a> {
    /// PHIT.
    Handoff(Phit),
    /// Resource descriptor.
    Resource(ResourceDescriptor),
    /// GUID extension with its data.
    GuidExtension(Guid, &'a [u8]),
    /// End of list.
    End,
    /// Any other type, with its body after the header.
    Other(u16, &'a [u8]),
}

/// Why a HOB list is malformed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HobError {
    /// Header truncated or length below the header, not 8-aligned, or past the buffer.
    #[error("bad HOB at offset {offset:#x} (type {hob_type:#x}, length {len})")]
    BadLength {
        /// Offset in the list.
        offset: usize,
        /// HOB type.
        hob_type: u16,
        /// Claimed length.
        len: u16,
    },
    /// A known HOB type shorter than its fixed layout.
    #[error("HOB type {hob_type:#x} at offset {offset:#x} is too short")]
    TooShort {
        /// Offset.
        offset: usize,
        /// Type.
        hob_type: u16,
    },
    /// The list ran out without an End HOB.
    #[error("HOB list has no End-of-list HOB")]
    NoEnd,
    /// The first HOB is not a PHIT.
    #[error("HOB list does not start with a PHIT")]
    NoPhit,
}

/// Iterate the HOBs of `list` up to and including End; stops after the first error.
pub fn iter(list: &[u8]) -> impl Iterator<Item = Result<Hob<'_>, HobError>> + '_ {
    let mut off = Some(0usize);
    core::iter::from_fn(move || {
        let o = off?;
        let parsed = parse_one(list, o);
        off = match parsed {
            Ok((Hob::End, _)) | Err(_) => None,
            Ok((_, len)) => Some(o + len),
        };
        Some(parsed.map(|(h, _)| h))
    })
}

fn parse_one(list: &[u8], off: usize) -> Result<(Hob<'_>, usize), HobError> {
    let (ty, len) = match (rd_u16(list, off), rd_u16(list, off + 2)) {
        (Some(t), Some(l)) => (t, l),
        _ => return Err(HobError::NoEnd),
    };
    let bad = HobError::BadLength {
        offset: off,
        hob_type: ty,
        len,
    };
    let n = len as usize;
    if n < HEADER_SIZE || !n.is_multiple_of(8) || off + n > list.len() {
        return Err(bad);
    }
    let hob = &list[off..off + n];
    let short = HobError::TooShort {
        offset: off,
        hob_type: ty,
    };
    let h = match ty {
        HOB_TYPE_HANDOFF => Hob::Handoff(Phit {
            version: rd_u32(hob, 8).ok_or(short)?,
            boot_mode: rd_u32(hob, 12).ok_or(short)?,
            end_of_hob_list: rd_u64(hob, 48).ok_or(short)?,
        }),
        HOB_TYPE_RESOURCE_DESCRIPTOR => Hob::Resource(ResourceDescriptor {
            owner: Guid::read(hob, 8).ok_or(short)?,
            resource_type: rd_u32(hob, 24).ok_or(short)?,
            attributes: rd_u32(hob, 28).ok_or(short)?,
            start: rd_u64(hob, 32).ok_or(short)?,
            length: rd_u64(hob, 40).ok_or(short)?,
        }),
        HOB_TYPE_GUID_EXTENSION => {
            Hob::GuidExtension(Guid::read(hob, 8).ok_or(short)?, &hob[24.min(n)..])
        }
        HOB_TYPE_END_OF_HOB_LIST => Hob::End,
        other => Hob::Other(other, &hob[HEADER_SIZE..]),
    };
    Ok((h, n))
}

/// A parsed, checked HOB list.
#[derive(Clone, Copy, Debug)]
pub struct HobList<'a> {
    list: &'a [u8],
    /// The PHIT.
    pub phit: Phit,
}

impl<'a> HobList<'a> {
    /// Check that `list` starts with a PHIT and reaches End without a malformed HOB.
    pub fn parse(list: &'a [u8]) -> Result<HobList<'a>, HobError> {
        let phit = match iter(list).next() {
            Some(Ok(Hob::Handoff(p))) => p,
            Some(Err(e)) => return Err(e),
            _ => return Err(HobError::NoPhit),
        };
        let mut ended = false;
        for h in iter(list) {
            ended = matches!(h?, Hob::End);
        }
        if !ended {
            return Err(HobError::NoEnd);
        }
        Ok(HobList { list, phit })
    }
    /// All HOBs (known good).
    pub fn hobs(&self) -> impl Iterator<Item = Hob<'a>> + 'a {
        iter(self.list).map_while(Result::ok)
    }
    /// The resource descriptors.
    pub fn resources(&self) -> impl Iterator<Item = ResourceDescriptor> + 'a {
        self.hobs().filter_map(|h| match h {
            Hob::Resource(r) => Some(r),
            _ => None,
        })
    }
    /// The tdxlab emulation HOB, if the host placed one.
    pub fn tdxlab(&self) -> Option<TdxlabHob> {
        self.hobs().find_map(|h| match h {
            Hob::GuidExtension(g, data) if g == TDXLAB_HOB => TdxlabHob::decode(data),
            _ => None,
        })
    }
}

/// Writes a HOB list into a buffer that will live at guest address `base`.
pub struct HobWriter<'a> {
    buf: &'a mut [u8],
    base: u64,
    pos: usize,
}

/// The buffer is too small: QEMU's "TD_HOB overrun".
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("TD_HOB overrun: the HOB list does not fit in {0} bytes")]
pub struct HobOverrun(pub usize);

impl<'a> HobWriter<'a> {
    /// Start a list at guest address `base`, reserving the PHIT (finished by [`Self::finish`]).
    pub fn new(buf: &'a mut [u8], base: u64) -> Result<HobWriter<'a>, HobOverrun> {
        let mut w = HobWriter { buf, base, pos: 0 };
        w.reserve(PHIT_SIZE)?;
        Ok(w)
    }
    fn reserve(&mut self, n: usize) -> Result<usize, HobOverrun> {
        let at = self.pos;
        let end = at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(HobOverrun(self.buf.len()))?;
        self.buf[at..end].fill(0);
        self.pos = end;
        Ok(at)
    }
    fn header(&mut self, at: usize, ty: u16, len: usize) {
        let b = &mut self.buf[at..];
        b[0..2].copy_from_slice(&ty.to_le_bytes());
        b[2..4].copy_from_slice(&(len as u16).to_le_bytes());
    }
    /// Append a resource descriptor.
    pub fn resource(&mut self, r: &ResourceDescriptor) -> Result<(), HobOverrun> {
        let at = self.reserve(RESOURCE_SIZE)?;
        self.header(at, HOB_TYPE_RESOURCE_DESCRIPTOR, RESOURCE_SIZE);
        let b = &mut self.buf[at..at + RESOURCE_SIZE];
        b[8..24].copy_from_slice(&r.owner.0);
        b[24..28].copy_from_slice(&r.resource_type.to_le_bytes());
        b[28..32].copy_from_slice(&r.attributes.to_le_bytes());
        b[32..40].copy_from_slice(&r.start.to_le_bytes());
        b[40..48].copy_from_slice(&r.length.to_le_bytes());
        Ok(())
    }
    /// Append a GUID-extension HOB (data padded to 8 bytes).
    pub fn guid_extension(&mut self, guid: Guid, data: &[u8]) -> Result<(), HobOverrun> {
        let len = (HEADER_SIZE + 16 + data.len()).next_multiple_of(8);
        if len > u16::MAX as usize {
            return Err(HobOverrun(self.buf.len()));
        }
        let at = self.reserve(len)?;
        self.header(at, HOB_TYPE_GUID_EXTENSION, len);
        self.buf[at + 8..at + 24].copy_from_slice(&guid.0);
        self.buf[at + 24..at + 24 + data.len()].copy_from_slice(data);
        Ok(())
    }
    /// Append the End HOB, fill the PHIT, and return the list's length.
    pub fn finish(mut self) -> Result<usize, HobOverrun> {
        let at = self.reserve(HEADER_SIZE)?;
        self.header(at, HOB_TYPE_END_OF_HOB_LIST, HEADER_SIZE);
        let end = self.base + self.pos as u64;
        self.header(0, HOB_TYPE_HANDOFF, PHIT_SIZE);
        wr(self.buf, 8, &PHIT_VERSION.to_le_bytes()).ok_or(HobOverrun(0))?;
        wr(self.buf, 48, &end.to_le_bytes()).ok_or(HobOverrun(0))?;
        Ok(self.pos)
    }
}
