//! The guest's Rust side: find the TDX transport in the TD HOB, report in, and exit.

use crate::layout::{MAILBOX, TD_HOB_SIZE};
use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, Ordering};
use shared_abi::doorbell::{COM1_PORT, DEBUG_EXIT_PORT};
use shared_abi::layout::hob::HobList;
use tdcall::transport::{AnyTransport, Doorbell, TdcallInsn};
use tdcall::Tdx;

/// 0 until the BSP found the transport; then the doorbell port + 1, or u32::MAX for TDCALL.
static TRANSPORT: AtomicU32 = AtomicU32::new(0);
/// The configuration flags of the tdxlab HOB (`shared_abi::layout::hob::config`).
static FLAGS: AtomicU32 = AtomicU32::new(0);

/// The workload the host asked for (`layout::WORKLOAD_*`).
static WORKLOAD: AtomicU32 = AtomicU32::new(0);

/// The host's configuration flags for this guest.
pub fn flags() -> u32 {
    FLAGS.load(Ordering::Acquire)
}

/// The workload the host asked for.
pub fn workload() -> u32 {
    WORKLOAD.load(Ordering::Acquire)
}

/// The unaccepted RAM ranges of the TD HOB (at most 8), as (start, length).
pub fn unaccepted_ram() -> ([(u64, u64); 8], usize) {
    let mut out = [(0, 0); 8];
    let mut n = 0;
    // SAFETY: the TD HOB section is TEMP-like accepted memory the host wrote before boot.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            crate::layout::TD_HOB_BASE as *const u8,
            TD_HOB_SIZE as usize,
        )
    };
    if let Ok(list) = HobList::parse(bytes) {
        for r in list.resources() {
            if r.resource_type == shared_abi::layout::hob::resource_type::MEMORY_UNACCEPTED
                && n < out.len()
            {
                out[n] = (r.start, r.length);
                n += 1;
            }
        }
    }
    (out, n)
}

fn transport() -> AnyTransport {
    match TRANSPORT.load(Ordering::Acquire) {
        0 | u32::MAX => AnyTransport::Tdcall(TdcallInsn),
        p => AnyTransport::Doorbell(Doorbell {
            port: (p - 1) as u16,
        }),
    }
}

/// The TDX module, over whichever transport this TD uses.
pub fn tdx() -> Tdx<AnyTransport> {
    Tdx::new(transport())
}

/// COM1 through TDVMCALL<Instruction.IO>; the host prints whole lines per vCPU.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut t = tdx();
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
        let _ = writeln!($crate::bare::Console, $($arg)*);
    }};
}

/// Leave the TD with status `code` through the isa-debug-exit port.
pub fn exit(code: u32) -> ! {
    let _ = tdx().io_write(4, DEBUG_EXIT_PORT, code);
    halt()
}

fn halt() -> ! {
    loop {
        // SAFETY: HLT only waits.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}

fn mailbox(word: u64) -> &'static AtomicU32 {
    // SAFETY: the mailbox page is TEMP_MEM, zeroed by the host, shared by all vCPUs, and only
    // ever accessed atomically.
    unsafe { &*((MAILBOX + 8 + 4 * word) as *const AtomicU32) }
}

/// Called by the boot code on every vCPU, on its own stack.
pub extern "C" fn rust_main(vcpu: u32, hob: u32) -> ! {
    if vcpu == 0 {
        // SAFETY: the host wrote the TD HOB list at `hob`, inside the TD_HOB section.
        let bytes =
            unsafe { core::slice::from_raw_parts(hob as usize as *const u8, TD_HOB_SIZE as usize) };
        let tdxlab = HobList::parse(bytes).ok().and_then(|l| l.tdxlab());
        FLAGS.store(tdxlab.map(|h| h.flags).unwrap_or(0), Ordering::Release);
        WORKLOAD.store(tdxlab.map(|h| h.workload).unwrap_or(0), Ordering::Release);
        let port = tdxlab.map(|h| h.doorbell_port as u32 + 1);
        TRANSPORT.store(port.unwrap_or(u32::MAX), Ordering::Release);
        mailbox(0).store(1, Ordering::Release);
    } else {
        while mailbox(0).load(Ordering::Acquire) == 0 {
            core::hint::spin_loop();
        }
    }
    crate::main(vcpu)
}

/// Count this vCPU in; returns how many have arrived.
pub fn arrive() -> u32 {
    mailbox(1).fetch_add(1, Ordering::AcqRel) + 1
}

/// vCPUs that have arrived so far.
pub fn arrived() -> u32 {
    mailbox(1).load(Ordering::Acquire)
}

/// Park this vCPU.
pub fn park() -> ! {
    halt()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("PANIC: {info}");
    let mut msg = [0u8; 64];
    let mut w = crate::bare::Buf(&mut msg, 0);
    let _ = write!(w, "{}", info.message());
    let _ = tdx().report_fatal_error(1, None, &msg);
    exit(0xFF)
}

/// A fixed buffer `fmt::Write` target.
pub struct Buf<'a>(pub &'a mut [u8], pub usize);

impl Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.0.len() - self.1);
        self.0[self.1..self.1 + n].copy_from_slice(&s.as_bytes()[..n]);
        self.1 += n;
        Ok(())
    }
}

/// The BSP set up the heap: other vCPUs may allocate now.
pub fn heap_ready() {
    mailbox(2).store(1, Ordering::Release);
}

/// Wait until the BSP set up the heap.
pub fn wait_heap_ready() {
    while mailbox(2).load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
}

/// The tdxlab HOB (all zero on real TDX, where the host wrote none).
pub fn tdxlab_hob() -> shared_abi::layout::hob::TdxlabHob {
    // SAFETY: the TD HOB section is accepted memory the host wrote before boot.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            crate::layout::TD_HOB_BASE as *const u8,
            TD_HOB_SIZE as usize,
        )
    };
    HobList::parse(bytes)
        .ok()
        .and_then(|l| l.tdxlab())
        .unwrap_or_default()
}

/// Bytes of RAM the TD HOB describes (the end of its highest resource).
pub fn ram_size() -> u64 {
    // SAFETY: the TD HOB section is accepted memory the host wrote before boot.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            crate::layout::TD_HOB_BASE as *const u8,
            TD_HOB_SIZE as usize,
        )
    };
    HobList::parse(bytes)
        .map(|l| l.resources().map(|r| r.start + r.length).max().unwrap_or(0))
        .unwrap_or(0)
}
