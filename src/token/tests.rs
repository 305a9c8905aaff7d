use super::*;
use proptest::prelude::*;

/// The worked example of docs/reference/token-format.md.
const EXAMPLE_UUID: &str = "0b6c0e5e-5bd5-4f5e-9a43-5f1a2c3d4e5f";
const EXAMPLE_SECRET: &str = "Zq3RkT9vLm2XcP7wYh4NsB8d";

fn example() -> Token {
    Token::from_parts(EXAMPLE_UUID.parse().unwrap(), EXAMPLE_SECRET)
}

#[test]
fn worked_example_matches_the_docs() {
    let token = example();
    let text = token.expose_secret();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/reference/token-format.md"
    ))
    .unwrap();
    let id62 = token.id().to_base62();
    let checksum = &text[CHECKSUMMED_LEN..];
    let crc = crc32fast::hash(&text.as_bytes()[..CHECKSUMMED_LEN]);
    for needle in [
        text,
        id62.as_str(),
        checksum,
        EXAMPLE_UUID,
        EXAMPLE_SECRET,
        &crc.to_string(),
        &format!("0x{crc:08x}"),
    ] {
        assert!(
            doc.contains(needle),
            "docs/reference/token-format.md lacks {needle}"
        );
    }
    assert_eq!(parse(text), Ok(token.id()));
}

#[test]
fn generated_tokens_have_the_documented_shape() {
    let token = Token::generate().unwrap();
    let text = token.expose_secret();
    assert_eq!(text.len(), 55);
    assert!(text.starts_with("mk_"));
    assert_eq!(&text[3..25], token.id().to_base62());
    assert_eq!(token.id().as_uuid().get_version_num(), 4);
    assert!(!format!("{token:?}").contains(&text[25..49]));
}

#[test]
fn rejects_each_kind_of_malformed_token() {
    let good = example();
    let text = good.expose_secret();
    assert_eq!(parse(""), Err(FormatError::Prefix));
    assert_eq!(
        parse(&text.replacen("mk_", "sk_", 1)),
        Err(FormatError::Prefix)
    );
    assert_eq!(parse(&text[..54]), Err(FormatError::Length(54)));
    assert_eq!(parse(&format!("{text}0")), Err(FormatError::Length(56)));
    let mut bad = text.to_owned();
    bad.replace_range(10..11, "-");
    assert_eq!(parse(&bad), Err(FormatError::Alphabet(10)));
    let mut bad = text.to_owned();
    bad.replace_range(30..31, "é"); // two bytes: length changes
    assert!(parse(&bad).is_err());
    // An id wider than 128 bits, with a correct checksum.
    let mut raw = format!("mk_{}{EXAMPLE_SECRET}", "z".repeat(ID_LEN));
    let crc = crc32fast::hash(raw.as_bytes());
    let mut sum = [0u8; CHECKSUM_LEN];
    encode_base62(u128::from(crc), &mut sum);
    raw.push_str(&ascii_string(&sum));
    assert_eq!(parse(&raw), Err(FormatError::IdRange));
}

#[test]
fn token_ids_parse_from_both_forms() {
    let id: TokenId = EXAMPLE_UUID.parse().unwrap();
    assert_eq!(id.to_string(), EXAMPLE_UUID);
    assert_eq!(id.to_base62().parse::<TokenId>(), Ok(id));
    // The whole token, too (its checksum checked).
    let token = Token::from_parts(id, "ABCDEFGHIJKLMNOPQRSTUVWX");
    assert_eq!(token.expose_secret().parse::<TokenId>(), Ok(id));
    let mut broken = token.expose_secret().to_owned();
    broken.pop();
    broken.push('0');
    for bad in [
        broken.as_str(),
        "mk_",
        "",
        "nope",
        "0b6c0e5e5bd54f5e9a435f1a2c3d4e5f",
        "zzzzzzzzzzzzzzzzzzzzzz",
    ] {
        assert_eq!(bad.parse::<TokenId>(), Err(InvalidTokenId), "{bad}");
    }
}

#[test]
fn secrets_use_the_whole_alphabet_evenly() {
    // 62 symbols × ~1,550 draws each: a bias towards the first 8 symbols
    // (what `byte % 62` would give) shows as a 25% excess; allow 15%.
    let mut counts = [0u32; 62];
    for _ in 0..4000 {
        for c in random_secret().unwrap() {
            counts[usize::from(digit(c).unwrap())] += 1;
        }
    }
    let mean = 4000.0 * 24.0 / 62.0;
    for (i, &n) in counts.iter().enumerate() {
        let ratio = f64::from(n) / mean;
        assert!((0.85..1.15).contains(&ratio), "symbol {i}: {ratio:.3}");
    }
}

fn any_token() -> impl Strategy<Value = Token> {
    (
        any::<u128>(),
        proptest::collection::vec(0usize..62, SECRET_LEN),
    )
        .prop_map(|(id, s)| {
            let secret: String = s.into_iter().map(|i| char::from(ALPHABET[i])).collect();
            Token::from_parts(TokenId(Uuid::from_u128(id)), &secret)
        })
}

proptest! {
    #[test]
    fn every_generated_token_parses_back_to_its_id(token in any_token()) {
        prop_assert_eq!(parse(token.expose_secret()), Ok(token.id()));
    }

    #[test]
    fn changing_any_single_character_is_rejected(
        token in any_token(),
        pos in 0usize..TOKEN_LEN,
        replacement in prop_oneof![
            3 => (0usize..62).prop_map(|i| char::from(ALPHABET[i])),
            1 => any::<char>(),
        ],
    ) {
        let text = token.expose_secret();
        prop_assume!(replacement != char::from(text.as_bytes()[pos]));
        let mut changed = String::with_capacity(TOKEN_LEN + 4);
        changed.push_str(&text[..pos]);
        changed.push(replacement);
        changed.push_str(&text[pos + 1..]);
        prop_assert!(parse(&changed).is_err(), "{} accepted", changed);
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,80}") {
        let _ = parse(&s);
    }
}
