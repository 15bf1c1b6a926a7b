//! Linux kernel images as a TD would boot them: a bzImage's setup header and compressed
//! payload (`bzimage`), the vmlinux ELF inside it with its PVH entry (`vmlinux`), and the
//! TDCALL instructions in its text that a stock KVM cannot trap (`tdcall_sites`).
//!
//! Stock KVM turns a `TDCALL` (`66 0F 01 CC`) into a #UD it re-injects into the guest: no
//! exit reaches userspace, on either vendor (`handle_ud` in Linux's arch/x86/kvm/x86.c). A
//! Linux kernel has its TDCALLs in three functions (`__tdcall`, `__tdcall_ret`,
//! `__tdcall_saved_ret`, all built from the `TDX_MODULE_CALL` macro of
//! arch/x86/virt/vmx/tdx/tdxcall.S), so the emulated host can rewrite each site into an
//! instruction that does exit: [`tdcall_sites::PATCH`]. `tdxlab inspect KERNEL` reports what
//! it finds ([`inspect`]); booting such a kernel as a TD (`run --kernel`) builds on it.

pub mod bzimage;
pub mod tdcall_sites;
pub mod vmlinux;

use anyhow::Context;
use serde::Serialize;
use std::path::Path;

/// Whether `file` looks like a kernel (a bzImage or an ELF executable) rather than firmware.
pub fn is_kernel(file: &[u8]) -> bool {
    bzimage::SetupHeader::parse(file).is_ok() || file.starts_with(b"\x7fELF")
}

/// What `inspect` reports of a kernel.
#[derive(Debug, Serialize)]
pub struct KernelInfo {
    /// `bzImage` or `vmlinux`.
    pub format: &'static str,
    /// The bzImage's boot protocol version ("2.15"), if a bzImage.
    pub boot_protocol: Option<String>,
    /// The payload's compression, if a bzImage.
    pub compression: Option<&'static str>,
    /// Bytes of the vmlinux ELF.
    pub vmlinux_bytes: usize,
    /// The ELF entry point (physical: a vmlinux's `e_entry` is `startup_64`'s load address).
    pub entry: u64,
    /// The PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`), if the kernel has one.
    pub pvh_entry: Option<u64>,
    /// The loadable segments.
    pub segments: Vec<vmlinux::Segment>,
    /// The TDCALL sites, each checked to be inside Linux's `TDX_MODULE_CALL`.
    pub tdcall_sites: Vec<tdcall_sites::Site>,
}

/// A kernel file's vmlinux: a bzImage's payload unpacked, or the file itself if it is one.
pub fn vmlinux_of(file: &[u8]) -> anyhow::Result<Vec<u8>> {
    match bzimage::SetupHeader::parse(file) {
        Ok(h) => Ok(bzimage::decompress(h.payload(file)?)?),
        Err(_) => {
            vmlinux::Vmlinux::parse(file)?;
            Ok(file.to_vec())
        }
    }
}

/// Read a kernel image (bzImage or vmlinux) down to its vmlinux and describe it.
pub fn describe(file: &[u8]) -> anyhow::Result<KernelInfo> {
    let (format, boot_protocol, compression, elf) = match bzimage::SetupHeader::parse(file) {
        Ok(h) => {
            let payload = h.payload(file)?;
            let elf = bzimage::decompress(payload)?;
            (
                "bzImage",
                Some(h.protocol()),
                Some(bzimage::Compression::of(payload).name()),
                elf,
            )
        }
        Err(_) => ("vmlinux", None, None, file.to_vec()),
    };
    let k = vmlinux::Vmlinux::parse(&elf)?;
    let sites = tdcall_sites::find(&k)?;
    Ok(KernelInfo {
        format,
        boot_protocol,
        compression,
        vmlinux_bytes: elf.len(),
        entry: k.entry,
        pvh_entry: k.pvh_entry,
        segments: k.segments.clone(),
        tdcall_sites: sites,
    })
}

/// `tdxlab inspect KERNEL [--json]`.
pub fn inspect(path: &Path, file: &[u8], json: bool) -> anyhow::Result<u8> {
    let info = describe(file)
        .with_context(|| format!("{} is not a kernel tdxlab can read", path.display()))?;
    if json {
        crate::outln!("{}", crate::output::json("inspect", &info)?)?;
        return Ok(0);
    }
    print(path, &info)?;
    Ok(0)
}

fn print(path: &Path, info: &KernelInfo) -> anyhow::Result<()> {
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    match (&info.boot_protocol, info.compression) {
        (Some(p), Some(c)) => crate::outln!(
            "{}: bzImage, boot protocol {p}, {c} payload: a {:.1} MiB vmlinux",
            path.display(),
            mib(info.vmlinux_bytes)
        )?,
        _ => crate::outln!(
            "{}: vmlinux, {:.1} MiB",
            path.display(),
            mib(info.vmlinux_bytes)
        )?,
    }
    crate::outln!("  entry (startup_64)   {:#x}", info.entry)?;
    match info.pvh_entry {
        Some(e) => crate::outln!("  PVH entry            {e:#x} (XEN_ELFNOTE_PHYS32_ENTRY)")?,
        None => crate::outln!("  PVH entry            none")?,
    }
    crate::outln!(
        "  {:<8} {:>18} {:>12} {:>12} {:>12}",
        "segment",
        "vaddr",
        "paddr",
        "filesz",
        "memsz"
    )?;
    for s in &info.segments {
        crate::outln!(
            "  {:<8} {:>#18x} {:>#12x} {:>#12x} {:>#12x}",
            s.flags_str(),
            s.vaddr,
            s.paddr,
            s.filesz,
            s.memsz
        )?;
    }
    crate::outln!(
        "  TDCALL sites: {}, each inside Linux's TDX_MODULE_CALL (tdxcall.S)",
        info.tdcall_sites.len()
    )?;
    for s in &info.tdcall_sites {
        crate::outln!(
            "    {:#x} (phys {:#x}, file offset {:#x})  {}",
            s.vaddr,
            s.paddr,
            s.file_offset,
            s.variant.describe()
        )?;
    }
    let p = tdcall_sites::PATCH;
    crate::outln!(
        "  emulated TDX replaces each with {:02x} {:02x} {:02x} {:02x} (a 2-byte NOP, then `out {:#x}, al`), after measuring the original bytes",
        p[0], p[1], p[2], p[3], tdcall_sites::PATCH_PORT
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage whose zstd payload is a vmlinux with Linux's three TDCALL expansions and a
    /// PVH note, as Debian builds them, read down to its sites.
    #[test]
    fn a_zstd_bzimage_is_read_down_to_its_tdcall_sites() {
        let elf = vmlinux::tests::elf(
            &tdcall_sites::tests::linux_text(),
            0x100_0000,
            Some(0x100_0a30),
        );
        let mut payload = ruzstd::encoding::compress_to_vec(
            &elf[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let file = bzimage::tests::bzimage(0x020F, &payload);
        assert!(is_kernel(&file) && is_kernel(&elf));
        assert!(!is_kernel(crate::GUEST_IMAGE));
        let info = describe(&file).unwrap();
        assert_eq!(
            (info.format, info.compression, info.vmlinux_bytes),
            ("bzImage", Some("zstd"), elf.len())
        );
        assert_eq!(info.pvh_entry, Some(0x100_0a30));
        assert_eq!(info.tdcall_sites.len(), 3);
        assert_eq!(describe(&elf).unwrap().tdcall_sites, info.tdcall_sites);
    }
}
