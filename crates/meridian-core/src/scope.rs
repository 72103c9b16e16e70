//! Widest EDNS Client Subnet scopes (RFC 7871): the address space cut into the largest
//! runs over which a located decision is the same, so a GeoDNS answer can say how wide a
//! block of clients it holds for — the widest aligned block around the client that lies in one
//! run — instead of the GeoIP database network's prefix (a city's /24 for a decision made by
//! continent would make resolvers ask again for every /24).
//!
//! [`Blocks`] is built from a database's networks in address order, each with the key of the
//! decision its record leads to (the members [`crate::config::Routing::geo_levels`] pick);
//! addresses
//! no network holds get the key of a client GeoIP knows nothing about.

/// One address family's runs: every address belongs to exactly one run, each run has one key,
/// and neighbouring runs have different keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// Address width in bits (32 or 128).
    bits: u8,
    /// Where each run starts, ascending; the first is 0. A run ends where the next starts.
    starts: Vec<u128>,
    /// Each run's key.
    keys: Vec<u32>,
}

/// Builds [`Blocks`] from networks given in ascending address order.
#[derive(Debug)]
pub struct BlocksBuilder {
    blocks: Blocks,
    /// The first address not yet covered (`None`: the whole space is).
    next: Option<u128>,
    /// The key of uncovered addresses.
    gap: u32,
}

impl BlocksBuilder {
    /// A builder for a `bits`-wide address space (32 or 128; anything else is taken as 128)
    /// whose addresses not in any network get key `gap`.
    pub fn new(bits: u8, gap: u32) -> BlocksBuilder {
        let bits = if bits == 32 { 32 } else { 128 };
        BlocksBuilder {
            blocks: Blocks {
                bits,
                starts: Vec::new(),
                keys: Vec::new(),
            },
            next: Some(0),
            gap,
        }
    }

    fn run(&mut self, start: u128, key: u32) {
        if self.blocks.keys.last() != Some(&key) {
            self.blocks.starts.push(start);
            self.blocks.keys.push(key);
        }
    }

    /// Adds the network `start/prefix` with `key`. Networks must come in ascending order
    /// without overlapping; one that does not (or whose prefix or start does not fit the
    /// width) is ignored and `false` returned.
    pub fn push(&mut self, start: u128, prefix: u8, key: u32) -> bool {
        let bits = self.blocks.bits;
        let Some(next) = self.next else {
            return false;
        };
        if prefix > bits || start < next || start & !mask(bits, prefix) != 0 {
            return false;
        }
        if start > next {
            self.run(next, self.gap);
        }
        self.run(start, key);
        let size_minus_one = !mask(bits, prefix) & max(bits);
        self.next = start
            .checked_add(size_minus_one + 1)
            .filter(|n| *n <= max(bits));
        true
    }

    /// The runs, addresses after the last network getting the gap key.
    pub fn finish(mut self) -> Blocks {
        if let Some(next) = self.next {
            self.run(next, self.gap);
        }
        self.blocks
    }
}

/// The largest address of a `bits`-wide space.
fn max(bits: u8) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// The netmask of a `prefix` within a `bits`-wide space.
fn mask(bits: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        max(bits) & !(max(bits) >> prefix)
    }
}

impl Blocks {
    /// How many runs there are.
    pub fn runs(&self) -> usize {
        self.keys.len()
    }

    /// The key of `addr`'s run, and the widest prefix length whose block around `addr` lies
    /// in that run: every address of that block gets the same decision. `None` when `addr`
    /// does not fit the width.
    pub fn widest(&self, addr: u128) -> Option<(u32, u8)> {
        let bits = self.bits;
        if addr > max(bits) {
            return None;
        }
        let i = self.starts.partition_point(|s| *s <= addr).checked_sub(1)?;
        let first = self.starts[i];
        let last = self.starts.get(i + 1).map_or(max(bits), |n| n - 1);
        let prefix = (0..=bits)
            .find(|p| {
                let m = mask(bits, *p);
                addr & m >= first && (addr & m) | (!m & max(bits)) <= last
            })
            .unwrap_or(bits);
        Some((self.keys[i], prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> u128 {
        u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()))
    }

    #[test]
    fn neighbours_with_one_key_widen_the_scope() {
        let mut b = BlocksBuilder::new(32, 0);
        // 10.0.0.0/9 and 10.128.0.0/9 both key 1: together 10.0.0.0/8.
        assert!(b.push(v4("10.0.0.0"), 9, 1));
        assert!(b.push(v4("10.128.0.0"), 9, 1));
        // 11.0.0.0/24 key 2, then a gap (key 0) up to 12.0.0.0/8 key 0 again.
        assert!(b.push(v4("11.0.0.0"), 24, 2));
        assert!(b.push(v4("12.0.0.0"), 8, 0));
        let blocks = b.finish();
        assert_eq!(blocks.widest(v4("10.1.2.3")), Some((1, 8)));
        assert_eq!(blocks.widest(v4("11.0.0.9")), Some((2, 24)));
        // 11.0.1.0 .. 255.255.255.255 is one gap-key run: 11.0.1.0/24, then wider blocks.
        assert_eq!(blocks.widest(v4("11.0.1.7")), Some((0, 24)));
        assert_eq!(blocks.widest(v4("12.3.4.5")), Some((0, 6)));
        assert_eq!(blocks.widest(v4("200.1.1.1")), Some((0, 1)));
        // 0.0.0.0 .. 9.255.255.255 is the first gap run: 8.0.0.0/7 lies in it, /6 does not.
        assert_eq!(blocks.widest(v4("9.9.9.9")), Some((0, 7)));
        assert_eq!(blocks.widest(1 << 40), None);
    }

    #[test]
    fn a_whole_space_of_one_key_is_scope_zero() {
        let blocks = BlocksBuilder::new(128, 3).finish();
        assert_eq!(blocks.runs(), 1);
        assert_eq!(blocks.widest(12345), Some((3, 0)));
    }

    #[test]
    fn out_of_order_or_misaligned_networks_are_refused() {
        let mut b = BlocksBuilder::new(32, 0);
        assert!(b.push(v4("10.0.0.0"), 8, 1));
        assert!(!b.push(v4("9.0.0.0"), 8, 2), "before the last");
        assert!(!b.push(v4("10.0.0.0"), 8, 2), "overlapping");
        assert!(!b.push(v4("12.0.0.1"), 24, 2), "host bits set");
        assert!(!b.push(v4("12.0.0.0"), 33, 2), "prefix too long");
        assert!(b.push(v4("255.0.0.0"), 8, 2));
        assert!(!b.push(v4("255.0.0.0"), 8, 2), "the space is full");
        // The gap before 10/8, 10/8, the gap after it, 255/8.
        assert_eq!(b.finish().runs(), 4);
    }

    proptest! {
        /// For random networks over a small space, the scope answered is the widest block
        /// around the address in which every address has the address's key (checked address
        /// by address), and no wider block is.
        #[test]
        fn the_scope_is_the_widest_block_of_one_key(
            nets in proptest::collection::vec((0u8..=32, 0u32..3), 0..40),
            probes in proptest::collection::vec(any::<u32>(), 1..20),
        ) {
            // Networks of prefix >= 24 inside 10.0.0.0/16 so that a brute force over the
            // /16 stays small; keys 0..3, gap key 0.
            let base = v4("10.0.0.0");
            let mut keyed = vec![0u32; 1 << 16];
            let mut b = BlocksBuilder::new(32, 0);
            let mut next = 0u32;
            for (len, key) in nets {
                let prefix = 24 + len % 9;
                let size = 1u32 << (32 - prefix);
                let start = next.div_ceil(size) * size;
                if start + size > 1 << 16 {
                    break;
                }
                prop_assert!(b.push(base + u128::from(start), prefix, key));
                for a in start..start + size {
                    keyed[a as usize] = key;
                }
                next = start + size;
            }
            let blocks = b.finish();
            for probe in probes {
                let off = probe % (1 << 16);
                let (key, prefix) = blocks.widest(base + u128::from(off)).unwrap();
                prop_assert_eq!(key, keyed[off as usize]);
                let uniform = |p: u8| {
                    if p < 16 {
                        // Blocks beyond the /16: the rest of the space is the gap key.
                        return keyed.iter().all(|k| *k == 0) && key == 0;
                    }
                    let size = 1usize << (32 - p);
                    let first = (off as usize / size) * size;
                    keyed[first..first + size].iter().all(|k| *k == key)
                };
                prop_assert!(uniform(prefix), "scope /{prefix} holds other keys");
                if prefix > 0 {
                    prop_assert!(!uniform(prefix - 1), "/{} would do", prefix - 1);
                }
            }
        }
    }
}
