//! The attribute-conversion protocol: what the guest asks (MapGPA), what KVM forwards to
//! userspace (KVM_HC_MAP_GPA_RANGE) and the memory attributes userspace sets.

use crate::{Gpa, GpaRange, Gpaw, PageLevel, PAGE_SIZE};

/// The side of a conversion.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum ConversionTarget {
    /// Private: encrypted, reachable only through the private alias.
    Private,
    /// Shared: reachable through the shared alias (GPA | shared bit).
    Shared,
}

impl ConversionTarget {
    /// "private" / "shared".
    pub const fn name(self) -> &'static str {
        match self {
            ConversionTarget::Private => "private",
            ConversionTarget::Shared => "shared",
        }
    }
}

/// A guest's request to convert `range` (private aliases, shared bit clear) to `to`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct ConversionRequest {
    /// The range, as private GPAs.
    pub range: GpaRange,
    /// Direction.
    pub to: ConversionTarget,
}

impl ConversionRequest {
    /// The MapGPA R12 for a request starting at `start`: to-shared requests carry the shared bit.
    pub const fn map_gpa_r12(self, start: Gpa, gpaw: Gpaw) -> Gpa {
        match self.to {
            ConversionTarget::Shared => gpaw.to_shared(start),
            ConversionTarget::Private => gpaw.to_private(start),
        }
    }
}

/// `KVM_HC_MAP_GPA_RANGE`: the KVM hypercall number MapGPA is forwarded as.
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// CPUID feature bit of KVM_FEATURE_HC_MAP_GPA_RANGE.
pub const KVM_FEATURE_HC_MAP_GPA_RANGE: u32 = 16;
/// KVM_MAP_GPA_RANGE_PAGE_SZ_4K.
pub const KVM_MAP_GPA_RANGE_PAGE_SZ_4K: u64 = 0;
/// KVM_MAP_GPA_RANGE_PAGE_SZ_2M.
pub const KVM_MAP_GPA_RANGE_PAGE_SZ_2M: u64 = 1;
/// KVM_MAP_GPA_RANGE_PAGE_SZ_1G.
pub const KVM_MAP_GPA_RANGE_PAGE_SZ_1G: u64 = 2;
/// KVM_MAP_GPA_RANGE_ENCRYPTED: bit 4 set = private.
pub const KVM_MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// KVM_MAP_GPA_RANGE_DECRYPTED: bit 4 clear = shared.
pub const KVM_MAP_GPA_RANGE_DECRYPTED: u64 = 0;
/// KVM's `TDX_MAP_GPA_MAX_LEN`: MapGPA is forwarded to userspace in chunks of at most 2 MiB.
pub const TDX_MAP_GPA_MAX_LEN: u64 = 2 << 20;

/// The arguments of a KVM_HC_MAP_GPA_RANGE exit (`kvm_run.hypercall.args[0..3]`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct MapGpaRangeArgs {
    /// args[0]: first GPA, shared bit stripped.
    pub gpa: Gpa,
    /// args[1]: number of pages of `page_size`.
    pub npages: u64,
    /// args[2] bits 3:0: page size (the TDX path always sends 4K).
    pub page_size: PageLevel,
    /// args[2] bit 4.
    pub to: ConversionTarget,
}

/// Why a KVM_HC_MAP_GPA_RANGE argument triple is malformed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum MapGpaRangeError {
    /// Bits 63:5 of args[2] are reserved.
    #[error("reserved attribute bits set in {0:#x}")]
    ReservedAttributes(u64),
    /// Page-size field not 0, 1 or 2.
    #[error("unknown page size {0}")]
    PageSize(u64),
    /// args[0] not aligned to the page size.
    #[error("gpa {0:#x} not aligned to the page size")]
    Unaligned(u64),
    /// The range overflows.
    #[error("range overflows")]
    Overflow,
}

impl MapGpaRangeArgs {
    /// Encode as `[args0, args1, args2]`.
    pub const fn encode(self) -> [u64; 3] {
        let dir = match self.to {
            ConversionTarget::Private => KVM_MAP_GPA_RANGE_ENCRYPTED,
            ConversionTarget::Shared => KVM_MAP_GPA_RANGE_DECRYPTED,
        };
        [self.gpa.0, self.npages, self.page_size as u64 | dir]
    }
    /// Decode and validate `[args0, args1, args2]` as KVM documents them.
    pub fn decode(args: [u64; 3]) -> Result<MapGpaRangeArgs, MapGpaRangeError> {
        if args[2] >> 5 != 0 {
            return Err(MapGpaRangeError::ReservedAttributes(args[2]));
        }
        let page_size = PageLevel::from_tdx_level(args[2] & 0xF)
            .ok_or(MapGpaRangeError::PageSize(args[2] & 0xF))?;
        if !Gpa(args[0]).is_aligned(page_size) {
            return Err(MapGpaRangeError::Unaligned(args[0]));
        }
        args[1]
            .checked_mul(page_size.bytes())
            .and_then(|b| args[0].checked_add(b))
            .ok_or(MapGpaRangeError::Overflow)?;
        let to = if args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED != 0 {
            ConversionTarget::Private
        } else {
            ConversionTarget::Shared
        };
        Ok(MapGpaRangeArgs {
            gpa: Gpa(args[0]),
            npages: args[1],
            page_size,
            to,
        })
    }
    /// The covered range.
    pub const fn range(self) -> GpaRange {
        GpaRange::new(self.gpa, self.npages * self.page_size.bytes())
    }
    /// The 4K-granular arguments KVM sends for `range` (shared bit stripped).
    pub const fn for_range(range: GpaRange, to: ConversionTarget, gpaw: Gpaw) -> MapGpaRangeArgs {
        MapGpaRangeArgs {
            gpa: gpaw.to_private(range.start),
            npages: range.len / PAGE_SIZE,
            page_size: PageLevel::Size4K,
            to,
        }
    }
}

/// `KVM_MEMORY_ATTRIBUTE_PRIVATE`.
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;

/// A GFN's memory attributes (`KVM_SET_MEMORY_ATTRIBUTES`); only PRIVATE is defined.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
#[repr(transparent)]
pub struct MemoryAttributes(pub u64);

impl MemoryAttributes {
    /// Shared: no attribute bits.
    pub const SHARED: MemoryAttributes = MemoryAttributes(0);
    /// Private.
    pub const PRIVATE: MemoryAttributes = MemoryAttributes(KVM_MEMORY_ATTRIBUTE_PRIVATE);
    /// True when PRIVATE is set.
    pub const fn is_private(self) -> bool {
        self.0 & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0
    }
    /// The attributes a conversion to `to` sets.
    pub const fn for_target(to: ConversionTarget) -> MemoryAttributes {
        match to {
            ConversionTarget::Private => Self::PRIVATE,
            ConversionTarget::Shared => Self::SHARED,
        }
    }
}
