//! The default workload's memory layout (`tdxlab run`), shared by the guest that lays it out
//! and the host that checks before boot that RAM holds it.

/// vCPU 0's region starts here (below: the guest's own memory and heap).
pub const REGION_BASE: u64 = 4 << 20;
/// Distance between vCPU regions.
pub const STRIDE: u64 = 4 << 20;
/// Region size: one 2 MiB block plus one page, so accept uses both sizes.
pub const REGION: u64 = (2 << 20) + 4096;
/// Pages converted to shared and back.
pub const CONVERT_PAGES: u64 = 16;

/// The smallest RAM whose regions fit `vcpus` vCPUs.
pub const fn min_mem(vcpus: u32) -> u64 {
    REGION_BASE + (vcpus as u64 - 1) * STRIDE + REGION
}
