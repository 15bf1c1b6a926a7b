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

/// Install the tree printer for every span and event.
pub fn init() {
    let _ = tracing_subscriber::registry().with(TreeLayer).try_init();
}
