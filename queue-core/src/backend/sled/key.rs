//! The keys of the overlay's ordered maps ([`pending`](super::pending)).
//!
//! The overlay's maps hold every key a lap writes (tens of thousands) and
//! every read, write and lease scan of the store searches them. With
//! `Vec<u8>` keys each comparison of that search followed a pointer to
//! the key's own allocation and called `memcmp`: 8 % of the engine's
//! samples in a profile of the durable bench (BENCHMARKS.md, "Tenth
//! step"). A [`Key`] holds a key of up to [`INLINE`] bytes in place,
//! zero-padded, and compares two such keys eight bytes at a time as
//! big-endian numbers, without a call; only longer keys (a queue name of
//! more than about 18 bytes in a ready entry) live on the heap and compare
//! as byte slices.
//!
//! The order is exactly the byte slices' (lexicographic, a prefix first),
//! so a map of `Key`s can still be searched by `&[u8]` through
//! [`Borrow`]; hot lookups make a `Key` of the slice instead (no
//! allocation for an inline key) to get the fast comparison.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;

/// Bytes a key holds in place (five eight-byte words).
pub(crate) const INLINE: usize = 40;

/// A key of the overlay's maps: its bytes, in place up to [`INLINE`] of
/// them (the rest of the array zero), on the heap beyond.
#[derive(Clone)]
pub(crate) enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Key {
    /// The key of `bytes`.
    pub(crate) fn new(bytes: &[u8]) -> Key {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut inline = [0u8; INLINE];
                inline[..bytes.len()].copy_from_slice(bytes);
                Key::Inline { len, bytes: inline }
            }
            _ => Key::Heap(bytes.into()),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }
}

/// The big-endian word of `bytes` at `at` (a multiple of eight below
/// [`INLINE`]).
#[inline]
fn word(bytes: &[u8; INLINE], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

impl From<Vec<u8>> for Key {
    fn from(bytes: Vec<u8>) -> Key {
        if bytes.len() <= INLINE {
            Key::new(&bytes)
        } else {
            Key::Heap(bytes.into_boxed_slice())
        }
    }
}

impl Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    /// The byte slices' order. Two inline keys compare as their zero-padded
    /// arrays, word by word, then by length: where the arrays first differ,
    /// either both keys have a byte there (the slices differ there too) or
    /// the shorter one has ended and the longer one's byte is not zero (it
    /// is the longer, as the slices say); if the arrays are equal, one key
    /// is the other plus zero bytes, and the shorter sorts first.
    #[inline]
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (
                Key::Inline { len, bytes },
                Key::Inline {
                    len: other_len,
                    bytes: other_bytes,
                },
            ) => {
                let end = usize::from((*len).max(*other_len));
                let mut at = 0;
                while at < end {
                    let (a, b) = (word(bytes, at), word(other_bytes, at));
                    if a != b {
                        return a.cmp(&b);
                    }
                    at += 8;
                }
                len.cmp(other_len)
            }
            _ => self.as_slice().cmp(other.as_slice()),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys around the inline limit and the word boundaries, with zero
    /// bytes where padding could be taken for them.
    fn keys() -> Vec<Vec<u8>> {
        let mut keys = vec![Vec::new()];
        for len in [1, 7, 8, 9, 15, 16, 17, 39, 40, 41, 48, 70] {
            for fill in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut key = vec![fill; len];
                keys.push(key.clone());
                key[len / 2] = fill.wrapping_add(1);
                keys.push(key.clone());
                key.push(0);
                keys.push(key);
            }
        }
        keys.push(b"rbench-enqueue\0".to_vec());
        keys.push(b"rbench-enqueue\0\x7f\xff\xff\xff".to_vec());
        keys.push(b"rbench-enqueue-c64\0\x7f\xff\xff\xff\0\0\0\0\0\0\0\x01".to_vec());
        keys
    }

    #[test]
    fn keys_order_as_their_bytes_in_place_or_not() {
        let keys = keys();
        for a in &keys {
            for b in &keys {
                let (x, y) = (Key::new(a), Key::from(b.clone()));
                assert_eq!(x.cmp(&y), a.cmp(b), "{a:?} against {b:?}");
                assert_eq!(x == y, a == b, "{a:?} against {b:?}");
            }
        }
    }

    #[test]
    fn a_key_holds_its_bytes_in_place_up_to_the_limit() {
        for key in keys() {
            let made = Key::new(&key);
            assert_eq!(made.as_slice(), key.as_slice());
            assert_eq!(&*Key::from(key.clone()), key.as_slice());
            assert_eq!(matches!(made, Key::Inline { .. }), key.len() <= INLINE);
        }
    }

    #[test]
    fn a_map_of_keys_is_searched_by_slices_and_by_keys_alike() {
        let keys = keys();
        let map: std::collections::BTreeMap<Key, usize> = keys
            .iter()
            .enumerate()
            .map(|(n, key)| (Key::new(key), n))
            .collect();
        let model: std::collections::BTreeMap<Vec<u8>, usize> = keys
            .iter()
            .enumerate()
            .map(|(n, key)| (key.clone(), n))
            .collect();
        assert!(
            map.keys()
                .map(Key::as_slice)
                .eq(model.keys().map(Vec::as_slice))
        );
        for key in &keys {
            assert_eq!(map.get(key.as_slice()), model.get(key));
            assert_eq!(map.get(&Key::new(key)), model.get(key));
        }
    }
}
