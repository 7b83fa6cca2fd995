//! The two sides of a walk run by a `Differ`: this node's trees and store
//! (read directly), and the peer's, asked over the link one question at a
//! time (the walk runs on a blocking thread, which waits for each answer).

use std::ops::Bound;

use super::question::{subtree_names, DiffQuestion, DiffReply, CHILDREN_PAGE, EVENT_NAMES_PAGE};
use crate::merkle::{Fingerprint, NamesPage, Node as TreeNode, Side, Tree};
use crate::model::Path;
use crate::store::StoreError;
use crate::Node;

/// This node's side (full fingerprints: the walk compares them with the
/// peer's, which arrive cut to 128 bits, on the low bits only).
pub struct LocalSide {
    /// The node.
    pub node: Node,
}

impl Side for LocalSide {
    fn node(&self, part: u16, prefix: &str) -> Result<TreeNode, StoreError> {
        Tree::new(self.node.store().as_ref()).node(part, prefix)
    }

    fn children(
        &self,
        part: u16,
        prefix: &str,
        range: (Bound<&str>, Bound<&str>),
        limit: usize,
    ) -> Result<Vec<(String, Fingerprint)>, StoreError> {
        Tree::new(self.node.store().as_ref()).children(part, prefix, range.0, range.1, limit)
    }

    fn events(&self, _: u16, path: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let path = Path::parse_key(path).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.node
            .event_names(&path)
            .map_err(|e| StoreError::Failed(e.to_string()))
    }

    fn names_under(
        &self,
        part: u16,
        prefix: &str,
        after: Option<&[u8]>,
    ) -> Result<NamesPage, StoreError> {
        subtree_names(&self.node, part, prefix, after)
            .map_err(|e| StoreError::Failed(e.to_string()))
    }
}

/// Asks the peer one question about a partition and waits for its answer.
pub type Ask = Box<dyn Fn(u16, DiffQuestion) -> Result<DiffReply, String> + Send + Sync>;

/// The peer's side, over the link.
pub struct RemoteSide {
    /// How a question is asked.
    pub ask: Ask,
}

impl RemoteSide {
    /// Asks `question` about partition `part`.
    pub fn ask(&self, part: u16, question: DiffQuestion) -> Result<DiffReply, StoreError> {
        (self.ask)(part, question).map_err(|e| StoreError::Failed(format!("the peer: {e}")))
    }
}

fn unexpected(reply: &DiffReply) -> StoreError {
    StoreError::Failed(format!("the peer answered out of turn: {reply:?}"))
}

/// True if `items`, a page of at most `page` children asked from `from`
/// (`after`: strictly after it), starts there and goes on in order: a
/// page that does not would be asked for ever, the answer growing.
fn moves_on<T>(items: &[(String, T)], (from, after): (Option<&str>, bool), page: usize) -> bool {
    let starts = items.first().is_none_or(|(s, _)| {
        from.is_none_or(|f| {
            if after {
                s.as_str() > f
            } else {
                s.as_str() >= f
            }
        })
    });
    starts && items.len() <= page && items.windows(2).all(|w| w[0].0 < w[1].0)
}

impl Side for RemoteSide {
    fn node(&self, part: u16, prefix: &str) -> Result<TreeNode, StoreError> {
        match self.ask(
            part,
            DiffQuestion::Node {
                prefix: prefix.to_string(),
            },
        )? {
            DiffReply::Node(subtree, own) => Ok(TreeNode {
                subtree: subtree.into(),
                own: own.into(),
            }),
            other => Err(unexpected(&other)),
        }
    }

    fn children(
        &self,
        part: u16,
        prefix: &str,
        range: (Bound<&str>, Bound<&str>),
        limit: usize,
    ) -> Result<Vec<(String, Fingerprint)>, StoreError> {
        let to = match range.1 {
            Bound::Excluded(s) => Some(s.to_string()),
            Bound::Unbounded => None,
            Bound::Included(_) => {
                return Err(StoreError::Failed(
                    "a walk asks children below an excluded bound".into(),
                ))
            }
        };
        let (mut from, mut after) = match range.0 {
            Bound::Included(s) => (Some(s.to_string()), false),
            Bound::Excluded(s) => (Some(s.to_string()), true),
            Bound::Unbounded => (None, false),
        };
        // Page by page: a wide prefix's answer never outgrows a frame.
        let mut out = Vec::new();
        while out.len() < limit {
            let page = (limit - out.len()).min(CHILDREN_PAGE);
            let reply = self.ask(
                part,
                DiffQuestion::Children {
                    prefix: prefix.to_string(),
                    from: from.clone(),
                    after,
                    to: to.clone(),
                    limit: page as u32,
                },
            )?;
            let DiffReply::Children(items) = reply else {
                return Err(unexpected(&reply));
            };
            if !moves_on(&items, (from.as_deref(), after), page) {
                return Err(StoreError::Failed(
                    "the peer answered a page of children that does not move on".into(),
                ));
            }
            let n = items.len();
            if let Some((last, _)) = items.last() {
                from = Some(last.clone());
                after = true;
            }
            out.extend(items.into_iter().map(|(s, fp)| (s, fp.into())));
            if n < page {
                break;
            }
        }
        Ok(out)
    }

    fn events(&self, part: u16, path: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        // Page by page: a path with a long history never outgrows a frame.
        let mut out: Vec<Vec<u8>> = Vec::new();
        loop {
            let after = out.last().cloned();
            match self.ask(
                part,
                DiffQuestion::Events {
                    path: path.to_string(),
                    after: after.clone(),
                },
            )? {
                // A page that does not move on would be asked for ever.
                DiffReply::Names(names)
                    if names
                        .first()
                        .is_none_or(|n| after.as_ref().is_none_or(|a| n > a)) =>
                {
                    let full = names.len() >= EVENT_NAMES_PAGE;
                    out.extend(names);
                    if !full {
                        return Ok(out);
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    fn names_under(
        &self,
        part: u16,
        prefix: &str,
        after: Option<&[u8]>,
    ) -> Result<NamesPage, StoreError> {
        match self.ask(
            part,
            DiffQuestion::Subtree {
                prefix: prefix.to_string(),
                after: after.map(<[u8]>::to_vec),
            },
        )? {
            // A page that does not move on would be asked for ever.
            DiffReply::Subtree { names, next }
                if next.as_deref().is_none_or(|n| Some(n) > after) =>
            {
                Ok(NamesPage { names, next })
            }
            other => Err(unexpected(&other)),
        }
    }

    fn range_sums(
        &self,
        part: u16,
        prefix: &str,
        bounds: &[Option<String>],
    ) -> Result<Vec<(Fingerprint, usize)>, StoreError> {
        match self.ask(
            part,
            DiffQuestion::RangeSums {
                prefix: prefix.to_string(),
                bounds: bounds.to_vec(),
            },
        )? {
            DiffReply::RangeSums(sums) if sums.len() + 1 == bounds.len() => Ok(sums
                .into_iter()
                .map(|(fp, n)| (fp.into(), n as usize))
                .collect()),
            other => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_children_must_move_on_in_order() {
        let page = |names: &[&str]| -> Vec<(String, ())> {
            names.iter().map(|n| (n.to_string(), ())).collect()
        };
        assert!(moves_on(&page(&["a", "b"]), (None, false), 2));
        assert!(moves_on(&page(&["b", "c"]), (Some("b"), false), 2));
        assert!(moves_on(&page(&["c"]), (Some("b"), true), 2));
        assert!(moves_on(&page(&[]), (Some("b"), true), 2));
        // The same page again, out of order, or longer than asked.
        assert!(!moves_on(&page(&["b", "c"]), (Some("b"), true), 2));
        assert!(!moves_on(&page(&["a"]), (Some("b"), false), 2));
        assert!(!moves_on(&page(&["c", "b"]), (None, false), 2));
        assert!(!moves_on(&page(&["a", "a"]), (None, false), 2));
        assert!(!moves_on(&page(&["a", "b", "c"]), (None, false), 2));
    }
}
