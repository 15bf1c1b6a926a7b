//! Guest memory on KVM: a memfd per alias, mapped twice — once for KVM's memslot and once as
//! the host's own view (always writable: the TDX module model zeroes and clears pages through
//! it, the VMM checks shared memory through it).
//!
//! What the guest can reach is decided by the slot view's page tables under userfaultfd
//! (docs/emulation.md, "Memory and enforcement"): the slot view is registered for MISSING and
//! MINOR faults, so a page the host has not mapped there is never filled in behind its back —
//! the guest's touch becomes a fault the host reads from the userfaultfd. [`Backing::map`]
//! installs the page table entry (`UFFDIO_CONTINUE`, which also wakes the faulting thread),
//! [`Backing::unmap`] removes it (`MADV_DONTNEED`: the page stays in the memfd, KVM's mmu
//! notifier drops its own mapping). Neither splits the mapping, so any pattern of reachable
//! pages costs one VMA per view.

use super::userfaultfd::Uffd;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// A failed memory operation on guest memory: which call, where, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{call} of guest memory [{start:#x}, {end:#x}) in {name} failed: {source}")]
pub struct BackingError {
    /// The system call (or userfaultfd ioctl).
    pub call: &'static str,
    /// Which backing.
    pub name: &'static str,
    /// First byte offset (= GPA of the private alias).
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What the kernel said.
    #[source]
    pub source: io::Error,
}

/// One alias's backing.
pub struct Backing {
    name: &'static str,
    fd: OwnedFd,
    /// The memslot's view (userfaultfd-controlled).
    slot: *mut u8,
    /// The host's view (always read-write, never registered), through rust-vmm's
    /// bounds-checked guest-memory accessors; addresses are offsets (private-alias GPAs).
    host: GuestMemoryMmap,
    /// Bytes.
    pub len: usize,
    uffd: Arc<Uffd>,
    /// System calls that changed what the guest reaches or what the memfd holds
    /// (fallocate, madvise, mprotect, UFFDIO_CONTINUE, UFFDIO_WAKE), for the exit accounting.
    pub(crate) syscalls: AtomicU64,
}

// SAFETY: the mappings are plain shared memory; every access goes through raw pointers and
// races with the guest by design.
unsafe impl Send for Backing {}
// SAFETY: as above.
unsafe impl Sync for Backing {}

fn map(fd: &OwnedFd, len: usize) -> io::Result<*mut u8> {
    // SAFETY: mapping a memfd we own; checked for failure.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as *mut u8)
}

impl Backing {
    /// `len` bytes named `name`, the slot view registered with `uffd` and nothing mapped
    /// there yet.
    pub fn new(name: &'static str, len: u64, uffd: Arc<Uffd>) -> Result<Backing, BackingError> {
        let fail = |call, source| BackingError {
            call,
            name,
            start: 0,
            end: len,
            source,
        };
        let cname = CString::new(name).map_err(|e| fail("memfd_create", io::Error::other(e)))?;
        // SAFETY: a plain syscall; the result is checked before it is owned.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(fail("memfd_create", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(fail("ftruncate", io::Error::last_os_error()));
        }
        let slot = map(&fd, len as usize).map_err(|e| fail("mmap", e))?;
        let host = fd.try_clone().map_err(|e| fail("dup", e)).and_then(|dup| {
            let file = FileOffset::new(std::fs::File::from(dup), 0);
            GuestMemoryMmap::from_ranges_with_files([(GuestAddress(0), len as usize, Some(file))])
                .map_err(|e| fail("mmap", io::Error::other(e.to_string())))
        });
        let host = match host {
            Ok(h) => h,
            Err(e) => {
                // SAFETY: unmapping what was just mapped.
                unsafe { libc::munmap(slot as *mut libc::c_void, len as usize) };
                return Err(e);
            }
        };
        let b = Backing {
            name,
            fd,
            slot,
            host,
            len: len as usize,
            uffd,
            syscalls: AtomicU64::new(0),
        };
        // MISSING catches pages that are holes in the memfd (never written, or punched),
        // MINOR the ones in its page cache: with both, no touch goes unseen.
        b.uffd
            .register_missing_minor(b.slot as *mut libc::c_void, b.len)
            .map_err(|e| fail("UFFDIO_REGISTER", e))?;
        Ok(b)
    }

    /// The address KVM's memslot uses.
    pub(crate) fn slot_addr(&self) -> u64 {
        self.slot as u64
    }

    /// The byte offset of slot-view address `addr`, if it lies in this backing.
    pub(crate) fn slot_offset(&self, addr: u64) -> Option<u64> {
        let off = addr.checked_sub(self.slot as u64)?;
        (off < self.len as u64).then_some(off)
    }

    /// How many VMAs of this process the slot view spans now (`/proc/self/maps`). Making
    /// pages reachable or not never splits it, so this stays 1 whatever the guest does.
    pub(crate) fn slot_vmas(&self) -> io::Result<usize> {
        let (lo, hi) = (self.slot as u64, self.slot as u64 + self.len as u64);
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        Ok(maps
            .lines()
            .filter_map(|l| {
                let (range, _) = l.split_once(' ')?;
                let (a, b) = range.split_once('-')?;
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
            .filter(|(a, b)| *a < hi && lo < *b)
            .count())
    }

    fn check(&self, call: &'static str, off: u64, len: u64) -> Result<(), BackingError> {
        match off.checked_add(len) {
            Some(end)
                if end <= self.len as u64
                    && off.is_multiple_of(4096)
                    && len.is_multiple_of(4096) =>
            {
                Ok(())
            }
            _ => Err(self.error(call, off, len, io::Error::from_raw_os_error(libc::EINVAL))),
        }
    }

    /// A libc call's result (0 or -1 with errno) as this backing's error for `[off, off+len)`.
    fn os_result(
        &self,
        r: libc::c_int,
        call: &'static str,
        off: u64,
        len: u64,
    ) -> Result<(), BackingError> {
        self.syscalls.fetch_add(1, Relaxed);
        if r == 0 {
            Ok(())
        } else {
            Err(self.error(call, off, len, io::Error::last_os_error()))
        }
    }

    fn error(&self, call: &'static str, off: u64, len: u64, source: io::Error) -> BackingError {
        BackingError {
            call,
            name: self.name,
            start: off,
            end: off.saturating_add(len),
            source,
        }
    }

    /// Let the guest reach `[off, off + len)`: give every hole a zeroed page (`fallocate`,
    /// which keeps existing contents), then install the slot view's entries
    /// (`UFFDIO_CONTINUE`, without waking anyone: see [`Backing::wake`]). Pages already
    /// mapped are left as they are.
    pub fn map(&self, off: u64, len: u64) -> Result<(), BackingError> {
        self.check("UFFDIO_CONTINUE", off, len)?;
        // SAFETY: fallocate on our own memfd, inside its size.
        let r = unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                0,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        self.os_result(r, "fallocate", off, len)?;
        let mut at = off;
        while at < off + len {
            // SAFETY: [at, off + len) lies inside the registered slot view (checked above).
            let start = unsafe { self.slot.add(at as usize) } as *mut libc::c_void;
            self.syscalls.fetch_add(1, Relaxed);
            // DONTWAKE: the fault service wakes a waiting vCPU itself, once it has put it
            // back into the TD (a vCPU woken earlier could fault again while still counted
            // outside, and a kicker on PVM could then wait for it forever).
            match self
                .uffd
                .r#continue(start, (off + len - at) as usize, false)
            {
                Ok(n) if n > 0 => at += n,
                Ok(_) => {
                    return Err(self.error(
                        "UFFDIO_CONTINUE",
                        at,
                        4096,
                        io::Error::other("no progress"),
                    ))
                }
                // An entry that is already there: a racing fault, or a page mapped before.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => at += 4096,
                Err(e) => return Err(self.error("UFFDIO_CONTINUE", at, off + len - at, e)),
            }
        }
        Ok(())
    }

    /// Take `[off, off + len)` away from the guest: drop the slot view's entries
    /// (`MADV_DONTNEED`; the contents stay in the memfd). KVM's mmu notifier zaps its own
    /// mapping and flushes the vCPUs' TLBs before this returns.
    pub fn unmap(&self, off: u64, len: u64) -> Result<(), BackingError> {
        self.check("madvise(MADV_DONTNEED)", off, len)?;
        // SAFETY: a page-aligned range inside the slot mapping (checked above).
        let r = unsafe {
            libc::madvise(
                self.slot.add(off as usize) as *mut libc::c_void,
                len as usize,
                libc::MADV_DONTNEED,
            )
        };
        self.os_result(r, "madvise(MADV_DONTNEED)", off, len)
    }

    /// Wake the threads waiting on a fault in `[off, off + len)`: they touch the page again
    /// and either find it mapped or fault once more.
    pub(crate) fn wake(&self, off: u64, len: u64) -> Result<(), BackingError> {
        self.check("UFFDIO_WAKE", off, len)?;
        // SAFETY: inside the registered slot view (checked above).
        let start = unsafe { self.slot.add(off as usize) } as *mut libc::c_void;
        self.syscalls.fetch_add(1, Relaxed);
        self.uffd
            .wake(start, len as usize)
            .map_err(|e| self.error("UFFDIO_WAKE", off, len, e))
    }

    /// Stop the TD's access to this whole view: `PROT_NONE` over the slot mapping (one VMA,
    /// nothing split), then wake every waiting fault. A vCPU that touches it again leaves
    /// KVM_RUN (an MMIO exit on PVM, `EFAULT` on stock KVM) instead of waiting: the only
    /// way to get a vCPU out of a fault on every KVM (a signal does not interrupt PVM's).
    pub(crate) fn fence(&self) -> Result<(), BackingError> {
        let len = self.len as u64;
        // SAFETY: the whole slot mapping, which we own.
        let r =
            unsafe { libc::mprotect(self.slot as *mut libc::c_void, self.len, libc::PROT_NONE) };
        self.os_result(r, "mprotect(PROT_NONE)", 0, len)?;
        self.wake(0, len)
    }

    /// Discard the contents (FALLOC_FL_PUNCH_HOLE): later reads see zeroes, and every
    /// mapping of the range (the slot view's included) loses its entries.
    pub(crate) fn punch_hole(&self, off: u64, len: u64) -> Result<(), BackingError> {
        self.check("fallocate(PUNCH_HOLE)", off, len)?;
        // SAFETY: a range inside our memfd.
        let r = unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        self.os_result(r, "fallocate(PUNCH_HOLE)", off, len)
    }

    /// Copy `bytes` in through the host view; `false` (nothing written) when the range does
    /// not lie inside the backing.
    pub fn write(&self, off: u64, bytes: &[u8]) -> bool {
        self.host.write_slice(bytes, GuestAddress(off)).is_ok()
    }

    /// The host view as rust-vmm guest memory (addresses are private-alias GPAs), for
    /// loaders that write through `vm_memory::Bytes`.
    pub(crate) fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.host
    }

    /// Copy out through the host view; `false` (nothing read) when the range does not lie
    /// inside the backing.
    pub fn read(&self, off: u64, out: &mut [u8]) -> bool {
        self.host.read_slice(out, GuestAddress(off)).is_ok()
    }

    /// The offset of the first non-zero byte in `[off, off + len)`, reading only the
    /// extents that hold data (SEEK_DATA / SEEK_HOLE skip punched and never-written pages, so
    /// an audit of a mostly empty 2 GiB backing allocates nothing).
    pub(crate) fn first_nonzero(&self, off: u64, len: u64) -> Option<u64> {
        let end = off.saturating_add(len).min(self.len as u64);
        let fd = self.fd.as_raw_fd();
        let mut at = off;
        while at < end {
            // SAFETY: lseek on our own fd.
            let data = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
            if data < 0 || data as u64 >= end {
                return None; // ENXIO: no data up to EOF.
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            let stop = if hole < 0 {
                end
            } else {
                (hole as u64).min(end)
            };
            let data = data as u64;
            if let Some(i) = self.first_nonzero_in(data, stop - data) {
                return Some(data + i);
            }
            at = stop.max(at + 1);
        }
        None
    }

    /// The first non-zero byte of one data extent, scanned in place.
    fn first_nonzero_in(&self, off: u64, len: u64) -> Option<u64> {
        let slice = self.host.get_slice(GuestAddress(off), len as usize).ok()?;
        let guard = slice.ptr_guard();
        // SAFETY: `guard` pins `len` bytes of the host view (bounds checked by get_slice);
        // the audit runs with every vCPU stopped, so nothing writes them meanwhile.
        let bytes = unsafe { std::slice::from_raw_parts(guard.as_ptr(), len as usize) };
        bytes.iter().position(|b| *b != 0).map(|i| i as u64)
    }

    /// Zero through the host view (a range outside the backing is ignored).
    pub(crate) fn zero(&self, off: u64, len: u64) {
        // One memset per contiguous host mapping (the whole backing is one): the volatile
        // byte copy of `write` costs several times as much per page, and the TDX module's
        // page clearing runs once per removed leaf.
        let Ok(slice) = self.host.get_slice(GuestAddress(off), len as usize) else {
            return;
        };
        let guard = slice.ptr_guard_mut();
        // SAFETY: the slice lies inside the host view's mapping, which lives as long as self;
        // racing guest accesses to a page being cleared are the guest's own (as on hardware).
        unsafe { std::ptr::write_bytes(guard.as_ptr(), 0, guard.len()) };
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: unmapping the slot view `new` mapped; the host view and the fds close
        // themselves.
        unsafe { libc::munmap(self.slot as *mut libc::c_void, self.len) };
    }
}

/// The VMM's view of shared memory is the shared backing's host view.
impl crate::vmm::SharedView for Backing {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        Backing::read(self, gpa, buf)
    }
    fn write(&self, gpa: u64, buf: &[u8]) -> bool {
        Backing::write(self, gpa, buf)
    }
}
