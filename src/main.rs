//! The `shears` command-line tool: `shears --help` lists the subcommands.

mod cli;

fn main() -> std::process::ExitCode {
    keep_freed_buffers();
    cli::main()
}

/// Makes glibc's allocator keep freed tensor buffers for reuse.
///
/// By default glibc serves every allocation above its mmap threshold (128 KiB, raised
/// adaptively up to 32 MiB) with a fresh `mmap` and returns it with `munmap` on free; it also
/// trims the heap top above 128 KiB. A training step allocates and frees hundreds of
/// activation and gradient buffers of a few MiB, so every op paid page faults on fresh pages
/// plus, on free, a TLB shoot-down across the worker threads: `perf` showed
/// `native_write_msr`, `smp_call_function_many_cond` and `exc_page_fault` at ≈ 27 % of the
/// samples of `shears bench sparseprop`. With the threshold fixed at 32 MiB (glibc's maximum
/// on 64-bit) and trimming off, freed buffers stay in the heap and the next op reuses them,
/// as PyTorch's CPU caching does. Measured in one run on the 2-core Xeon: the sparse conv
/// 128→128 32×32 at 99 % fwd 104 → 57 ms, bwd 253 → 83 ms; burn's dense bwd 280 → 154 ms.
/// The price is that peak memory stays reserved until exit (what PyTorch does too).
///
/// A user who sets `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` keeps their setting.
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if !user_set {
            // SAFETY: `mallopt` only changes allocator parameters; called before any thread
            // is started.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        }
    }
}
