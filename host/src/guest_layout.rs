//! The built-in guest's memory layout and workload ids, from the one file the guest, its
//! linker script's numbers and the image packer share (`guest/layout.rs`).

include!("../../guest/layout.rs");
