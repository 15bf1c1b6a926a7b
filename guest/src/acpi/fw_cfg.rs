//! QEMU's fw_cfg device through its I/O ports — in a TD each access is a
//! TDVMCALL<Instruction.IO> — and the table loader's files, placed on the heap.

use alloc::vec::Vec;
use shared_abi::fw_cfg::{
    key, LoaderError, LoaderFiles, DATA_PORT, DIR_ENTRY_SIZE, SELECTOR_PORT, SIGNATURE,
};

/// Select `key` and read `len` bytes of it (byte by byte: the data port is 8 bits wide).
fn read(key: u16, len: usize) -> Option<Vec<u8>> {
    crate::arch::tdx()
        .io_write(2, SELECTOR_PORT, key as u32)
        .ok()?;
    read_on(len)
}

/// Read the next `len` bytes of the selected item.
fn read_on(len: usize) -> Option<Vec<u8>> {
    let mut tdx = crate::arch::tdx();
    (0..len)
        .map(|_| tdx.io_read(1, DATA_PORT).ok().map(|b| b as u8))
        .collect()
}

/// True when the machine has fw_cfg (its signature item reads "QEMU").
pub fn present() -> bool {
    read(key::SIGNATURE, 4).is_some_and(|s| s == SIGNATURE)
}

/// The file directory, read once (every byte is a TDVMCALL): (name, size, selector).
pub struct Dir(Vec<(Vec<u8>, usize, u16)>);

impl Dir {
    /// Read the directory: its count, then that many entries, in one pass over the item.
    pub fn read() -> Option<Dir> {
        let count = u32::from_be_bytes(read(key::FILE_DIR, 4)?.try_into().ok()?) as usize;
        let entries = read_on(count.min(4096) * DIR_ENTRY_SIZE)?;
        let files = (entries.chunks_exact(DIR_ENTRY_SIZE))
            .map(|e| {
                let n = &e[8..];
                let n = &n[..n.iter().position(|c| *c == 0).unwrap_or(n.len())];
                let size = u32::from_be_bytes([e[0], e[1], e[2], e[3]]) as usize;
                (n.to_vec(), size, u16::from_be_bytes([e[4], e[5]]))
            })
            .collect();
        Some(Dir(files))
    }

    /// A file's (size, selector).
    fn find(&self, name: &[u8]) -> Option<(usize, u16)> {
        (self.0.iter()).find(|f| f.0 == name).map(|f| (f.1, f.2))
    }

    /// Read a whole file.
    pub fn read_file(&self, name: &[u8]) -> Option<Vec<u8>> {
        let (size, select) = self.find(name)?;
        read(select, size)
    }
}

/// The loader's files, each read into heap memory that stays (the tables live on after
/// the loader: they are the machine's ACPI tables now). The heap is identity-mapped, so a
/// file's address is its guest-physical one.
pub struct HeapFiles {
    dir: Dir,
    files: Vec<(Vec<u8>, &'static mut [u8])>,
}

impl HeapFiles {
    /// No file placed yet; they come from `dir`.
    pub fn new(dir: Dir) -> HeapFiles {
        HeapFiles {
            dir,
            files: Vec::new(),
        }
    }
}

impl LoaderFiles for HeapFiles {
    fn allocate(&mut self, name: &[u8], align: u32, _zone: u8) -> Result<u64, LoaderError> {
        let data = self.dir.read_file(name).ok_or(LoaderError::UnknownFile)?;
        let size = data.len();
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
        self.files.push((name.into(), buf));
        Ok(p as u64)
    }

    fn file(&mut self, name: &[u8]) -> Option<(u64, &mut [u8])> {
        let f = self.files.iter_mut().find(|f| f.0 == name)?;
        Some((f.1.as_ptr() as u64, &mut *f.1))
    }
}
