//! Memory: the heap (`heap`) and the page tables (`paging`: the shared window and the 4 KiB
//! PTEs the conversion engine flips).

pub mod heap;
pub mod paging;
