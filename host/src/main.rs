//! `tdxlab`: the host of an emulated TDX guest on stock Linux KVM.
//!
//! The host plays three roles, each in its own module as the design lays out: the VMM (QEMU),
//! the hypervisor MMU (KVM's TDP MMU) and the TDX module. This binary is the VMM's command line.

mod caps;
mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
