//! The MD5 digests SQS answers with: `MD5OfMessageBody` and `MD5OfMessageAttributes` (the
//! attributes in SQS's documented encoding). A client that checks them gets what SQS sends.

use base64::Engine as _;
use md5::{Digest as _, Md5};

use super::wire::AttributeValue;

/// The lowercase hex MD5 of `data`.
pub(super) fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    base64::engine::general_purpose::STANDARD.decode(s).ok()
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
