//! The conversion stress workload's vocabulary, shared by `tdxlab stress` and the guest:
//! scenario numbers (carried in [`crate::layout::hob::TdxlabHob::param`]), option bits and the
//! console lines the guest reports its results with.

/// The vCPU chunks start here (below: the guest's own memory and heap).
pub const CHUNK_BASE: u64 = 4 << 20;
/// vCPU 0's measurement area at the top of RAM, when measuring.
pub const MEASURE_AREA: u64 = 4 << 20;
/// The random scenario's chunks are at most this big (the guest's page-table splits come
/// from its heap).
pub const RANDOM_CHUNK_MAX: u64 = 32 << 20;
const MB2: u64 = 2 << 20;

/// A stress scenario (the first two follow KVM's private_mem_conversions_test selftest).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u32)]
pub enum Scenario {
    /// private_mem_conversions_test's explicit-conversion sequence.
    Explicit = 1,
    /// private_mem_conversions_test's punch-hole sequence: the host discards private backing.
    PunchHole = 2,
    /// Accesses through the other alias without MapGPA; the host converts as QEMU does.
    Implicit = 3,
    /// Conversions that start, end or straddle 2 MiB boundaries.
    Boundary = 4,
    /// Seeded random conversions, writes, reads and host checks.
    Random = 5,
    /// Every other page of all RAM private (accepted), the pages between shared (converted
    /// on first touch): the most fragmented reachability there is, in one pass.
    Alternate = 6,
}

impl Scenario {
    /// Every scenario, in CLI order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Explicit,
        Scenario::PunchHole,
        Scenario::Implicit,
        Scenario::Boundary,
        Scenario::Random,
        Scenario::Alternate,
    ];
    /// Decode [`crate::layout::hob::TdxlabHob::param`].
    pub const fn from_u32(v: u32) -> Option<Scenario> {
        match v {
            1 => Some(Scenario::Explicit),
            2 => Some(Scenario::PunchHole),
            3 => Some(Scenario::Implicit),
            4 => Some(Scenario::Boundary),
            5 => Some(Scenario::Random),
            6 => Some(Scenario::Alternate),
            _ => None,
        }
    }
    /// The CLI name.
    pub const fn name(self) -> &'static str {
        match self {
            Scenario::Explicit => "explicit",
            Scenario::PunchHole => "punch-hole",
            Scenario::Implicit => "implicit",
            Scenario::Boundary => "boundary",
            Scenario::Random => "random",
            Scenario::Alternate => "alternate",
        }
    }
    /// Parse a CLI name.
    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|c| c.name() == s)
    }
    /// Bytes of guest RAM each vCPU's chunk needs at least.
    pub const fn min_chunk(self) -> u64 {
        match self {
            // 2 MiB + 4 KiB rounded up to 2 MiB, as the selftest does.
            Scenario::Explicit | Scenario::PunchHole | Scenario::Implicit => 4 << 20,
            // Four 2 MiB blocks: ranges straddle three boundaries.
            Scenario::Boundary => 8 << 20,
            Scenario::Random => 4 << 20,
            // All of RAM past the boot area, split between the vCPUs.
            Scenario::Alternate => 2 << 20,
        }
    }
    /// The smallest RAM for `vcpus` vCPUs of this scenario (with the measurement area).
    pub const fn min_mem(self, vcpus: u32, measure: bool) -> u64 {
        CHUNK_BASE + vcpus as u64 * self.min_chunk() + if measure { MEASURE_AREA } else { 0 }
    }
    /// Where vCPU `vcpu`'s chunk lies, `(base, len)` in bytes, given the RAM contiguous from
    /// GPA 0 (`ram`) and the vCPU count; `None` when that RAM is too little. The guest works
    /// there and the host's `--html` map draws the same bytes, so both ask this one function.
    pub const fn chunk(self, vcpu: u32, vcpus: u32, ram: u64, measure: bool) -> Option<(u64, u64)> {
        if vcpus == 0 || vcpu >= vcpus {
            return None;
        }
        let top = ram.saturating_sub(if measure { MEASURE_AREA } else { 0 });
        let avail = top.saturating_sub(CHUNK_BASE) / vcpus as u64 / MB2 * MB2;
        let len = match self {
            Scenario::Random if avail < RANDOM_CHUNK_MAX => avail,
            Scenario::Random => RANDOM_CHUNK_MAX,
            Scenario::Alternate => avail,
            s => s.min_chunk(),
        };
        if len < self.min_chunk() || avail < len {
            return None;
        }
        Some((CHUNK_BASE + vcpu as u64 * len, len))
    }
}

/// [`crate::layout::hob::TdxlabHob::options`] bits of the stress workload.
pub mod options {
    /// vCPU 0 measures the doorbell floor and 4K / 2M round trips before the scenario starts.
    pub const MEASURE: u32 = 1 << 0;
}

/// Prefix of the guest's per-vCPU result line:
/// `stress-result vcpu=V ops=N conversions=N pages=N checks=N hash=H`.
pub const RESULT_LINE: &str = "stress-result";
/// A vCPU's phase change: `stress-phase vcpu=N phase=scenario` when its scenario starts
/// (after vCPU 0's measurements), `phase=sweep` when its final check of every page starts.
pub const PHASE_LINE: &str = "stress-phase";
/// Prefix of vCPU 0's measurement line:
/// `stress-measure floor=CYC rt4k=CYC rt2m=CYC n4k=N n2m=N`.
pub const MEASURE_LINE: &str = "stress-measure";

/// The value of `key=` in a `key=value` console line.
pub fn field(line: &str, key: &str) -> Option<u64> {
    line.split_ascii_whitespace().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        if k != key {
            return None;
        }
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    })
}
