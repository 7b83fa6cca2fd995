//! The fingerprint of a set of events: the sum (mod 2^256) of BLAKE3 of
//! each event's name (`path \0 order`, see `store::keys`) and their count.
//! A sum is order-free and can take an event away as easily as add one, so
//! a node of the tree is updated in place as events land (no rebuild), and
//! the fingerprint of a range is the sum of its parts. (Not a defence
//! against a peer that forges collisions: the peers of a cluster prove the
//! shared secret; this only has to tell honest replicas apart.)

use std::fmt;

/// Bytes of an encoded fingerprint: the sum, then the count.
pub const ENCODED_BYTES: usize = 40;

/// Bytes of a fingerprint on a peer link: the low 128 bits of the sum and
/// the count (see [`Fingerprint::truncated`]).
pub const WIRE_BYTES: usize = 24;

/// A set of events, hashed.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// The sum of the events' hashes, little-endian limbs.
    sum: [u64; 4],
    /// How many events.
    pub count: u64,
}

impl Fingerprint {
    /// The empty set.
    pub const EMPTY: Fingerprint = Fingerprint {
        sum: [0; 4],
        count: 0,
    };

    /// The set of the one event named `name`.
    pub fn of(name: &[u8]) -> Fingerprint {
        let hash = blake3::hash(name);
        let mut sum = [0u64; 4];
        for (limb, chunk) in sum.iter_mut().zip(hash.as_bytes().chunks_exact(8)) {
            *limb = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        }
        Fingerprint { sum, count: 1 }
    }

    /// The same set with the sum taken mod 2^128: what crosses a link (a
    /// sum's low bits depend on the low bits of its terms only, so two sides
    /// that truncate compare sums of sums as well as sums; 128 bits still
    /// tell honest replicas apart).
    pub fn truncated(&self) -> Fingerprint {
        Fingerprint {
            sum: [self.sum[0], self.sum[1], 0, 0],
            count: self.count,
        }
    }

    /// True for the empty set.
    pub fn is_empty(&self) -> bool {
        *self == Fingerprint::EMPTY
    }

    /// Adds the events of `other` (a set disjoint from this one).
    pub fn add(&mut self, other: &Fingerprint) {
        let mut carry = 0u64;
        for (limb, word) in self.sum.iter_mut().zip(other.sum) {
            let (s1, c1) = limb.overflowing_add(word);
            let (s2, c2) = s1.overflowing_add(carry);
            *limb = s2;
            carry = u64::from(c1) + u64::from(c2);
        }
        self.count = self.count.wrapping_add(other.count);
    }

    /// Takes away the events of `other` (a subset of this one).
    pub fn sub(&mut self, other: &Fingerprint) {
        let mut borrow = 0u64;
        for (limb, word) in self.sum.iter_mut().zip(other.sum) {
            let (s1, b1) = limb.overflowing_sub(word);
            let (s2, b2) = s1.overflowing_sub(borrow);
            *limb = s2;
            borrow = u64::from(b1) + u64::from(b2);
        }
        self.count = self.count.wrapping_sub(other.count);
    }

    /// The sum of the hashes, 32 bytes (little-endian limbs): what
    /// `store::PartitionDigest` computes by a full scan.
    pub fn hash(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, limb) in out.chunks_exact_mut(8).zip(self.sum) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    /// The hash as lowercase hex (what `/digest` shows).
    pub fn hex(&self) -> String {
        self.hash().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// [`ENCODED_BYTES`]: the hash, then the count (little endian).
    pub fn encode(&self) -> [u8; ENCODED_BYTES] {
        let mut out = [0u8; ENCODED_BYTES];
        out[..32].copy_from_slice(&self.hash());
        out[32..].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    /// The inverse of [`Fingerprint::encode`]; `None` if `raw` is not
    /// [`ENCODED_BYTES`] long.
    pub fn decode(raw: &[u8]) -> Option<Fingerprint> {
        if raw.len() != ENCODED_BYTES {
            return None;
        }
        let mut sum = [0u64; 4];
        for (limb, chunk) in sum.iter_mut().zip(raw[..32].chunks_exact(8)) {
            *limb = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        let count = u64::from_le_bytes(raw[32..].try_into().ok()?);
        Some(Fingerprint { sum, count })
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…×{}", &self.hex()[..12], self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_order_free_and_subtract_exactly() {
        let names: Vec<Vec<u8>> = (0..50).map(|i| format!("p/{i}\0x").into_bytes()).collect();
        let mut forward = Fingerprint::EMPTY;
        for n in &names {
            forward.add(&Fingerprint::of(n));
        }
        let mut backward = Fingerprint::EMPTY;
        for n in names.iter().rev() {
            backward.add(&Fingerprint::of(n));
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.count, 50);
        for n in &names[10..] {
            forward.sub(&Fingerprint::of(n));
        }
        let mut first_ten = Fingerprint::EMPTY;
        for n in &names[..10] {
            first_ten.add(&Fingerprint::of(n));
        }
        assert_eq!(forward, first_ten);
        assert_eq!(Fingerprint::decode(&forward.encode()), Some(forward));
        assert_eq!(Fingerprint::decode(&[0; 39]), None);
    }
}
