//! Which way this TD reaches the TDX module: the TDCALL instruction on real TDX, or the
//! emulation doorbell (a port the tdxlab HOB names) on tdxlab's emulated host.

use core::sync::atomic::{AtomicU32, Ordering};
use tdcall::transport::{AnyTransport, Doorbell, TdcallInsn};
use tdcall::Tdx;

/// 0 until the BSP set it; then the doorbell port + 1, or u32::MAX for TDCALL.
static TRANSPORT: AtomicU32 = AtomicU32::new(0);

/// Choose the transport (BSP, at boot): the doorbell port if the host named one.
pub fn set_transport(doorbell_port: Option<u16>) {
    let v = doorbell_port.map_or(u32::MAX, |p| p as u32 + 1);
    TRANSPORT.store(v, Ordering::Release);
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
