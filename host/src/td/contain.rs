//! Containment: a panic in any thread of a running TD stops the TD with a host error that
//! says where it panicked, and the run still writes its summary and report — instead of
//! leaving the other threads to run until the timeout.

use super::kvm_backend::KvmBackend;
use crate::exit::ExitKind;
use crate::vmm::{GuestExit, GuestIo};
use std::cell::RefCell;

thread_local! {
    /// What the panic hook saw last on this thread: "FILE:LINE: message".
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Test-only switch (environment, never a flag): `TDXLAB_TEST_PANIC=vcpu0` makes vCPU 0's
/// thread panic after its first exit, so that tests can watch the containment work.
pub const TEST_PANIC_ENV: &str = "TDXLAB_TEST_PANIC";

/// Replace the default panic message (several lines on stderr) by a note of where the panic
/// happened, which [`contained`] turns into the TD's one-line host error. With
/// `RUST_BACKTRACE` set, the default report is printed as well.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "an unknown place".into());
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{at}: {msg}")));
        if std::env::var("RUST_BACKTRACE").is_ok_and(|v| !v.is_empty() && v != "0") {
            default(info);
        }
    }));
}

/// Run `f` (the body of a TD thread called `what`); if it panics, stop the TD with
/// "`what` panicked at FILE:LINE: message" and fence guest memory so every vCPU leaves.
pub(super) fn contained(what: &str, io: &GuestIo, backend: &KvmBackend, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok() {
        return;
    }
    let at = LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| "an unknown place (no panic hook installed)".into());
    io.finish(GuestExit {
        kind: ExitKind::HostError,
        code: 0,
        message: format!("{what} panicked at {at}"),
    });
    let _ = backend.fence();
}

/// Whether the test-only switch asks `who` (e.g. "vcpu0") to panic.
pub(super) fn test_panic(who: &str) -> bool {
    std::env::var(TEST_PANIC_ENV).is_ok_and(|v| v == who)
}

/// SIGINT or SIGTERM received while a TD runs (0: none).
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, std::sync::atomic::Ordering::SeqCst);
}

/// While it lives, SIGINT and SIGTERM stop the TD the orderly way (audit, summary, report;
/// the CLI then exits 128 + the signal, 130 or 143) instead of killing the process.
pub(super) struct StopSignals {
    old: [(libc::c_int, libc::sigaction); 2],
}

impl StopSignals {
    /// Install the handlers.
    pub(super) fn install() -> std::io::Result<StopSignals> {
        STOP_SIGNAL.store(0, std::sync::atomic::Ordering::SeqCst);
        let mut old = [
            (libc::SIGINT, zeroed_sigaction()),
            (libc::SIGTERM, zeroed_sigaction()),
        ];
        for (sig, prev) in old.iter_mut() {
            let mut act = zeroed_sigaction();
            act.sa_sigaction = on_stop_signal as *const () as usize;
            // SAFETY: a handler that only stores an atomic; `act` and `prev` are valid.
            if unsafe { libc::sigaction(*sig, &act, prev) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(StopSignals { old })
    }

    /// The signal that asked the TD to stop, if one did.
    pub(super) fn received(&self) -> Option<libc::c_int> {
        Some(STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst)).filter(|s| *s != 0)
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: restoring the disposition saved by `install`.
            unsafe { libc::sigaction(*sig, prev, std::ptr::null_mut()) };
        }
    }
}

fn zeroed_sigaction() -> libc::sigaction {
    // SAFETY: sigaction is plain data; all-zero is SIG_DFL with an empty mask.
    unsafe { std::mem::zeroed() }
}
