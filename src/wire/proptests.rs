//! Arbitrary bytes and traversal tricks through path normalization,
//! percent-decoding and the `Host` checks (docs/design/fuzzing.md).

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::*;

/// Paths made of the pieces traversal tricks use, or anything at all.
fn raw_path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "(/|//|\\.|\\.\\.|%2[eEfF]|%5[cC]|%25|%00|%3[bB]|%|;|\\\\|[a-z]|é|\u{ff0e})*",
        1 => any::<String>(),
        1 => proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

proptest! {
    #![proptest_config(proptest_config(2000))]

    /// The one-pass check answers as the first, plainer version did.
    #[test]
    fn the_one_pass_check_matches_the_plain_one(raw in raw_path()) {
        fn plain(raw: &str) -> Option<String> {
            if !raw.starts_with('/') {
                return None;
            }
            let decoded = if raw.contains('%') {
                let lower = raw.to_ascii_lowercase();
                if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
                    return None;
                }
                let decoded = percent_decode(raw)?;
                if decoded.contains('%') {
                    return None;
                }
                decoded
            } else {
                raw.to_owned()
            };
            if decoded.contains('\\') || decoded.contains('\0') || decoded.contains(';') {
                return None;
            }
            let body = &decoded[1..];
            let body = body.strip_suffix('/').unwrap_or(body);
            if decoded != "/"
                && body
                    .split('/')
                    .any(|seg| seg.is_empty() || seg == "." || seg == "..")
            {
                return None;
            }
            Some(decoded)
        }
        prop_assert_eq!(normalize_path(&raw).map(|p| p.into_owned()), plain(&raw), "{:?}", raw);
    }

    #[test]
    fn normalization_is_idempotent_and_leaves_no_trick(raw in raw_path()) {
        if let Some(once) = normalize_path(&raw) {
            prop_assert_eq!(normalize_path(&once), Some(once.clone()), "from {:?}", raw);
            prop_assert!(once.starts_with('/'));
            for trick in ["//", "\\", ";", "\0", "%"] {
                prop_assert!(!once.contains(trick), "{:?} → {:?}", raw, once);
            }
            let body = once.trim_end_matches('/');
            prop_assert!(
                body.split('/').skip(1).all(|s| s != "." && s != ".."),
                "{:?} → {:?}", raw, once
            );
        }
    }

    #[test]
    fn percent_decoding_inverts_encoding(text in any::<String>(), upper in any::<bool>()) {
        let encoded: String = text
            .bytes()
            .map(|b| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") })
            .collect();
        prop_assert_eq!(percent_decode(&encoded), Some(text.clone()));
        // Text without `%` decodes to itself.
        let plain = text.replace('%', "");
        prop_assert_eq!(percent_decode(&plain), Some(plain));
    }

    #[test]
    fn host_checks_never_panic(
        value in proptest::collection::vec(any::<u8>(), 0..64),
        hosts in 0usize..3,
    ) {
        let _ = is_valid_host(&value);
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&value) {
            for _ in 0..hosts {
                headers.append(http::header::HOST, v.clone());
            }
        }
        let uri: http::Uri = "/x".parse().unwrap();
        let result = request_host(http::Version::HTTP_11, &uri, &headers);
        if hosts == 1 && result.is_ok() {
            prop_assert!(is_valid_host(&value));
        }
        if hosts == 2 {
            prop_assert!(result.is_err());
        }
    }
}
