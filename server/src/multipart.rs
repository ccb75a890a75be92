//! A strict reader for the multipart bodies of notary's update POST (spec §1.4): each part carries
//! one metadata file and its role name in the `filename` parameter, slashes included.

/// One uploaded part, borrowing its bytes from the request body (a copy is made only of what
/// is kept, once it has been checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// The `filename` parameter, if any (verbatim: never basenamed).
    pub filename: Option<String>,
    /// The part's bytes.
    pub body: &'a [u8],
    /// Where [`Self::body`] lies in the request body, so a caller that owns the request body can
    /// keep a part without copying it.
    pub range: std::ops::Range<usize>,
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// The content type is not multipart with a boundary.
    #[error("request is not multipart/form-data with a boundary")]
    NotMultipart,
    /// The body does not follow the multipart framing.
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    /// More parts than the limit.
    #[error("more than {0} parts")]
    TooManyParts(usize),
}

/// Extracts the boundary from a `multipart/form-data` or `multipart/mixed` content type.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut pieces = content_type.split(';');
    let essence = pieces.next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence != "multipart/form-data" && essence != "multipart/mixed" {
        return Err(MultipartError::NotMultipart);
    }
    for piece in pieces {
        if let Some((name, value)) = piece.split_once('=')
            && name.trim().eq_ignore_ascii_case("boundary")
        {
            let value = value.trim().trim_matches('"');
            if !value.is_empty() && value.len() <= 200 {
                return Ok(value.to_owned());
            }
        }
    }
    Err(MultipartError::NotMultipart)
}

/// Where `needle` (not empty) first occurs in `haystack` at or after `from`. Only the places
/// where its first byte occurs are compared in full: a part of tens of MiB is searched at about
/// the speed of a byte scan, not of a comparison per byte.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (first, rest) = needle.split_first()?;
    let mut start = from;
    loop {
        let offset = haystack.get(start..)?.iter().position(|byte| byte == first)?;
        let at = start.checked_add(offset)?;
        let after = at.checked_add(1)?;
        if haystack.get(after..after.checked_add(rest.len())?) == Some(rest) {
            return Some(at);
        }
        start = after;
    }
}

/// Parses the `filename` parameter out of a `Content-Disposition` value.
fn filename(disposition: &str) -> Option<String> {
    let mut rest = disposition;
    while let Some(position) = rest.find(';') {
        rest = rest.get(position + 1..)?.trim_start();
        let Some((name, value)) = rest.split_once('=') else { continue };
        if !name.trim().eq_ignore_ascii_case("filename") {
            continue;
        }
        let value = value.trim_start();
        if let Some(quoted) = value.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.chars();
            while let Some(character) = chars.next() {
                match character {
                    '"' => return Some(out),
                    '\\' => out.push(chars.next()?),
                    other => out.push(other),
                }
            }
            return None;
        }
        let token = value.split(';').next().unwrap_or_default().trim();
        return Some(token.to_owned());
    }
    None
}

/// Splits `body` into parts. Part headers are limited to 8 KiB each.
pub fn parse<'a>(body: &'a [u8], boundary: &str, max_parts: usize) -> Result<Vec<Part<'a>>, MultipartError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut position = if body.starts_with(delimiter) {
        0
    } else {
        let mut with_crlf = b"\r\n".to_vec();
        with_crlf.extend_from_slice(delimiter);
        find(body, &with_crlf, 0).ok_or(MultipartError::Malformed("no opening boundary"))? + 2
    };
    let mut next_delimiter = b"\r\n".to_vec();
    next_delimiter.extend_from_slice(delimiter);
    let mut parts = Vec::new();
    loop {
        position += delimiter.len();
        let after = body.get(position..).ok_or(MultipartError::Malformed("truncated body"))?;
        if after.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding after the boundary is allowed, then CRLF.
        let line_end =
            find(body, b"\r\n", position).ok_or(MultipartError::Malformed("boundary line not terminated"))?;
        let padding = body.get(position..line_end).unwrap_or_default();
        if !padding.iter().all(|byte| *byte == b' ' || *byte == b'\t') {
            return Err(MultipartError::Malformed("garbage after boundary"));
        }
        let headers_start = line_end + 2;
        // A part without headers starts its content right after an empty line.
        let (headers_end, content_start) = if body.get(headers_start..headers_start + 2) == Some(b"\r\n".as_slice()) {
            (headers_start, headers_start + 2)
        } else {
            let end = find(body, b"\r\n\r\n", headers_start)
                .filter(|end| end - headers_start <= 8192)
                .ok_or(MultipartError::Malformed("part headers not terminated"))?;
            (end, end + 4)
        };
        let headers = std::str::from_utf8(body.get(headers_start..headers_end).unwrap_or_default())
            .map_err(|_| MultipartError::Malformed("part headers are not UTF-8"))?;
        let mut name = None;
        for line in headers.split("\r\n") {
            if let Some((header, value)) = line.split_once(':')
                && header.trim().eq_ignore_ascii_case("content-disposition")
            {
                name = filename(value);
            }
        }
        let content_end =
            find(body, &next_delimiter, content_start).ok_or(MultipartError::Malformed("part not terminated"))?;
        if parts.len() >= max_parts {
            return Err(MultipartError::TooManyParts(max_parts));
        }
        let range = content_start..content_end;
        parts.push(Part { filename: name, body: body.get(range.clone()).unwrap_or_default(), range });
        position = content_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut out = String::new();
        for (disposition, content) in parts {
            out.push_str(&format!(
                "--XyZ\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n{content}\r\n"
            ));
        }
        out.push_str("--XyZ--\r\n");
        out.into_bytes()
    }

    #[test]
    fn find_gives_the_first_match_at_or_after_the_start() {
        // Haystack, needle, where the search starts, and the match expected.
        type Case = (&'static [u8], &'static [u8], usize, Option<usize>);
        let cases: [Case; 9] = [
            (b"ab\r\n--B\r\n--B", b"\r\n--B", 0, Some(2)),
            (b"ab\r\n--B\r\n--B", b"\r\n--B", 3, Some(7)),
            (b"\r\r\n--B", b"\r\n--B", 0, Some(1)),
            (b"\r\n--", b"\r\n--B", 0, None),
            (b"xyz", b"z", 0, Some(2)),
            (b"xyz", b"z", 3, None),
            (b"xyz", b"z", 9, None),
            (b"", b"z", 0, None),
            (b"xyz", b"", 0, None),
        ];
        for (haystack, needle, from, expected) in cases {
            assert_eq!(find(haystack, needle, from), expected, "{haystack:?} {needle:?} from {from}");
        }
    }

    #[test]
    fn reads_full_role_names_verbatim() {
        let data = body(&[
            (r#"form-data; name="files"; filename="targets/releases""#, "{\"a\":1}"),
            (r#"form-data; name="files"; filename="root""#, "x\r\ny"),
            ("form-data; name=files; filename=snapshot.json", ""),
        ]);
        let parts = parse(&data, "XyZ", 10).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].filename.as_deref(), Some("targets/releases"));
        assert_eq!(parts[0].body, b"{\"a\":1}");
        assert_eq!(&data[parts[0].range.clone()], b"{\"a\":1}");
        assert_eq!(&data[parts[1].range.clone()], b"x\r\ny");
        assert_eq!(parts[1].body, b"x\r\ny");
        assert_eq!(parts[2].filename.as_deref(), Some("snapshot.json"));
        assert!(parts[2].body.is_empty());
    }

    #[test]
    fn missing_filename_and_escapes() {
        let data = body(&[(r#"form-data; name="files""#, "1"), (r#"form-data; filename="a\"b""#, "2")]);
        let parts = parse(&data, "XyZ", 10).unwrap();
        assert_eq!(parts[0].filename, None);
        assert_eq!(parts[1].filename.as_deref(), Some("a\"b"));
    }

    #[test]
    fn rejects_bad_framing_and_limits() {
        assert_eq!(parse(b"hello", "XyZ", 10), Err(MultipartError::Malformed("no opening boundary")));
        assert_eq!(
            parse(b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nno end", "XyZ", 10),
            Err(MultipartError::Malformed("part not terminated"))
        );
        let data = body(&[("form-data; filename=a", "1"), ("form-data; filename=b", "2")]);
        assert_eq!(parse(&data, "XyZ", 1), Err(MultipartError::TooManyParts(1)));
        assert_eq!(parse(b"--XyZ--\r\n", "XyZ", 1), Ok(vec![]));
    }

    #[test]
    fn boundaries() {
        assert_eq!(boundary("multipart/form-data; boundary=abc").unwrap(), "abc");
        assert_eq!(boundary("Multipart/Mixed; charset=x; boundary=\"q r\"").unwrap(), "q r");
        assert_eq!(boundary("application/json"), Err(MultipartError::NotMultipart));
        assert_eq!(boundary("multipart/form-data"), Err(MultipartError::NotMultipart));
    }
}
