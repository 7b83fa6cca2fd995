//! Bounded fuzzing of every parser and decoder that takes untrusted input.
//!
//! Targets (one corpus directory each, under `tests/corpus/`), one module
//! per input family:
//!
//! | corpus dir    | target                                                        | module               |
//! |---------------|---------------------------------------------------------------|----------------------|
//! | `path`        | `Path::parse` and `Path::parse_key`                           | `paths`              |
//! | `time`        | `model::parse_time` (µs, plain or ETag-quoted)                | `versions_and_times` |
//! | `version`     | `"<time>.<node>".parse::<Version>()` (plain or ETag-quoted)   | `versions_and_times` |
//! | `cursor`      | `Cursor::parse` (`"<incarnation>:<seq>"`)                     | `cursors`            |
//! | `op_json`     | `ops::decode_op(_, WireFormat::Json)` (WebSocket text frames) | `ops`                |
//! | `op_msgpack`  | `ops::decode_op(_, WireFormat::MsgPack)` (binary frames)      | `ops`                |
//! | `record`      | `store::decode` (the on-disk record), and `store::encode`     | `records`            |
//! | (generated)   | every HTTP route in process, every header and query parameter | `http_inputs`        |
//! |               | the web crate reads (`http_inputs_never_answer_5xx`)          |                      |
//!
//! Shared by all of them: `harness` (the campaign size, the allocation
//! budget, the 2 MiB stack, the child process), `mutate` (corpus mutation
//! and generated strings) and `corpus` (reading `tests/corpus/` and
//! replaying it through every target's checks).
//!
//! Fields are also fed around and far over their limits (README, Security,
//! "Limits"): op ids, cursors, content types, paths and op names up to
//! 100 KB, and headers up to 100 KB (as HTTP/2 allows). Ops must be refused
//! exactly when a field is over its limit, an oversized id is never echoed,
//! every error detail is bounded, and no HTTP input gets a 5xx (but `501`).
//!
//! (The peer frame decoder does not exist yet; give it a directory, a module
//! with a `check_*` function, and a line in `corpus::run_target` when it
//! does.)
//!
//! What is checked: no input panics; no input makes a decoder allocate more
//! than a small constant plus a small multiple of the input's size (a global
//! allocator in this test binary counts the bytes live on the decoding thread
//! and refuses any single allocation over 256 MiB, so a decoder that trusts a
//! length prefix aborts the run with "memory allocation of N bytes failed"
//! instead of eating the machine); deeply nested input fails cleanly on a
//! 2 MiB thread; every `Ok` satisfies the target's invariants and round-trips
//! through its printed form; the text parsers agree with a reference written
//! from the grammar; valid ops and records built by generators decode to
//! exactly what was encoded.
//!
//! Running: `cargo test --test fuzz` runs a short campaign (under ~30 s in a
//! debug build); `cargo test --test fuzz ops::` runs one family. A longer
//! local campaign sets the number of cases of every property (the defaults
//! are in the `cfg(..)` calls of each module):
//!
//! ```text
//! SPREAD_FUZZ_CASES=200000 cargo test --release --test fuzz
//! ```
//!
//! Corpus: `tests/corpus/<target>/`, one input per file, the file's exact
//! bytes (binary allowed; text targets need UTF-8; no trailing newline unless
//! it is part of the input). Every file is replayed by `corpus_replay`; names
//! starting `ok-` must be accepted, `err-` must be refused, anything else must
//! only not panic. The properties also start from mutated corpus files.
//!
//! Adding a regression: when a property fails, proptest prints the minimal
//! input. Write those exact bytes to `tests/corpus/<target>/ok-<what>` or
//! `err-<what>` (failure persistence files are turned off; the corpus is the
//! record). A known bug that is not fixed yet goes in as `bug-<target>-<what>`
//! (skipped by `corpus_replay`) with an `#[ignore = "..."]` test that asserts
//! the right behaviour; when it is fixed, rename the file to `ok-`/`err-` and
//! remove the `ignore`.
//!
//! Fixed bugs (the `bug_*` tests, next to their target's properties, with
//! their inputs kept as `bug-*` corpus files): deep MessagePack nesting,
//! bytes after a MessagePack op, ops given as arrays (in `ops`), `W/42` taken
//! as a time, malformed quoting in versions (in `versions_and_times`). Every
//! property checks the exact grammar.

mod corpus;
mod cursors;
mod harness;
mod http_inputs;
mod mutate;
mod ops;
mod paths;
mod records;
mod versions_and_times;
