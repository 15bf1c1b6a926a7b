//! Guest physical addresses, the shared-bit rule and page levels.

use core::fmt;

/// Bytes in a 4 KiB page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A guest physical address, possibly carrying the shared bit.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Gpa(pub u64);

/// A guest frame number (GPA >> 12), as KVM's `gfn_t`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Gfn(pub u64);

impl Gpa {
    /// The frame this address lies in.
    pub const fn gfn(self) -> Gfn {
        Gfn(self.0 >> PAGE_SHIFT)
    }
    /// True when the address is aligned to `level`'s page size.
    pub const fn is_aligned(self, level: PageLevel) -> bool {
        self.0 & (level.bytes() - 1) == 0
    }
    /// The address rounded down to `level`'s page size.
    pub const fn align_down(self, level: PageLevel) -> Gpa {
        Gpa(self.0 & !(level.bytes() - 1))
    }
    /// `self + bytes`, or `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<Gpa> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(Gpa(v)),
            None => None,
        }
    }
}

impl Gfn {
    /// The first address of this frame.
    pub const fn gpa(self) -> Gpa {
        Gpa(self.0 << PAGE_SHIFT)
    }
}

impl fmt::Debug for Gpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gpa({:#x})", self.0)
    }
}
impl fmt::Display for Gpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
impl fmt::Debug for Gfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gfn({:#x})", self.0)
    }
}

/// The TD's guest physical-address width; it fixes the shared bit at `GPAW - 1`.
///
/// GPAW 48 pairs with 4-level EPT (shared bit 47), GPAW 52 with 5-level EPT (shared bit 51).
/// An emulated TD on a host whose MAXPHYADDR is below 48 (Intel clients report 39 bits, many
/// Xeons 46) uses a non-architectural width equal to that MAXPHYADDR ([`Gpaw::emulated`]):
/// guest page tables cannot carry a bit the CPU treats as reserved.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Gpaw(u8);

impl Gpaw {
    /// GPAW 48: shared bit 47 (4-level EPT).
    pub const GPAW_48: Gpaw = Gpaw(48);
    /// GPAW 52: shared bit 51 (TD_PARAMS CONFIG_FLAGS.MAX_GPAW).
    pub const GPAW_52: Gpaw = Gpaw(52);
    /// The narrowest width an emulated TD may have: x86-64's smallest MAXPHYADDR.
    pub const MIN_EMULATED_BITS: u8 = 36;

    /// The width the TDX module reports; only 48 and 52 exist.
    pub const fn new(bits: u8) -> Option<Gpaw> {
        match bits {
            48 | 52 => Some(Gpaw(bits)),
            _ => None,
        }
    }
    /// A width an emulated TD may have: 48 or 52, or a non-architectural width from
    /// [`Gpaw::MIN_EMULATED_BITS`] to 51 (a host MAXPHYADDR). Only tdxlab's emulation reports
    /// these; a guest accepts them only when the emulation HOB says it is emulated.
    pub const fn emulated(bits: u8) -> Option<Gpaw> {
        if bits >= Self::MIN_EMULATED_BITS && bits <= 52 {
            Some(Gpaw(bits))
        } else {
            None
        }
    }
    /// True for the widths the TDX module reports (48 and 52).
    pub const fn is_architectural(self) -> bool {
        self.0 == 48 || self.0 == 52
    }
    /// Address width in bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Index of the shared bit (`GPAW - 1`).
    pub const fn shared_bit(self) -> u32 {
        self.0 as u32 - 1
    }
    /// `1 << (GPAW - 1)`, Linux's `cc_mask`.
    pub const fn shared_mask(self) -> u64 {
        1 << self.shared_bit()
    }
    /// True when `gpa` is below `1 << GPAW` (shared bit included).
    pub const fn is_valid(self, gpa: Gpa) -> bool {
        gpa.0 >> self.0 == 0
    }
    /// True when `gpa` carries the shared bit.
    pub const fn is_shared(self, gpa: Gpa) -> bool {
        gpa.0 & self.shared_mask() != 0
    }
    /// `gpa` with the shared bit set: the shared alias.
    pub const fn to_shared(self, gpa: Gpa) -> Gpa {
        Gpa(gpa.0 | self.shared_mask())
    }
    /// `gpa` with the shared bit cleared: the private alias (KVM's `gfn_to_private`).
    pub const fn to_private(self, gpa: Gpa) -> Gpa {
        Gpa(gpa.0 & !self.shared_mask())
    }
}

/// A leaf page size, numbered as TDX S-EPT levels and KVM's MAP_GPA_RANGE page-size field.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
#[repr(u8)]
pub enum PageLevel {
    /// 4 KiB (TDX_PS_4K = 0).
    Size4K = 0,
    /// 2 MiB (TDX_PS_2M = 1).
    Size2M = 1,
    /// 1 GiB (TDX_PS_1G = 2).
    Size1G = 2,
}

impl PageLevel {
    /// All leaf levels, largest first: the order accept tries them in.
    pub const LARGEST_FIRST: [PageLevel; 3] =
        [PageLevel::Size1G, PageLevel::Size2M, PageLevel::Size4K];

    /// The TDX level encoding (RCX bits 2:0 of ACCEPT, AUG, BLOCK ...).
    pub const fn tdx_level(self) -> u64 {
        self as u64
    }
    /// Decode a TDX level encoding; levels above 1G are not leaf sizes.
    pub const fn from_tdx_level(v: u64) -> Option<PageLevel> {
        match v {
            0 => Some(PageLevel::Size4K),
            1 => Some(PageLevel::Size2M),
            2 => Some(PageLevel::Size1G),
            _ => None,
        }
    }
    /// Linux's `enum pg_level` (PG_LEVEL_4K = 1): TDX level + 1.
    pub const fn linux_pg_level(self) -> u8 {
        self as u8 + 1
    }
    /// log2 of the page size.
    pub const fn shift(self) -> u32 {
        PAGE_SHIFT + 9 * self as u32
    }
    /// Page size in bytes.
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }
    /// 4 KiB pages in one page of this level.
    pub const fn pages_4k(self) -> u64 {
        self.bytes() / PAGE_SIZE
    }
    /// The next smaller level, `None` for 4K.
    pub const fn smaller(self) -> Option<PageLevel> {
        match self {
            PageLevel::Size1G => Some(PageLevel::Size2M),
            PageLevel::Size2M => Some(PageLevel::Size4K),
            PageLevel::Size4K => None,
        }
    }
    /// Short name: "4K", "2M", "1G".
    pub const fn name(self) -> &'static str {
        match self {
            PageLevel::Size4K => "4K",
            PageLevel::Size2M => "2M",
            PageLevel::Size1G => "1G",
        }
    }
}

impl fmt::Display for PageLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A half-open byte range of guest physical addresses `[start, start + len)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct GpaRange {
    /// First byte.
    pub start: Gpa,
    /// Length in bytes.
    pub len: u64,
}

impl GpaRange {
    /// `[start, start + len)`.
    pub const fn new(start: Gpa, len: u64) -> GpaRange {
        GpaRange { start, len }
    }
    /// One past the last byte, or `None` if the range wraps.
    pub const fn end(self) -> Option<Gpa> {
        self.start.checked_add(self.len)
    }
    /// True when `gpa` lies inside the range.
    pub const fn contains(self, gpa: Gpa) -> bool {
        gpa.0 >= self.start.0 && gpa.0 - self.start.0 < self.len
    }
    /// True when start and length are multiples of 4 KiB.
    pub const fn is_page_aligned(self) -> bool {
        (self.start.0 | self.len) & (PAGE_SIZE - 1) == 0
    }
    /// True when the range is empty.
    pub const fn is_empty(self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for GpaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:#x}, {:#x})",
            self.start.0,
            self.start.0.wrapping_add(self.len)
        )
    }
}
