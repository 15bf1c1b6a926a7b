//! QEMU's fw_cfg device through its I/O ports — in a TD each access is a
//! TDVMCALL<Instruction.IO> — and the table loader's files, placed on the heap.

use alloc::vec::Vec;
use shared_abi::fw_cfg::{
    key, LoaderError, LoaderFiles, DATA_PORT, DIR_ENTRY_SIZE, SELECTOR_PORT, SIGNATURE,
};

/// Select `key` and read `len` bytes of it (byte by byte: the data port is 8 bits wide).
fn read(key: u16, len: usize) -> Option<Vec<u8>> {
    let mut tdx = crate::arch::tdx();
    tdx.io_write(2, SELECTOR_PORT, key as u32).ok()?;
    (0..len)
        .map(|_| tdx.io_read(1, DATA_PORT).ok().map(|b| b as u8))
        .collect()
}

/// True when the machine has fw_cfg (its signature item reads "QEMU").
pub fn present() -> bool {
    read(key::SIGNATURE, 4).is_some_and(|s| s == SIGNATURE)
}

/// A file's (size, selector) from the directory.
pub fn find(name: &[u8]) -> Option<(usize, u16)> {
    let count = u32::from_be_bytes(read(key::FILE_DIR, 4)?.try_into().ok()?) as usize;
    // The directory item starts with the count: read it again with the entries behind it.
    let dir = read(key::FILE_DIR, 4 + count.min(4096) * DIR_ENTRY_SIZE)?;
    dir[4..].chunks_exact(DIR_ENTRY_SIZE).find_map(|e| {
        let n = &e[8..];
        let n = &n[..n.iter().position(|c| *c == 0).unwrap_or(n.len())];
        let size = u32::from_be_bytes(e[0..4].try_into().ok()?) as usize;
        (n == name).then(|| (size, u16::from_be_bytes([e[4], e[5]])))
    })
}

/// Read a whole file.
pub fn read_file(name: &[u8]) -> Option<Vec<u8>> {
    let (size, select) = find(name)?;
    read(select, size)
}

/// The loader's files, each read into heap memory that stays (the tables live on after
/// the loader: they are the machine's ACPI tables now). The heap is identity-mapped, so a
/// file's address is its guest-physical one.
#[derive(Default)]
pub struct HeapFiles(Vec<(Vec<u8>, &'static mut [u8])>);

impl LoaderFiles for HeapFiles {
    fn allocate(&mut self, name: &[u8], align: u32, _zone: u8) -> Result<u64, LoaderError> {
        let (size, select) = find(name).ok_or(LoaderError::UnknownFile)?;
        let data = read(select, size).ok_or(LoaderError::UnknownFile)?;
        let layout = core::alloc::Layout::from_size_align(size.max(1), (align as usize).max(1))
            .map_err(|_| LoaderError::NoMemory)?;
        // SAFETY: a non-zero-sized layout; the memory is never freed (see above).
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(LoaderError::NoMemory);
        }
        // SAFETY: `p` points at `size` fresh bytes owned by nobody else.
        let buf = unsafe { core::slice::from_raw_parts_mut(p, size) };
        buf.copy_from_slice(&data);
        self.0.push((name.into(), buf));
        Ok(p as u64)
    }

    fn file(&mut self, name: &[u8]) -> Option<(u64, &mut [u8])> {
        let f = self.0.iter_mut().find(|f| f.0 == name)?;
        Some((f.1.as_ptr() as u64, &mut *f.1))
    }
}
