//! The MapGPA RETRY loop against a scripted host.

mod common;
use common::{scripted, vmcall_answer};
use shared_abi::convert::ConversionTarget::{Private, Shared};
use shared_abi::vmcall::{select, Subfunction};
use shared_abi::{Gpa, GpaRange, Gpaw, TdxStatus, VmcallStatus};
use tdcall::{MapGpaError, Tdx};

const S: u64 = 1 << 47;
const GPAW: Gpaw = Gpaw::GPAW_48;
const START: u64 = 0x20_0000;
const LEN: u64 = 0x10_000;

fn range() -> GpaRange {
    GpaRange::new(Gpa(START), LEN)
}

/// The (R12, R13) of each call the loop made.
fn requests(calls: &[tdcall::Regs]) -> Vec<(u64, u64)> {
    calls.iter().map(|r| (r.r12, r.r13)).collect()
}

#[test]
fn success_first_time_uses_the_ghci_registers() {
    let mut tdx = Tdx::new(scripted(|_| vmcall_answer(0, 0)));
    let stats = tdx.map_gpa(range(), Private, GPAW).unwrap();
    assert_eq!(stats.calls, 1);
    let c = tdx.transport().calls[0];
    assert_eq!(c.rax, 0, "TDG.VP.VMCALL is leaf 0");
    assert_eq!(c.rcx, select::LINUX_EXPOSE_MASK);
    assert_eq!(c.r10, 0, "GHCI standard");
    assert_eq!(c.r11, Subfunction::MapGpa as u64);
    assert_eq!((c.r12, c.r13), (START, LEN));
}

#[test]
fn retry_with_progress_resumes_from_r11() {
    let mut answers = vec![
        vmcall_answer(1, START + 0x4000),
        vmcall_answer(1, START + 0xC000),
        vmcall_answer(0, 0),
    ]
    .into_iter();
    let mut tdx = Tdx::new(scripted(move |_| answers.next().unwrap()));
    let stats = tdx.map_gpa(range(), Private, GPAW).unwrap();
    assert_eq!(
        stats,
        tdcall::MapGpaStats {
            calls: 3,
            retries: 2
        }
    );
    assert_eq!(
        requests(&tdx.transport().calls),
        vec![
            (START, LEN),
            (START + 0x4000, LEN - 0x4000),
            (START + 0xC000, LEN - 0xC000)
        ]
    );
}

#[test]
fn retry_without_progress_fails_at_the_bound() {
    let mut tdx = Tdx::new(scripted(|r| vmcall_answer(1, r.r12)));
    let err = tdx.map_gpa(range(), Private, GPAW).unwrap_err();
    assert_eq!(
        err,
        MapGpaError::NoProgress {
            at: Gpa(START),
            retries: 3
        }
    );
    assert_eq!(
        tdx.transport().calls.len(),
        3,
        "Linux allows three RETRYs without progress"
    );
}

#[test]
fn progress_resets_the_no_progress_count() {
    // Two stalls, progress, two stalls, success: never three stalls in a row.
    let mut answers = [
        vmcall_answer(1, START),
        vmcall_answer(1, START),
        vmcall_answer(1, START + 0x1000),
        vmcall_answer(1, START + 0x1000),
        vmcall_answer(1, START + 0x1000),
        vmcall_answer(0, 0),
    ]
    .into_iter();
    let mut tdx = Tdx::new(scripted(move |_| answers.next().unwrap()));
    let stats = tdx.map_gpa(range(), Private, GPAW).unwrap();
    assert_eq!(stats.calls, 6);
}

#[test]
fn to_shared_r11_carries_the_shared_bit_and_is_accepted() {
    let mut answers = [vmcall_answer(1, (START + 0x8000) | S), vmcall_answer(0, 0)].into_iter();
    let mut tdx = Tdx::new(scripted(move |_| answers.next().unwrap()));
    tdx.map_gpa(range(), Shared, GPAW).unwrap();
    assert_eq!(
        requests(&tdx.transport().calls),
        vec![(START | S, LEN), ((START + 0x8000) | S, LEN - 0x8000)]
    );
}

#[test]
fn to_shared_uses_the_shared_bit_of_every_gpaw() {
    for bits in [36u8, 39, 46, 48, 52] {
        let g = Gpaw::emulated(bits).unwrap();
        let s = 1u64 << (bits - 1);
        let mut answers = [vmcall_answer(1, (START + 0x8000) | s), vmcall_answer(0, 0)].into_iter();
        let mut tdx = Tdx::new(scripted(move |_| answers.next().unwrap()));
        tdx.map_gpa(range(), Shared, g).unwrap();
        assert_eq!(
            requests(&tdx.transport().calls),
            vec![(START | s, LEN), ((START + 0x8000) | s, LEN - 0x8000)],
            "GPAW {bits}"
        );
    }
}

#[test]
fn to_shared_r11_without_the_shared_bit_is_outside_the_request() {
    let mut tdx = Tdx::new(scripted(|_| vmcall_answer(1, START + 0x8000)));
    let err = tdx.map_gpa(range(), Shared, GPAW).unwrap_err();
    assert!(
        matches!(err, MapGpaError::ResumeOutsideRange { r11, .. } if r11 == START + 0x8000),
        "{err}"
    );
}

#[test]
fn r11_outside_the_range_is_rejected() {
    for bad in [START - 0x1000, START + LEN, START + LEN + 0x1000, START | S] {
        let mut tdx = Tdx::new(scripted(move |_| vmcall_answer(1, bad)));
        let err = tdx.map_gpa(range(), Private, GPAW).unwrap_err();
        assert_eq!(
            err,
            MapGpaError::ResumeOutsideRange {
                start: Gpa(START),
                end: Gpa(START + LEN),
                r11: bad
            }
        );
        assert_eq!(tdx.transport().calls.len(), 1);
    }
}

#[test]
fn align_error_and_invalid_operand_are_errors_naming_the_status() {
    for (status, name) in [
        (VmcallStatus::ALIGN_ERROR, "ALIGN_ERROR"),
        (VmcallStatus::INVALID_OPERAND, "INVALID_OPERAND"),
    ] {
        let mut tdx = Tdx::new(scripted(move |r| vmcall_answer(status.0, r.r12)));
        let err = tdx
            .map_gpa(GpaRange::new(Gpa(START + 0x10), LEN), Private, GPAW)
            .unwrap_err();
        assert_eq!(
            err,
            MapGpaError::Status {
                start: Gpa(START + 0x10),
                len: LEN,
                status,
                r11: START + 0x10
            }
        );
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn failing_tdcall_is_reported_as_such() {
    let mut tdx = Tdx::new(scripted(|_| tdcall::Regs {
        rax: TdxStatus::OPERAND_INVALID.0 | 1,
        ..Default::default()
    }));
    let err = tdx.map_gpa(range(), Private, GPAW).unwrap_err();
    assert_eq!(
        err,
        MapGpaError::Tdcall(TdxStatus(TdxStatus::OPERAND_INVALID.0 | 1))
    );
}

#[test]
fn ranges_outside_the_address_space_never_reach_the_host() {
    for (start, len) in [
        (S - 0x1000, 0x2000),
        (u64::MAX - 0xFFF, 0x2000),
        (1 << 48, 0x1000),
    ] {
        let mut tdx = Tdx::new(scripted(|_| vmcall_answer(0, 0)));
        let err = tdx
            .map_gpa(GpaRange::new(Gpa(start), len), Private, GPAW)
            .unwrap_err();
        assert!(
            matches!(err, MapGpaError::BadRange { .. }),
            "{start:#x}: {err}"
        );
        assert!(tdx.transport().calls.is_empty());
    }
}

#[test]
fn empty_range_makes_no_call() {
    let mut tdx = Tdx::new(scripted(|_| vmcall_answer(0, 0)));
    assert_eq!(
        tdx.map_gpa(GpaRange::new(Gpa(START), 0), Shared, GPAW)
            .unwrap()
            .calls,
        0
    );
    assert!(tdx.transport().calls.is_empty());
}
