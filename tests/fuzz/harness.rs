//! The harness every target runs under: the campaign size of a property
//! (`SPREAD_FUZZ_CASES`), the allocation budget of a decode (this binary's
//! global allocator counts the bytes live on the decoding thread), a 2 MiB
//! stack with a time limit, and a child process for checks that abort.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::panic::catch_unwind;
use std::time::{Duration, Instant};

use proptest::prelude::ProptestConfig;

// ---------------------------------------------------------------------------
// Campaign size
// ---------------------------------------------------------------------------

/// Proptest settings for one property: `default` cases, or `SPREAD_FUZZ_CASES`.
/// Failures are not persisted to files: regressions go into the corpus.
pub(crate) fn cfg(default: u32) -> ProptestConfig {
    let cases = std::env::var("SPREAD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Allocation accounting
// ---------------------------------------------------------------------------

/// The system allocator, counting the bytes live on each thread while a
/// [`bounded`] section runs.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// No single allocation above this is granted inside a [`bounded`] section.
const HARD_CAP: usize = 256 << 20;
/// Every decode may hold this much regardless of its input...
const ALLOC_FLOOR: usize = 1 << 20;
/// ...plus this much per input byte.
const ALLOC_PER_BYTE: usize = 64;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let live = LIVE.get() + size as i64;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

fn note_free(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            LIVE.set(LIVE.get() - size as i64);
        }
    });
}

fn refused(size: usize) -> bool {
    size > HARD_CAP && TRACKING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded to `System` unchanged, or refused with a
// null pointer (which `GlobalAlloc` allows); the counters are plain
// thread-local cells with const initializers, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note_free(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused(new_size) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as a new block then the old one freed: the peak sees both.
            note_alloc(new_size);
            note_free(layout.size());
        }
        p
    }
}

/// Runs `f` and returns its result and the most bytes it had live at once on
/// this thread (allocations made inside `f`, minus those it freed).
fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            TRACKING.set(false);
        }
    }
    LIVE.set(0);
    PEAK.set(0);
    TRACKING.set(true);
    let off = Off;
    let r = f();
    drop(off);
    (r, PEAK.get().max(0) as usize)
}

/// Runs a decoder on an input of `input_len` bytes and asserts that it held
/// at most `ALLOC_FLOOR + ALLOC_PER_BYTE * input_len` bytes at once.
pub(crate) fn bounded<R>(input_len: usize, f: impl FnOnce() -> R) -> R {
    let budget = ALLOC_FLOOR + ALLOC_PER_BYTE * input_len;
    let (r, peak) = peak_bytes(f);
    assert!(
        peak <= budget,
        "decoding {input_len} bytes held {peak} bytes at once (budget {budget})"
    );
    r
}

/// The budget check itself works: a decoder that allocates from a claimed
/// size instead of the input is caught.
#[test]
fn allocation_budget_is_enforced() {
    // (black_box: in a release build the allocations could be optimized out.)
    let over = catch_unwind(|| bounded(5, || black_box(vec![0u8; ALLOC_FLOOR + 1024]).len()));
    assert!(
        over.is_err(),
        "an allocation over the budget went unnoticed"
    );
    let within = bounded(5, || black_box(vec![0u8; ALLOC_FLOOR / 2]).len());
    assert_eq!(within, ALLOC_FLOOR / 2);
    // Memory freed inside the section does not count twice.
    let churn = bounded(5, || {
        (0..64)
            .map(|_| black_box(vec![1u8; ALLOC_FLOOR / 4]).len())
            .sum::<usize>()
    });
    assert_eq!(churn, 64 * (ALLOC_FLOOR / 4));
}

// ---------------------------------------------------------------------------
// Small stacks and child processes
// ---------------------------------------------------------------------------

/// Runs `f` on a fresh thread with a 2 MiB stack (the default for spawned
/// threads, so a server worker) and fails if it overflows, panics or takes
/// longer than `limit`. A stack overflow aborts the whole test binary; the
/// thread's name (in the abort message) says which input did it.
pub(crate) fn on_small_stack<R: Send + 'static>(
    name: &str,
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let start = Instant::now();
    let r = std::thread::Builder::new()
        .name(format!("2 MiB stack: {name}"))
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .unwrap_or_else(|_| panic!("{name}: the decoder panicked"));
    let took = start.elapsed();
    assert!(took < limit, "{name}: took {took:?}, limit {limit:?}");
    r
}
/// Runs the test `test` of `module` (the caller's `module_path!()`) again in
/// a child process with `SPREAD_FUZZ_CHILD` set, and returns whether it
/// passed: for checks that abort the process (a stack overflow) rather than
/// panic.
pub(crate) fn passes_in_child(module: &str, test: &str) -> bool {
    // libtest names a test by its path inside the crate (`ops::bug_...`).
    let name = match module.split_once("::") {
        Some((_crate, inner)) => format!("{inner}::{test}"),
        None => test.to_string(),
    };
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env("SPREAD_FUZZ_CHILD", "1")
        .status()
        .expect("run the test binary");
    status.success()
}

pub(crate) fn in_child() -> bool {
    std::env::var_os("SPREAD_FUZZ_CHILD").is_some()
}
