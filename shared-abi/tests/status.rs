//! The status decoder names raw statuses with class, operand and level details.

use shared_abi::{TdxStatus, VmcallStatus};

#[test]
fn decoder_names_class_operand_and_level() {
    let cases: &[(u64, &str)] = &[
        (0, "TDX_SUCCESS (0x0000000000000000)"),
        (0xC000010000000001, "TDX_OPERAND_INVALID (0xc000010000000001): error, non-recoverable, class 0x01 (operand), operand RCX"),
        (0x8000020000000092, "TDX_OPERAND_BUSY (0x8000020000000092): error, class 0x02 (busy), operand S-EPT tree"),
        (0x80000200000000A9, "TDX_OPERAND_BUSY (0x80000200000000a9): error, class 0x02 (busy), operand TD epoch"),
        (0xC0000B0B00000001, "TDX_PAGE_SIZE_MISMATCH (0xc0000b0b00000001): error, non-recoverable, class 0x0b (S-EPT), level 1 (2M)"),
        (0x00000B0A00000000, "TDX_PAGE_ALREADY_ACCEPTED (0x00000b0a00000000): warning, class 0x0b (S-EPT), level 0 (4K)"),
        (0x8000FF000000000D, "TDX_SEAMCALL_GP (0x8000ff000000000d): error, class 0xff (Linux software), details 0xd"),
        (0xC000123400000000, "unknown TDX status 0xc000123400000000: error, non-recoverable, class 0x12"),
    ];
    for (raw, text) in cases {
        assert_eq!(TdxStatus(*raw).to_string(), *text);
    }
}

#[test]
fn fields_decode() {
    let s = TdxStatus(0xE0000B0D_00000003);
    assert!(
        s.is_error() && s.is_non_recoverable() && s.is_fatal() && !s.host_recoverability_hint()
    );
    assert_eq!((s.class(), s.details_l1(), s.details_l2()), (0x0B, 0x0D, 3));
    // The fatal bit makes it a different code, as Linux's `status >> 32` compare sees it.
    assert!(!s.is(TdxStatus::EPT_ENTRY_STATE_INCORRECT));
    assert!(TdxStatus(0xC0000B0D_00000003).is(TdxStatus::EPT_ENTRY_STATE_INCORRECT));
    assert!(!TdxStatus::PAGE_ALREADY_ACCEPTED.is_error());
    assert!(!TdxStatus::GPA_RANGE_ALREADY_BLOCKED.is_error());
    assert!(TdxStatus(0x1000_0000_0000_0000).host_recoverability_hint());
}

#[test]
fn every_known_status_has_a_unique_name_that_round_trips() {
    for (name, s) in TdxStatus::KNOWN {
        assert_eq!(s.name(), Some(*name), "{s:?}");
    }
    for (name, s) in VmcallStatus::KNOWN {
        assert_eq!(s.name(), Some(*name));
        assert!(s.to_string().ends_with(name));
    }
    assert_eq!(VmcallStatus(7).to_string(), "unknown TDVMCALL status 0x7");
}
