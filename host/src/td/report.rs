//! The report of a run: what each role counted ([`RunReport::collect`]), the console, and the
//! end-of-run audit.

use super::build::Td;
use super::run::Ended;
use crate::vmm::GuestExit;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

/// The report of `tdxlab run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// How the TD ended.
    pub exit: GuestExit,
    /// Every setting that shaped the run.
    pub settings: super::config::Settings,
    /// vCPUs.
    pub vcpus: u32,
    /// RAM bytes.
    pub mem_bytes: u64,
    /// The TD's guest physical-address width.
    pub gpaw: u8,
    /// The TD's shared bit (`gpaw - 1`).
    pub shared_bit: u32,
    /// True when `gpaw` is not one the TDX module reports (a host MAXPHYADDR below 48).
    pub gpaw_non_architectural: bool,
    /// From starting the vCPUs to the guest's first console line.
    pub boot_ms: f64,
    /// TDCALLs by leaf.
    pub tdcalls: BTreeMap<String, u64>,
    /// TDVMCALLs by sub-function.
    pub tdvmcalls: BTreeMap<String, u64>,
    /// Bytes the guest accepted.
    pub accepted_bytes: u64,
    /// MapGPA conversions to shared.
    pub conversions_to_shared: u64,
    /// MapGPA conversions to private.
    pub conversions_to_private: u64,
    /// EPT violations served (a `--prefault` mapping is not one: `prefault_maps`).
    pub ept_violations: u64,
    /// Mappings `--prefault` made through the fault path ahead of the guest's ACCEPTs.
    pub prefault_maps: u64,
    /// Pages they mapped.
    pub prefaulted_pages: u64,
    /// Leaves zapped (4K units).
    pub zaps: Zaps,
    /// Kick-all-vCPUs requests.
    pub kicks: u64,
    /// #VEs injected (raw port I/O and HLT, which the module turns into #VE).
    pub ves_injected: u64,
    /// Of those, raw HLTs (#VE exit reason 12).
    pub ves_hlt: u64,
    /// EPT-violation exits on private pages that were already accepted (MAPPED): pages the
    /// host failed to map. Must stay 0.
    pub exits_on_mapped_private: u64,
    /// Guest-memory faults the host read from the userfaultfd (a guest touch of a page it
    /// could not reach yet; duplicates included).
    pub memory_faults: u64,
    /// Pages the fault service ran through the EPT-violation path.
    pub memory_faults_served: u64,
    /// MapGPA RETRYs the host injected.
    pub map_gpa_retries_injected: u64,
    /// Host checks (SYNC_SHARED / SYNC_PRIVATE) served.
    pub host_checks: u64,
    /// Host checks that found something other than what the guest expected.
    pub host_check_mismatches: u64,
    /// Wall time.
    pub elapsed_s: f64,
    /// The guest's console.
    pub console: Vec<String>,
    /// The TSC rate measured during the run (guest cycle counts divide by this).
    pub tsc_hz: f64,
    /// With --accept-all: how long accepting all RAM took.
    pub accept_all_s: Option<f64>,
    /// MapGPA and implicit conversions (each hypercall chunk or memory-fault exit).
    pub conversions: u64,
    /// Pages whose attribute the VMM changed.
    pub pages_converted: u64,
    /// Implicit conversions (memory-fault exits QEMU-style converted).
    pub implicit_conversions: u64,
    /// Per vCPU: the conversions (MapGPA chunks and implicit ones) and pages the VMM served
    /// it — what each vCPU had done when a run stops before the guest reports (a SIGINT).
    pub vcpu_conversions: Vec<VcpuConversions>,
    /// TDH.MEM.PAGE.DEMOTEs: 2 MiB private mappings split because part of one was zapped.
    pub demotes: u64,
    /// TDH.MEM.PAGE.ADDs while the host built the TD (every page of every section without
    /// PAGE_AUG, the firmware window included).
    pub pages_added: u64,
    /// TDH.MR.EXTENDs: 256-byte chunks of the MR_EXTEND sections measured into MRTD.
    pub mr_extends: u64,
    /// Injected events by name (retry, busy, host_invalidate), only those asked for.
    pub injected: BTreeMap<String, u64>,
    /// What the end-of-run audit found: each a violated invariant (docs/model.md) (a leak or a
    /// lost guarantee). Empty on a clean run.
    pub audit: Vec<String>,
    /// VMAs the two memslot views of RAM span at the end of the run: 2 whatever the guest
    /// made reachable (the userfaultfd enforcement never splits a mapping; per-page mprotect
    /// did, up to vm.max_map_count).
    pub memslot_vmas: u64,
    /// 2 MiB accepts answered PAGE_SIZE_MISMATCH because KVM mapped the range with 4K
    /// pages (KVM maps private memory at 4K unless --inject private-page-size=2m); the
    /// guest accepted those pages at 4K instead. Not an injected event.
    pub accept_2m_fallbacks: u64,
    /// Seconds from starting the vCPUs to the last one stopping.
    pub vcpus_ran_s: f64,
    /// Seconds the end-of-run audit took.
    pub audit_s: f64,
    /// MRTD as the emulated TDX module measured the TD while the host built it (hex): every
    /// PAGE.ADD and MR.EXTEND, closed at MR.FINALIZE. `tdxlab inspect` computes the same from
    /// the image alone (`crate::mrtd`), which is what real hardware reports for it.
    pub mrtd: Option<String>,
    /// Exits by kind, kicks, memory system calls and host CPU time outside KVM_RUN, over
    /// the whole run (docs/performance.md).
    pub exits: super::ExitCounts,
    /// The same per measured window (vCPU 0's round trips: `4k-to-shared`, …), summed over
    /// its samples.
    pub windows: BTreeMap<String, super::WindowCounts>,
    /// When each console line arrived, in seconds since the vCPUs started (beside `console`;
    /// not part of the report).
    #[serde(skip)]
    pub console_at_s: Vec<f64>,
    /// Which vCPU printed each console line (not part of the report).
    #[serde(skip)]
    pub console_vcpu: Vec<u32>,
    /// The built-in guest ran (its RIPs can be named; not part of the report).
    #[serde(skip)]
    pub builtin_image: bool,
    /// Stdout's reader went away while the console was echoed (not part of the report).
    #[serde(skip)]
    pub stdout_closed: bool,
}

/// Zapped leaves per root.
/// One vCPU's conversions as the VMM served them.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct VcpuConversions {
    /// vCPU.
    pub vcpu: u32,
    /// MapGPA chunks and implicit conversions.
    pub conversions: u64,
    /// Pages in them.
    pub pages: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Zaps {
    /// Mirror (private).
    pub mirror: u64,
    /// Direct (shared).
    pub direct: u64,
}

impl RunReport {
    /// Everything the roles counted, read once the vCPUs have stopped (nothing moves under
    /// the audit). `elapsed_s` and `tsc_hz` are over the whole command, from `start`.
    pub fn collect(
        td: &Td,
        ended: Ended,
        start: (std::time::Instant, u64),
    ) -> anyhow::Result<RunReport> {
        let (cfg, seam, vmm, k) = (td.cfg, &td.seam, &td.vmm, &td.kvm.stats);
        let io = td.io();
        let console = io.output.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let at = io
            .output_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (console_at_s, console_vcpu) = (at.iter())
            .map(|(t, v)| (t.saturating_duration_since(ended.boot_at).as_secs_f64(), *v))
            .unzip();
        let audit_start = std::time::Instant::now();
        let elapsed_s = start.0.elapsed().as_secs_f64();
        let tsc_hz = (super::rdtsc() - start.1) as f64 / elapsed_s;
        let audit = super::audit::audit(&td.kvm, seam, &td.private, &td.shared);
        let audit_s = audit_start.elapsed().as_secs_f64();
        let memslot_vmas = (td.private.slot_vmas()? + td.shared.slot_vmas()?) as u64;
        let names = |m: &std::sync::Mutex<BTreeMap<&'static str, u64>>| -> BTreeMap<String, u64> {
            let m = m.lock().unwrap_or_else(|e| e.into_inner());
            m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let c = &td.counters;
        Ok(RunReport {
            exit: ended.exit,
            settings: cfg.settings(),
            vcpus: cfg.vcpus,
            mem_bytes: cfg.mem_bytes,
            gpaw: td.gpaw.bits(),
            shared_bit: td.gpaw.shared_bit(),
            gpaw_non_architectural: !td.gpaw.is_architectural(),
            boot_ms: ended.boot_ms,
            tdcalls: names(&c.tdcalls),
            tdvmcalls: names(&c.tdvmcalls),
            accepted_bytes: seam.stats.accepted_4k.load(Relaxed) * 4096,
            conversions_to_shared: vmm.conversions_to_shared.load(Relaxed),
            conversions_to_private: vmm.conversions_to_private.load(Relaxed),
            ept_violations: k.faults.load(Relaxed),
            prefault_maps: k.prefault_maps.load(Relaxed),
            prefaulted_pages: k.prefaulted.load(Relaxed),
            zaps: Zaps {
                mirror: k.zapped_mirror.load(Relaxed),
                direct: k.zapped_direct.load(Relaxed),
            },
            kicks: td.backend.kicks.load(Relaxed),
            ves_injected: c.ves.load(Relaxed),
            ves_hlt: c.hlt_ves.load(Relaxed),
            exits_on_mapped_private: c.exits_on_mapped.load(Relaxed),
            memory_faults: c.memory_faults.load(Relaxed),
            memory_faults_served: c.memory_faults_served.load(Relaxed),
            map_gpa_retries_injected: vmm.inject.retries.load(Relaxed),
            host_checks: vmm.host_checks.load(Relaxed),
            host_check_mismatches: vmm.host_check_mismatches.load(Relaxed),
            elapsed_s,
            accept_all_s: accept_all_s(&console, tsc_hz),
            console,
            tsc_hz,
            conversions: vmm.conversions(),
            pages_converted: vmm.pages_converted.load(Relaxed),
            implicit_conversions: vmm.implicit_conversions.load(Relaxed),
            vcpu_conversions: (0..cfg.vcpus)
                .map(|vcpu| {
                    let (conversions, pages) = vmm.vcpu_conversions(vcpu);
                    VcpuConversions {
                        vcpu,
                        conversions,
                        pages,
                    }
                })
                .collect(),
            demotes: seam.stats.demote.load(Relaxed),
            pages_added: seam.stats.page_add.load(Relaxed),
            mr_extends: seam.stats.mr_extend.load(Relaxed),
            injected: injected(td),
            accept_2m_fallbacks: seam.stats.accept_size_mismatch.load(Relaxed),
            audit,
            memslot_vmas,
            vcpus_ran_s: ended.ran_s,
            audit_s,
            mrtd: td.seam.mrtd().map(|m| crate::mrtd::hex(&m)),
            exits: td.account.snapshot(vmm),
            windows: td.account.windows(),
            console_at_s,
            console_vcpu,
            builtin_image: td.builtin,
            stdout_closed: io.stdout_closed.load(Relaxed),
        })
    }
}

/// With `--accept-all`: the guest's "accepted all RAM: N pages in C cycles" line, in seconds.
fn accept_all_s(console: &[String], tsc_hz: f64) -> Option<f64> {
    console.iter().find_map(|l| {
        let rest = l.strip_prefix("accepted all RAM: ")?;
        let cycles: f64 = rest.split(" in ").nth(1)?.split(' ').next()?.parse().ok()?;
        Some(cycles / tsc_hz)
    })
}

/// Injected events by name (only those asked for).
fn injected(td: &Td) -> BTreeMap<String, u64> {
    let (i, stats) = (&td.cfg.inject, &td.seam.stats);
    [
        ("retry", td.vmm.inject.retries.load(Relaxed), i.retry > 0.0),
        (
            "busy",
            stats.accept_busy_injected.load(Relaxed),
            i.busy > 0.0,
        ),
        (
            "host_invalidate",
            td.invalidations.load(Relaxed),
            i.host_invalidate_hz > 0,
        ),
    ]
    .into_iter()
    .filter(|(_, _, on)| *on)
    .map(|(name, n, _)| (name.to_string(), n))
    .collect()
}

impl RunReport {
    /// The guest's own account of a failure — its panic and exception lines, in full — each
    /// prefixed with its vCPU, RIPs named when the built-in guest ran.
    pub fn guest_failure_lines(&self) -> Vec<String> {
        (self.console.iter().zip(&self.console_vcpu))
            .filter(|(l, _)| l.starts_with("PANIC:") || l.starts_with("EXCEPTION"))
            .map(|(l, v)| format!("[guest vCPU {v}] {}", self.name_rip(l)))
            .collect()
    }

    /// "... at RIP 0x…, ..." with the symbol added after the address.
    fn name_rip(&self, line: &str) -> String {
        let Some(at) = line.find("RIP 0x") else {
            return line.to_string();
        };
        let hex: String = line[at + 6..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        let Ok(rip) = u64::from_str_radix(&hex, 16) else {
            return line.to_string();
        };
        let end = at + 6 + hex.len();
        let named = crate::symbols::describe_rip(rip, self.builtin_image);
        format!("{}{named}{}", &line[..at], &line[end..])
    }
}
