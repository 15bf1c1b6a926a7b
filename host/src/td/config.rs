//! What `tdxlab run` boots ([`RunConfig`]) and the limits it is checked against.

use crate::kvm::{BeyondUpstream, ZapPolicy};
use shared_abi::PageLevel;
use std::time::Duration;

const GIB: u64 = 1 << 30;
/// Largest RAM the emulated TD takes (from 2.75 GiB on, laid out as QEMU's q35 does: 2 GiB
/// below the 32-bit PCI hole, the rest from 4 GiB; `RamLayout`). Lazy accept makes a large
/// TD cheap: only what the guest touches is allocated.
pub const MAX_MEM: u64 = 16 * GIB;
/// The largest TD_HOB section tdxlab fills (OVMF's is 8 KiB; the list is a few hundred
/// bytes): the host allocates the section's size to build it.
pub const MAX_TD_HOB: u64 = 1 << 20;
/// Most vCPUs the emulated host creates for a TD. The built-in guest runs on the first
/// `guest_layout::MAX_VCPUS` (its stacks) and parks the others at boot, as it would under
/// QEMU with a larger `-smp`.
pub const MAX_VCPUS: u32 = 64;
/// Smallest RAM: the image's TEMP_MEM and TD_HOB sections must fit.
pub const MIN_MEM: u64 = 16 << 20;

/// What `tdxlab run` boots.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The TDVF image.
    pub image: Vec<u8>,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM bytes.
    pub mem_bytes: u64,
    /// Zap semantics of the MMU model.
    pub policy: ZapPolicy,
    /// Refuse implicit conversions.
    pub strict: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// Guest configuration flags (shared_abi::layout::hob::config).
    pub flags: u32,
    /// Echo guest console lines.
    pub echo: bool,
    /// Which guest workload (`guest_layout::WORKLOAD_*`).
    pub workload: u32,
    /// Test-only: make the host leak a private byte before each SYNC_PRIVATE check.
    pub plant_leak: bool,
    /// Fault injection.
    pub inject: InjectConfig,
    /// The stress workload's parameters (with `workload` = `guest_layout::WORKLOAD_STRESS`).
    pub stress: Option<StressParams>,
    /// Force the TD's GPAW (`--gpaw`); `None` picks it from the host (`caps::default_gpaw`).
    pub gpaw: Option<u8>,
    /// Samples a benchmark workload takes (0: its default).
    pub bench_samples: u32,
    /// Behaviour beyond upstream KVM (`--tdx-remove`, `--prefault`).
    pub beyond: BeyondUpstream,
    /// Give the machine an isa-debug-exit device (`--no-debug-exit` leaves it out, as QEMU
    /// without `-device isa-debug-exit`: the guest then powers off through ACPI).
    pub debug_exit: bool,
    /// Record the run's map (`stress --html`).
    pub map: Option<std::sync::Arc<crate::map::Recorder>>,
    /// Boot this Linux kernel instead of the TDVF image (`run --kernel`).
    pub kernel: Option<std::sync::Arc<LinuxKernel>>,
}

/// A Linux kernel to boot as the TD (`run --kernel`, `--initrd`, `--append`).
#[derive(Debug)]
pub struct LinuxKernel {
    /// The vmlinux ELF (a bzImage's payload already unpacked).
    pub vmlinux: Vec<u8>,
    /// The initrd, if any.
    pub initrd: Option<Vec<u8>>,
    /// The kernel command line.
    pub cmdline: String,
}

/// What `--inject` asks for; every injected event is counted in the report.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct InjectConfig {
    /// Probability that an event is pending after each 2 MiB chunk of a longer MapGPA, so
    /// KVM answers RETRY there.
    pub retry: f64,
    /// Probability that TDG.MEM.PAGE.ACCEPT answers OPERAND_BUSY.
    pub busy: f64,
    /// The largest page KVM maps private memory with (4K is KVM today: 2 MiB accepts get
    /// PAGE_SIZE_MISMATCH and fall back).
    #[serde(serialize_with = "page_size_name")]
    pub private_page_size: PageLevel,
    /// mmu-notifier invalidations of shared memory per second (0: none).
    pub host_invalidate_hz: u32,
}

impl Default for InjectConfig {
    fn default() -> InjectConfig {
        InjectConfig {
            retry: 0.0,
            busy: 0.0,
            private_page_size: PageLevel::Size4K,
            host_invalidate_hz: 0,
        }
    }
}

impl InjectConfig {
    /// Is anything injected?
    pub fn any(&self) -> bool {
        self.retry > 0.0 || self.busy > 0.0 || self.host_invalidate_hz > 0
    }
}

/// The stress workload's parameters, handed to the guest in the tdxlab HOB.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StressParams {
    /// Which scenario.
    #[serde(serialize_with = "scenario_name")]
    pub scenario: shared_abi::stress::Scenario,
    /// Seed of the per-vCPU operation sequences.
    pub seed: u64,
    /// How long to keep repeating (at least one pass).
    pub seconds: f64,
    /// Most operations per vCPU (0: no limit).
    pub ops: u32,
    /// vCPU 0 measures the doorbell floor and the 4K / 2M round trips first.
    pub measure: bool,
}

/// Live counters, handed to the progress callback a few times a second.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Since the vCPUs started.
    pub elapsed_s: f64,
    /// MapGPA and implicit conversions so far.
    pub conversions: u64,
    /// Pages whose attribute changed so far.
    pub pages_converted: u64,
    /// Host checks served so far.
    pub host_checks: u64,
    /// Host checks that failed so far.
    pub mismatches: u64,
    /// vCPUs that started their stress scenario, started their final sweep, reported.
    pub stress_marks: (u32, u32, u32),
}

fn page_size_name<S: serde::Serializer>(l: &PageLevel, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&l.name().to_ascii_lowercase())
}

fn scenario_name<S: serde::Serializer>(
    sc: &shared_abi::stress::Scenario,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(sc.name())
}

/// Every setting that shaped a run, recorded in its report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Settings {
    /// The zap policy of the MMU model.
    pub zap_policy: ZapPolicy,
    /// `--strict`.
    pub strict: bool,
    /// `--timeout`, seconds.
    pub timeout_s: u64,
    /// `--gpaw` when forced (the TD's GPAW is in the report either way).
    pub gpaw_forced: Option<u8>,
    /// Fault injection.
    pub inject: InjectConfig,
    /// The guest's configuration flags (`--misbehave`, `--accept-all`).
    pub flags: u32,
    /// The stress workload's parameters (seed, ops, seconds...), for `stress`.
    pub stress: Option<StressParams>,
    /// The built-in guest, or an image given with `--image`.
    pub builtin_image: bool,
    /// Test-only leak planting (`TDXLAB_TEST_PLANT_LEAK`).
    pub plant_leak: bool,
    /// Behaviour beyond upstream KVM (`--tdx-remove`, `--prefault`).
    pub beyond: BeyondUpstream,
    /// Whether the machine had an isa-debug-exit device.
    pub debug_exit: bool,
}

impl RunConfig {
    /// The settings as the report records them.
    pub fn settings(&self) -> Settings {
        Settings {
            zap_policy: self.policy,
            strict: self.strict,
            timeout_s: self.timeout.as_secs(),
            gpaw_forced: self.gpaw,
            inject: self.inject.clone(),
            flags: self.flags,
            stress: self.stress.clone(),
            builtin_image: self.image == crate::GUEST_IMAGE,
            plant_leak: self.plant_leak,
            beyond: self.beyond,
            debug_exit: self.debug_exit,
        }
    }
}
