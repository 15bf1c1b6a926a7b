//! Firmware images: reading a TDVF-style image and checking it with QEMU's rules
//! (`hw/i386/tdvf.c`, `pc_sysfw_ovmf.c`), and `tdxlab inspect`.

use anyhow::Context;
use serde::Serialize;
use shared_abi::layout::ovmf::OvmfTable;
use shared_abi::layout::tdvf::{TdvfMetadata, TdvfSection};
use std::path::Path;

/// One section as `inspect` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SectionInfo {
    /// "BFV", "CFV", "TD_HOB" or "TEMP_MEM".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Attribute bits (1 = MR_EXTEND, 2 = PAGE_AUG).
    pub attributes: u32,
    /// Offset of the raw data in the file.
    pub data_offset: u32,
    /// Raw data bytes.
    pub raw_size: u32,
    /// Target GPA.
    pub memory_address: u64,
    /// Guest memory covered.
    pub memory_size: u64,
}

/// One OVMF GUIDed-table entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableEntryInfo {
    /// The GUID.
    pub guid: String,
    /// Its name, if known.
    pub name: Option<&'static str>,
    /// File offset of the data.
    pub data_offset: usize,
    /// Data bytes.
    pub data_len: usize,
}

/// What `tdxlab inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    /// File size.
    pub image_size: usize,
    /// File offset of the TDVF descriptor.
    pub descriptor_offset: usize,
    /// The sections in metadata order.
    pub sections: Vec<SectionInfo>,
    /// The OVMF table entries, last first (QEMU's walk order).
    pub ovmf_table: Vec<TableEntryInfo>,
    /// The MRTD the TDX module computes when QEMU builds a TD from this image (hex;
    /// `crate::mrtd`): compare it with the MRTD of a quote from real hardware. `None` when
    /// the image's added sections cover more than `mrtd::MAX_ADDED_BYTES`.
    pub mrtd: Option<String>,
}

impl From<&TdvfSection> for SectionInfo {
    fn from(s: &TdvfSection) -> SectionInfo {
        SectionInfo {
            kind: s.kind().map(|k| k.name()).unwrap_or("UNKNOWN"),
            attributes: s.attributes,
            data_offset: s.data_offset,
            raw_size: s.raw_size,
            memory_address: s.memory_address,
            memory_size: s.memory_size,
        }
    }
}

/// Validate `image` as QEMU would before loading it as TDX firmware and describe it.
pub fn describe(image: &[u8]) -> anyhow::Result<ImageInfo> {
    let meta = TdvfMetadata::parse(image)?;
    let table = OvmfTable::parse(image)?;
    Ok(ImageInfo {
        image_size: image.len(),
        descriptor_offset: meta.descriptor_offset,
        sections: meta.sections().map(|s| SectionInfo::from(&s)).collect(),
        mrtd: crate::mrtd::mrtd(&meta).map(|m| crate::mrtd::hex(&m)),
        ovmf_table: table
            .entries()
            .map_while(Result::ok)
            .map(|e| TableEntryInfo {
                guid: e.guid.to_string(),
                name: e.guid.name(),
                data_offset: e.data_offset,
                data_len: e.data.len(),
            })
            .collect(),
    })
}

/// Read a file, refusing absurd sizes before reading it all.
pub(crate) fn read_image(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read image {}", path.display()))?;
    anyhow::ensure!(
        meta.is_file(),
        "image {} is not a regular file",
        path.display()
    );
    anyhow::ensure!(
        meta.len() <= 256 << 20,
        "image {} is {} bytes; firmware images are at most 256 MiB",
        path.display(),
        meta.len()
    );
    std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))
}

/// The doorbell ABI version an image says it speaks (its `TDXLAB_DOORBELL` OVMF-table
/// entry), or `None` for an image that does not know tdxlab's emulation (a real TDVF).
pub fn doorbell_abi(image: &[u8]) -> Option<u16> {
    let table = OvmfTable::parse(image).ok()?;
    let e = table.find(shared_abi::layout::guid::TDXLAB_DOORBELL)?;
    Some(u16::from_le_bytes(e.data.get(..2)?.try_into().ok()?))
}

/// `tdxlab inspect IMAGE [--json]`.
pub fn inspect(path: &Path, json: bool) -> anyhow::Result<u8> {
    let image = read_image(path)?;
    if crate::linux::is_kernel(&image) {
        return crate::linux::inspect(path, &image, json);
    }
    let info = describe(&image)
        .with_context(|| format!("{} is not a loadable TDVF image", path.display()))?;
    if json {
        crate::outln!("{}", crate::output::json("inspect", &info)?)?;
        return Ok(0);
    }
    crate::outln!(
        "{}: {} bytes, TDVF descriptor at {:#x}",
        path.display(),
        info.image_size,
        info.descriptor_offset
    )?;
    crate::outln!(
        "  {:<9} {:>5} {:>10} {:>10} {:>18} {:>12}",
        "section",
        "attr",
        "offset",
        "raw",
        "gpa",
        "size"
    )?;
    for s in &info.sections {
        crate::outln!(
            "  {:<9} {:>5} {:>#10x} {:>#10x} {:>#18x} {:>#12x}",
            s.kind,
            s.attributes,
            s.data_offset,
            s.raw_size,
            s.memory_address,
            s.memory_size
        )?;
    }
    match &info.mrtd {
        Some(m) => crate::outln!("  MRTD (as the TDX module measures it under QEMU): {m}")?,
        None => crate::outln!(
            "  MRTD: not computed (the sections QEMU adds cover more than {} MiB)",
            crate::mrtd::MAX_ADDED_BYTES >> 20
        )?,
    }
    crate::outln!("  OVMF table:")?;
    for e in &info.ovmf_table {
        crate::outln!(
            "    {} {:<22} {} bytes at {:#x}",
            e.guid,
            e.name.unwrap_or("?"),
            e.data_len,
            e.data_offset
        )?;
    }
    Ok(0)
}
