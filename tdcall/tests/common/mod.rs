//! Test transports: a scripted one that records every call, and a mock TDX module for accept.
#![allow(dead_code)]

use shared_abi::tdcall::{decode_gpa_level, TdcallLeaf};
use shared_abi::{Gpa, PageLevel, TdxStatus};
use std::collections::HashMap;
use tdcall::{Regs, Transport};

/// Records each call's input registers and answers with `respond`.
pub struct Scripted<F: FnMut(&Regs) -> Regs> {
    pub calls: Vec<Regs>,
    pub respond: F,
    /// Claims to be tdxlab's emulation (the doorbell transport).
    pub emulated: bool,
}

impl<F: FnMut(&Regs) -> Regs> Transport for Scripted<F> {
    fn call(&mut self, regs: &mut Regs) {
        self.calls.push(*regs);
        *regs = (self.respond)(regs);
    }
    fn emulated(&self) -> bool {
        self.emulated
    }
}

pub fn scripted<F: FnMut(&Regs) -> Regs>(respond: F) -> Scripted<F> {
    Scripted {
        calls: Vec::new(),
        respond,
        emulated: false,
    }
}

/// As [`scripted`], behind the emulation's transport.
pub fn scripted_emulated<F: FnMut(&Regs) -> Regs>(respond: F) -> Scripted<F> {
    Scripted {
        emulated: true,
        ..scripted(respond)
    }
}

/// A VMCALL answer: RAX 0, R10 = status, R11 = r11.
pub fn vmcall_answer(status: u64, r11: u64) -> Regs {
    Regs {
        r10: status,
        r11,
        ..Regs::default()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageState {
    Pending,
    Accepted,
}

/// A TDX module that only knows TDG.MEM.PAGE.ACCEPT, over 4K pages whose host mapping size
/// is `host_level` (KVM today: 4K). Records each call as (gpa, level).
pub struct MockModule {
    pub pages: HashMap<u64, PageState>,
    pub host_level: PageLevel,
    pub max_module_level: PageLevel,
    pub busy_answers: u32,
    pub busy_forever: bool,
    pub calls: Vec<(u64, PageLevel)>,
}

impl MockModule {
    /// `range` pending, mapped by the host at `host_level`.
    pub fn new(host_level: PageLevel, start: u64, len: u64) -> MockModule {
        let pages = (start / 4096..(start + len) / 4096)
            .map(|p| (p, PageState::Pending))
            .collect();
        MockModule {
            pages,
            host_level,
            max_module_level: PageLevel::Size2M,
            busy_answers: 0,
            busy_forever: false,
            calls: Vec::new(),
        }
    }
    pub fn all_accepted(&self) -> bool {
        self.pages.values().all(|s| *s == PageState::Accepted)
    }
    fn accept(&mut self, rcx: u64) -> TdxStatus {
        let Some((gpa, lvl)) = decode_gpa_level(rcx) else {
            return TdxStatus::OPERAND_INVALID.with_details(1);
        };
        let Some(level) = PageLevel::from_tdx_level(lvl as u64) else {
            return TdxStatus::OPERAND_INVALID.with_details(1);
        };
        self.calls.push((gpa.0, level));
        if level > self.max_module_level || !gpa.is_aligned(level) {
            return TdxStatus::OPERAND_INVALID.with_details(1);
        }
        if self.busy_forever || self.busy_answers > 0 {
            self.busy_answers = self.busy_answers.saturating_sub(1);
            return TdxStatus::OPERAND_BUSY.with_details(1);
        }
        let first = gpa.0 / 4096;
        let pages: Vec<u64> = (first..first + level.pages_4k()).collect();
        let states: Vec<Option<PageState>> =
            pages.iter().map(|p| self.pages.get(p).copied()).collect();
        if states.iter().any(Option::is_none) {
            // Outside the TD's memory: no S-EPT entry, the host would see an EPT violation
            // and give up; surface it as an invalid operand.
            return TdxStatus::OPERAND_INVALID.with_details(1);
        }
        // The host maps at `host_level`: an accept above it walks into a non-leaf.
        if level > self.host_level {
            return TdxStatus::PAGE_SIZE_MISMATCH.with_details(level as u32);
        }
        // Walk stopped at an accepted leaf: the host's block if wholly accepted, else (after
        // the host demoted it for a smaller accept, as the module's EPT violation forces) the
        // requested block itself.
        let host_first = Gpa(gpa.0).align_down(self.host_level).0 / 4096;
        let accepted = |m: &MockModule, first: u64, n: u64| {
            (first..first + n).all(|p| m.pages.get(&p) == Some(&PageState::Accepted))
        };
        if accepted(self, host_first, self.host_level.pages_4k()) {
            return TdxStatus::PAGE_ALREADY_ACCEPTED.with_details(self.host_level as u32);
        }
        if accepted(self, first, level.pages_4k()) {
            return TdxStatus::PAGE_ALREADY_ACCEPTED.with_details(level as u32);
        }
        for p in pages {
            self.pages.insert(p, PageState::Accepted);
        }
        TdxStatus::SUCCESS
    }
}

impl Transport for MockModule {
    fn call(&mut self, regs: &mut Regs) {
        assert_eq!(
            regs.rax,
            TdcallLeaf::MemPageAccept as u64,
            "accept loop issued another leaf"
        );
        let status = self.accept(regs.rcx);
        *regs = Regs {
            rax: status.0,
            ..Regs::default()
        };
    }
}
