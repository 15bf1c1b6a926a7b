//! The TDCALL instructions in a vmlinux's text, checked to be Linux's own, and the patch that
//! lets a stock KVM see them.
//!
//! Linux issues every TDCALL from the `TDX_MODULE_CALL host=0` macro
//! (arch/x86/virt/vmx/tdx/tdxcall.S, used by arch/x86/coco/tdx/tdcall.S for `__tdcall`,
//! `__tdcall_ret` and `__tdcall_saved_ret`). Each expansion starts by moving the leaf from
//! RDI to RAX and loading RCX, RDX and R8–R11 from `struct tdx_module_args` at RSI (offsets
//! 0 to 0x28); the saved variant then pushes the callee-saved registers and loads the rest.
//! A `66 0F 01 CC` is accepted as a site only when that entry sequence precedes it closely;
//! anything else — data that happens to hold the bytes, a hand-written TDCALL — makes the
//! kernel refused rather than patched blindly.

use super::vmlinux::Vmlinux;
use serde::Serialize;

/// `TDCALL`.
pub const TDCALL: [u8; 4] = [0x66, 0x0F, 0x01, 0xCC];
/// The I/O port a patched site exits on. `out imm8` reaches only ports 0–0xFF; 0xDB is
/// decoded by no device tdxlab emulates, and the host takes an OUT to it as a TDCALL only at
/// a patched RIP (anywhere else it is raw port I/O, a #VE like any other).
pub const PATCH_PORT: u8 = 0xDB;
/// What replaces each site: `66 90` (a 2-byte NOP) then `E6 DB` (`out 0xdb, al`). The OUT
/// changes no register and exits to userspace on every KVM (PVM included); the NOP keeps the
/// instruction the same length as the TDCALL, so the guest resumes right after it.
pub const PATCH: [u8; 4] = [0x66, 0x90, 0xE6, PATCH_PORT];
/// How far before a site the macro's entry sequence may end (the saved variant's pushes and
/// loads between the two are 36 bytes in Linux 6.12).
const MAX_GAP: usize = 64;
/// `mov %rdi,%rax; mov (%rsi),%rcx; mov 8(%rsi),%rdx; mov 0x10(%rsi),%r8;
/// mov 0x18(%rsi),%r9; mov 0x20(%rsi),%r10; mov 0x28(%rsi),%r11`: `TDX_MODULE_CALL`'s entry.
const ENTRY: [u8; 26] = [
    0x48, 0x89, 0xF8, 0x48, 0x8B, 0x0E, 0x48, 0x8B, 0x56, 0x08, 0x4C, 0x8B, 0x46, 0x10, 0x4C, 0x8B,
    0x4E, 0x18, 0x4C, 0x8B, 0x56, 0x20, 0x4C, 0x8B, 0x5E, 0x28,
];

/// Which expansion of the macro a site belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Inputs RCX..R11, outputs not stored (`__tdcall`).
    Plain,
    /// Inputs RCX..R11, outputs stored back to the args (`__tdcall_ret`).
    Ret,
    /// Inputs RCX..R15, RBX, RDI, RSI, callee-saved registers pushed (`__tdcall_saved_ret`).
    SavedRet,
}

impl Variant {
    /// One line for `inspect`.
    pub fn describe(self) -> &'static str {
        match self {
            Variant::Plain => "as __tdcall: RCX..R11 in",
            Variant::Ret => "as __tdcall_ret: RCX..R11 in and out",
            Variant::SavedRet => "as __tdcall_saved_ret: RCX..R15, RBX, RDI, RSI in and out",
        }
    }
}

/// One TDCALL site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Site {
    /// Its virtual address (where the kernel runs it).
    pub vaddr: u64,
    /// Its physical address (where a loader puts it).
    pub paddr: u64,
    /// Its offset in the vmlinux file.
    pub file_offset: u64,
    /// Which expansion of `TDX_MODULE_CALL`.
    pub variant: Variant,
}

/// A TDCALL that is not Linux's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SiteError {
    /// No `TDX_MODULE_CALL` entry precedes it.
    #[error("the TDCALL at {vaddr:#x} (file offset {file_offset:#x}) is not inside Linux's TDX_MODULE_CALL; tdxlab patches only those")]
    NotLinuxs {
        /// Its virtual address.
        vaddr: u64,
        /// Its file offset.
        file_offset: u64,
    },
}

/// Every TDCALL in the executable segments, each checked to be one of Linux's.
pub fn find(k: &Vmlinux) -> Result<Vec<Site>, SiteError> {
    let mut sites = Vec::new();
    for seg in k.segments.iter().filter(|s| s.executable()) {
        let text = k.data(seg);
        for at in memchr_all(text, &TDCALL) {
            let (vaddr, file_offset) = (seg.vaddr + at as u64, seg.offset + at as u64);
            let variant = classify(text, at).ok_or(SiteError::NotLinuxs { vaddr, file_offset })?;
            sites.push(Site {
                vaddr,
                paddr: seg.paddr + at as u64,
                file_offset,
                variant,
            });
        }
    }
    Ok(sites)
}

/// Offsets of `needle` in `hay`.
fn memchr_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// The expansion the TDCALL at `at` belongs to, if `TDX_MODULE_CALL`'s entry ends within
/// [`MAX_GAP`] bytes before it.
fn classify(text: &[u8], at: usize) -> Option<Variant> {
    let window = &text[at.saturating_sub(MAX_GAP + ENTRY.len())..at];
    let entry = window.windows(ENTRY.len()).rposition(|w| w == ENTRY)?;
    let gap = window.len() - (entry + ENTRY.len());
    let after = text.get(at + TDCALL.len()..)?;
    Some(if gap > 0 {
        Variant::SavedRet
    } else if after.starts_with(&[0x48, 0x89, 0x0E]) {
        // `mov %rcx,(%rsi)`: the outputs go back into the args.
        Variant::Ret
    } else {
        Variant::Plain
    })
}

/// `text` with every site of `sites` (file offsets) replaced by [`PATCH`].
pub fn patch(vmlinux: &mut [u8], sites: &[Site]) {
    for s in sites {
        let at = s.file_offset as usize;
        vmlinux[at..at + PATCH.len()].copy_from_slice(&PATCH);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::linux::vmlinux::tests::elf;

    /// Linux 6.12's three expansions as Debian's kernel holds them (endbr64 first), padded.
    pub(crate) fn linux_text() -> Vec<u8> {
        let endbr = [0xF3, 0x0F, 0x1E, 0xFA];
        let mut t = vec![0x90; 16];
        // __tdcall: entry, TDCALL, jmp to the return thunk.
        t.extend_from_slice(&endbr);
        t.extend_from_slice(&ENTRY);
        t.extend_from_slice(&TDCALL);
        t.extend_from_slice(&[0xE9, 0x79, 0x55, 0x01, 0x00]);
        t.extend_from_slice(&[0x90; 11]);
        // __tdcall_ret: entry, TDCALL, mov %rcx,(%rsi).
        t.extend_from_slice(&endbr);
        t.extend_from_slice(&ENTRY);
        t.extend_from_slice(&TDCALL);
        t.extend_from_slice(&[0x48, 0x89, 0x0E]);
        t.extend_from_slice(&[0x90; 13]);
        // __tdcall_saved_ret: entry, pushes and the other loads, TDCALL.
        t.extend_from_slice(&endbr);
        t.extend_from_slice(&ENTRY);
        t.extend_from_slice(&[
            0x53, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57, 0x4C, 0x8B, 0x66, 0x30, 0x4C,
            0x8B, 0x6E, 0x38, 0x4C, 0x8B, 0x76, 0x40, 0x4C, 0x8B, 0x7E, 0x48, 0x48, 0x8B, 0x5E,
            0x50, 0x56, 0x48, 0x8B, 0x7E, 0x58, 0x48, 0x8B, 0x76, 0x60,
        ]);
        t.extend_from_slice(&TDCALL);
        t.extend_from_slice(&[0x50; 8]);
        t
    }

    #[test]
    fn linuxs_three_expansions_are_found_and_told_apart() {
        let f = elf(&linux_text(), 0x1c7_e000, None);
        let k = Vmlinux::parse(&f).unwrap();
        let sites = find(&k).unwrap();
        let variants: Vec<Variant> = sites.iter().map(|s| s.variant).collect();
        assert_eq!(variants, [Variant::Plain, Variant::Ret, Variant::SavedRet]);
        for s in &sites {
            assert_eq!(&f[s.file_offset as usize..][..4], &TDCALL);
            assert_eq!(s.vaddr - s.paddr, 0xffff_ffff_8000_0000);
        }
    }

    #[test]
    fn a_tdcall_outside_the_macro_is_refused() {
        let mut text = linux_text();
        text.extend_from_slice(&[0x90; 80]);
        text.extend_from_slice(&TDCALL);
        let f = elf(&text, 0x100_0000, None);
        let k = Vmlinux::parse(&f).unwrap();
        let e = find(&k).unwrap_err();
        let SiteError::NotLinuxs { file_offset, .. } = e;
        assert_eq!(&f[file_offset as usize..][..4], &TDCALL);
        assert!(
            e.to_string().contains("not inside Linux's TDX_MODULE_CALL"),
            "{e}"
        );
    }

    #[test]
    fn patching_replaces_exactly_the_sites() {
        let mut f = elf(&linux_text(), 0x100_0000, None);
        let before = f.clone();
        let sites = find(&Vmlinux::parse(&f).unwrap()).unwrap();
        patch(&mut f, &sites);
        let in_a_site = |i: usize| {
            sites
                .iter()
                .any(|s| (s.file_offset as usize..s.file_offset as usize + 4).contains(&i))
        };
        assert!((0..f.len()).all(|i| f[i] == before[i] || in_a_site(i)));
        for s in &sites {
            assert_eq!(&f[s.file_offset as usize..][..4], &PATCH);
        }
        assert!(find(&Vmlinux::parse(&f).unwrap()).unwrap().is_empty());
    }
}
