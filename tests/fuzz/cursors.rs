//! Target `cursor`: `Cursor::parse` (`"<incarnation>:<seq>"`, the resume
//! point of a stream) against the grammar; every valid cursor round-trips.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use spread_actors::Cursor;

use crate::corpus::text_seeds;
use crate::harness::{bounded, cfg};
use crate::mutate::{mutated_text, text_of};
use crate::versions_and_times::{node_id, padding, spec_node, VERSION_PIECES};

/// The cursor grammar, written from the spec: a node id, `:` and decimal
/// digits, after trimming surrounding whitespace.
fn spec_cursor(raw: &str) -> Option<(String, u64)> {
    let (inc, seq) = raw.trim().rsplit_once(':')?;
    if !spec_node(inc) || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((inc.to_string(), seq.parse().ok()?))
}

/// Checks `Cursor::parse` on one input: no panic, bounded memory, `Ok`
/// values that round-trip, and agreement with the grammar.
pub(crate) fn check_cursor(raw: &str) -> Result<bool, TestCaseError> {
    let got = bounded(raw.len(), || Cursor::parse(raw));
    let want = spec_cursor(raw);
    match (&got, want) {
        (Ok(c), Some((inc, seq))) => {
            prop_assert_eq!(&*c.incarnation, inc.as_str());
            prop_assert_eq!(c.seq, seq);
            prop_assert_eq!(Cursor::parse(&c.to_string()).ok(), Some(c.clone()));
        }
        (Err(_), None) => {}
        (got, want) => {
            return Err(TestCaseError::fail(format!(
                "Cursor::parse({raw:?}) = {got:?}, the grammar says {want:?}"
            )))
        }
    }
    Ok(got.is_ok())
}

fn cursor_input() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => mutated_text(text_seeds("cursor"), VERSION_PIECES),
        2 => text_of(" :0123456789ax_-", 0..24),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(cfg(3000))]

    #[test]
    fn cursor_parse_agrees_with_the_grammar(raw in cursor_input()) {
        check_cursor(&raw)?;
    }

    #[test]
    fn every_valid_cursor_round_trips(inc in node_id(), seq in any::<u64>(), pad in padding()) {
        let c = Cursor::parse(&format!("{pad}{inc}:{seq}{pad}")).expect("valid cursor");
        prop_assert_eq!(&*c.incarnation, inc.as_str());
        prop_assert_eq!(c.seq, seq);
        prop_assert_eq!(c.to_string(), format!("{inc}:{seq}"));
        prop_assert_eq!(Cursor::parse(&c.to_string()).ok(), Some(c));
    }
}
