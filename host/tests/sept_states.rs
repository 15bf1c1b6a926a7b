//! The S-EPT state machine against the TDX module 1.5 base spec's entry-state table: every
//! operation on every state the emulated module keeps, each state reached by real SEAMCALLs.
//!
//! Where the reference lists only the allowed start states, the refusal status is our choice:
//! ADD-type operations on a used entry give EPT_ENTRY_NOT_FREE, every other disallowed state
//! EPT_ENTRY_STATE_INCORRECT (both statuses exist in the module for these cases).

use shared_abi::sept::SeptState::{self, *};
use shared_abi::tdcall::TdcallLeaf;
use shared_abi::{Gpa, Gpaw, TdxStatus};
use std::sync::Arc;
use tdcall::Regs;
use tdxlab::seam::{OpState, SimPrivateMem, TdParams, TdcallExit, TdxModule};

const G: Gpa = Gpa(0x4000_0000);
const L: u8 = 1; // every entry under test is a 2M-level entry

fn module() -> TdxModule {
    let p = TdParams {
        gpaw: Gpaw::GPAW_48,
        attributes: 0,
        num_vcpus: 2,
        max_vcpus: 2,
    };
    let m = TdxModule::new(p, Arc::new(SimPrivateMem::new(1024)));
    m.tdh_mr_finalize().unwrap();
    m.tdh_mem_sept_add(G, 3).unwrap();
    m.tdh_mem_sept_add(G, 2).unwrap();
    m
}

fn accept(m: &TdxModule, gpa: Gpa, level: u8) -> Result<TdxStatus, TdcallExit> {
    let mut r = Regs {
        rax: TdcallLeaf::MemPageAccept as u64,
        rcx: gpa.0 | level as u64,
        ..Regs::default()
    };
    match m.tdcall(0, &mut r) {
        TdcallExit::Done => Ok(TdxStatus(r.rax)),
        other => Err(other),
    }
}

/// Build `state` at (G, L) with real operations; `tracked` runs TRACK after a BLOCK.
fn build(state: SeptState, tracked: bool) -> TdxModule {
    let m = module();
    match state {
        Free => {}
        NlMapped | NlBlocked => m.tdh_mem_sept_add(G, L).unwrap(),
        Pending | PendingBlocked => m.tdh_mem_page_aug(G, L, 0).unwrap(),
        Mapped | Blocked => {
            m.tdh_mem_page_aug(G, L, 0).unwrap();
            assert_eq!(accept(&m, G, L), Ok(TdxStatus::SUCCESS));
        }
        _ => unreachable!(),
    }
    if matches!(state, NlBlocked | Blocked | PendingBlocked) {
        m.tdh_mem_range_block(G, L).unwrap();
        if tracked {
            m.tdh_mem_track().unwrap();
        }
    }
    assert_eq!(m.entry_state(G, L), Some(state), "built {state:?}");
    m
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    SeptAdd,
    PageAug,
    Accept,
    Block,
    Unblock,
    Remove,
    Demote,
    SeptRemove,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    To(SeptState),
    Fails(TdxStatus),
    EptViolation,
}
use Outcome::*;

fn apply(m: &TdxModule, op: Op) -> Outcome {
    let r = match op {
        Op::SeptAdd => m.tdh_mem_sept_add(G, L),
        Op::PageAug => m.tdh_mem_page_aug(G, L, 0),
        Op::Accept => match accept(m, G, L) {
            Ok(s) if s.is_success() => Ok(()),
            Ok(s) => Err(s),
            Err(_) => return EptViolation,
        },
        Op::Block => m.tdh_mem_range_block(G, L),
        Op::Unblock => m.tdh_mem_range_unblock(G, L),
        Op::Remove => m.tdh_mem_page_remove(G, L).map(drop),
        Op::Demote => m.tdh_mem_page_demote(G, L),
        Op::SeptRemove => m.tdh_mem_sept_remove(G, L),
    };
    match r {
        Ok(()) => To(m.entry_state(G, L).unwrap()),
        Err(s) => Fails(s),
    }
}

fn d(s: TdxStatus) -> Outcome {
    Fails(s.with_details(L as u32))
}

/// The expected outcome of `op` on `state` in a runnable TD.
fn expected(op: Op, state: SeptState, tracked: bool) -> Outcome {
    let not_free = d(TdxStatus::EPT_ENTRY_NOT_FREE);
    let incorrect = d(TdxStatus::EPT_ENTRY_STATE_INCORRECT);
    let not_blocked = d(TdxStatus::GPA_RANGE_NOT_BLOCKED);
    let untracked = d(TdxStatus::TLB_TRACKING_NOT_DONE);
    let blocked_then = |ok: Outcome| if tracked { ok } else { untracked };
    match (op, state) {
        (Op::SeptAdd, Free) => To(NlMapped),
        (Op::SeptAdd, _) => not_free,
        (Op::PageAug, Free) => To(Pending),
        (Op::PageAug, _) => not_free,
        (Op::Accept, Pending) => To(Mapped),
        (Op::Accept, Mapped) => d(TdxStatus::PAGE_ALREADY_ACCEPTED),
        (Op::Accept, NlMapped | NlBlocked) => d(TdxStatus::PAGE_SIZE_MISMATCH),
        (Op::Accept, Free | Blocked | PendingBlocked) => EptViolation,
        (Op::Block, NlMapped) => To(NlBlocked),
        (Op::Block, Mapped) => To(Blocked),
        (Op::Block, Pending) => To(PendingBlocked),
        (Op::Block, NlBlocked | Blocked | PendingBlocked) => {
            d(TdxStatus::GPA_RANGE_ALREADY_BLOCKED)
        }
        (Op::Block, Free) => incorrect,
        (Op::Unblock, NlBlocked) => blocked_then(To(NlMapped)),
        (Op::Unblock, Blocked) => blocked_then(To(Mapped)),
        (Op::Unblock, PendingBlocked) => blocked_then(To(Pending)),
        (Op::Unblock, _) => incorrect,
        (Op::Remove, Mapped | Pending) => not_blocked,
        (Op::Remove, Blocked | PendingBlocked) => blocked_then(To(Free)),
        (Op::Remove, _) => incorrect,
        (Op::Demote, Mapped | Pending) => not_blocked,
        (Op::Demote, Blocked | PendingBlocked) => blocked_then(To(NlMapped)),
        (Op::Demote, _) => incorrect,
        (Op::SeptRemove, NlMapped) => not_blocked,
        (Op::SeptRemove, NlBlocked) => blocked_then(To(Free)),
        (Op::SeptRemove, _) => incorrect,
        (op, s) => panic!("no expectation for {op:?} on {s:?}"),
    }
}

#[test]
fn every_operation_on_every_state() {
    let ops = [
        Op::SeptAdd,
        Op::PageAug,
        Op::Accept,
        Op::Block,
        Op::Unblock,
        Op::Remove,
        Op::Demote,
        Op::SeptRemove,
    ];
    let states = [
        Free,
        NlMapped,
        NlBlocked,
        Mapped,
        Blocked,
        Pending,
        PendingBlocked,
    ];
    let mut checked = 0;
    for op in ops {
        for state in states {
            for tracked in [false, true] {
                if tracked && !matches!(state, NlBlocked | Blocked | PendingBlocked) {
                    continue;
                }
                let m = build(state, tracked);
                let got = apply(&m, op);
                assert_eq!(
                    got,
                    expected(op, state, tracked),
                    "{op:?} on {state:?} (tracked: {tracked})"
                );
                if let Fails(_) | EptViolation = got {
                    assert_eq!(
                        m.entry_state(G, L),
                        Some(state),
                        "a refused {op:?} leaves {state:?} alone"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 8 * (7 + 3));
}

#[test]
fn demote_gives_children_the_unblocked_state() {
    for (state, child) in [(Blocked, Mapped), (PendingBlocked, Pending)] {
        let m = build(state, true);
        m.tdh_mem_page_demote(G, L).unwrap();
        for i in [0u64, 1, 511] {
            assert_eq!(m.entry_state(Gpa(G.0 + i * 4096), 0), Some(child));
        }
    }
}

#[test]
fn accept_zeroes_the_page_and_2m_over_4k_mappings_is_a_size_mismatch() {
    let m = module();
    m.tdh_mem_sept_add(G, 1).unwrap();
    m.tdh_mem_page_aug(G, 0, 7).unwrap();
    m.mem().write(7, 8, 0xdead);
    assert_eq!(
        accept(&m, G, 1),
        Ok(TdxStatus::PAGE_SIZE_MISMATCH.with_details(1))
    );
    assert_eq!(accept(&m, G, 0), Ok(TdxStatus::SUCCESS));
    assert_eq!(m.mem().read(7, 8), 0, "accept zeroes with the TD key");
    assert_eq!(accept(&m, G, 0), Ok(TdxStatus::PAGE_ALREADY_ACCEPTED));
    // 4K accept inside a pending 2M leaf: the host must split it first.
    let m = module();
    m.tdh_mem_page_aug(G, 1, 0).unwrap();
    assert_eq!(
        accept(&m, Gpa(G.0 + 4096), 0),
        Err(TdcallExit::EptViolation {
            gpa: Gpa(G.0 + 4096),
            level: 0
        })
    );
}

#[test]
fn track_waits_for_vcpus_in_the_previous_epoch() {
    let m = build(Blocked, false);
    m.td_vcpu_enter(0); // vCPU 0 runs in epoch 1, the block epoch
    m.tdh_mem_track().unwrap(); // epoch 2; vCPU 0 still in epoch 1
    assert_eq!(
        m.tdh_mem_page_remove(G, L),
        Err(TdxStatus::TLB_TRACKING_NOT_DONE.with_details(1))
    );
    assert_eq!(m.tdh_mem_track(), Err(TdxStatus::PREVIOUS_TLB_EPOCH_BUSY));
    assert!(
        m.td_vcpu_enter(0),
        "re-entry in a new epoch flushes the vCPU's TLB"
    );
    assert!(m.tdh_mem_page_remove(G, L).is_ok());
    m.td_vcpu_exit(0);
}

#[test]
fn initialized_td_adds_pages_and_removes_without_blocking() {
    let p = TdParams {
        gpaw: Gpaw::GPAW_48,
        attributes: 0,
        num_vcpus: 1,
        max_vcpus: 1,
    };
    let m = TdxModule::new(p, Arc::new(SimPrivateMem::new(16)));
    assert_eq!(m.op_state(), OpState::Initialized);
    assert_eq!(
        m.tdh_mem_page_add(G, 3),
        Err(TdxStatus::EPT_WALK_FAILED.with_details(3))
    );
    for l in [3, 2, 1] {
        m.tdh_mem_sept_add(G, l).unwrap();
    }
    m.tdh_mem_page_add(G, 3).unwrap();
    assert_eq!(m.entry_state(G, 0), Some(Mapped));
    assert_eq!(
        m.tdh_mem_page_add(G, 3),
        Err(TdxStatus::EPT_ENTRY_NOT_FREE.with_details(0))
    );
    assert_eq!(
        m.tdh_mem_page_remove(G, 0),
        Ok(3),
        "no BLOCK/TRACK needed before finalize"
    );
    m.tdh_mr_finalize().unwrap();
    assert_eq!(
        m.tdh_mem_page_add(G, 3),
        Err(TdxStatus::LIFECYCLE_STATE_INCORRECT)
    );
}

#[test]
fn bad_operands_get_operand_invalid_rcx() {
    let m = module();
    let inv = TdxStatus::OPERAND_INVALID.with_details(1);
    assert_eq!(
        m.tdh_mem_page_aug(Gpa(G.0 | 1 << 47), 0, 0),
        Err(inv),
        "shared GPA"
    );
    assert_eq!(
        m.tdh_mem_page_aug(Gpa(G.0 + 4096), 1, 0),
        Err(inv),
        "misaligned 2M"
    );
    assert_eq!(m.tdh_mem_page_aug(G, 2, 0), Err(inv), "1G AUG");
    assert_eq!(m.tdh_mem_sept_add(G, 0), Err(inv));
    for rcx in [G.0 | 2, G.0 | 0x8, G.0 | 1 << 47, 1 << 52] {
        let mut r = Regs {
            rax: 6,
            rcx,
            ..Regs::default()
        };
        assert_eq!(m.tdcall(0, &mut r), TdcallExit::Done);
        assert_eq!(TdxStatus(r.rax), inv, "ACCEPT rcx {rcx:#x}");
    }
    let mut r = Regs {
        rax: 6 | 1 << 16,
        ..Regs::default()
    };
    m.tdcall(0, &mut r);
    assert_eq!(
        TdxStatus(r.rax),
        TdxStatus::OPERAND_INVALID,
        "version > 0, operand RAX"
    );
    let mut r = Regs {
        rax: 99,
        ..Regs::default()
    };
    m.tdcall(0, &mut r);
    assert_eq!(TdxStatus(r.rax), TdxStatus::OPERAND_INVALID, "unknown leaf");
    let mut r = Regs {
        rax: 0,
        rcx: 0x1,
        ..Regs::default()
    };
    assert_eq!(
        m.tdcall(0, &mut r),
        TdcallExit::Done,
        "VMCALL exposing RAX is refused"
    );
    assert_eq!(TdxStatus(r.rax), inv);
    // VEINFO.GET with nothing pending: NO_VALID_VE_INFO, and the outputs zeroed whatever
    // they held (the module clears them before it looks).
    let mut r = Regs {
        rax: 3,
        rcx: 0x11,
        rdx: 0x22,
        r8: 0x33,
        r9: 0x44,
        r10: 0x55,
        ..Regs::default()
    };
    m.tdcall(1, &mut r);
    assert_eq!(TdxStatus(r.rax), TdxStatus::NO_VALID_VE_INFO);
    assert_eq!((r.rcx, r.rdx, r.r8, r.r9, r.r10), (0, 0, 0, 0, 0));
}

#[test]
fn vmcall_host_sees_only_selected_registers() {
    let guest = Regs {
        rcx: 0xFC00,
        rdx: 5,
        rbx: 6,
        r10: 0,
        r11: 0x10001,
        r12: 0x1000,
        r13: 0x2000,
        ..Regs::default()
    };
    let host = TdxModule::tdg_vp_vmcall_host_view(&guest);
    assert_eq!(
        (host.rdx, host.rbx, host.r11, host.r12),
        (0, 0, 0x10001, 0x1000)
    );
    let mut g = guest;
    let answer = Regs {
        rdx: 99,
        r10: 1,
        r11: 0x1800,
        ..host
    };
    TdxModule::tdg_vp_vmcall_complete(&mut g, &answer);
    assert_eq!(
        (g.rax, g.rdx, g.r10, g.r11),
        (0, 5, 1, 0x1800),
        "RDX not selected: the guest's value stays"
    );
}

/// Contention on the S-EPT entry during TDG.MEM.PAGE.ACCEPT: OPERAND_BUSY naming operand RCX,
/// as `tdg_mem_page_accept` reports its entry-lock cmpxchg failing.
#[test]
fn a_busy_accept_names_rcx_and_leaves_the_page_pending() {
    let p = TdParams {
        gpaw: Gpaw::GPAW_48,
        attributes: 0,
        num_vcpus: 1,
        max_vcpus: 1,
    };
    let m = TdxModule::new(p, Arc::new(SimPrivateMem::new(1024))).with_accept_busy(1.0, 3);
    m.tdh_mr_finalize().unwrap();
    m.tdh_mem_sept_add(G, 3).unwrap();
    m.tdh_mem_sept_add(G, 2).unwrap();
    m.tdh_mem_page_aug(G, L, 0).unwrap();
    let busy = accept(&m, G, L).unwrap();
    assert_eq!(
        busy,
        TdxStatus::OPERAND_BUSY.with_details(shared_abi::status::operand::RCX)
    );
    assert_eq!(
        m.stats
            .accept_busy_injected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
