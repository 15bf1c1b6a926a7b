//! EFI GUIDs in their on-disk byte order (first three fields little-endian).

use core::fmt;

/// An EFI GUID as the 16 bytes stored in an image.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Build from the textual fields `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }
    /// Read 16 bytes at `off`.
    pub fn read(b: &[u8], off: usize) -> Option<Guid> {
        Some(Guid(b.get(off..off.checked_add(16)?)?.try_into().ok()?))
    }
    /// A human name for the GUIDs this project knows.
    pub fn name(&self) -> Option<&'static str> {
        KNOWN.iter().find(|(g, _)| g == self).map(|(_, n)| *n)
    }
}

/// `96b582de-1fb2-45f7-baea-a366c55a082d`: footer of the OVMF GUIDed table.
pub const OVMF_TABLE_FOOTER: Guid = Guid::from_fields(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// `e47a6535-984a-4798-865e-4685a7bf8ec2`: TDX metadata offset entry.
pub const TDX_METADATA_OFFSET: Guid = Guid::from_fields(
    0xe47a_6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);
/// `e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae`: placed just before the TDVF descriptor.
pub const TDX_METADATA: Guid = Guid::from_fields(
    0xe9ea_f9f3,
    0x168e,
    0x44d5,
    [0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae],
);
/// `784fa70e-3176-4677-8a20-04b68699e374`: IGVM offset (OVMF).
pub const IGVM_OFFSET: Guid = Guid::from_fields(
    0x784f_a70e,
    0x3176,
    0x4677,
    [0x8a, 0x20, 0x04, 0xb6, 0x86, 0x99, 0xe3, 0x74],
);
/// `dc886566-984a-4798-a75e-5585a7bf67cc`: SEV metadata (OVMF).
pub const SEV_METADATA: Guid = Guid::from_fields(
    0xdc88_6566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);
/// `7255371f-3a3b-4b04-927b-1da6efa8d454`: SEV hash table (OVMF).
pub const SEV_HASH_TABLE: Guid = Guid::from_fields(
    0x7255_371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);
/// `4c2eb361-7d9b-4cc3-8081-127c90d3d294`: SEV secret (OVMF).
pub const SEV_SECRET: Guid = Guid::from_fields(
    0x4c2e_b361,
    0x7d9b,
    0x4cc3,
    [0x80, 0x81, 0x12, 0x7c, 0x90, 0xd3, 0xd2, 0x94],
);
/// `00f771de-1a7e-4fcb-890e-68c77e2fb44e`: SEV-ES reset block (OVMF).
pub const SEV_ES_RESET_BLOCK: Guid = Guid::from_fields(
    0x00f7_71de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// `6d2a4f2e-91b7-4a3c-9e51-7464786c6162`: tdxlab's emulation GUID-extension HOB.
pub const TDXLAB_HOB: Guid = Guid::from_fields(
    0x6d2a_4f2e,
    0x91b7,
    0x4a3c,
    [0x9e, 0x51, 0x74, 0x64, 0x78, 0x6c, 0x61, 0x62],
);
/// `6d2a4f2f-91b7-4a3c-9e51-7464786c6162`: the OVMF-table entry of an image that speaks
/// tdxlab's emulation doorbell; its data is the doorbell ABI version (u16). Real TDVF images
/// have none: they run in QEMU's TDX mode on TDX hardware, not on the emulated host.
pub const TDXLAB_DOORBELL: Guid = Guid::from_fields(
    0x6d2a_4f2f,
    0x91b7,
    0x4a3c,
    [0x9e, 0x51, 0x74, 0x64, 0x78, 0x6c, 0x61, 0x62],
);

const KNOWN: &[(Guid, &str)] = &[
    (OVMF_TABLE_FOOTER, "OVMF table footer"),
    (TDX_METADATA_OFFSET, "TDX metadata offset"),
    (TDX_METADATA, "TDX metadata"),
    (IGVM_OFFSET, "IGVM offset"),
    (SEV_METADATA, "SEV metadata"),
    (SEV_HASH_TABLE, "SEV hash table"),
    (SEV_SECRET, "SEV secret"),
    (SEV_ES_RESET_BLOCK, "SEV-ES reset block"),
    (TDXLAB_HOB, "tdxlab emulation HOB"),
    (TDXLAB_DOORBELL, "tdxlab doorbell ABI"),
];

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}
impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}
