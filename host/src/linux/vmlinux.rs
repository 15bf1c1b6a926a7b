//! The vmlinux ELF: its loadable segments and the PVH entry note (Linux's
//! arch/x86/platform/pvh/head.S declares `XEN_ELFNOTE_PHYS32_ENTRY`; the note's layout is
//! Xen's include/public/elfnote.h).

use object::elf::{FileHeader64, EM_X86_64, ET_EXEC, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE};
use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian as LE;
use serde::Serialize;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit, paging-off entry a PVH loader jumps to.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Why a file is not a vmlinux tdxlab can read.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    /// Not a 64-bit little-endian ELF.
    #[error("not a 64-bit ELF: {0}")]
    Elf(#[from] object::read::Error),
    /// An ELF, but not an x86-64 executable.
    #[error("an ELF of machine {machine} and type {kind}, not an x86-64 executable")]
    NotX86Executable {
        /// e_machine.
        machine: u16,
        /// e_type.
        kind: u16,
    },
    /// No PT_LOAD segment, or one whose bytes lie outside the file.
    #[error("segment {0} has no bytes in the file, or bytes outside it")]
    BadSegment(usize),
}

/// One PT_LOAD segment.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Segment {
    /// Where the kernel runs it (virtual).
    pub vaddr: u64,
    /// Where a loader puts it (physical).
    pub paddr: u64,
    /// Its bytes in the file.
    pub offset: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest zeroed).
    pub memsz: u64,
    /// `PF_R`/`PF_W`/`PF_X`.
    pub flags: u32,
}

impl Segment {
    /// Whether it holds code.
    pub fn executable(&self) -> bool {
        self.flags & PF_X != 0
    }

    /// "R-X" style.
    pub fn flags_str(&self) -> String {
        [(PF_R, 'R'), (PF_W, 'W'), (PF_X, 'X')]
            .iter()
            .map(|(f, c)| if self.flags & f != 0 { *c } else { '-' })
            .collect()
    }
}

/// A parsed vmlinux.
#[derive(Debug)]
pub struct Vmlinux<'a> {
    /// The file.
    pub bytes: &'a [u8],
    /// `e_entry`.
    pub entry: u64,
    /// The PVH entry, if the kernel has the note.
    pub pvh_entry: Option<u64>,
    /// The PT_LOAD segments in file order.
    pub segments: Vec<Segment>,
}

impl<'a> Vmlinux<'a> {
    /// Parse `bytes` as an x86-64 executable ELF.
    pub fn parse(bytes: &'a [u8]) -> Result<Vmlinux<'a>, VmlinuxError> {
        let h = FileHeader64::<LE>::parse(bytes)?;
        let e = h.endian()?;
        let (machine, kind) = (h.e_machine(e), h.e_type(e));
        if machine != EM_X86_64 || kind != ET_EXEC {
            return Err(VmlinuxError::NotX86Executable { machine, kind });
        }
        let (mut segments, mut pvh_entry) = (Vec::new(), None);
        for (i, ph) in h.program_headers(e, bytes)?.iter().enumerate() {
            match ph.p_type(e) {
                PT_LOAD => {
                    let s = Segment {
                        vaddr: ph.p_vaddr(e),
                        paddr: ph.p_paddr(e),
                        offset: ph.p_offset(e),
                        filesz: ph.p_filesz(e),
                        memsz: ph.p_memsz(e),
                        flags: ph.p_flags(e),
                    };
                    if s.offset
                        .checked_add(s.filesz)
                        .is_none_or(|end| end > bytes.len() as u64)
                        || s.filesz > s.memsz
                    {
                        return Err(VmlinuxError::BadSegment(i));
                    }
                    segments.push(s);
                }
                PT_NOTE => pvh_entry = pvh_entry.or(pvh_note(ph, e, bytes)),
                _ => {}
            }
        }
        if segments.is_empty() {
            return Err(VmlinuxError::BadSegment(0));
        }
        Ok(Vmlinux {
            bytes,
            entry: h.e_entry(e),
            pvh_entry,
            segments,
        })
    }

    /// The file bytes of segment `s`.
    pub fn data(&self, s: &Segment) -> &'a [u8] {
        &self.bytes[s.offset as usize..(s.offset + s.filesz) as usize]
    }
}

/// The PVH entry of one PT_NOTE segment, if it carries `Xen`'s PHYS32_ENTRY (a 32- or
/// 64-bit address: Linux writes it with `_ASM_PTR`).
fn pvh_note(ph: &object::elf::ProgramHeader64<LE>, e: LE, bytes: &[u8]) -> Option<u64> {
    let mut notes = ph.notes(e, bytes).ok()??;
    while let Ok(Some(n)) = notes.next() {
        if n.name() != b"Xen" || n.n_type(e) != XEN_ELFNOTE_PHYS32_ENTRY {
            continue;
        }
        let d = n.desc();
        return match d.len() {
            4 => Some(u64::from(u32::from_le_bytes(d.try_into().ok()?))),
            8 => Some(u64::from_le_bytes(d.try_into().ok()?)),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal x86-64 executable ELF: one R-X PT_LOAD holding `text` at `paddr`
    /// (vaddr 0xffffffff80000000 + paddr), and a PT_NOTE with Xen's PHYS32_ENTRY `pvh`.
    pub(crate) fn elf(text: &[u8], paddr: u64, pvh: Option<u32>) -> Vec<u8> {
        let phnum: u16 = if pvh.is_some() { 2 } else { 1 };
        let text_off = 64 + 56 * u64::from(phnum);
        let note_off = text_off + text.len() as u64;
        let mut f = Vec::new();
        // ELF header.
        f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        f.extend_from_slice(&ET_EXEC.to_le_bytes());
        f.extend_from_slice(&EM_X86_64.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&(0xffff_ffff_8000_0000 + paddr).to_le_bytes()); // e_entry
        f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        for v in [64u16, 56, phnum, 64, 0, 0] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        let ph = |f: &mut Vec<u8>, kind: u32, flags: u32, off: u64, va: u64, pa: u64, sz: u64| {
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&flags.to_le_bytes());
            for v in [off, va, pa, sz, sz, 8] {
                f.extend_from_slice(&v.to_le_bytes());
            }
        };
        let va = 0xffff_ffff_8000_0000 + paddr;
        ph(
            &mut f,
            PT_LOAD,
            PF_R | PF_X,
            text_off,
            va,
            paddr,
            text.len() as u64,
        );
        if pvh.is_some() {
            ph(&mut f, PT_NOTE, PF_R, note_off, 0, 0, 20);
        }
        f.extend_from_slice(text);
        if let Some(entry) = pvh {
            for v in [4u32, 4, XEN_ELFNOTE_PHYS32_ENTRY] {
                f.extend_from_slice(&v.to_le_bytes());
            }
            f.extend_from_slice(b"Xen\0");
            f.extend_from_slice(&entry.to_le_bytes());
        }
        f
    }

    #[test]
    fn segments_and_the_pvh_entry_are_read() {
        let f = elf(&[0x90; 32], 0x100_0000, Some(0x100_0a30));
        let k = Vmlinux::parse(&f).unwrap();
        assert_eq!(k.pvh_entry, Some(0x100_0a30));
        assert_eq!(k.entry, 0xffff_ffff_8100_0000);
        assert_eq!(k.segments.len(), 1);
        let s = &k.segments[0];
        assert_eq!(
            (s.paddr, s.filesz, s.flags_str().as_str()),
            (0x100_0000, 32, "R-X")
        );
        assert_eq!(k.data(s), &[0x90; 32]);
        let plain = elf(&[0x90; 32], 0x100_0000, None);
        assert_eq!(Vmlinux::parse(&plain).unwrap().pvh_entry, None);
    }

    #[test]
    fn other_files_are_refused_with_the_reason() {
        assert!(matches!(
            Vmlinux::parse(b"not an elf"),
            Err(VmlinuxError::Elf(_))
        ));
        let mut f = elf(&[0x90; 8], 0x100_0000, None);
        f[16] = 3; // ET_DYN
        assert!(matches!(
            Vmlinux::parse(&f),
            Err(VmlinuxError::NotX86Executable { kind: 3, .. })
        ));
    }
}
