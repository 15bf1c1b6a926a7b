//! The sim backend: N simulated vCPUs as host threads, each running a seeded random workload
//! through the real `tdcall` crate against `seam` + `kvm` in-process, with a software TLB
//! filled on access and emptied only by a flush or a kick. It checks on every access that a
//! vCPU reads what it last wrote through a valid mapping and that private data never shows
//! through the shared alias; under `--zap-policy v19` it shows the stale TLB entries the
//! dropped flush leaves behind.

mod backend;
pub mod cli;
mod vcpu;
pub mod walkthrough;

pub use backend::{SimBackend, POISON};
pub use vcpu::{GuestError, PRIVATE_TAG, SHARED_TAG};

use crate::kvm::{Kvm, KvmConfig, ZapPolicy};
use crate::seam::{TdParams, TdxModule};
use crate::vmm::{Injector, Vmm};
use serde::Serialize;
use shared_abi::td::attributes::SEPT_VE_DISABLE;
use shared_abi::{Gpaw, PageLevel};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The most guest pages a simulation holds (1 GiB of simulated RAM): every page costs the
/// simulator about 8 KiB of host memory (a shared and a private frame of atomic words plus
/// their generations), so this bounds it near 2 GiB.
pub(crate) const MAX_PAGES: u64 = 1 << 18;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Simulated vCPUs.
    pub vcpus: u32,
    /// Random operations per vCPU.
    pub ops: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Zap semantics.
    pub policy: ZapPolicy,
    /// Pages each vCPU owns.
    pub region_pages: u64,
    /// Largest private mapping.
    pub private_max_level: PageLevel,
    /// MapGPA RETRY injection probability.
    pub retry_p: f64,
    /// TDG.MEM.PAGE.ACCEPT OPERAND_BUSY injection probability.
    pub busy_p: f64,
    /// Keep going until this much time has passed (each vCPU stops at `ops` or here,
    /// whichever comes first; None: `ops` alone).
    pub seconds: Option<f64>,
    /// Check the invariants every this many operations per vCPU.
    pub invariant_every: u64,
    /// The TD's guest physical-address width (the shared bit is `gpaw - 1`).
    pub gpaw: Gpaw,
    /// Behaviour beyond upstream KVM (`--tdx-remove`, `--prefault`).
    pub beyond: crate::kvm::BeyondUpstream,
    /// Record the run's map (`--html`): its regions are the vCPUs'.
    pub map: Option<Arc<crate::map::Recorder>>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            vcpus: 4,
            ops: 2000,
            seed: 1,
            policy: ZapPolicy::Filter,
            region_pages: 1024,
            private_max_level: PageLevel::Size4K,
            retry_p: 0.0,
            busy_p: 0.0,
            seconds: None,
            invariant_every: 64,
            gpaw: Gpaw::GPAW_48,
            beyond: Default::default(),
            map: None,
        }
    }
}

/// Per-vCPU counters, summed into the report.
#[derive(Default, Debug, Clone)]
pub struct Counters {
    /// MapGPA calls completed.
    pub conversions: u64,
    /// Bytes accepted.
    pub accepted_bytes: u64,
    /// Guest reads.
    pub reads: u64,
    /// Guest writes.
    pub writes: u64,
    /// EPT violations taken on accesses.
    pub ept_violations: u64,
    /// TLB hits on a translation whose frame was retired (the missing-flush symptom).
    pub stale_tlb_reads: u64,
    /// Reads that did not return what was last written through a valid mapping.
    pub data_mismatches: u64,
    /// Private data seen through the shared alias.
    pub private_leaks: u64,
    /// Host mmu-notifier invalidations (page migrations).
    pub host_invalidations: u64,
    /// RETRYs the MapGPA loop absorbed.
    pub map_gpa_retries: u64,
    /// Invariant checks run.
    pub invariant_checks: u64,
    /// Invariant violations found.
    pub invariant_violations: u64,
    /// First messages describing problems.
    pub notes: Vec<String>,
}

impl Counters {
    fn note(&mut self, s: String) {
        if self.notes.len() < 8 {
            self.notes.push(s);
        }
    }
    fn add(&mut self, o: &Counters) {
        self.conversions += o.conversions;
        self.accepted_bytes += o.accepted_bytes;
        self.reads += o.reads;
        self.writes += o.writes;
        self.ept_violations += o.ept_violations;
        self.stale_tlb_reads += o.stale_tlb_reads;
        self.data_mismatches += o.data_mismatches;
        self.private_leaks += o.private_leaks;
        self.host_invalidations += o.host_invalidations;
        self.map_gpa_retries += o.map_gpa_retries;
        self.invariant_checks += o.invariant_checks;
        self.invariant_violations += o.invariant_violations;
        for n in &o.notes {
            self.note(n.clone());
        }
    }
}

/// The simulated machine.
pub struct World {
    /// The TDX module.
    pub seam: Arc<TdxModule>,
    /// The hypervisor MMU.
    pub kvm: Arc<Kvm>,
    /// The VMM.
    pub vmm: Vmm,
    /// The backend.
    pub backend: Arc<SimBackend>,
    /// GPA width.
    pub gpaw: Gpaw,
}

impl World {
    /// Build seam + kvm + vmm over a sim backend for `cfg`.
    pub fn new(cfg: &SimConfig) -> World {
        let gfns = cfg.vcpus as u64 * cfg.region_pages;
        let backend = Arc::new(SimBackend::new(cfg.vcpus, gfns, gfns + 64));
        let params = TdParams {
            gpaw: cfg.gpaw,
            attributes: SEPT_VE_DISABLE,
            num_vcpus: cfg.vcpus,
            max_vcpus: cfg.vcpus,
        };
        let module = TdxModule::new(params, backend.private.clone())
            .with_accept_busy(cfg.busy_p, cfg.seed ^ 0xb05e);
        module
            .tdh_mr_finalize()
            .expect("a new TD is finalized once");
        let seam = Arc::new(module);
        let mut kc = KvmConfig::td(gfns, cfg.gpaw);
        kc.policy = cfg.policy;
        kc.private_max_level = cfg.private_max_level;
        kc.beyond = cfg.beyond;
        let kvm = Arc::new(Kvm::new(kc, Some(seam.clone()), backend.clone()));
        let mut vmm = Vmm::new(
            kvm.clone(),
            false,
            Injector::new(cfg.retry_p, cfg.seed ^ 0x5EED),
        );
        vmm.map = cfg.map.clone();
        World {
            seam,
            kvm,
            vmm,
            backend,
            gpaw: cfg.gpaw,
        }
    }

    /// Invariants 1, 2, 4 and 5 (docs/model.md) now; returns the violations (3 is
    /// `scan_shared_for_private_data` and the vCPUs' tagged reads).
    pub fn check_invariants(&self) -> Vec<String> {
        crate::invariants::check(&self.kvm, &self.seam)
    }

    /// The host's view of shared memory: any frame backing a shared GFN that holds a
    /// private-tagged word is a leak.
    pub(crate) fn scan_shared_for_private_data(&self) -> u64 {
        let attrs = self.kvm.attributes();
        let mut leaks = 0;
        for gfn in 0..attrs.limit() {
            if attrs.get(gfn).is_private() {
                continue;
            }
            if let Some(f) = self.backend.shared.current(gfn) {
                leaks += (vcpu::WORDS.iter())
                    .filter(|w| self.backend.shared.read(f, **w) >> 56 == PRIVATE_TAG >> 56)
                    .count() as u64;
            }
        }
        leaks
    }
}

/// The JSON report of `tdxlab sim`.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// Zap policy.
    pub zap_policy: ZapPolicy,
    /// vCPUs.
    pub vcpus: u32,
    /// Operations per vCPU.
    pub ops: u64,
    /// Seed.
    pub seed: u64,
    /// The TD's GPA width.
    pub gpaw: u8,
    /// Behaviour beyond upstream KVM (`--tdx-remove`, `--prefault`).
    pub beyond: crate::kvm::BeyondUpstream,
    /// MapGPA conversions the guests completed.
    pub conversions: u64,
    /// Conversions the VMM served (`kvm_convert_memory` calls: a MapGPA cut by RETRYs is
    /// several, an implicit conversion one): what the `--html` map counts.
    pub host_conversions: u64,
    /// 4K pages accepted.
    pub accepts: u64,
    /// Leaves zapped (4K units), per root: the same object as `run`'s.
    pub zaps: crate::td::Zaps,
    /// Remote TLB flushes.
    pub flushes: u64,
    /// Flushes a zap owed but did not report.
    pub flushes_dropped: u64,
    /// Kick-all-vCPUs requests.
    pub kicks: u64,
    /// Host mmu-notifier invalidations.
    pub host_invalidations: u64,
    /// MapGPA RETRYs injected by the host.
    pub map_gpa_retries_injected: u64,
    /// TDG.MEM.PAGE.ACCEPT OPERAND_BUSY answers injected by the module.
    pub accept_busy_injected: u64,
    /// 2 MiB private leaves split because part of one was zapped.
    pub demotes: u64,
    /// Guest reads and writes.
    pub accesses: u64,
    /// Invariant checks.
    pub invariant_checks: u64,
    /// Invariant violations.
    pub invariant_violations: u64,
    /// TLB hits on retired frames.
    pub stale_tlb_reads: u64,
    /// Wrong data read.
    pub data_mismatches: u64,
    /// Private data visible through the shared alias.
    pub private_leaks: u64,
    /// Guest-fatal errors.
    pub errors: Vec<String>,
    /// First problem descriptions.
    pub notes: Vec<String>,
    /// Wall time.
    pub elapsed_s: f64,
}

impl SimReport {
    /// True when nothing went wrong that the policy is supposed to prevent.
    pub fn clean(&self) -> bool {
        self.invariant_violations == 0
            && self.data_mismatches == 0
            && self.private_leaks == 0
            && self.stale_tlb_reads == 0
            && self.errors.is_empty()
    }
}

/// Run the simulation.
pub fn run(cfg: &SimConfig) -> SimReport {
    run_with_progress(cfg, &|_, _| {})
}

/// [`run`], calling `progress(elapsed_s, host_conversions)` about once a second.
pub(crate) fn run_with_progress(cfg: &SimConfig, progress: &dyn Fn(f64, u64)) -> SimReport {
    let start = Instant::now();
    let world = World::new(cfg);
    let errors = Mutex::new(Vec::new());
    let totals = Mutex::new(Counters::default());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.vcpus)
            .map(|id| {
                let (world, errors, totals) = (&world, &errors, &totals);
                s.spawn(move || run_vcpu(id, world, cfg, start, errors, totals))
            })
            .collect();
        let mut last = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(map_interval_ms(cfg)));
            if let Some(m) = &cfg.map {
                m.sample(&world.kvm, &world.seam);
            }
            if last.elapsed().as_secs_f64() >= 1.0 {
                last = Instant::now();
                progress(start.elapsed().as_secs_f64(), world.vmm.conversions());
            }
        }
    });
    if let Some(m) = &cfg.map {
        m.sample(&world.kvm, &world.seam);
    }
    let mut c = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    let bad = world.check_invariants();
    c.invariant_checks += 1;
    c.invariant_violations += bad.len() as u64;
    bad.into_iter().for_each(|b| c.note(b));
    c.private_leaks += world.scan_shared_for_private_data();
    c.invariant_checks += 1;
    let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    report(cfg, &world, c, errors, start)
}

/// How often the main thread wakes: 50 ms, or with a map about `MAX_COLS` samples over a
/// timed run (shorter runs sample every 20 ms).
fn map_interval_ms(cfg: &SimConfig) -> u64 {
    match (&cfg.map, cfg.seconds) {
        (Some(_), Some(s)) => ((s * 1e3 / crate::map::MAX_COLS as f64) as u64).clamp(20, 1000),
        (Some(_), None) => 20,
        _ => 50,
    }
}

/// One simulated vCPU: boot, then random operations until `ops` or the deadline, checking
/// the invariants every `invariant_every` operations; its counters go into `totals`.
fn run_vcpu(
    id: u32,
    world: &World,
    cfg: &SimConfig,
    start: Instant,
    errors: &Mutex<Vec<String>>,
    totals: &Mutex<Counters>,
) {
    crate::trace::set_vcpu(id);
    let mut v = vcpu::Vcpu::new(id, world, cfg);
    let mut r = v.boot();
    let deadline = cfg
        .seconds
        .map(|s| start + std::time::Duration::from_secs_f64(s));
    for op in 0..cfg.ops {
        if r.is_err() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        r = v.step();
        if cfg.invariant_every > 0 && (op + 1) % cfg.invariant_every == 0 {
            let bad = world.check_invariants();
            v.c.invariant_checks += 1;
            v.c.invariant_violations += bad.len() as u64;
            v.c.notes.extend(bad);
        }
    }
    if let Err(e) = r {
        let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.push(e.to_string());
    }
    totals.lock().unwrap_or_else(|e| e.into_inner()).add(&v.c);
}

/// The report from the totals and the roles' own counters.
fn report(
    cfg: &SimConfig,
    world: &World,
    c: Counters,
    errors: Vec<String>,
    start: Instant,
) -> SimReport {
    let k = &world.kvm.stats;
    let (zd, zm) = (k.zapped_direct.load(Relaxed), k.zapped_mirror.load(Relaxed));
    SimReport {
        zap_policy: cfg.policy,
        vcpus: cfg.vcpus,
        ops: cfg.ops,
        seed: cfg.seed,
        gpaw: cfg.gpaw.bits(),
        beyond: cfg.beyond,
        conversions: c.conversions,
        host_conversions: world.vmm.conversions(),
        accepts: world.seam.stats.accepted_4k.load(Relaxed),
        zaps: crate::td::Zaps {
            mirror: zm,
            direct: zd,
        },
        flushes: k.flushes.load(Relaxed),
        flushes_dropped: k.flushes_dropped.load(Relaxed),
        kicks: world.backend.kicks.load(Relaxed),
        host_invalidations: c.host_invalidations,
        map_gpa_retries_injected: world.vmm.inject.retries.load(Relaxed),
        accept_busy_injected: world.seam.stats.accept_busy_injected.load(Relaxed),
        demotes: world.seam.stats.demote.load(Relaxed),
        accesses: c.reads + c.writes,
        invariant_checks: c.invariant_checks,
        invariant_violations: c.invariant_violations,
        stale_tlb_reads: c.stale_tlb_reads,
        data_mismatches: c.data_mismatches,
        private_leaks: c.private_leaks,
        errors,
        notes: c.notes,
        elapsed_s: start.elapsed().as_secs_f64(),
    }
}
