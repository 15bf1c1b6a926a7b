//! `tdxlab sim`: run, print the summary or the JSON report, and pick the exit code.

use super::{SimConfig, SimReport};
use crate::exit::{EXIT_GUEST, EXIT_OK};
use crate::kvm::ZapPolicy;

/// Run and report.
pub fn run(cfg: &SimConfig, json: bool, html: Option<&std::path::Path>) -> anyhow::Result<u8> {
    if !json {
        let length = match cfg.seconds {
            Some(s) if cfg.ops == u64::MAX => format!("{s} s"),
            Some(s) => format!("{} ops or {s} s", cfg.ops),
            None => format!("{} ops", cfg.ops),
        };
        crate::note!(
            "tdxlab sim: {} vCPUs x {length}, seed {}, zap policy {}, {} pages per vCPU, GPAW {}{} ...",
            cfg.vcpus,
            cfg.seed,
            cfg.policy.name(),
            cfg.region_pages,
            cfg.gpaw.bits(),
            cfg.beyond.describe()
        );
    }
    // Long runs (--seconds) say how far they are every 10 s on stderr.
    let next = std::cell::Cell::new(10.0);
    let progress = |t: f64, conversions: u64| {
        if !json && cfg.seconds.is_some() && t >= next.get() {
            next.set(next.get() + 10.0);
            crate::note!(
                "[{t:6.1} s] {conversions} host conversions ({:.0}/s)",
                conversions as f64 / t
            );
        }
    };
    let r = super::run_with_progress(cfg, &progress);
    if let (Some(path), Some(rec)) = (html, &cfg.map) {
        let title = format!(
            "tdxlab sim: {} vCPUs, seed {}, zap policy {}, {} removal",
            cfg.vcpus,
            cfg.seed,
            cfg.policy.name(),
            cfg.beyond.tdx_remove.name()
        );
        let page = crate::map::render(rec, &title, &serde_json::to_value(&r)?);
        std::fs::write(path, page)
            .map_err(|e| anyhow::anyhow!("cannot write the map to {}: {e}", path.display()))?;
        crate::note!("tdxlab: wrote the map of the run to {}", path.display());
    }
    if json {
        crate::outln!("{}", crate::output::json("sim", &r)?)?;
    } else {
        crate::output::write_str(&summary(&r))?;
    }
    // v19 is run to show its problems: only a broken run (guest error) fails it.
    let failed = match cfg.policy {
        ZapPolicy::V19 => !r.errors.is_empty(),
        _ => !r.clean(),
    };
    // A violation, mismatch, leak or stale TLB use under a policy that must prevent them is
    // the simulated guest failing.
    Ok(if failed { EXIT_GUEST } else { EXIT_OK })
}

fn summary(r: &SimReport) -> String {
    let mut s = String::new();
    s += &format!(
        "  conversions          {:>10}   (MapGPA calls completed by the guests)\n",
        r.conversions
    );
    s += &format!("  accepted pages       {:>10}\n", r.accepts);
    s += &format!(
        "  zapped leaves        {:>10}   (direct {}, mirror {})\n",
        r.zaps.direct + r.zaps.mirror,
        r.zaps.direct,
        r.zaps.mirror
    );
    s += &format!(
        "  TLB flushes          {:>10}   (dropped: {})\n",
        r.flushes, r.flushes_dropped
    );
    s += &format!("  kicks                {:>10}\n", r.kicks);
    s += &format!("  host invalidations   {:>10}\n", r.host_invalidations);
    s += &format!(
        "  MapGPA RETRY inject  {:>10}\n",
        r.map_gpa_retries_injected
    );
    s += &format!("  accept BUSY inject   {:>10}\n", r.accept_busy_injected);
    s += &format!("  2M demotes           {:>10}\n", r.demotes);
    s += &format!("  guest accesses       {:>10}\n", r.accesses);
    s += &format!(
        "  invariant checks     {:>10}   violations: {}\n",
        r.invariant_checks, r.invariant_violations
    );
    s += &format!("  stale TLB reads      {:>10}\n", r.stale_tlb_reads);
    s += &format!("  data mismatches      {:>10}\n", r.data_mismatches);
    s += &format!("  private leaks        {:>10}\n", r.private_leaks);
    s += &format!("  elapsed              {:>10.2} s\n", r.elapsed_s);
    for e in &r.errors {
        s += &format!("  error: {e}\n");
    }
    for n in &r.notes {
        s += &format!("  note: {n}\n");
    }
    s += match (r.clean(), r.zap_policy) {
        (true, _) => "verdict: clean — nothing leaked, nothing lost, no stale translation used\n",
        // v19 is run to show its problems: finding them is the expected outcome (exit 0).
        (false, ZapPolicy::V19) if r.errors.is_empty() => {
            "verdict: PROBLEMS FOUND, as expected under v19 (its dropped flush): exit 0 on purpose\n"
        }
        (false, _) => "verdict: PROBLEMS FOUND (see above)\n",
    };
    s
}
