//! The bzImage format: the real-mode setup header and the compressed payload the
//! decompressor unpacks into vmlinux (Linux's Documentation/arch/x86/boot.rst, "The Real-Mode
//! Kernel Header"; the payload fields since boot protocol 2.08).

use std::io::Read;

/// Offsets in the setup header (boot.rst).
const SETUP_SECTS: usize = 0x1F1;
const BOOT_FLAG: usize = 0x1FE;
const HEADER: usize = 0x202;
const VERSION: usize = 0x206;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24C;
/// The payload fields appear with boot protocol 2.08.
const MIN_VERSION: u16 = 0x0208;
/// The largest vmlinux tdxlab unpacks (Debian's is about 55 MiB).
pub const MAX_VMLINUX: u64 = 256 << 20;

/// Why a file is not a bzImage tdxlab can read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BzImageError {
    /// No 0xAA55 boot flag or "HdrS" magic.
    #[error("not a bzImage (no setup header)")]
    NotBzImage,
    /// A boot protocol older than 2.08 has no payload fields.
    #[error("boot protocol {0:#06x} is older than 2.08 (no payload_offset)")]
    OldProtocol(u16),
    /// The payload lies outside the file.
    #[error("the payload [{start:#x}, {end:#x}) lies outside the {len}-byte file")]
    PayloadOutside {
        /// First byte.
        start: u64,
        /// One past the last.
        end: u64,
        /// The file's length.
        len: usize,
    },
    /// A compression tdxlab does not unpack.
    #[error("the payload is {0}-compressed; tdxlab unpacks zstd (CONFIG_KERNEL_ZSTD, as Debian builds): pass the vmlinux instead")]
    Unsupported(&'static str),
    /// The zstd stream is broken.
    #[error("unpacking the zstd payload: {0}")]
    Zstd(String),
    /// The unpacked size disagrees with the size the kernel build appended.
    #[error("the payload unpacks to {got} bytes, its trailer says {want}")]
    SizeMismatch {
        /// Unpacked.
        got: u64,
        /// The trailer (the build's size_append).
        want: u64,
    },
    /// More than [`MAX_VMLINUX`].
    #[error("the payload unpacks to more than {} MiB", MAX_VMLINUX >> 20)]
    TooLarge,
}

/// The fields of the setup header tdxlab reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Sectors of real-mode setup code after the boot sector (0 means 4).
    pub setup_sects: u8,
    /// The boot protocol version (0x020f = 2.15).
    pub version: u16,
    /// The payload's offset from the start of the protected-mode code.
    pub payload_offset: u32,
    /// The payload's length.
    pub payload_length: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl SetupHeader {
    /// The header of `file`, if it is a bzImage of boot protocol 2.08 or later.
    pub fn parse(file: &[u8]) -> Result<SetupHeader, BzImageError> {
        if u16_at(file, BOOT_FLAG) != Some(0xAA55) || file.get(HEADER..HEADER + 4) != Some(b"HdrS")
        {
            return Err(BzImageError::NotBzImage);
        }
        let version = u16_at(file, VERSION).ok_or(BzImageError::NotBzImage)?;
        if version < MIN_VERSION {
            return Err(BzImageError::OldProtocol(version));
        }
        Ok(SetupHeader {
            setup_sects: file[SETUP_SECTS],
            version,
            payload_offset: u32_at(file, PAYLOAD_OFFSET).ok_or(BzImageError::NotBzImage)?,
            payload_length: u32_at(file, PAYLOAD_LENGTH).ok_or(BzImageError::NotBzImage)?,
        })
    }

    /// "2.15".
    pub fn protocol(&self) -> String {
        format!("{}.{:02}", self.version >> 8, self.version & 0xFF)
    }

    /// Where the protected-mode code starts in the file: after the boot sector and the
    /// setup sectors.
    pub fn protected_mode_start(&self) -> u64 {
        let sects = if self.setup_sects == 0 {
            4
        } else {
            self.setup_sects
        };
        (u64::from(sects) + 1) * 512
    }

    /// The compressed payload's bytes.
    pub fn payload<'a>(&self, file: &'a [u8]) -> Result<&'a [u8], BzImageError> {
        let start = self.protected_mode_start() + u64::from(self.payload_offset);
        let end = start + u64::from(self.payload_length);
        usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| file.get(s..e))
            .ok_or(BzImageError::PayloadOutside {
                start,
                end,
                len: file.len(),
            })
    }
}

/// A payload's compression, by its magic (the formats of Linux's `CONFIG_KERNEL_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `28 B5 2F FD`.
    Zstd,
    /// `1F 8B`.
    Gzip,
    /// `FD 37 7A 58 5A 00`.
    Xz,
    /// `42 5A 68` ("BZh").
    Bzip2,
    /// `89 4C 5A 4F` (lzop).
    Lzo,
    /// `02 21 4C 18` (legacy LZ4 frame).
    Lz4,
    /// `5D 00 00`.
    Lzma,
    /// Anything else.
    Unknown,
}

impl Compression {
    /// The compression `payload` starts with.
    pub fn of(payload: &[u8]) -> Compression {
        let magics: [(&[u8], Compression); 7] = [
            (&[0x28, 0xB5, 0x2F, 0xFD], Compression::Zstd),
            (&[0x1F, 0x8B], Compression::Gzip),
            (&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00], Compression::Xz),
            (b"BZh", Compression::Bzip2),
            (&[0x89, 0x4C, 0x5A, 0x4F], Compression::Lzo),
            (&[0x02, 0x21, 0x4C, 0x18], Compression::Lz4),
            (&[0x5D, 0x00, 0x00], Compression::Lzma),
        ];
        magics
            .into_iter()
            .find(|(m, _)| payload.starts_with(m))
            .map_or(Compression::Unknown, |(_, c)| c)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Lzo => "lzo",
            Compression::Lz4 => "lz4",
            Compression::Lzma => "lzma",
            Compression::Unknown => "an unknown format",
        }
    }
}

/// Unpack a zstd payload into the vmlinux ELF. The kernel build appends the unpacked size as
/// 4 little-endian bytes after the zstd frame (`size_append` in scripts/Makefile.lib): the
/// frame is decoded alone and its size checked against them.
pub fn decompress(payload: &[u8]) -> Result<Vec<u8>, BzImageError> {
    let c = Compression::of(payload);
    if c != Compression::Zstd {
        return Err(BzImageError::Unsupported(c.name()));
    }
    let mut input = payload;
    let decoder = ruzstd::decoding::StreamingDecoder::new(&mut input)
        .map_err(|e| BzImageError::Zstd(e.to_string()))?;
    let mut out = Vec::new();
    decoder
        .take(MAX_VMLINUX + 1)
        .read_to_end(&mut out)
        .map_err(|e| BzImageError::Zstd(e.to_string()))?;
    if out.len() as u64 > MAX_VMLINUX {
        return Err(BzImageError::TooLarge);
    }
    let trailer = payload
        .len()
        .checked_sub(4)
        .and_then(|at| u32_at(payload, at));
    match trailer {
        Some(want) if u64::from(want) != out.len() as u64 => Err(BzImageError::SizeMismatch {
            got: out.len() as u64,
            want: u64::from(want),
        }),
        _ => Ok(out),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal bzImage: boot sector and one setup sector, the header fields set, then
    /// `payload` at payload_offset 0x10 from the protected-mode code.
    pub(crate) fn bzimage(version: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 2 * 512 + 0x10];
        f[SETUP_SECTS] = 1;
        f[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xAA55u16.to_le_bytes());
        f[HEADER..HEADER + 4].copy_from_slice(b"HdrS");
        f[VERSION..VERSION + 2].copy_from_slice(&version.to_le_bytes());
        f[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&0x10u32.to_le_bytes());
        let len = payload.len() as u32;
        f[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&len.to_le_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_header_locates_the_payload() {
        let f = bzimage(0x020F, b"\x1f\x8bgzip");
        let h = SetupHeader::parse(&f).unwrap();
        assert_eq!(h.protocol(), "2.15");
        assert_eq!(h.protected_mode_start(), 1024);
        let p = h.payload(&f).unwrap();
        assert_eq!(p, b"\x1f\x8bgzip");
        assert_eq!(Compression::of(p), Compression::Gzip);
        assert_eq!(decompress(p), Err(BzImageError::Unsupported("gzip")));
    }

    #[test]
    fn bad_headers_are_named() {
        assert_eq!(
            SetupHeader::parse(&[0u8; 600]),
            Err(BzImageError::NotBzImage)
        );
        let old = bzimage(0x0206, b"");
        assert_eq!(
            SetupHeader::parse(&old),
            Err(BzImageError::OldProtocol(0x0206))
        );
        let mut f = bzimage(0x020F, b"abcd");
        f.truncate(f.len() - 2);
        let h = SetupHeader::parse(&f).unwrap();
        assert!(matches!(
            h.payload(&f),
            Err(BzImageError::PayloadOutside { .. })
        ));
    }

    /// A zstd frame of "hello" (one raw block), as `zstd --no-check` writes it.
    const HELLO_ZSTD: [u8; 14] = [
        0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x58, 0x29, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o',
    ];

    #[test]
    fn a_zstd_payload_unpacks_and_its_size_trailer_is_checked() {
        let frame = &HELLO_ZSTD[..];
        let mut payload = frame.to_vec();
        payload.extend_from_slice(&5u32.to_le_bytes());
        assert_eq!(decompress(&payload).unwrap(), b"hello");
        let mut wrong = frame.to_vec();
        wrong.extend_from_slice(&6u32.to_le_bytes());
        assert_eq!(
            decompress(&wrong),
            Err(BzImageError::SizeMismatch { got: 5, want: 6 })
        );
        assert!(matches!(
            decompress(&frame[..10]),
            Err(BzImageError::Zstd(_))
        ));
    }
}
