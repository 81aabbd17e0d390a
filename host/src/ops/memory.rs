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
