//! Input generators shared by the targets: corpus files with random edits
//! (text or bytes), and strings over a small alphabet.

use proptest::prelude::*;
use proptest::sample::Index;

/// An edit: kind (insert, remove, replace, truncate), where, and what.
type Edit<T> = (u8, Index, T);

fn apply_edits<T: Clone>(mut items: Vec<T>, edits: &[Edit<Vec<T>>]) -> Vec<T> {
    for (kind, at, piece) in edits {
        let i = at.index(items.len() + 1);
        match kind % 8 {
            0..=2 => {
                items.splice(i..i, piece.iter().cloned());
            }
            3 | 4 => {
                if i < items.len() {
                    items.remove(i);
                }
            }
            5 | 6 => {
                let end = (i + piece.len()).min(items.len());
                items.splice(i..end, piece.iter().cloned());
            }
            _ => items.truncate(i),
        }
    }
    items
}

/// Corpus strings, each with 0–5 edits made of `pieces` or arbitrary chars.
pub(crate) fn mutated_text(
    seeds: Vec<String>,
    pieces: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(pieces).prop_map(|p| p.chars().collect::<Vec<_>>()),
        1 => prop::collection::vec(any::<char>(), 1..3),
    ];
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<u8>(), any::<Index>(), piece), 0..6),
    )
        .prop_map(|(seed, edits)| {
            apply_edits(seed.chars().collect(), &edits)
                .into_iter()
                .collect()
        })
}

/// Byte seeds, each with 0–6 edits made of format-significant bytes or noise.
pub(crate) fn mutated_bytes(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        &[0xdd, 0xff, 0xff, 0xff, 0xff],       // array32, 4 G elements
        &[0xdf, 0xff, 0xff, 0xff, 0xff],       // map32
        &[0xdb, 0xff, 0xff, 0xff, 0xff],       // str32
        &[0xc6, 0xff, 0xff, 0xff, 0xff],       // bin32
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01], // ext32
        &[0xdc, 0xff, 0xff],                   // array16
        &[0x91],
        &[0x81, 0xa1, b'a'],
        &[0xc0],
        &[0xc1], // never used
        &[0xcb],
        &[0xff, 0xff],
        &[0x00],
        b"\"",
        b"[",
        b"{",
        b"}",
        b"]",
        b",",
        b":",
        b"\\u0000",
        b"\\ud800",
        b"1e999",
        b"\"id\":7,",
        b"\"op\"",
        b"null",
    ];
    let piece = prop_oneof![
        3 => prop::sample::select(PIECES).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 1..4),
    ];
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<u8>(), any::<Index>(), piece), 0..7),
    )
        .prop_map(|(seed, edits)| apply_edits(seed, &edits))
}

/// Strings of `len` characters from `alphabet` (much cheaper to generate in
/// a debug build than a regex strategy).
pub(crate) fn text_of(
    alphabet: &'static str,
    len: impl Into<prop::collection::SizeRange>,
) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), len).prop_map(String::from_iter)
}
