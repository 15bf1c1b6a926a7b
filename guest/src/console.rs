//! The console: COM1 through TDVMCALL<Instruction.IO>, one TDVMCALL per byte. It takes no
//! lock — the host assembles lines per vCPU — so a #VE, an exception or a panic in the
//! middle of a line cannot deadlock on it; `log` goes to it too.

use core::fmt::Write;
use shared_abi::doorbell::COM1_PORT;

/// The console, as a `fmt::Write` target.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut t = crate::arch::tdx();
        for b in s.bytes() {
            t.io_write(1, COM1_PORT, b as u32)
                .map_err(|_| core::fmt::Error)?;
        }
        Ok(())
    }
}

/// Print a line on the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::console::Console, $($arg)*);
    }};
}

struct ConsoleLog;

impl log::Log for ConsoleLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            println!("{}: {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: ConsoleLog = ConsoleLog;

/// Route `log` to the console.
pub fn init_log() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// A fixed-buffer `fmt::Write` target (for ReportFatalError's 64-byte message).
pub struct Buf<'a>(pub &'a mut [u8], pub usize);

impl Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.0.len() - self.1);
        self.0[self.1..self.1 + n].copy_from_slice(&s.as_bytes()[..n]);
        self.1 += n;
        Ok(())
    }
}
