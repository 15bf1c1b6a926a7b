//! `--trace`: every kernel/module step as an indented tree on stderr, one line per span or
//! event, indented by how deeply it is nested (so one conversion reads top-down:
//! tdx_emulate_vmcall → kvm_convert_memory → kvm_vm_set_mem_attributes → … → TDH.MEM.PAGE.REMOVE).

use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

/// Prints spans and events as an indented tree.
pub struct TreeLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TreeLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let depth = ctx.span_scope(id).map(|s| s.count()).unwrap_or(1) - 1;
        let mut f = Fields::default();
        attrs.record(&mut f);
        eprintln!(
            "{}{}{}",
            "  ".repeat(depth),
            attrs.metadata().name(),
            f.rest
        );
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let depth = ctx.event_scope(event).map(|s| s.count()).unwrap_or(0);
        let mut f = Fields::default();
        event.record(&mut f);
        let lvl = event.metadata().level();
        let mark = if *lvl <= tracing::Level::WARN {
            format!("{lvl}: ")
        } else {
            String::new()
        };
        eprintln!("{}{mark}{}{}", "  ".repeat(depth), f.message, f.rest);
    }
}

/// Install the logger: with `tree` (`--trace`) every span and event as the tree above;
/// otherwise log lines on stderr at the level `RUST_LOG` names (tracing-subscriber's
/// EnvFilter syntax, e.g. `RUST_LOG=kvm=debug`), or else at warn, raised by each `-v`
/// (info, debug, trace) and lowered to errors by `-q`.
pub fn init(verbose: u8, quiet: bool, tree: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    if tree {
        let _ = tracing_subscriber::registry().with(TreeLayer).try_init();
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
