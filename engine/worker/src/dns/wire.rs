//! The little of the DNS wire format (RFC 1035) the name server needs: read a query of one
//! question, write an answer of A records. Everything else is relayed as bytes.

use std::net::Ipv4Addr;

pub const TYPE_A: u16 = 1;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const RCODE_NO_ERROR: u8 = 0;
pub const RCODE_SERVER_FAILURE: u8 = 2;
/// What fits in a UDP answer without EDNS (RFC 1035 §4.2.1).
pub const UDP_LIMIT: usize = 512;

const HEADER: usize = 12;
/// Name, type, class, TTL, length, address: a name given as a pointer to the question.
const A_RECORD: usize = 2 + 2 + 2 + 4 + 2 + 4;

/// A query's one question, and where it ends in the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Recursion desired, echoed in the answer.
    pub recursion_desired: bool,
    /// Lowercase, dot-separated, without the root's trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    question_end: usize,
}

/// Reads a standard query with exactly one question; `None` for anything else (an answer,
/// another opcode, a malformed or compressed question), which the server drops.
pub fn parse_query(message: &[u8]) -> Option<Query> {
    if message.len() < HEADER {
        return None;
    }
    let id = u16::from_be_bytes([message[0], message[1]]);
    let flags = u16::from_be_bytes([message[2], message[3]]);
    let is_answer = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    let questions = u16::from_be_bytes([message[4], message[5]]);
    if is_answer || opcode != 0 || questions != 1 {
        return None;
    }
    let mut at = HEADER;
    let mut labels: Vec<String> = Vec::new();
    let mut name_length = 0usize;
    loop {
        let length = usize::from(*message.get(at)?);
        at += 1;
        if length == 0 {
            break;
        }
        // 0xc0 and up: a compression pointer, which no question needs.
        if length > 63 {
            return None;
        }
        name_length += length + 1;
        if name_length > 255 {
            return None;
        }
        let label = message.get(at..at + length)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += length;
    }
    let fixed = message.get(at..at + 4)?;
    Some(Query {
        id,
        recursion_desired: flags & 0x0100 != 0,
        name: labels.join("."),
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        question_end: at + 4,
    })
}

/// The answer to `query` (read from `message`): its question, then an A record per address
/// with a TTL of 0, so that resolvers ask again and see tasks come and go at once. Addresses
/// beyond what fits in a plain UDP answer are left out: the client gets a subset, not a
/// truncated answer it would have to ask again over TCP.
pub fn answer(query: &Query, message: &[u8], addresses: &[Ipv4Addr], rcode: u8) -> Vec<u8> {
    let question = &message[HEADER..query.question_end];
    let room = UDP_LIMIT.saturating_sub(HEADER + question.len()) / A_RECORD;
    let addresses = &addresses[..addresses.len().min(room)];
    let mut out = Vec::with_capacity(HEADER + question.len() + addresses.len() * A_RECORD);
    out.extend_from_slice(&query.id.to_be_bytes());
    // An answer, authoritative, recursion available (other names are relayed).
    let mut flags: u16 = 0x8000 | 0x0400 | 0x0080 | u16::from(rcode & 0xf);
    if query.recursion_desired {
        flags |= 0x0100;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(question);
    for address in addresses {
        // The name: a pointer to the question's, at offset 12.
        out.extend_from_slice(&0xc00cu16.to_be_bytes());
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&address.octets());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as a resolver sends it.
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut message = Vec::new();
        message.extend_from_slice(&id.to_be_bytes());
        message.extend_from_slice(&0x0100u16.to_be_bytes());
        message.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            message.push(label.len() as u8);
            message.extend_from_slice(label.as_bytes());
        }
        message.push(0);
        message.extend_from_slice(&qtype.to_be_bytes());
        message.extend_from_slice(&CLASS_IN.to_be_bytes());
        message
    }

    #[test]
    fn a_query_is_read_lowercase_with_its_type() {
        let message = query(7, "Tasks.Web", TYPE_A);
        let parsed = parse_query(&message).unwrap();
        assert_eq!(parsed.id, 7);
        assert_eq!(parsed.name, "tasks.web");
        assert_eq!(parsed.qtype, TYPE_A);
        assert!(parsed.recursion_desired);
    }

    #[test]
    fn an_answer_carries_the_question_and_one_record_per_address() {
        let message = query(9, "web", TYPE_A);
        let parsed = parse_query(&message).unwrap();
        let addresses = [Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4)];
        let out = answer(&parsed, &message, &addresses, RCODE_NO_ERROR);
        assert_eq!(&out[0..2], &9u16.to_be_bytes());
        assert_eq!(out[2] & 0x80, 0x80, "an answer");
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), 2, "two answers");
        assert_eq!(&out[12..message.len()], &message[12..]);
        let first = message.len();
        assert_eq!(&out[first..first + 2], &[0xc0, 0x0c]);
        assert_eq!(&out[first + 12..first + 16], &[10, 0, 0, 3]);
        assert_eq!(&out[out.len() - 4..], &[10, 0, 0, 4]);
    }

    #[test]
    fn many_addresses_are_cut_to_what_fits_in_512_bytes() {
        let message = query(1, "tasks.web", TYPE_A);
        let parsed = parse_query(&message).unwrap();
        let addresses: Vec<Ipv4Addr> = (0..200).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let out = answer(&parsed, &message, &addresses, RCODE_NO_ERROR);
        assert!(out.len() <= UDP_LIMIT);
        let count = u16::from_be_bytes([out[6], out[7]]) as usize;
        assert_eq!(out.len(), message.len() + count * A_RECORD);
        assert!(count > 20);
    }

    #[test]
    fn malformed_or_foreign_messages_are_not_queries() {
        assert_eq!(parse_query(&[0; 5]), None);
        let mut answer_message = query(1, "web", TYPE_A);
        answer_message[2] |= 0x80;
        assert_eq!(parse_query(&answer_message), None);
        let mut cut = query(1, "web", TYPE_A);
        cut.truncate(cut.len() - 3);
        assert_eq!(parse_query(&cut), None);
        let mut long_label = query(1, "web", TYPE_A);
        long_label[12] = 0xc0;
        assert_eq!(parse_query(&long_label), None);
        let mut two = query(1, "web", TYPE_A);
        two[5] = 2;
        assert_eq!(parse_query(&two), None);
    }
}
