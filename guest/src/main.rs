//! The tdxlab confidential unikernel guest.
//!
//! Built for `x86_64-unknown-none` and packed into a TDVF image by the host's build. On any
//! other target this file builds a tiny host binary that only says so, which keeps
//! `cargo clippy --workspace --all-targets` and `cargo test --workspace` working from the root.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod bare;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("tdxlab-guest runs only inside a TD: build it with --target x86_64-unknown-none");
    std::process::exit(2);
}
