//! The CPU side: exceptions and #VE (`idt`), and how the TD reaches the TDX module (`tdx`).

pub mod idt;
pub mod tdx;

pub use tdx::tdx;
