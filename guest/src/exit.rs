//! Leaving the TD: the exit port (or, without it, ACPI power-off), parking a vCPU, and the
//! panic handler.

use core::fmt::Write;
use core::panic::PanicInfo;
use shared_abi::doorbell::DEBUG_EXIT_PORT;

/// Leave the TD with status `code` through the isa-debug-exit port. Still here, the machine
/// has no such device (QEMU without `-device isa-debug-exit`): a pass powers off through
/// ACPI, a failure is reported with ReportFatalError (QEMU stops the TD and logs it).
pub fn exit(code: u32) -> ! {
    let _ = crate::arch::tdx().io_write(4, DEBUG_EXIT_PORT, code);
    if code == 0 {
        let why = crate::acpi::power_off();
        println!("ACPI power-off failed: {why}");
    } else {
        let mut msg = [0u8; 64];
        let mut w = crate::console::Buf(&mut msg, 0);
        let _ = write!(w, "guest failed with exit code {code:#x}");
        let _ = crate::arch::tdx().report_fatal_error(0, None, &msg);
    }
    halt()
}

/// Park this vCPU.
pub fn park() -> ! {
    halt()
}

fn halt() -> ! {
    loop {
        // SAFETY: HLT only waits.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("PANIC: {info}");
    let mut msg = [0u8; 64];
    let mut w = crate::console::Buf(&mut msg, 0);
    let _ = write!(w, "{}", info.message());
    // Error code 0, as Linux sends it ("0 is panic"): QEMU refuses any of bits 15:0 set.
    let _ = crate::arch::tdx().report_fatal_error(0, None, &msg);
    exit(0xFF)
}
