//! Allocator settings for the process, applied once at start-up by the binary.
//!
//! glibc serves allocations above its mmap threshold (128 KiB, adaptively raised to at most
//! 32 MiB) with fresh `mmap`s and gives freed heap tops back to the kernel. binsync's 1 MiB
//! chunk buffers and request bodies are allocated on one thread and freed on another at a
//! steady rate, so every one of them was faulted in page by page and zeroed by the kernel
//! again: about 10% of the CPU of a drain. Keeping them in the heap lets freed buffers be
//! reused. Memory stays bounded by the pipeline's queues; the heap simply keeps its peak.

/// Largest allocation still served from the heap rather than by its own `mmap`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Free memory at the top of the heap kept rather than returned to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 256 << 20;

/// Tunes glibc's malloc (no-op elsewhere). Environment settings (`GLIBC_TUNABLES`) win.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: mallopt only changes malloc parameters; called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
