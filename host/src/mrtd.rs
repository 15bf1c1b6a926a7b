//! MRTD: the measurement the TDX module accumulates while the VMM builds a TD, as QEMU builds
//! one from a TDVF image (`tdx_finalize_vm` in QEMU's `target/i386/kvm/tdx.c`: every section
//! goes through KVM_TDX_INIT_MEM_REGION — QEMU never looks at PAGE_AUG — measured when it has
//! MR_EXTEND; a BFV's or CFV's pages hold the image from its data offset, TD_HOB and TEMP_MEM
//! zeros).
//!
//! The module extends a SHA-384 hash (TDX module base spec, "MRTD"):
//! - TDH.MEM.PAGE.ADD of a page: a 128-byte block, `"MEM.PAGE.ADD"` at byte 0 and the GPA
//!   (little-endian) at byte 16, zeros elsewhere — the page's contents are not measured;
//! - TDH.MR.EXTEND of a 256-byte chunk: a 128-byte block, `"MR.EXTEND"` at 0 and the chunk's
//!   GPA at 16, then the chunk's 256 bytes.
//!
//! KVM adds each page and then extends its sixteen chunks (`tdx_gmem_post_populate`), section
//! by section in metadata order; TDH.MR.FINALIZE ends the hash. The result depends on the
//! image only, so a user can compare it with the MRTD in a TD quote on real hardware.

use crate::seam::measure::{record, CHUNK};
use sha2::{Digest, Sha384};
use shared_abi::layout::tdvf::{TdvfMetadata, ATTR_MR_EXTEND};

/// The most memory the sections QEMU adds may cover for tdxlab to compute MRTD (64 Ki pages;
/// a real TDVF adds a few MiB of TEMP_MEM and TD_HOB beside its firmware volume). A section
/// table claiming more — from a broken or hostile image — is not hashed page by page.
pub const MAX_ADDED_BYTES: u64 = 256 << 20;
const PAGE: usize = 4096;

/// The MRTD of a TD built from `meta`'s image, as 48 bytes; `None` when its added sections
/// cover more than [`MAX_ADDED_BYTES`].
pub fn mrtd(meta: &TdvfMetadata) -> Option<[u8; 48]> {
    let added = (meta.sections()).try_fold(0u64, |sum, s| {
        sum.checked_add(s.memory_size.div_ceil(PAGE as u64) * PAGE as u64)
    });
    if added.is_none_or(|b| b > MAX_ADDED_BYTES) {
        return None;
    }
    let mut h = Sha384::new();
    for s in meta.sections() {
        // The section's memory as QEMU copies it.
        let raw = meta.qemu_source(&s);
        for page in 0..(s.memory_size as usize).div_ceil(PAGE) {
            let gpa = s.memory_address + (page * PAGE) as u64;
            h.update(record(b"MEM.PAGE.ADD", gpa));
            if s.attributes & ATTR_MR_EXTEND == 0 {
                continue;
            }
            for c in 0..PAGE / CHUNK {
                let at = page * PAGE + c * CHUNK;
                let mut chunk = [0u8; CHUNK];
                if at < raw.len() {
                    let n = (raw.len() - at).min(CHUNK);
                    chunk[..n].copy_from_slice(&raw[at..at + n]);
                }
                h.update(record(b"MR.EXTEND", gpa + (c * CHUNK) as u64));
                h.update(chunk);
            }
        }
    }
    Some(h.finalize().into())
}

/// Lower-case hex, as quotes and attestation tools print MRTD.
pub fn hex(m: &[u8; 48]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seam::measure::BLOCK;

    #[test]
    fn records_put_the_tag_at_0_and_the_gpa_at_16() {
        let r = record(b"MR.EXTEND", 0xffff_f000);
        assert_eq!(&r[..9], b"MR.EXTEND");
        assert!(r[9..16].iter().all(|b| *b == 0));
        assert_eq!(
            u64::from_le_bytes(r[16..24].try_into().unwrap()),
            0xffff_f000
        );
        assert!(r[24..].iter().all(|b| *b == 0));
    }

    /// The built-in image's MRTD is the SHA-384 of exactly the records its sections call for,
    /// laid end to end here as one buffer (one PAGE.ADD per page of every section the VMM
    /// adds; sixteen MR.EXTENDs with their chunks per page of the measured ones); and it
    /// changes when one byte of measured firmware does.
    #[test]
    fn the_built_in_images_mrtd_covers_every_added_page_and_measured_byte() {
        let image = crate::GUEST_IMAGE.to_vec();
        let meta = TdvfMetadata::parse(&image).unwrap();
        let mut all = Vec::new();
        let (mut adds, mut extends) = (0usize, 0usize);
        for s in meta.sections() {
            let mut mem = meta.qemu_source(&s).to_vec();
            mem.resize(s.memory_size as usize, 0);
            for (i, page) in mem.chunks(PAGE).enumerate() {
                let gpa = s.memory_address + (i * PAGE) as u64;
                all.extend_from_slice(&record(b"MEM.PAGE.ADD", gpa));
                adds += 1;
                if s.attributes & ATTR_MR_EXTEND != 0 {
                    for (c, chunk) in page.chunks(CHUNK).enumerate() {
                        all.extend_from_slice(&record(b"MR.EXTEND", gpa + (c * CHUNK) as u64));
                        all.extend_from_slice(chunk);
                        extends += 1;
                    }
                }
            }
        }
        assert!(
            adds > 0 && extends > 0,
            "the image has added and measured sections"
        );
        assert_eq!(all.len(), adds * BLOCK + extends * (BLOCK + CHUNK));
        let m = mrtd(&meta).unwrap();
        assert_eq!(m[..], Sha384::digest(&all)[..]);
        assert_eq!(hex(&m).len(), 96);
        let s = meta
            .sections()
            .find(|s| s.attributes & ATTR_MR_EXTEND != 0 && s.raw_size > 0)
            .unwrap();
        let mut other = image.clone();
        other[s.data_offset as usize] ^= 1;
        let m2 = mrtd(&TdvfMetadata::parse(&other).unwrap()).unwrap();
        assert_ne!(m, m2, "measured bytes change MRTD");
    }
}

/// The image as QEMU 10.1 reads it (`tdx_finalize_vm`, `tdx_init_fw_mem_region`).
#[cfg(test)]
mod qemu_reading {
    use super::*;
    use crate::pack::{sections, DESCRIPTOR_OFFSET};
    use shared_abi::layout::tdvf::{write_descriptor, TdvfError, TdvfSection, ATTR_PAGE_AUG};

    /// The built-in image with its section table replaced by `edit(sections)`.
    fn with_sections(edit: impl FnOnce(&mut [TdvfSection; 3])) -> Vec<u8> {
        let mut image = crate::GUEST_IMAGE.to_vec();
        let mut s = sections();
        edit(&mut s);
        write_descriptor(&mut image, DESCRIPTOR_OFFSET, &s).unwrap();
        image
    }

    fn mrtd_of(image: &[u8]) -> [u8; 48] {
        mrtd(&TdvfMetadata::parse(image).unwrap()).unwrap()
    }

    /// MRTD restated from QEMU's reading alone, with the number of pages added: every
    /// section in metadata order; a BFV's or CFV's pages are the image from DataOffset for
    /// MemoryDataSize bytes, the others zeros; MR_EXTEND sections measured chunk by chunk.
    fn as_qemu_builds_it(image: &[u8]) -> ([u8; 48], u64) {
        use shared_abi::layout::tdvf::SectionType::{Bfv, Cfv};
        let meta = TdvfMetadata::parse(image).unwrap();
        let (mut h, mut adds) = (Sha384::new(), 0);
        for s in meta.sections() {
            let mem = match s.kind() {
                Some(Bfv | Cfv) => {
                    image[s.data_offset as usize..][..s.memory_size as usize].to_vec()
                }
                _ => vec![0; s.memory_size as usize],
            };
            for (i, page) in mem.chunks(PAGE).enumerate() {
                let gpa = s.memory_address + (i * PAGE) as u64;
                h.update(record(b"MEM.PAGE.ADD", gpa));
                adds += 1;
                for (c, chunk) in page.chunks(CHUNK).enumerate() {
                    if s.attributes & ATTR_MR_EXTEND != 0 {
                        h.update(record(b"MR.EXTEND", gpa + (c * CHUNK) as u64));
                        h.update(chunk);
                    }
                }
            }
        }
        (h.finalize().into(), adds)
    }

    /// QEMU never reads PAGE_AUG: a section that has it is still added with PAGE.ADD (its
    /// pages are in MRTD) like every other.
    #[test]
    fn page_aug_sections_are_added_as_qemu_adds_them() {
        let aug = with_sections(|s| s[1].attributes |= ATTR_PAGE_AUG);
        let (expect, adds) = as_qemu_builds_it(&aug);
        let all: u64 = sections().iter().map(|s| s.memory_size / PAGE as u64).sum();
        assert_eq!(adds, all);
        assert_eq!(mrtd_of(&aug), expect);
    }

    /// A BFV whose RawDataSize is smaller than its MemoryDataSize: QEMU copies MemoryDataSize
    /// bytes from DataOffset, so the bytes past the raw data are the image's, not zeros.
    #[test]
    fn a_short_bfv_is_read_past_its_raw_data() {
        let short = with_sections(|s| s[0].raw_size -= 0x1000);
        let meta = TdvfMetadata::parse(&short).unwrap();
        let bfv = meta.sections().next().unwrap();
        let copied = meta.qemu_source(&bfv);
        assert_eq!(copied.len() as u64, bfv.memory_size);
        // The reset vector lives in the last page: zeros there would be another MRTD.
        assert!(copied[copied.len() - 0x1000..].iter().any(|b| *b != 0));
        assert_eq!(mrtd_of(&short), as_qemu_builds_it(&short).0);
    }

    /// What QEMU would copy from beyond the image's end is refused with the section named.
    #[test]
    fn a_bfv_copied_past_the_images_end_is_refused() {
        let image = with_sections(|s| {
            s[0].data_offset = 0x1000;
            s[0].raw_size -= 0x1000;
        });
        let e = TdvfMetadata::parse(&image).unwrap_err();
        assert!(
            matches!(
                e,
                TdvfError::SourcePastImage {
                    index: 0,
                    data_offset: 0x1000,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("past the image's end"), "{e}");
    }
}

#[cfg(test)]
mod bounds {
    use super::*;

    /// A fuzzed image whose section table claims terabytes of TEMP_MEM: refused at once
    /// instead of hashed page by page (it took 20 s in a release build, far longer in debug).
    #[test]
    fn an_image_claiming_huge_added_sections_is_not_measured() {
        let data =
            include_bytes!("../../fuzz/corpus/tdvf_image/306a7316e1c18c1550695e121eb618b22eb67388");
        // As the fuzz target builds its image: the input right-aligned in 64 KiB.
        let align = shared_abi::layout::tdvf::IMAGE_SIZE_ALIGN;
        let mut image = vec![0u8; align];
        image[align - data.len()..].copy_from_slice(data);
        let t = std::time::Instant::now();
        match TdvfMetadata::parse(&image) {
            Ok(meta) => assert_eq!(mrtd(&meta), None),
            // Its BFV would also be copied from beyond the image: refused before measuring.
            Err(e) => assert!(
                matches!(
                    e,
                    shared_abi::layout::tdvf::TdvfError::SourcePastImage { .. }
                ),
                "{e}"
            ),
        }
        assert!(t.elapsed().as_secs() < 5, "refused without hashing");
        // Terabytes of TEMP_MEM in an otherwise valid image: parsed, but not measured.
        let mut image = crate::GUEST_IMAGE.to_vec();
        let mut s = crate::pack::sections();
        s[1].memory_size = 1 << 40;
        shared_abi::layout::tdvf::write_descriptor(&mut image, crate::pack::DESCRIPTOR_OFFSET, &s)
            .unwrap();
        let meta = TdvfMetadata::parse(&image).unwrap();
        assert_eq!(mrtd(&meta), None);
        assert!(t.elapsed().as_secs() < 5, "refused without hashing");
    }
}
