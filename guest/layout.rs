// The guest's memory layout, shared by the guest (include!) and the host's image packer.
// Firmware window: the image occupies [4 GiB - IMAGE_SIZE, 4 GiB); its last page holds the
// TDVF descriptor, the OVMF table and the reset vector.
/// Image size (a multiple of 64 KiB).
pub const IMAGE_SIZE: u64 = 512 << 10;
/// First byte of the image in guest physical memory.
pub const IMAGE_BASE: u64 = (1 << 32) - IMAGE_SIZE;
/// The page the packer owns: descriptor, sections, OVMF table, reset vector.
pub const METADATA_PAGE: u64 = (1 << 32) - 4096;
/// TEMP_MEM: .bss, page tables, the AP mailbox and the stacks (zeroed, accepted).
pub const TEMP_MEM_BASE: u64 = 0x10_0000;
/// TEMP_MEM size.
pub const TEMP_MEM_SIZE: u64 = 0x10_0000;
/// .bss lives at the start of TEMP_MEM.
pub const BSS_BASE: u64 = TEMP_MEM_BASE;
/// Boot page tables (16 pages).
pub const PT_BASE: u64 = 0x14_0000;
/// The mailbox: boot flag, arrival counter, commands.
pub const MAILBOX: u64 = 0x15_0000;
/// Stacks grow down from here, STACK_SIZE per vCPU.
pub const STACK_TOP: u64 = 0x20_0000;
/// Per-vCPU stack.
pub const STACK_SIZE: u64 = 0x8000;
/// Most vCPUs the layout has stacks for.
pub const MAX_VCPUS: u64 = 16;
/// TD_HOB section (8 KiB), written by the host.
pub const TD_HOB_BASE: u64 = 0x20_0000;
/// TD_HOB size.
pub const TD_HOB_SIZE: u64 = 0x2000;
/// Workload id in the tdxlab HOB: the default conversion round trip.
pub const WORKLOAD_DEFAULT: u32 = 0;
/// Workload id: the doorbell benchmark.
pub const WORKLOAD_BENCH_DOORBELL: u32 = 1;
/// Workload id: a conversion stress scenario (`shared_abi::stress`).
pub const WORKLOAD_STRESS: u32 = 2;
/// Workload id: the conversion benchmark (round trips, then 1 GiB accepted at 2 MiB next to
/// memset over the same memory).
pub const WORKLOAD_BENCH_CONVERT: u32 = 3;
/// Workload id: the conversion round trips alone (`bench convert --compare`, once per mode).
pub const WORKLOAD_BENCH_ROUND_TRIPS: u32 = 4;
/// The benchmark's bare exit: an `out` the host answers by re-entering at once.
pub const BENCH_BARE_PORT: u16 = 0x0DB1;
/// TDCALLs (and bare exits) the doorbell benchmark times.
pub const BENCH_SAMPLES: usize = 1000;
/// The most samples `bench doorbell --samples` takes (they live on the 1 MiB heap).
pub const MAX_BENCH_SAMPLES: usize = 50_000;
/// The guest heap: accepted by the BSP at boot.
pub const HEAP_BASE: u64 = 0x30_0000;
/// Heap size.
pub const HEAP_SIZE: u64 = 0x10_0000;
