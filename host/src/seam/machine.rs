//! The S-EPT entry state machine, measured on this module rather than written down: every
//! state a 2 MiB-level entry can be in on a runnable TD is built with real SEAMCALLs and
//! TDCALLs, every operation is tried on it, and each success is an edge (`tdxlab sept-states`,
//! and the picture docs/sept-states.svg drawn from it).

use super::{SimPrivateMem, TdParams, TdcallExit, TdxModule};
use shared_abi::sept::SeptState::{self, *};
use shared_abi::tdcall::TdcallLeaf;
use shared_abi::{Gpa, Gpaw, TdxStatus};
use std::sync::Arc;

const G: Gpa = Gpa(0x4000_0000);
/// The 2 MiB level: leaves (MAPPED, PENDING …) and non-leaves (NL_MAPPED …) both live here.
const L: u8 = 1;

/// The operations tried on an entry, by the module's names.
pub const OPS: [&str; 8] = [
    "TDH.MEM.SEPT.ADD",
    "TDH.MEM.PAGE.AUG",
    "TDG.MEM.PAGE.ACCEPT",
    "TDH.MEM.RANGE.BLOCK",
    "TDH.MEM.RANGE.UNBLOCK",
    "TDH.MEM.PAGE.REMOVE",
    "TDH.MEM.PAGE.DEMOTE",
    "TDH.MEM.SEPT.REMOVE",
];

/// The states of an entry on a runnable TD.
pub const STATES: [SeptState; 7] = [
    Free,
    Pending,
    Mapped,
    PendingBlocked,
    Blocked,
    NlMapped,
    NlBlocked,
];

/// One successful operation: `op` takes an entry from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Edge {
    /// State before.
    pub from: &'static str,
    /// The operation.
    pub op: &'static str,
    /// State after.
    pub to: &'static str,
    /// Only once the BLOCK before it has been tracked (TDH.MEM.TRACK and every vCPU out of
    /// the older epoch); before that the module answers TLB_TRACKING_NOT_DONE.
    pub needs_track: bool,
}

fn module() -> Arc<TdxModule> {
    let p = TdParams {
        gpaw: Gpaw::GPAW_48,
        attributes: 0,
        num_vcpus: 1,
        max_vcpus: 1,
    };
    let m = TdxModule::runnable(p, Arc::new(SimPrivateMem::new(1024)));
    // The tables above the 2 MiB level, so the entry under test exists.
    let _ = m.tdh_mem_sept_add(G, 3);
    let _ = m.tdh_mem_sept_add(G, 2);
    m
}

/// A module whose entry at (G, L) is in `state` (blocked ones tracked if `tracked`).
fn build(state: SeptState, tracked: bool) -> Option<Arc<TdxModule>> {
    let m = module();
    match state {
        Free => {}
        NlMapped | NlBlocked => m.tdh_mem_sept_add(G, L).ok()?,
        Pending | PendingBlocked => m.tdh_mem_page_aug(G, L, 0).ok()?,
        Mapped | Blocked => {
            m.tdh_mem_page_aug(G, L, 0).ok()?;
            (apply(&m, 2) == Ok(())).then_some(())?;
        }
        _ => return None,
    }
    if matches!(state, NlBlocked | Blocked | PendingBlocked) {
        m.tdh_mem_range_block(G, L).ok()?;
        if tracked {
            m.tdh_mem_track().ok()?;
        }
    }
    (m.entry_state(G, L) == Some(state)).then_some(m)
}

/// Operation `OPS[op]` on (G, L).
fn apply(m: &TdxModule, op: usize) -> Result<(), TdxStatus> {
    match op {
        0 => m.tdh_mem_sept_add(G, L),
        1 => m.tdh_mem_page_aug(G, L, 0),
        2 => {
            let mut r = tdcall::Regs {
                rax: TdcallLeaf::MemPageAccept as u64,
                rcx: G.0 | L as u64,
                ..Default::default()
            };
            match m.tdcall(0, &mut r) {
                TdcallExit::Done if TdxStatus(r.rax).is_success() => Ok(()),
                TdcallExit::Done => Err(TdxStatus(r.rax)),
                _ => Err(TdxStatus::OPERAND_INVALID),
            }
        }
        3 => m.tdh_mem_range_block(G, L),
        4 => m.tdh_mem_range_unblock(G, L),
        5 => m.tdh_mem_page_remove(G, L).map(drop),
        6 => m.tdh_mem_page_demote(G, L),
        _ => m.tdh_mem_sept_remove(G, L),
    }
}

/// Every successful operation on every state, measured.
pub fn edges() -> Vec<Edge> {
    let mut out = Vec::new();
    for from in STATES {
        for (op, name) in OPS.iter().enumerate() {
            let outcome = |tracked: bool| {
                let m = build(from, tracked)?;
                apply(&m, op).ok()?;
                m.entry_state(G, L)
            };
            let (untracked, tracked) = (outcome(false), outcome(true));
            if let Some(to) = tracked.or(untracked) {
                out.push(Edge {
                    from: from.name(),
                    op: name,
                    to: to.name(),
                    needs_track: untracked.is_none(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_machine_has_the_modules_edges() {
        let e = edges();
        let has = |from: &str, op: &str, to: &str, track: bool| {
            e.iter().any(|x| {
                x.from == from && x.op.ends_with(op) && x.to == to && x.needs_track == track
            })
        };
        assert!(has("FREE", "PAGE.AUG", "PENDING", false));
        assert!(has("PENDING", "PAGE.ACCEPT", "MAPPED", false));
        assert!(has("MAPPED", "RANGE.BLOCK", "BLOCKED", false));
        assert!(has("BLOCKED", "PAGE.REMOVE", "FREE", true));
        assert!(has("PENDING_BLOCKED", "PAGE.DEMOTE", "NL_MAPPED", true));
        assert!(has("NL_BLOCKED", "SEPT.REMOVE", "FREE", true));
        assert!(
            !e.iter().any(|x| x.from == "MAPPED" && x.to == "FREE"),
            "no REMOVE without BLOCK"
        );
        assert_eq!(e.len(), 14, "{e:#?}");
    }
}
