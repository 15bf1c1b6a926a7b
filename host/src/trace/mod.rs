//! `--trace`: every kernel/module step as an indented tree, one line per span or event,
//! indented by how deeply it is nested (so one conversion reads top-down:
//! tdx_emulate_vmcall → kvm_convert_memory → kvm_vm_set_mem_attributes → … →
//! TDH.MEM.PAGE.REMOVE), each line with its time and vCPU (`tree`).

mod fields;
mod tree;

use tracing_subscriber::prelude::*;
pub use tree::{set_vcpu, Options, TreeLayer};

/// A page-table level as a traced field: its page size (`level=4K`), so that the `--trace`
/// tree and `RUST_LOG`'s log lines print the same text.
pub struct PageSize(pub u64);

impl std::fmt::Display for PageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fields::level_name(self.0))
    }
}

/// Install the logger: with `tree` (`--trace`) every span and event as the tree above;
/// otherwise log lines on stderr at the level `RUST_LOG` names (tracing-subscriber's
/// EnvFilter syntax, e.g. `RUST_LOG=kvm=debug`), or else at warn, raised by each `-v`
/// (info, debug, trace) and lowered to errors by `-q`.
pub fn init(verbose: u8, quiet: bool, tree: Option<Options>) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    if let Some(opts) = tree {
        let _ = tracing_subscriber::registry()
            .with(TreeLayer::new(opts))
            .try_init();
        return;
    }
    let default = match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::WARN,
        (false, 1) => LevelFilter::INFO,
        (false, 2) => LevelFilter::DEBUG,
        (false, _) => LevelFilter::TRACE,
    };
    let filter = EnvFilter::builder()
        .with_default_directive(default.into())
        .from_env_lossy();
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time();
    let _ = tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .try_init();
}
