//! The step tree: every span and event one line, indented by nesting, prefixed with the time
//! since the run began and the vCPU whose thread took the step. Lines are grouped by their
//! outermost step (one TDCALL, one fault, one conversion) and a group is printed whole or
//! not at all, so the filters keep each step's context: `--trace-vcpu` keeps one vCPU's
//! groups, `--trace-gpa` those that touch a range, and the boot's groups (everything before
//! the TD's first MapGPA) are left out unless `--trace-boot`.

use super::fields::Fields;
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// What the tree shows, and where.
pub struct Options {
    /// Prefix each line with the milliseconds since the run began (off for the walkthrough,
    /// whose text must not change from run to run).
    pub timestamps: bool,
    /// Only this vCPU's steps (`--trace-vcpu`).
    pub vcpu: Option<u32>,
    /// Only steps that touch `[start, end)` of guest-physical memory (`--trace-gpa`; a
    /// shared GPA counts as its private alias).
    pub gpa: Option<(u64, u64)>,
    /// Also the boot's steps (`--trace-boot`).
    pub boot: bool,
    /// Where the lines go (`--trace-out`; stderr by default, apart from progress lines).
    pub out: Box<dyn Write + Send>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            timestamps: true,
            vcpu: None,
            gpa: None,
            boot: false,
            out: Box::new(std::io::stderr()),
        }
    }
}

thread_local! {
    static VCPU: Cell<Option<u32>> = const { Cell::new(None) };
    static GROUP: RefCell<Group> = RefCell::new(Group::default());
}

/// Name the vCPU this thread runs, for every line it traces from now on.
pub fn set_vcpu(vcpu: u32) {
    VCPU.with(|v| v.set(Some(vcpu)));
}

#[derive(Default)]
struct Group {
    lines: Vec<String>,
    gpas: Vec<(u64, u64)>,
    map_gpa: bool,
}

/// The layer.
pub struct TreeLayer {
    start: Instant,
    /// `Options::timestamps`, read on every line without the output's lock.
    timestamps: bool,
    opts: Mutex<Options>,
    booted: AtomicBool,
    skipped: AtomicU64,
}

impl TreeLayer {
    /// A tree printed as `opts` says.
    pub fn new(opts: Options) -> TreeLayer {
        let booted = opts.boot;
        TreeLayer {
            start: Instant::now(),
            timestamps: opts.timestamps,
            opts: Mutex::new(opts),
            booted: AtomicBool::new(booted),
            skipped: AtomicU64::new(0),
        }
    }

    fn line(&self, depth: usize, text: &str, f: &Fields) {
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        let who = VCPU
            .with(|v| v.get())
            .map_or("host".to_string(), |v| format!("v{v}"));
        let time = if self.timestamps {
            format!("{ms:>10.3}ms ")
        } else {
            String::new()
        };
        let line = format!("{time}{who:<4} {}{text}{}", "  ".repeat(depth), f.rest);
        GROUP.with(|g| {
            let mut g = g.borrow_mut();
            g.lines.push(line);
            g.gpas.extend_from_slice(&f.gpas);
            // The boot ends with the first conversion: its MapGPA, or the guest's first step
            // of one (PTEs or MapGPA; the boot's accepts are neither).
            g.map_gpa |= f.rest.contains("sub=MapGPA")
                || (text.starts_with("guest: ")
                    && (text.contains("MapGPA") || text.contains("PTE")));
        });
    }

    /// The outermost step ended: print its group if the filters keep it.
    fn flush(&self) {
        let g = GROUP.with(|g| std::mem::take(&mut *g.borrow_mut()));
        let Ok(mut o) = self.opts.lock() else { return };
        if o.vcpu.is_some() && VCPU.with(|v| v.get()) != o.vcpu {
            return;
        }
        if let Some((lo, hi)) = o.gpa {
            if !g.gpas.iter().any(|(s, e)| *s < hi && lo < *e) {
                return;
            }
        }
        if !self.booted.load(Relaxed) {
            if !g.map_gpa {
                self.skipped.fetch_add(1, Relaxed);
                return;
            }
            self.booted.store(true, Relaxed);
            let n = self.skipped.load(Relaxed);
            if n > 0 {
                let _ = writeln!(o.out, "({n} boot-time steps before the first MapGPA left out: --trace-boot shows them)");
            }
        }
        for l in g.lines {
            let _ = writeln!(o.out, "{l}");
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TreeLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let depth = ctx.span_scope(id).map(|s| s.count()).unwrap_or(1) - 1;
        let mut f = Fields::default();
        attrs.record(&mut f);
        self.line(depth, attrs.metadata().name(), &f);
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
        self.line(depth, &format!("{mark}{}", f.message), &f);
        if depth == 0 {
            self.flush();
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if ctx.span(&id).is_some_and(|s| s.parent().is_none()) {
            self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Three steps — a boot accept, a MapGPA and a fault elsewhere — under `opts`.
    fn traced(opts: impl FnOnce(Box<dyn Write + Send>) -> Options) -> String {
        let buf = Buf::default();
        let layer = TreeLayer::new(opts(Box::new(buf.clone())));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            set_vcpu(1);
            tracing::trace!(target: "seam", gpa = %"0x1000", level = 0u64, "TDG.MEM.PAGE.ACCEPT");
            {
                let _s = tracing::debug_span!("tdx_emulate_vmcall", sub = "MapGPA").entered();
                tracing::debug!(gpa = %"0x800000200000", bytes = 4096u64, "KVM_EXIT_HYPERCALL");
                tracing::trace!(gfn = 0x200u64, hpa = 0x200u64, "zap leaf");
            }
            let _s =
                tracing::debug_span!("tdx_handle_ept_violation", gpa = %"0x400000", level = 1u64)
                    .entered();
        });
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    fn opts(o: Options) -> impl FnOnce(Box<dyn Write + Send>) -> Options {
        move |out| Options { out, ..o }
    }

    #[test]
    fn lines_name_the_vcpu_and_nest_and_boot_steps_are_left_out() {
        let t = traced(opts(Options {
            timestamps: false,
            ..Options::default()
        }));
        let expect =
            "(1 boot-time steps before the first MapGPA left out: --trace-boot shows them)\n\
            v1   tdx_emulate_vmcall sub=MapGPA\n\
            v1     KVM_EXIT_HYPERCALL gpa=0x800000200000 bytes=4096\n\
            v1     zap leaf gfn=0x200 frame=0x200\n\
            v1   tdx_handle_ept_violation gpa=0x400000 level=2M\n";
        assert_eq!(t, expect);
        let all = traced(opts(Options {
            timestamps: false,
            boot: true,
            ..Options::default()
        }));
        assert!(
            all.starts_with("v1   TDG.MEM.PAGE.ACCEPT gpa=0x1000 level=4K\n"),
            "{all}"
        );
    }

    #[test]
    fn filters_keep_whole_steps() {
        let by_gpa = traced(opts(Options {
            gpa: Some((0x20_0000, 0x20_1000)),
            boot: true,
            ..Options::default()
        }));
        assert_eq!(by_gpa.lines().count(), 3, "{by_gpa}");
        assert!(by_gpa.lines().all(|l| l.contains("ms v1")), "{by_gpa}");
        let other = traced(opts(Options {
            vcpu: Some(0),
            boot: true,
            ..Options::default()
        }));
        assert_eq!(other, "");
    }
}
