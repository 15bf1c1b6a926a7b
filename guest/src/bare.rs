//! Bare-metal entry. Until the emulated-TD issue lands, the guest only proves that the guest
//! side of the workspace (shared-abi, tdcall with its inline-asm transports) links for
//! `x86_64-unknown-none`; it does not boot yet.

use core::panic::PanicInfo;
use tdcall::transport::{AnyTransport, TdcallInsn};
use tdcall::Tdx;

/// Entry point: asks the TDX module who we are and halts.
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    let mut tdx = Tdx::new(AnyTransport::Tdcall(TdcallInsn));
    let _ = tdx.tdg_vp_info();
    halt()
}

fn halt() -> ! {
    loop {
        // SAFETY: HLT has no memory effects.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    halt()
}
