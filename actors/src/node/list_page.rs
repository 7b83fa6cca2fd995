//! A listing as a cluster answers it: what each path shows (no values), and
//! how the pages of several owners, each answering for its own partitions,
//! make one page in path order.

use super::Listing;
use crate::model::{Path, Version};

/// One live path of a [`ListPage`]: what `GET /list` shows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// The path.
    pub path: Path,
    /// Its value's version.
    pub version: Version,
    /// Its value's size in bytes.
    pub size: usize,
    /// Its value's media type.
    pub content_type: Option<String>,
}

/// A page of [`Node::read_list`](crate::Node::read_list): live paths in
/// path order and where the next page starts (`None` when there is no
/// more).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Live paths, in path order.
    pub entries: Vec<ListEntry>,
    /// The path after which the next page starts.
    pub next: Option<String>,
}

impl From<&Listing> for ListPage {
    fn from(listing: &Listing) -> ListPage {
        ListPage {
            entries: listing
                .entries
                .iter()
                .map(|s| ListEntry {
                    path: s.event.path.clone(),
                    version: s.event.version.clone(),
                    size: s.event.value.as_ref().map_or(0, |v| v.len()),
                    content_type: s.event.content_type.as_deref().map(str::to_string),
                })
                .collect(),
            next: listing.next.clone(),
        }
    }
}

/// One page of at most `limit` entries out of `pages`, each the first
/// entries after the same point of a disjoint share of the paths (a set of
/// partitions). A share whose page stopped early (`next` set) may hold
/// more paths past its `next`, so nothing past the lowest such `next` is
/// known to be in order yet: the merged page stops there, and goes on from
/// there next time.
pub fn merge_pages(pages: Vec<ListPage>, limit: usize) -> ListPage {
    let known_until: Option<String> = pages.iter().filter_map(|p| p.next.clone()).min();
    let mut entries: Vec<ListEntry> = pages
        .into_iter()
        .flat_map(|p| p.entries)
        .filter(|e| {
            known_until
                .as_deref()
                .is_none_or(|until| e.path.as_str() <= until)
        })
        .collect();
    entries.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
    if entries.len() > limit {
        entries.truncate(limit);
        let next = entries.last().map(|e| e.path.as_str().to_string());
        return ListPage { entries, next };
    }
    ListPage {
        entries,
        next: known_until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeId;

    fn entry(path: &str) -> ListEntry {
        ListEntry {
            path: Path::parse_key(path).unwrap(),
            version: Version::new(1, NodeId::new("n").unwrap()),
            size: 1,
            content_type: None,
        }
    }

    fn page(paths: &[&str], next: Option<&str>) -> ListPage {
        ListPage {
            entries: paths.iter().map(|p| entry(p)).collect(),
            next: next.map(str::to_string),
        }
    }

    fn paths(page: &ListPage) -> Vec<&str> {
        page.entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn complete_shares_merge_in_path_order_and_end() {
        let merged = merge_pages(vec![page(&["a", "d"], None), page(&["b", "c"], None)], 10);
        assert_eq!(paths(&merged), ["a", "b", "c", "d"]);
        assert_eq!(merged.next, None);
    }

    #[test]
    fn a_page_over_the_limit_goes_on_after_its_last_entry() {
        let merged = merge_pages(vec![page(&["a", "d"], None), page(&["b", "c"], None)], 3);
        assert_eq!(paths(&merged), ["a", "b", "c"]);
        assert_eq!(merged.next.as_deref(), Some("c"));
    }

    #[test]
    fn a_share_that_stopped_early_bounds_what_is_known() {
        // The second share stopped at "c": it may hold "ca" or "d", so "e"
        // must wait for the next page.
        let merged = merge_pages(vec![page(&["a", "e"], None), page(&["b"], Some("c"))], 10);
        assert_eq!(paths(&merged), ["a", "b"]);
        assert_eq!(merged.next.as_deref(), Some("c"));
        // Resumed after "c", the shares give the rest, and nothing twice.
        let rest = merge_pages(vec![page(&["e"], None), page(&["d"], None)], 10);
        assert_eq!(paths(&rest), ["d", "e"]);
        assert_eq!(rest.next, None);
    }

    #[test]
    fn shares_that_found_nothing_before_their_scan_bound_still_move_on() {
        let merged = merge_pages(vec![page(&[], Some("m")), page(&[], None)], 10);
        assert!(merged.entries.is_empty());
        assert_eq!(merged.next.as_deref(), Some("m"));
    }
}
