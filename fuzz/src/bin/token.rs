//! AFL target: the `mk_` token parser (docs/reference/token-format.md). Never panics;
//! whatever it accepts re-renders to the very same text from its id and
//! secret, and its id reads back from every printed form.

use tokengate::token::{self, Token, TokenId};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(id) = token::parse(text) {
            assert_eq!(text.len(), token::TOKEN_LEN);
            assert_eq!(id.to_base62(), &text[3..25]);
            let rendered = Token::from_parts(id, &text[25..49]);
            assert_eq!(
                rendered.expose_secret(),
                text,
                "accepted a token it would not render"
            );
        }
        if let Ok(id) = text.parse::<TokenId>() {
            assert_eq!(id.to_string().parse::<TokenId>(), Ok(id));
            assert_eq!(id.to_base62().parse::<TokenId>(), Ok(id));
        }
    });
}
