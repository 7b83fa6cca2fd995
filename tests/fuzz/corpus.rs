//! The corpus in `tests/corpus/<target>/`: reading it (as proptest seeds,
//! or one file by name), and replaying every file through its target's
//! checks (`corpus_replay`; known bugs through `replay_bugs`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use spread_web::encode::WireFormat;

use crate::cursors::check_cursor;
use crate::ops::check_op_bytes;
use crate::paths::check_path;
use crate::records::check_record;
use crate::versions_and_times::{check_time, check_version};

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("corpus")
        .join(target)
}

/// Every `(file name, bytes)` of a target's corpus, sorted by name. Panics if
/// the directory is missing or empty, so a renamed directory cannot silently
/// turn the replay into a no-op.
pub(crate) fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.expect("corpus entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path()).expect("corpus file");
            (name, bytes)
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

/// Corpus inputs usable as proptest seeds (known bugs left out).
pub(crate) fn seeds(target: &str) -> Vec<Vec<u8>> {
    corpus(target)
        .into_iter()
        .filter(|(name, _)| !name.starts_with("bug-"))
        .map(|(_, bytes)| bytes)
        .collect()
}

pub(crate) fn text_seeds(target: &str) -> Vec<String> {
    seeds(target)
        .into_iter()
        .map(|b| String::from_utf8(b).expect("text corpus files are UTF-8"))
        .collect()
}

/// One corpus file of a target, by name (for the known-bug tests).
pub(crate) fn corpus_file(target: &str, name: &str) -> Vec<u8> {
    let path = corpus_dir(target).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------

/// Runs one corpus input through its target's checks: `Ok(accepted)`, or why
/// a check failed.
fn run_target(target: &str, bytes: &[u8]) -> Result<bool, String> {
    let text = || std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"));
    let r = match target {
        "path" => check_path(text()?),
        "time" => check_time(text()?),
        "version" => check_version(text()?),
        "cursor" => check_cursor(text()?),
        "op_json" => check_op_bytes(bytes, WireFormat::Json),
        "op_msgpack" => check_op_bytes(bytes, WireFormat::MsgPack),
        "record" => check_record(bytes),
        other => return Err(format!("no target named {other}")),
    };
    r.map_err(|e| e.to_string())
}

const TARGETS: &[&str] = &[
    "path",
    "time",
    "version",
    "cursor",
    "op_json",
    "op_msgpack",
    "record",
];

/// Replays every corpus file (except known bugs): `ok-*` must be accepted,
/// `err-*` refused, and nothing may panic or fail a check.
#[test]
fn corpus_replay() {
    let mut failures = Vec::new();
    let mut count = 0;
    for target in TARGETS {
        for (name, bytes) in corpus(target) {
            if name.starts_with("bug-") {
                continue;
            }
            count += 1;
            let outcome = catch_unwind(AssertUnwindSafe(|| run_target(target, &bytes)));
            let problem = match outcome {
                Err(_) => Some("panicked".to_string()),
                Ok(Err(e)) => Some(e),
                Ok(Ok(accepted)) if name.starts_with("ok-") && !accepted => {
                    Some("refused, expected Ok".into())
                }
                Ok(Ok(accepted)) if name.starts_with("err-") && accepted => {
                    Some("accepted, expected Err".into())
                }
                Ok(Ok(_)) => None,
            };
            if let Some(p) = problem {
                failures.push(format!("{target}/{name}: {p}"));
            }
        }
    }
    assert!(count >= 50, "only {count} corpus files");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every corpus directory belongs to a target, so no file is silently skipped.
#[test]
fn corpus_has_no_stray_directories() {
    let root = corpus_dir("");
    for entry in std::fs::read_dir(&root).expect("corpus root") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            TARGETS.contains(&name.as_str()),
            "tests/corpus/{name} is not a target"
        );
    }
}

/// Every `bug-<target>-*` corpus file of `target`, through its checks.
pub(crate) fn replay_bugs(target: &str) {
    let bugs: Vec<_> = corpus(target)
        .into_iter()
        .filter(|(name, _)| name.starts_with(&format!("bug-{target}-")))
        .collect();
    assert!(!bugs.is_empty(), "no bug files for {target}");
    let failures: Vec<String> = bugs
        .iter()
        .filter_map(|(name, bytes)| {
            run_target(target, bytes)
                .err()
                .map(|e| format!("{target}/{name}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
