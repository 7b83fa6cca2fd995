//! Where a path's history lives: in pages of several records, not one sled
//! key per event.
//!
//! Inserting a *new* sled key is what makes a write expensive: leaves hold
//! at most 16 keys, so new keys split leaves, and each split copies a parent
//! index node of up to 256 children (measured here: about 24 µs per new
//! key, against 5 µs to overwrite an existing one). So a path's events are
//! grouped:
//!
//! - The **latest key** `L part path` holds the current record, preceded by the
//!   path's *open page*: up to [`OPEN_PAGE_ENTRIES`] superseded records,
//!   kept while they and the current record fit in [`OPEN_PAGE_BYTES`] (a
//!   single bigger record stays alone). A write rewrites that one key.
//! - When the open page is full it is written as a **page** `H part path \0
//!   <order of its last record>`, and the open page starts again. Pages of
//!   a path are disjoint and sorted, all below the open page; a page is
//!   found from any order key with one range step (the first page whose key
//!   is at or after it, if its first record is at or before it).
//! - An event that arrived too late (history only) takes its sorted place
//!   in the first page at or after its order, or in the open page if it is
//!   above every page; a value that grows too big that way is split.
//!
//! A value is either one bare record (`record`'s format; a format-1
//! history key is exactly a one-record page) or a **list**: [`TAG`], then per
//! record `[order length u16 LE][order][record length u32 LE][record]`, in
//! order. The tag cannot start a bare record: `ff ff` would announce a
//! 65535-byte header, and MessagePack never starts one with `c1`.

use std::collections::BTreeMap;
use std::ops::Bound;

use sled::IVec;

use super::keys;
use super::latest_cache::LatestCache;
use super::record::decode;
use super::StoreError;
use crate::model::{Layout, Path};

/// First bytes of a list value.
pub const TAG: [u8; 3] = [0xff, 0xff, 0xc1];
/// Most superseded records kept with the latest value.
pub const OPEN_PAGE_ENTRIES: usize = 4;
/// Most bytes of records kept with the latest value (current one included).
pub const OPEN_PAGE_BYTES: usize = 1024;

/// One record of a list, with its order key (see `keys::order`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// `time(8, BE) node \0 digest(16)`: sorts like the event's version
    /// then digest.
    pub order: IVec,
    /// The record.
    pub record: IVec,
}

impl Item {
    /// The event time in the order key.
    pub fn time(&self) -> u64 {
        time_of_order(&self.order)
    }

    fn encoded_len(&self) -> usize {
        2 + self.order.len() + 4 + self.record.len()
    }
}

/// The time at the start of an order key (0 if it is too short).
pub fn time_of_order(order: &[u8]) -> u64 {
    order
        .first_chunk::<8>()
        .map(|t| u64::from_be_bytes(*t))
        .unwrap_or(0)
}

/// Calls `each` with `[order start, order len, record start, record len]`
/// for every record of a list, in order; an error if the list is damaged or
/// empty.
fn for_each_span(
    path: &Path,
    raw: &[u8],
    mut each: impl FnMut([usize; 4]),
) -> Result<(), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("record list of '{path}' is truncated"));
    let mut at = TAG.len();
    if at >= raw.len() {
        return Err(StoreError::Corrupt(format!(
            "empty record list of '{path}'"
        )));
    }
    while at < raw.len() {
        let rest = &raw[at..];
        let (olen, rest) = rest.split_first_chunk::<2>().ok_or_else(corrupt)?;
        let olen = u16::from_le_bytes(*olen) as usize;
        let rest = rest.get(olen..).ok_or_else(corrupt)?;
        let (rlen, rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let rlen = u32::from_le_bytes(*rlen) as usize;
        if rest.len() < rlen {
            return Err(corrupt());
        }
        each([at + 2, olen, at + 2 + olen + 4, rlen]);
        at += 2 + olen + 4 + rlen;
    }
    Ok(())
}

/// True if `raw` is a list rather than one bare record.
pub fn is_list(raw: &[u8]) -> bool {
    raw.starts_with(&TAG)
}

/// The records of a value, oldest first. A bare record's order comes from
/// decoding it as a record of `path`.
pub fn items(path: &Path, raw: IVec) -> Result<Vec<Item>, StoreError> {
    if !is_list(&raw) {
        let stored = decode(path.clone(), raw.clone())?;
        let order = keys::order(&stored.event.version, &stored.digest);
        return Ok(vec![Item {
            order: order.into(),
            record: raw,
        }]);
    }
    let mut out = Vec::new();
    for_each_span(path, &raw, |[o, olen, r, rlen]| {
        out.push(Item {
            order: raw.subslice(o, olen),
            record: raw.subslice(r, rlen),
        })
    })?;
    Ok(out)
}

/// The newest record of a value (the current one, for a latest key).
pub fn last_record(path: &Path, raw: IVec) -> Result<IVec, StoreError> {
    if !is_list(&raw) {
        return Ok(raw);
    }
    let mut last = (0, 0);
    for_each_span(path, &raw, |[_, _, r, rlen]| last = (r, rlen))?;
    Ok(raw.subslice(last.0, last.1))
}

/// The value holding `items`: the bare record when there is one.
pub fn encode(items: &[Item]) -> Result<IVec, StoreError> {
    if let [one] = items {
        return Ok(one.record.clone());
    }
    let mut out =
        Vec::with_capacity(TAG.len() + items.iter().map(Item::encoded_len).sum::<usize>());
    out.extend_from_slice(&TAG);
    for item in items {
        let olen = u16::try_from(item.order.len())
            .map_err(|_| StoreError::Failed("order key too long".into()))?;
        let rlen = u32::try_from(item.record.len())
            .map_err(|_| StoreError::Failed("record too long for a page".into()))?;
        out.extend_from_slice(&olen.to_le_bytes());
        out.extend_from_slice(&item.order);
        out.extend_from_slice(&rlen.to_le_bytes());
        out.extend_from_slice(&item.record);
    }
    Ok(out.into())
}

/// Where the records of one path live, read from sled.
pub struct PathView<'a> {
    tree: &'a sled::Tree,
    /// `H part path \0`.
    prefix: Vec<u8>,
    /// Just past every history key of the path.
    end: Vec<u8>,
}

impl<'a> PathView<'a> {
    /// The view of `path`, in partition `part`, in `tree`.
    pub fn new(tree: &'a sled::Tree, part: u16, path: &Path) -> PathView<'a> {
        let prefix = keys::history_prefix(part, path);
        let mut end = prefix.clone();
        *end.last_mut().expect("terminator") += 1;
        PathView { tree, prefix, end }
    }

    /// `H part path \0 order`.
    pub fn page_key(&self, order: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + order.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(order);
        k
    }

    /// The first page whose key is at or after `order`: the only one that
    /// may hold it.
    pub fn page_from(&self, order: &[u8]) -> Result<Option<(IVec, IVec)>, StoreError> {
        let from = self.page_key(order);
        match self.tree.range(from..self.end.clone()).next() {
            Some(item) => Ok(Some(item?)),
            None => Ok(None),
        }
    }

    /// Pages whose last record is at or after `time`, in order.
    pub fn pages_from_time(
        &self,
        time: u64,
    ) -> impl DoubleEndedIterator<Item = Result<(IVec, IVec), StoreError>> + 'a {
        let mut from = self.prefix.clone();
        from.extend_from_slice(&time.to_be_bytes());
        self.tree
            .range(from..self.end.clone())
            .map(|r| r.map_err(StoreError::from))
    }
}

/// The record of `path` (in partition `part`) with `order`, if the path's
/// pages or its latest value (`latest`, already read) hold it.
pub fn find(
    tree: &sled::Tree,
    part: u16,
    path: &Path,
    order: &[u8],
    latest: Option<IVec>,
) -> Result<Option<IVec>, StoreError> {
    if let Some(raw) = latest {
        if let Some(item) = items(path, raw)?.into_iter().find(|i| *i.order == *order) {
            return Ok(Some(item.record));
        }
    }
    let view = PathView::new(tree, part, path);
    let Some((_, raw)) = view.page_from(order)? else {
        return Ok(None);
    };
    Ok(items(path, raw)?
        .into_iter()
        .find(|i| *i.order == *order)
        .map(|i| i.record))
}

/// The record of `path` (in partition `part`) with the greatest order at or
/// below `bound` (see `keys::order_bound`): the event that stood then by
/// the LWW rule. `latest` is the path's latest value, already read (`None`:
/// the path has no event at all).
///
/// Reads the latest value, then at most two pages: the first page whose last
/// record is past `bound` (its first records may be at or below it), else
/// the page just before it, whose records all are.
pub fn record_at(
    tree: &sled::Tree,
    part: u16,
    path: &Path,
    bound: &[u8],
    latest: Option<IVec>,
) -> Result<Option<IVec>, StoreError> {
    let Some(raw) = latest else {
        return Ok(None);
    };
    let latest = items(path, raw)?;
    let last_within = |items: Vec<Item>, below: Option<&IVec>| {
        items
            .into_iter()
            .rfind(|i| i.order[..] <= *bound && below.is_none_or(|b| i.order[..] < b[..]))
            .map(|i| i.record)
    };
    let Some(open_first) = latest.first().map(|i| i.order.clone()) else {
        return Ok(None);
    };
    if open_first[..] <= *bound {
        return Ok(last_within(latest, None));
    }
    // Every record of the latest value is past `bound`. Pages hold only
    // records below the open page's first one: a commit may turn the open
    // page into a page between the two reads.
    let view = PathView::new(tree, part, path);
    let at = view.page_key(bound);
    let past = (
        Bound::Excluded(at.clone()),
        Bound::Excluded(view.end.clone()),
    );
    if let Some(page) = tree.range::<Vec<u8>, _>(past).next() {
        let (_, raw) = page?;
        if let Some(found) = last_within(items(path, raw)?, Some(&open_first)) {
            return Ok(Some(found));
        }
    }
    match tree.range(view.prefix.clone()..=at).next_back() {
        Some(page) => {
            let (_, raw) = page?;
            Ok(last_within(items(path, raw)?, Some(&open_first)))
        }
        None => Ok(None),
    }
}

/// The keys one commit rewrites, built on top of what sled holds: a commit
/// may touch the same latest value or page more than once.
pub struct Overlay<'a> {
    tree: &'a sled::Tree,
    layout: Layout,
    /// Latest keys as the last commits wrote them (this commit takes from
    /// it; the caller puts back what sled applied).
    cache: &'a mut LatestCache,
    keys: BTreeMap<Vec<u8>, Vec<Item>>,
}

/// Latest keys a commit rewrites, with their records.
pub type LatestWrites = Vec<(Vec<u8>, Vec<Item>)>;

/// What a commit writes: every rewritten key with its new value, and the
/// records of the rewritten latest keys (for the [`LatestCache`], once sled
/// has applied the writes).
pub struct Writes {
    /// In key order: history pages (`H`) before latest values (`L`).
    pub values: Vec<(Vec<u8>, IVec)>,
    /// Latest keys and their records.
    pub latest: LatestWrites,
}

impl<'a> Overlay<'a> {
    /// An empty overlay on `tree` (of `layout`), reading latest keys from
    /// `cache` first.
    pub fn new(tree: &'a sled::Tree, layout: Layout, cache: &'a mut LatestCache) -> Overlay<'a> {
        Overlay {
            tree,
            layout,
            cache,
            keys: BTreeMap::new(),
        }
    }

    /// The items at `key` (from this commit, else the cache for a latest
    /// key, else sled).
    fn take(&mut self, path: &Path, key: &[u8]) -> Result<Vec<Item>, StoreError> {
        if let Some(items) = self.keys.remove(key) {
            return Ok(items);
        }
        if key.first() == Some(&keys::LATEST) {
            if let Some(items) = self.cache.take(key) {
                return Ok(items);
            }
        }
        match self.tree.get(key)? {
            Some(raw) => items(path, raw),
            None => Ok(Vec::new()),
        }
    }

    /// Makes `item` the latest record of `path` (it is newer than every
    /// record the path has): the previous one joins the open page, which is
    /// written as a page first if it is full.
    pub fn set_latest(&mut self, path: &Path, item: Item) -> Result<(), StoreError> {
        let key = keys::latest(self.layout.partition_of(path), path.as_str());
        let mut list = self.take(path, &key)?;
        if list
            .last()
            .is_some_and(|last| last.order[..] >= item.order[..])
        {
            self.keys.insert(key, list);
            return Err(StoreError::Failed(format!(
                "a new latest value of '{path}' that is not newer than the current one"
            )));
        }
        let bytes: usize = list.iter().map(Item::encoded_len).sum();
        if list.len() > OPEN_PAGE_ENTRIES || bytes + item.encoded_len() > OPEN_PAGE_BYTES {
            self.write_page(path, std::mem::take(&mut list))?;
        }
        list.push(item);
        self.keys.insert(key, list);
        Ok(())
    }

    /// Writes `items` (sorted) as the page keyed by the last one's order,
    /// merged with a page this commit already wrote there (none is
    /// expected). sled is not read: a page's key is the order of its last
    /// record and a record lives in one place only, so the key of `items`'
    /// last record (from the open page, or the lower half of a page being
    /// split, which is keyed by another record) names no stored page.
    fn write_page(&mut self, path: &Path, items: Vec<Item>) -> Result<(), StoreError> {
        let Some(last) = items.last() else {
            return Ok(());
        };
        let key =
            PathView::new(self.tree, self.layout.partition_of(path), path).page_key(&last.order);
        let mut page = self.keys.remove(&key).unwrap_or_default();
        if page.is_empty() {
            page = items;
        } else {
            for item in items {
                if let Err(at) = page.binary_search_by(|i| i.order[..].cmp(&item.order[..])) {
                    page.insert(at, item);
                }
            }
        }
        self.keys.insert(key, page);
        Ok(())
    }

    /// Splits a value that late events made too big. A page keeps its key
    /// and gives its lower half a page of its own; a latest value gives its
    /// whole open page a page. Pages stay disjoint, sorted and below the
    /// open page.
    fn split_if_big(&mut self, path: &Path, key: Vec<u8>) -> Result<(), StoreError> {
        let Some(list) = self.keys.get_mut(&key) else {
            return Ok(());
        };
        let bytes: usize = list.iter().map(Item::encoded_len).sum();
        if key.first() == Some(&keys::LATEST) {
            let open = list.len().saturating_sub(1);
            if open > OPEN_PAGE_ENTRIES
                || (open > 0 && bytes > OPEN_PAGE_BYTES + list[open].encoded_len())
            {
                let lower: Vec<Item> = list.drain(..open).collect();
                self.write_page(path, lower)?;
            }
        } else if list.len() > 2 * (OPEN_PAGE_ENTRIES + 1)
            || (list.len() > 1 && bytes > 2 * OPEN_PAGE_BYTES)
        {
            let lower: Vec<Item> = list.drain(..list.len() / 2).collect();
            self.write_page(path, lower)?;
        }
        Ok(())
    }

    /// Adds a record older than the path's latest one to its history
    /// (nothing if that exact record is there already).
    pub fn add_history(&mut self, path: &Path, item: Item) -> Result<(), StoreError> {
        let part = self.layout.partition_of(path);
        let view = PathView::new(self.tree, part, path);
        let wanted = view.page_key(&item.order);
        // The first page at or after the record's order, in this commit or
        // in sled, whichever comes first.
        let ours = self
            .keys
            .range::<[u8], _>((Bound::Included(&wanted[..]), Bound::Excluded(&view.end[..])))
            .next()
            .map(|(k, _)| k.clone());
        let theirs = view.page_from(&item.order)?.map(|(k, _)| k.to_vec());
        let page = match (ours, theirs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let key = match page {
            // Its sorted place in the first page at or after it: pages stay
            // disjoint and sorted.
            Some(page) => page,
            // Above every page: the open page, before the current record (a
            // path without a latest value has no open page).
            None => {
                let latest = keys::latest(part, path.as_str());
                if self.first_order(path, &latest)?.is_some() {
                    latest
                } else {
                    wanted
                }
            }
        };
        let is_latest = key.first() == Some(&keys::LATEST);
        let mut list = self.take(path, &key)?;
        let at = match list.binary_search_by(|i| i.order[..].cmp(&item.order[..])) {
            Ok(_) => {
                self.keys.insert(key, list);
                return Ok(());
            }
            Err(at) => at,
        };
        if is_latest && at == list.len() {
            self.keys.insert(key, list);
            return Err(StoreError::Failed(format!(
                "a history-only event of '{path}' is newer than its latest value"
            )));
        }
        list.insert(at, item);
        self.keys.insert(key.clone(), list);
        self.split_if_big(path, key)?;
        Ok(())
    }

    fn first_order(&mut self, path: &Path, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        let list = self.take(path, key)?;
        let first = list.first().map(|i| i.order.clone());
        if !list.is_empty() {
            self.keys.insert(key.to_vec(), list);
        }
        Ok(first)
    }

    /// Every rewritten key with its new value.
    pub fn into_writes(self) -> Result<Writes, StoreError> {
        let mut writes = Writes {
            values: Vec::with_capacity(self.keys.len()),
            latest: Vec::new(),
        };
        for (key, items) in self.keys {
            if items.is_empty() {
                continue;
            }
            let value = encode(&items)?;
            if key.first() == Some(&keys::LATEST) {
                writes.latest.push((key.clone(), items));
            }
            writes.values.push((key, value));
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(order: &[u8], record: &[u8]) -> Item {
        Item {
            order: order.into(),
            record: record.into(),
        }
    }

    #[test]
    fn lists_round_trip_and_one_record_stays_bare() {
        let p = Path::parse("a").unwrap();
        let two = [item(b"o1", b"r1"), item(b"o2", b"second")];
        let raw = encode(&two).unwrap();
        assert!(raw.starts_with(&TAG));
        assert_eq!(items(&p, raw.clone()).unwrap(), two.to_vec());
        assert_eq!(&*last_record(&p, raw.clone()).unwrap(), b"second");
        let first_entry_end = TAG.len() + 2 + 2 + 4 + 2;
        for cut in (TAG.len() + 1..raw.len()).filter(|&c| c != first_entry_end) {
            let part = IVec::from(&raw[..cut]);
            assert!(items(&p, part.clone()).is_err(), "cut at {cut}");
            assert!(last_record(&p, part).is_err(), "cut at {cut}");
        }
        assert_eq!(&*encode(&two[..1]).unwrap(), b"r1");
    }
}
