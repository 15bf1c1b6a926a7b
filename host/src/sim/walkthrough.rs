//! `tdxlab walkthrough`: one 4 KiB page through its life on the simulated TD, with every
//! step of the guest, KVM, the VMM and the TDX module traced — the run docs/walkthrough.md
//! shows line by line (a test keeps the two equal). One vCPU and no other thread, so the
//! trace is the same on every machine.

use super::{SimConfig, World};
use crate::kvm::ZapPolicy;
use crate::vmm::handle_tdcall;
use shared_abi::convert::ConversionTarget;
use shared_abi::{Gpa, GpaRange};
use tdcall::{Regs, Tdx, Transport};

/// The page the walkthrough converts.
pub const PAGE: Gpa = Gpa(0x20_0000);

/// The guest's TDCALLs go straight to the host's handler (no CPU in between: the doorbell's
/// register copy is the only thing left out).
struct Direct<'a>(&'a World);

impl Transport for Direct<'_> {
    fn call(&mut self, regs: &mut Regs) {
        if let Err(e) = handle_tdcall(&self.0.seam, &self.0.vmm, 0, regs) {
            panic!("the walkthrough's TDCALL failed: {e}");
        }
    }
    fn emulated(&self) -> bool {
        true
    }
}

/// A step's heading, on stdout between the trace's lines (a closed stdout ends the run).
fn step(n: u32, what: &str) -> Result<(), crate::output::OutputError> {
    crate::outln!("== {n}. {what}")
}

/// Run the four steps, tracing to stdout (the caller installed the tree layer writing
/// there): the trace is the command's output.
pub fn run() -> Result<(), crate::output::OutputError> {
    crate::trace::set_vcpu(0);
    let w = World::new(&SimConfig {
        vcpus: 1,
        region_pages: 1024,
        ..SimConfig::default()
    });
    let mut tdx = Tdx::new(Direct(&w));
    let page = GpaRange::new(PAGE, 4096);
    step(
        1,
        "the guest accepts a page it never touched: EPT violation, AUG, ACCEPT again",
    )?;
    super::vcpu::guest_step(page, "TDG.MEM.PAGE.ACCEPT (4K)");
    tdx.accept(page).expect("accept");
    step(
        2,
        "the guest converts it to shared: MapGPA, the private leaf is removed",
    )?;
    super::vcpu::guest_step(page, "the PTE gets the shared bit; INVLPG");
    super::vcpu::guest_step(page, "TDG.VP.VMCALL<MapGPA> to shared");
    tdx.map_gpa(page, ConversionTarget::Shared, w.gpaw)
        .expect("to shared");
    step(
        3,
        "the guest's first touch of the shared alias: a direct leaf is mapped",
    )?;
    let shared = w.gpaw.to_shared(PAGE);
    let _ = w
        .kvm
        .kvm_mmu_page_fault(shared, shared_abi::PageLevel::Size4K);
    step(
        4,
        "back to private: MapGPA, the shared leaf is zapped, then ACCEPT",
    )?;
    super::vcpu::guest_step(page, "TDG.VP.VMCALL<MapGPA> to private");
    tdx.map_gpa(page, ConversionTarget::Private, w.gpaw)
        .expect("to private");
    super::vcpu::guest_step(page, "TDG.MEM.PAGE.ACCEPT (4K)");
    tdx.accept(page).expect("accept again");
    super::vcpu::guest_step(page, "the PTE loses the shared bit; INVLPG");
    let bad = w.check_invariants();
    step(5, &format!("invariants checked: {} violations", bad.len()))?;
    for (n, policy) in (6..).zip(ZapPolicy::ALL) {
        step(
            n,
            &format!(
                "step 4's zap under --zap-policy {} ({})",
                policy.name(),
                policy.describe()
            ),
        )?;
        zap_under(policy);
    }
    Ok(())
}

/// Steps 1–3 untraced on a TD with `policy`, then step 4's MapGPA to private traced: where
/// the policies differ is which roots the zap visits, and whether it reports its flush.
fn zap_under(policy: ZapPolicy) {
    let w = World::new(&SimConfig {
        vcpus: 1,
        region_pages: 1024,
        policy,
        ..SimConfig::default()
    });
    let mut tdx = Tdx::new(Direct(&w));
    let page = GpaRange::new(PAGE, 4096);
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
        tdx.accept(page).expect("accept");
        tdx.map_gpa(page, ConversionTarget::Shared, w.gpaw)
            .expect("to shared");
        let shared = w.gpaw.to_shared(PAGE);
        let _ = w
            .kvm
            .kvm_mmu_page_fault(shared, shared_abi::PageLevel::Size4K);
    });
    let mut tdx = Tdx::new(Direct(&w));
    tdx.map_gpa(page, ConversionTarget::Private, w.gpaw)
        .expect("to private");
}
