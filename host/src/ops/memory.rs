//! Process-wide allocator settings.

/// Arenas glibc's malloc may create. By default it gives each allocating thread its own
/// arena, up to 8 per core, and memory freed into an arena stays with it. The service's
/// reloads and cache writes run on tokio's blocking threads, which come and go, so its
/// memory crept up: a 10-minute soak (BENCHMARKS.md part 8) grew from 43 to 52 MiB
/// with the default, and stayed at 36–37 MiB with two arenas, its decisions per second
/// within the run-to-run spread. Two: the decisions run on a worker per core, and the
/// machines measured have two; more arenas mostly hold freed memory.
const MALLOC_ARENAS: libc::c_int = 2;

/// Cap glibc's malloc arenas (see [`MALLOC_ARENAS`]), unless `MALLOC_ARENA_MAX` in the
/// environment already says how many. Call before the async runtime starts its threads.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// Hand the pages malloc holds free back to the system. A reload frees a whole config's
/// worth of plugins, keys and tables at once, in the middle of the heap where glibc
/// keeps them (it returns only the top of a heap by itself), so each reload left the
/// process a little larger until the free chunks happened to cover the next set: in the
/// soak, anonymous memory rose from 8.2 to 9.6 MiB over reloads between its first and
/// second minute, then stayed. `malloc_trim` releases every free page of every arena;
/// it walks every heap, so it runs once per reload, after the old set is gone, never per
/// request.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// This process's anonymous resident memory, bytes.
    fn rss_anon() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Memory freed below a block still in use stays resident until trimmed: what a
    /// reload leaves behind, and what `release_freed` gives back.
    #[test]
    fn release_freed_returns_memory_freed_below_live_blocks() {
        const BLOCKS: usize = 1024;
        const BLOCK: usize = 32 * 1024; // below malloc's mmap threshold: from the heap
        let mut blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8; BLOCK]).collect();
        let pin = vec![1u8; BLOCK]; // above them all, so the heap's top stays in use
        let before = rss_anon();
        blocks.clear();
        blocks.shrink_to_fit();
        let freed = rss_anon();
        super::release_freed();
        let trimmed = rss_anon();
        drop(pin);
        let total = (BLOCKS * BLOCK) as u64;
        assert!(
            freed + total / 2 > before,
            "malloc gave back blocks freed below the pin by itself ({before} -> {freed} bytes): the test no longer shows what it means to"
        );
        assert!(
            trimmed + total / 2 < freed,
            "release_freed did not give back the freed blocks: {freed} -> {trimmed} bytes"
        );
    }
}
