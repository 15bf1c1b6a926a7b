//! The accept loop against mock TDX modules: the exact sequence of TDCALLs is asserted.

mod common;
use common::MockModule;
use proptest::prelude::*;
use shared_abi::{Gpa, GpaRange, PageLevel, TdxStatus};
use tdcall::{AcceptError, Tdx, ACCEPT_MAX_BUSY_RETRIES};

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;
use PageLevel::{Size1G as L1G, Size2M as L2M, Size4K as L4K};

fn run(
    m: MockModule,
    start: u64,
    len: u64,
) -> (Result<tdcall::AcceptStats, AcceptError>, MockModule) {
    let mut tdx = Tdx::new(m);
    let r = tdx.accept(GpaRange::new(Gpa(start), len));
    (r, tdx.into_transport())
}

fn fours(start: u64, n: u64) -> impl Iterator<Item = (u64, PageLevel)> {
    (0..n).map(move |i| (start + i * K4, L4K))
}

#[test]
fn host_maps_4k_only_so_2m_falls_back_to_512_4k_accepts() {
    let (r, m) = run(MockModule::new(L4K, 0, 2 * M2), 0, 2 * M2);
    let stats = r.unwrap();
    let mut expect = vec![(0, L2M)];
    expect.extend(fours(0, 512));
    expect.push((M2, L2M));
    expect.extend(fours(M2, 512));
    assert_eq!(m.calls, expect);
    assert!(m.all_accepted());
    assert_eq!(stats.accepted_bytes, [2 * M2, 0, 0]);
    assert_eq!(stats.fallbacks, 2);
    assert_eq!(stats.calls, 1026);
}

#[test]
fn host_maps_2m_so_each_2m_block_is_one_call() {
    let (r, m) = run(MockModule::new(L2M, 0, 4 * M2), 0, 4 * M2);
    assert_eq!(
        m.calls,
        vec![(0, L2M), (M2, L2M), (2 * M2, L2M), (3 * M2, L2M)]
    );
    assert_eq!(r.unwrap().accepted_bytes, [0, 4 * M2, 0]);
}

#[test]
fn unaligned_edges_use_4k_and_the_aligned_middle_2m() {
    let (start, len) = (M2 - 2 * K4, M2 + 3 * K4);
    let (r, m) = run(MockModule::new(L2M, 0, 4 * M2), start, len);
    let mut expect: Vec<_> = fours(start, 2).collect();
    expect.push((M2, L2M));
    expect.push((2 * M2, L4K));
    assert_eq!(m.calls, expect);
    assert_eq!(r.unwrap().accepted_bytes, [3 * K4, M2, 0]);
}

#[test]
fn one_gib_is_tried_once_then_2m_for_the_rest_of_the_call() {
    // Module 1.5 rejects level 2 with OPERAND_INVALID.
    let (r, m) = run(MockModule::new(L2M, G1, 2 * G1), G1, 2 * G1);
    let mut expect = vec![(G1, L1G)];
    expect.extend((0..1024).map(|i| (G1 + i * M2, L2M)));
    assert_eq!(m.calls, expect);
    let s = r.unwrap();
    assert_eq!(s.accepted_bytes, [0, 2 * G1, 0]);
    assert_eq!(s.fallbacks, 1);
}

#[test]
fn already_accepted_pages_are_done_and_counted_apart() {
    let mut m = MockModule::new(L4K, 0, 4 * K4);
    m.pages.insert(1, common::PageState::Accepted);
    let (r, m) = run(m, 0, 4 * K4);
    assert_eq!(m.calls, fours(0, 4).collect::<Vec<_>>());
    let s = r.unwrap();
    assert_eq!(s.accepted_bytes, [3 * K4, 0, 0]);
    assert_eq!(s.already_accepted_bytes, K4);
    assert!(m.all_accepted());
}

#[test]
fn already_accepted_2m_block_at_2m_is_done_in_one_call() {
    let mut m = MockModule::new(L2M, 0, M2);
    for p in 0..512 {
        m.pages.insert(p, common::PageState::Accepted);
    }
    let (r, m) = run(m, 0, M2);
    assert_eq!(m.calls, vec![(0, L2M)]);
    assert_eq!(r.unwrap().already_accepted_bytes, M2);
}

#[test]
fn busy_is_retried_on_the_same_page_then_succeeds() {
    let mut m = MockModule::new(L4K, 0, K4);
    m.busy_answers = 3;
    let (r, m) = run(m, 0, K4);
    assert_eq!(m.calls, vec![(0, L4K); 4]);
    assert_eq!(r.unwrap().busy_retries, 3);
}

#[test]
fn busy_forever_gives_up_after_the_bound() {
    let mut m = MockModule::new(L4K, 0, K4);
    m.busy_forever = true;
    let (r, m) = run(m, 0, K4);
    assert_eq!(m.calls.len() as u32, ACCEPT_MAX_BUSY_RETRIES + 1);
    assert_eq!(
        r.unwrap_err(),
        AcceptError::Busy {
            gpa: Gpa(0),
            level: L4K,
            retries: ACCEPT_MAX_BUSY_RETRIES
        }
    );
}

#[test]
fn errors_at_4k_name_the_page_and_status() {
    // Page 3 is outside the TD's memory.
    let (r, m) = run(MockModule::new(L4K, 0, 3 * K4), 0, 4 * K4);
    assert_eq!(m.calls, fours(0, 4).collect::<Vec<_>>());
    let err = r.unwrap_err();
    assert_eq!(
        err,
        AcceptError::Status {
            gpa: Gpa(3 * K4),
            level: L4K,
            status: TdxStatus(TdxStatus::OPERAND_INVALID.0 | 1)
        }
    );
    assert!(err.to_string().contains("TDX_OPERAND_INVALID"), "{err}");
}

#[test]
fn unaligned_ranges_are_refused_before_any_call() {
    for (s, l) in [(1, K4), (0, K4 + 1), (0x800, 0x800)] {
        let (r, m) = run(MockModule::new(L4K, 0, M2), s, l);
        assert!(matches!(r, Err(AcceptError::Unaligned { .. })));
        assert!(m.calls.is_empty());
    }
}

proptest! {
    /// Any aligned range inside the TD's memory ends fully accepted, the loop never touches
    /// a page outside it, and never uses more calls than one per 4K page plus fallbacks.
    #[test]
    fn any_range_is_accepted_exactly(start_pg in 0u64..2048, len_pg in 1u64..2048, host_2m: bool, busy in 0u32..4) {
        let (start, len) = (start_pg * K4, len_pg * K4);
        let mut m = MockModule::new(if host_2m { L2M } else { L4K }, 0, 8 * M2);
        m.busy_answers = busy;
        let (r, m) = run(m, start, len);
        let s = r.unwrap();
        prop_assert_eq!(s.total_accepted(), len);
        for p in start / K4..(start + len) / K4 {
            prop_assert_eq!(m.pages[&p], common::PageState::Accepted);
        }
        let outside = m.pages.iter().filter(|(p, st)| (**p < start / K4 || **p >= (start + len) / K4) && **st == common::PageState::Accepted).count();
        prop_assert_eq!(outside, 0);
        for (gpa, level) in &m.calls {
            prop_assert!(*gpa >= start && gpa + level.bytes() <= start + len);
        }
        prop_assert!(s.calls <= len_pg + 2 * (len / M2 + 1) + busy as u64);
    }
}
