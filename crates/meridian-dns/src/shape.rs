//! The shape of a plain UDP query — everything in it but the Client Subnet address — for the
//! answer cache's second level ([`crate::UdpCache`]): queries of one shape from clients that
//! GeoIP places alike get the same answer but for the echoed address and ECS scope, so one
//! built answer serves them all with those bytes patched in.
//!
//! Only a narrow, well-formed layout gets a shape: one question, no answer or authority
//! records, at most one additional record which is an OPT owned by the root and ending the
//! packet, with at most one Client Subnet option whose address has exactly the octets its
//! source prefix needs and no bit set beyond it. Anything else (including every query the
//! builder would refuse as malformed) has no shape and is answered by the builder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A query's Client Subnet option, as found in the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Subnet {
    /// Where the address octets start in the packet (they run to its end).
    pub(crate) addr_at: usize,
    /// The source prefix length.
    pub(crate) source: u8,
    /// The address, zero-filled past its octets.
    pub(crate) addr: IpAddr,
}

/// A query with a shape (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The Client Subnet option, when there is one.
    pub(crate) subnet: Option<Subnet>,
}

const OPT: u16 = 41;
const SUBNET: u16 = 8;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

impl Shape {
    /// The shape of `packet`, whose one question's name ends at `name_end` (see
    /// `question_name_end`); `None` unless it has the layout of the module doc.
    pub(crate) fn of(packet: &[u8], name_end: usize) -> Option<Shape> {
        let (an, ns, ar) = (u16_at(packet, 6)?, u16_at(packet, 8)?, u16_at(packet, 10)?);
        if an != 0 || ns != 0 || ar > 1 {
            return None;
        }
        let rr = name_end + 4;
        if ar == 0 {
            return (packet.len() == rr).then_some(Shape { subnet: None });
        }
        // The OPT record: root owner, type, class (payload), TTL (flags), data length, data.
        if packet.get(rr) != Some(&0) || u16_at(packet, rr + 1)? != OPT {
            return None;
        }
        let data_at = rr + 11;
        let data_len = usize::from(u16_at(packet, rr + 9)?);
        if packet.len() != data_at + data_len {
            return None;
        }
        let mut subnet = None;
        let mut at = data_at;
        while at < packet.len() {
            let (code, len) = (u16_at(packet, at)?, usize::from(u16_at(packet, at + 2)?));
            let data = packet.get(at + 4..at + 4 + len)?;
            if code == SUBNET {
                if subnet.is_some() {
                    return None;
                }
                subnet = Some(Self::subnet(data, at + 8)?);
            }
            at += 4 + len;
        }
        // The address must end the packet: the option is the last one.
        if let Some(s) = subnet
            && s.addr_at + usize::from(s.source).div_ceil(8) != packet.len()
        {
            return None;
        }
        Some(Shape { subnet })
    }

    /// A Client Subnet option's data (family, source prefix, scope prefix, address octets)
    /// whose address starts at `addr_at` in the packet; `None` unless well-formed.
    fn subnet(data: &[u8], addr_at: usize) -> Option<Subnet> {
        let (family, source) = (u16_at(data, 0)?, *data.get(2)?);
        let octets = data.get(4..)?;
        if octets.len() != usize::from(source).div_ceil(8) {
            return None;
        }
        let addr = match family {
            1 if source <= 32 => {
                let mut b = [0u8; 4];
                b[..octets.len()].copy_from_slice(octets);
                IpAddr::V4(Ipv4Addr::from(b))
            }
            2 if source <= 128 => {
                let mut b = [0u8; 16];
                b[..octets.len()].copy_from_slice(octets);
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => return None,
        };
        if crate::answer::mask(addr, source) != Some(addr) {
            return None;
        }
        Some(Subnet {
            addr_at,
            source,
            addr,
        })
    }

    /// The address GeoIP locates for this query: the subnet's, when its prefix is not 0,
    /// else the resolver's (as the builder does).
    pub(crate) fn located(&self, resolver: IpAddr) -> IpAddr {
        crate::answer::located(self.subnet.map(|s| (s.addr, s.source)), resolver)
    }

    /// Zeroes the subnet's address octets in `key`, the query's bytes from offset 2 on.
    pub(crate) fn mask_key(&self, key: &mut [u8]) {
        if let Some(s) = self.subnet
            && let Some(octets) = key.get_mut(s.addr_at - 2..)
        {
            octets.fill(0);
        }
    }

    /// Where the ECS scope octet is in `response`, the builder's answer to `query` (this
    /// shape): `Some(None)` when the query has no subnet, `Some(Some(at))` when the response
    /// ends with the echo of the query's option (option code, length, family, source prefix,
    /// scope, the same address octets), `None` when it does not (then the answer cannot serve
    /// other addresses by patching).
    pub(crate) fn echo(&self, query: &[u8], response: &[u8]) -> Option<Option<usize>> {
        let Some(s) = self.subnet else {
            return Some(None);
        };
        let octets = &query[s.addr_at..];
        let start = response.len().checked_sub(octets.len() + 8)?;
        let echo = &response[start..];
        let header = &query[s.addr_at - 8..s.addr_at - 1];
        (echo[..7] == *header && echo[8..] == *octets).then_some(Some(start + 7))
    }

    /// Writes the query's address octets over the end of `out`, an answer to this shape
    /// built for another address (whose echo [`Shape::echo`] found there).
    pub(crate) fn patch_address(&self, query: &[u8], out: &mut [u8]) {
        if let Some(s) = self.subnet
            && let Some(octets) = query.get(s.addr_at..)
            && let Some(at) = out.len().checked_sub(octets.len())
        {
            out[at..].copy_from_slice(octets);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name, RecordType};

    /// `www.example.test. A` (name ends at 30), with EDNS and the subnet when given.
    fn query(edns: bool, subnet: Option<(&str, u8)>) -> Vec<u8> {
        let mut m = Message::new(1, MessageType::Query, OpCode::Query);
        let name = Name::from_ascii("www.example.test.").unwrap();
        m.add_query(Query::query(name, RecordType::A));
        if edns {
            let mut e = Edns::new();
            if let Some((a, p)) = subnet {
                let net = ClientSubnet::new(a.parse().unwrap(), p, 0);
                e.options_mut().insert(EdnsOption::Subnet(net));
            }
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    const END: usize = 30;

    /// Adds `n` to the big-endian 16-bit length at `at`.
    fn grow(p: &mut [u8], at: usize, n: u16) {
        let v = u16::from_be_bytes([p[at], p[at + 1]]) + n;
        p[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn plain_and_edns_queries_have_a_shape_without_subnet() {
        assert_eq!(
            Shape::of(&query(false, None), END),
            Some(Shape { subnet: None })
        );
        assert_eq!(
            Shape::of(&query(true, None), END),
            Some(Shape { subnet: None })
        );
    }

    #[test]
    fn a_subnet_is_found_with_its_address_at_the_end() {
        let q = query(true, Some(("81.2.69.160", 27)));
        let shape = Shape::of(&q, END).unwrap();
        let s = shape.subnet.unwrap();
        assert_eq!((s.source, s.addr_at), (27, q.len() - 4));
        assert_eq!(s.addr, "81.2.69.160".parse::<IpAddr>().unwrap());
        assert_eq!(shape.located("127.0.0.1".parse().unwrap()), s.addr);
        let zero = Shape::of(&query(true, Some(("0.0.0.0", 0))), END).unwrap();
        assert_eq!(
            zero.located("127.0.0.1".parse().unwrap()).to_string(),
            "127.0.0.1"
        );
        let v6 = Shape::of(&query(true, Some(("2001:db8:1::", 48))), END).unwrap();
        assert_eq!(v6.subnet.unwrap().addr.to_string(), "2001:db8:1::");
    }

    #[test]
    fn other_layouts_have_no_shape() {
        let q = query(true, Some(("81.2.69.160", 27)));
        let opt = END + 4;
        // A byte after the OPT record.
        let mut trailing = q.clone();
        trailing.push(0);
        assert_eq!(Shape::of(&trailing, END), None);
        // A bit set past the source prefix.
        let mut past = q.clone();
        *past.last_mut().unwrap() |= 1;
        assert_eq!(Shape::of(&past, END), None);
        // One address octet too many (option and record lengths grown to hold it).
        let mut long = q.clone();
        long.push(0);
        grow(&mut long, opt + 9, 1);
        grow(&mut long, q.len() - 10, 1);
        assert_eq!(Shape::of(&long, END), None);
        // Two subnet options.
        let mut two = q.clone();
        let option = q[opt + 11..].to_vec();
        two.extend_from_slice(&option);
        grow(&mut two, opt + 9, u16::try_from(option.len()).unwrap());
        assert_eq!(Shape::of(&two, END), None);
        // A source prefix longer than the family's address, with the octets it would need.
        let mut wide = q.clone();
        wide[q.len() - 6] = 33;
        wide.push(0);
        grow(&mut wide, opt + 9, 1);
        grow(&mut wide, q.len() - 10, 1);
        assert_eq!(Shape::of(&wide, END), None);
        // The option outside the record's data (its length says none).
        let mut outside = q.clone();
        outside[opt + 9..opt + 11].copy_from_slice(&[0, 0]);
        assert_eq!(Shape::of(&outside, END), None);
        // An answer record counted.
        let mut answers = q.clone();
        answers[7] = 1;
        assert_eq!(Shape::of(&answers, END), None);
    }

    #[test]
    fn the_echo_is_found_and_patched() {
        let q = query(true, Some(("81.2.69.160", 27)));
        let shape = Shape::of(&q, END).unwrap();
        // An answer ending with the echo of the query's option, scope 24.
        let mut answer = vec![9u8; 40];
        answer.extend_from_slice(&q[q.len() - 12..q.len() - 5]);
        answer.push(24);
        answer.extend_from_slice(&q[q.len() - 4..]);
        assert_eq!(shape.echo(&q, &answer), Some(Some(answer.len() - 5)));
        let other = query(true, Some(("81.2.69.128", 27)));
        let other_shape = Shape::of(&other, END).unwrap();
        assert_eq!(other_shape.echo(&other, &answer), None);
        other_shape.patch_address(&other, &mut answer);
        assert_eq!(
            other_shape.echo(&other, &answer),
            Some(Some(answer.len() - 5))
        );
        assert_eq!(
            Shape::of(&query(true, None), END)
                .unwrap()
                .echo(&q, &answer),
            Some(None)
        );
    }
}
