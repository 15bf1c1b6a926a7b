//! Helpers shared by the tests that run the `tdxlab` binary.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Run `tdxlab` with `args`.
pub fn tdxlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tdxlab"))
        .args(args)
        .output()
        .expect("run tdxlab")
}

/// True when /dev/kvm can be opened read-write.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Return from the test, saying so, when /dev/kvm is not usable.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !common::kvm_usable() {
            println!("SKIPPED: no usable /dev/kvm");
            return;
        }
    };
}
