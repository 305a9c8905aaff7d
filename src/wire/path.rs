//! Paths: normalization and percent-decoding, as routes are matched on them
//! (docs/reference/http-contract.md, "Public routes").

/// The percent-decoded path if it is in normal form, else `None`. Borrowed
/// when there is nothing to decode: the route checks run on every request.
pub(crate) fn normalize_path(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !raw.starts_with('/') {
        return None;
    }
    // The common case, nothing escaped: one pass over the bytes.
    if !raw.as_bytes().contains(&b'%') {
        return is_normal(raw).then_some(std::borrow::Cow::Borrowed(raw));
    }
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return None;
    }
    let decoded = percent_decode(raw)?;
    // A `%` left after decoding was sent as `%25`: a service that
    // decodes once more would read `/public/%252e%252e/x` as
    // `/public/../x`. The normal form has none, so normalizing it again
    // changes nothing.
    if decoded.contains('%') {
        return None;
    }
    is_normal(&decoded).then_some(std::borrow::Cow::Owned(decoded))
}

/// Whether a decoded path (starting with `/`) is in normal form: `/`
/// itself, or segments none of which is empty, `.` or `..` (a trailing `/`
/// allowed), and no `\`, NUL or `;` (which starts path parameters that some
/// servers, Tomcat, Spring, Jetty, drop before routing: `/public/..;/private`
/// is `/private` to them).
fn is_normal(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    let body = &path.as_bytes()[1..];
    let body = body.strip_suffix(b"/").unwrap_or(body);
    // A segment's length, and how many of its bytes are dots.
    let (mut len, mut dots) = (0usize, 0usize);
    let bad_segment = |len: usize, dots: usize| len == 0 || (len == dots && dots <= 2);
    for &b in body {
        match b {
            b'\\' | 0 | b';' => return false,
            b'/' => {
                if bad_segment(len, dots) {
                    return false;
                }
                (len, dots) = (0, 0);
            }
            b'.' => (len, dots) = (len + 1, dots + 1),
            _ => len += 1,
        }
    }
    !bad_segment(len, dots)
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // Two hex digits: `from_str_radix` alone would take `%+1`.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
