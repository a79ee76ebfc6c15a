//! The MD5 digests SQS answers with: `MD5OfMessageBody` and `MD5OfMessageAttributes` (the
//! attributes in SQS's documented encoding). A client that checks them gets what SQS sends.
//! MD5 is written out here: it is a fixed algorithm, and the simulator needs nothing else of a
//! hashing crate.

use super::wire::AttributeValue;

/// The lowercase hex MD5 of `data`.
pub(super) fn md5_hex(data: &[u8]) -> String {
    md5(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// `MD5OfMessageAttributes` of `attrs` (sorted by name, as stored): per attribute the name,
/// the data type (each with a 4-byte big-endian length), a transport byte (1 text, 2 binary)
/// and the length-prefixed value. `None` for no attributes, as SQS leaves the field out.
pub(super) fn attributes_md5<'a, I>(attrs: I) -> Option<String>
where
    I: IntoIterator<Item = (&'a str, &'a AttributeValue)>,
{
    let mut buf = Vec::new();
    let mut any = false;
    for (name, v) in attrs {
        any = true;
        put(&mut buf, name.as_bytes());
        put(&mut buf, v.data_type.as_bytes());
        if let Some(b) = &v.binary_value {
            buf.push(2);
            // The SDK sends valid base64; anything else is digested as sent.
            put(
                &mut buf,
                &base64_decode(b).unwrap_or_else(|| b.as_bytes().to_vec()),
            );
        } else {
            buf.push(1);
            put(
                &mut buf,
                v.string_value.as_deref().unwrap_or_default().as_bytes(),
            );
        }
    }
    any.then(|| md5_hex(&buf))
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// Standard base64 with padding; `None` if `s` is not that.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let sextet = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | sextet(c)?;
        }
        n <<= 6 * pad as u32;
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..3 - pad]);
    }
    Some(out)
}

/// Per-round shift amounts (RFC 1321).
const SHIFTS: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];

/// floor(|sin(i + 1)| * 2^32) (RFC 1321).
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

fn md5(data: &[u8]) -> [u8; 16] {
    let mut state: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    for block in msg.chunks_exact(64) {
        let mut m = [0u32; 16];
        for (w, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
            *w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a
                .wrapping_add(f)
                .wrapping_add(K[i])
                .wrapping_add(m[g])
                .rotate_left(SHIFTS[(i / 16) * 4 + i % 4]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(rotated);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut out = [0u8; 16];
    for (chunk, s) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_the_rfc_vectors() {
        for (input, want) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            assert_eq!(md5_hex(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("AJ//"), Some(vec![0, 159, 255]));
        assert_eq!(base64_decode("AJ8="), Some(vec![0, 159]));
        assert_eq!(base64_decode("AA=="), Some(vec![0]));
        assert_eq!(base64_decode(""), Some(vec![]));
        assert_eq!(base64_decode("A"), None);
        assert_eq!(base64_decode("A*=="), None);
    }

    #[test]
    fn attributes_digest_as_sqs_documents() {
        let text = AttributeValue {
            data_type: "String".into(),
            string_value: Some("v".into()),
            binary_value: None,
            string_list_values: None,
            binary_list_values: None,
        };
        // name "a", type "String", transport 1, value "v", each length-prefixed.
        let mut want = Vec::new();
        want.extend_from_slice(&[0, 0, 0, 1, b'a', 0, 0, 0, 6]);
        want.extend_from_slice(b"String");
        want.extend_from_slice(&[1, 0, 0, 0, 1, b'v']);
        assert_eq!(attributes_md5([("a", &text)]), Some(md5_hex(&want)));
        assert_eq!(attributes_md5([]), None);
    }
}
