//! Certificate text helpers shared by the host (which formats subjects) and plugins
//! (which compare and report them), so both sides spell a subject the same way.

/// Escapes one RFC 4514 attribute value (§2.4): the specials, a leading `#` or space, a
/// trailing space, and control characters as `\XX` per UTF-8 byte, so that a subject
/// never spans log lines. No crate exposes just this step of DN formatting.
pub fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:02X}"));
            }
            continue;
        }
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ')
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Unix seconds as RFC 3339 UTC (`2025-01-31T12:00:00Z`), for reasons operators read.
pub fn rfc3339(secs: i64) -> String {
    let t = match u64::try_from(secs) {
        Ok(s) => std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
        Err(_) => std::time::UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs()),
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(escape_dn_value(" a,b "), "\\ a\\,b\\ ");
        assert_eq!(escape_dn_value("x\ny"), "x\\0Ay");
    }
}
