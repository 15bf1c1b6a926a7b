//! What the host told this TD at boot, parsed once from the TD HOB by the BSP: the tdxlab
//! HOB (workload, flags, doorbell; absent on real TDX) and the RAM resources.

use crate::layout::TD_HOB_SIZE;
use shared_abi::layout::hob::{resource_type, HobList, TdxlabHob};

/// The most unaccepted RAM ranges the guest keeps (QEMU's TD HOB has one per RAM range).
pub const MAX_UNACCEPTED: usize = 8;
/// The most RAM resources (added or unaccepted) the guest keeps.
pub const MAX_RAM: usize = 16;

/// The TD HOB's contents the guest uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootInfo {
    /// The tdxlab HOB, if the host wrote one (tdxlab's emulated host does; QEMU does not).
    pub tdxlab: Option<TdxlabHob>,
    /// Unaccepted RAM ranges (start, length), `n_unaccepted` of them.
    pub unaccepted: [(u64, u64); MAX_UNACCEPTED],
    /// How many of `unaccepted` are used.
    pub n_unaccepted: usize,
    /// Every RAM resource (start, length), `n_ram` of them: below 4 GiB, and from 4 GiB when
    /// QEMU splits RAM around the 32-bit PCI hole. MMIO resources are not RAM.
    pub ram: [(u64, u64); MAX_RAM],
    /// How many of `ram` are used.
    pub n_ram: usize,
    /// The end of the highest RAM resource.
    pub ram_end: u64,
    /// The end of the RAM that starts at GPA 0 (identity-mapped, where the workloads live).
    pub low_ram_end: u64,
}

static INFO: spin::Once<BootInfo> = spin::Once::new();

/// Parse the TD HOB at `hob` (BSP, once, before any other vCPU runs Rust code).
pub fn init(hob: u64) -> &'static BootInfo {
    INFO.call_once(|| {
        // SAFETY: the host wrote the TD HOB list at `hob`, inside the TD_HOB section, which
        // is accepted memory added before the TD started.
        let bytes =
            unsafe { core::slice::from_raw_parts(hob as usize as *const u8, TD_HOB_SIZE as usize) };
        parse(bytes)
    })
}

/// The boot information (after `init`; an unparsable HOB reads as empty).
pub fn get() -> &'static BootInfo {
    static EMPTY: BootInfo = BootInfo {
        tdxlab: None,
        unaccepted: [(0, 0); MAX_UNACCEPTED],
        n_unaccepted: 0,
        ram: [(0, 0); MAX_RAM],
        n_ram: 0,
        ram_end: 0,
        low_ram_end: 0,
    };
    INFO.get().unwrap_or(&EMPTY)
}

fn parse(bytes: &[u8]) -> BootInfo {
    let mut info = BootInfo::default();
    let Ok(list) = HobList::parse(bytes) else {
        return info;
    };
    info.tdxlab = list.tdxlab();
    for r in list.resources() {
        let is_ram = matches!(
            r.resource_type,
            resource_type::SYSTEM_MEMORY | resource_type::MEMORY_UNACCEPTED
        );
        if !is_ram {
            continue;
        }
        info.ram_end = info.ram_end.max(r.start + r.length);
        if info.n_ram < MAX_RAM {
            info.ram[info.n_ram] = (r.start, r.length);
            info.n_ram += 1;
        }
        if r.resource_type == resource_type::MEMORY_UNACCEPTED && info.n_unaccepted < MAX_UNACCEPTED
        {
            info.unaccepted[info.n_unaccepted] = (r.start, r.length);
            info.n_unaccepted += 1;
        }
    }
    info.low_ram_end = contiguous_end(&info.ram[..info.n_ram], 0);
    info
}

/// The end of the run of `ram` resources that are contiguous from `start`.
fn contiguous_end(ram: &[(u64, u64)], start: u64) -> u64 {
    let mut end = start;
    while let Some(&(s, l)) = ram.iter().find(|(s, l)| *s <= end && s + l > end) {
        end = s + l;
    }
    end
}

impl BootInfo {
    /// The tdxlab HOB, or all zero on real TDX.
    pub fn tdxlab_hob(&self) -> TdxlabHob {
        self.tdxlab.unwrap_or_default()
    }
    /// The host's configuration flags (`shared_abi::layout::hob::config`).
    pub fn flags(&self) -> u32 {
        self.tdxlab.map_or(0, |h| h.flags)
    }
    /// The workload the host asked for (`layout::WORKLOAD_*`).
    pub fn workload(&self) -> u32 {
        self.tdxlab.map_or(0, |h| h.workload)
    }
    /// The RAM resources.
    pub fn ram_ranges(&self) -> &[(u64, u64)] {
        &self.ram[..self.n_ram]
    }
    /// The unaccepted RAM ranges.
    pub fn unaccepted_ram(&self) -> &[(u64, u64)] {
        &self.unaccepted[..self.n_unaccepted]
    }
}
