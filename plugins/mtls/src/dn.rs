//! Distinguished names as RFC 4514 strings: the host's certificate `subject`, and the
//! operator's `identity`. Both are parsed into the same structure so that matching never
//! depends on spelling: attribute type aliases (`CN`, `commonName`, `2.5.4.3`), escapes
//! (`\,` and `\2C`), the order of a multi-valued RDN, and optional spaces around
//! separators (`CN=a, O=b`, as OpenSSL's one-line form writes it) compare equal.
//!
//! Values compare exactly (case-sensitive): a certificate identity is a credential, and
//! folding case would let `CN=Gateway` stand in for `CN=gateway`.

use std::fmt;

/// One attribute value: text, or the `#hex` DER form RFC 4514 uses for non-string values
/// and unknown types. Kept apart so `\#41` (text) never equals `#41` (bytes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Text(String),
    Der(Vec<u8>),
}

/// One `type=value` pair with the type in canonical form (see [`canonical_type`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ava {
    pub attr: String,
    pub value: Value,
}

/// A parsed DN, most-specific RDN first as written; each RDN's AVAs sorted (a set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dn(pub Vec<Vec<Ava>>);

impl Dn {
    /// The values of every `CN` attribute.
    pub fn common_names(&self) -> Vec<&str> {
        self.0
            .iter()
            .flatten()
            .filter(|a| a.attr == "CN")
            .filter_map(|a| match &a.value {
                Value::Text(t) => Some(t.as_str()),
                Value::Der(_) => None,
            })
            .collect()
    }

    /// `CN=<value>` and nothing else: the identity form that matches on the CN alone.
    pub fn as_cn_only(&self) -> Option<&str> {
        match self.0.as_slice() {
            [rdn] => match rdn.as_slice() {
                [
                    Ava {
                        attr,
                        value: Value::Text(cn),
                    },
                ] if attr == "CN" => Some(cn),
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for Dn {
    /// Canonical RFC 4514 text, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, ava) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                write!(f, "{}=", ava.attr)?;
                match &ava.value {
                    Value::Text(t) => f.write_str(&nats_callout_sdk::cert::escape_dn_value(t))?,
                    Value::Der(b) => {
                        f.write_str("#")?;
                        for byte in b {
                            write!(f, "{byte:02x}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why a DN string does not parse. Names the position so an operator can find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnError(pub String);

impl fmt::Display for DnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DnError {}

/// Canonical attribute type: the upper-case short name for the types the host names
/// (and common aliases), else the dotted OID. `None` for an unknown descriptive name,
/// which could only be a typo, since the host never prints one.
pub fn canonical_type(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    let canonical = match upper.as_str() {
        "CN" | "COMMONNAME" | "2.5.4.3" => "CN",
        "L" | "LOCALITYNAME" | "2.5.4.7" => "L",
        "ST" | "S" | "STATEORPROVINCENAME" | "2.5.4.8" => "ST",
        "O" | "ORGANIZATIONNAME" | "2.5.4.10" => "O",
        "OU" | "ORGANIZATIONALUNITNAME" | "2.5.4.11" => "OU",
        "C" | "COUNTRYNAME" | "2.5.4.6" => "C",
        "STREET" | "STREETADDRESS" | "2.5.4.9" => "STREET",
        "DC" | "DOMAINCOMPONENT" | "0.9.2342.19200300.100.1.25" => "DC",
        "UID" | "USERID" | "0.9.2342.19200300.100.1.1" => "UID",
        "EMAILADDRESS" | "EMAIL" | "E" | "1.2.840.113549.1.9.1" => "emailAddress",
        "SERIALNUMBER" | "2.5.4.5" => "serialNumber",
        "POSTALCODE" | "2.5.4.17" => "postalCode",
        "TITLE" | "2.5.4.12" => "title",
        "GN" | "GIVENNAME" | "2.5.4.42" => "GN",
        "SN" | "SURNAME" | "2.5.4.4" => "SN",
        _ => {
            let is_oid = !name.is_empty()
                && name.split('.').count() >= 2
                && name
                    .split('.')
                    .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()));
            return is_oid.then(|| name.to_owned());
        }
    };
    Some(canonical.to_owned())
}

/// Parses an RFC 4514 DN. Lenient only where no meaning is lost: spaces around `,`, `+`
/// and `=` are ignored (RFC 4514 requires a value's own leading or trailing space to be
/// escaped, `\ `). Strict elsewhere: unescaped `"`, `;`, `<`, `>`, a dangling `\`, or an
/// empty RDN are errors, because a typo in an identity must not silently match nothing.
pub fn parse(text: &str) -> Result<Dn, DnError> {
    let err = |msg: String| Err(DnError(msg));
    if text.trim().is_empty() {
        return err("is empty".into());
    }
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let mut rdns = Vec::new();
    let mut rdn = Vec::new();
    loop {
        // attribute type
        while pos < chars.len() && chars[pos] == ' ' {
            pos += 1;
        }
        let start = pos;
        while pos < chars.len() && chars[pos] != '=' {
            if matches!(chars[pos], ',' | '+') {
                return err(format!("expected `type=value` at character {}", start + 1));
            }
            pos += 1;
        }
        if pos == chars.len() {
            return err(format!("expected `=` after character {}", start + 1));
        }
        let name: String = chars[start..pos].iter().collect();
        let name = name.trim();
        let Some(attr) = canonical_type(name) else {
            return err(format!(
                "unknown attribute type {name:?} (use CN, O, OU, C, L, ST, DC, UID, emailAddress, \
                 serialNumber, ... or a dotted OID)"
            ));
        };
        pos += 1; // '='
        while pos < chars.len() && chars[pos] == ' ' {
            pos += 1;
        }
        // attribute value
        let value = if chars.get(pos) == Some(&'#') {
            pos += 1;
            let start = pos;
            while pos < chars.len() && chars[pos].is_ascii_hexdigit() {
                pos += 1;
            }
            let hex: String = chars[start..pos].iter().collect();
            if hex.is_empty() || !hex.len().is_multiple_of(2) {
                return err(format!("{attr}: malformed #hex value"));
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| DnError(format!("{attr}: malformed #hex value")))?;
            while pos < chars.len() && chars[pos] == ' ' {
                pos += 1;
            }
            Value::Der(bytes)
        } else {
            let mut bytes: Vec<u8> = Vec::new();
            // Length of `bytes` up to the last escaped or non-space character: unescaped
            // trailing spaces are separator padding, not value.
            let mut keep = 0;
            while pos < chars.len() && !matches!(chars[pos], ',' | '+') {
                let c = chars[pos];
                match c {
                    '\\' => {
                        let next = chars.get(pos + 1).copied();
                        // Two hex digits, checked as such: `from_str_radix` alone would
                        // also take a sign, reading `\+1` as the byte 0x01.
                        let hex_pair = next
                            .zip(chars.get(pos + 2).copied())
                            .filter(|(a, b)| a.is_ascii_hexdigit() && b.is_ascii_hexdigit())
                            .and_then(|(a, b)| {
                                let pair: String = [a, b].iter().collect();
                                u8::from_str_radix(&pair, 16).ok()
                            });
                        if let Some(byte) = hex_pair {
                            bytes.push(byte);
                            pos += 3;
                        } else if let Some(n) = next.filter(|n| {
                            matches!(
                                n,
                                ',' | '+' | '"' | '\\' | '<' | '>' | ';' | ' ' | '#' | '='
                            )
                        }) {
                            let mut buf = [0u8; 4];
                            bytes.extend_from_slice(n.encode_utf8(&mut buf).as_bytes());
                            pos += 2;
                        } else {
                            return err(format!(
                                "{attr}: `\\` at character {} escapes nothing valid",
                                pos + 1
                            ));
                        }
                        keep = bytes.len();
                        continue;
                    }
                    '"' | ';' | '<' | '>' => {
                        return err(format!(
                            "{attr}: unescaped `{c}` at character {} (write `\\{c}`)",
                            pos + 1
                        ));
                    }
                    _ => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        if c != ' ' {
                            keep = bytes.len();
                        }
                    }
                }
                pos += 1;
            }
            bytes.truncate(keep);
            match String::from_utf8(bytes) {
                Ok(text) => Value::Text(text),
                Err(_) => return err(format!("{attr}: escaped bytes are not valid UTF-8")),
            }
        };
        rdn.push(Ava { attr, value });
        match chars.get(pos) {
            None => {
                rdn.sort();
                rdns.push(std::mem::take(&mut rdn));
                break;
            }
            Some('+') => pos += 1,
            Some(',') => {
                rdn.sort();
                rdns.push(std::mem::take(&mut rdn));
                pos += 1;
                if chars[pos..].iter().all(|c| *c == ' ') {
                    return err("ends with `,`".into());
                }
            }
            Some(other) => return err(format!("unexpected `{other}` at character {}", pos + 1)),
        }
    }
    Ok(Dn(rdns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(attr: &str, v: &str) -> Ava {
        Ava {
            attr: attr.into(),
            value: Value::Text(v.into()),
        }
    }

    #[test]
    fn spellings_that_mean_the_same_dn() {
        let canonical = parse("CN=bms.cpc-1,O=Acme\\, Inc.,C=DE").unwrap();
        assert_eq!(
            canonical.0,
            vec![
                vec![text("CN", "bms.cpc-1")],
                vec![text("O", "Acme, Inc.")],
                vec![text("C", "DE")]
            ]
        );
        for same in [
            "cn=bms.cpc-1,o=Acme\\, Inc.,c=DE",
            "CN = bms.cpc-1, O = Acme\\2C Inc., C = DE",
            "commonName=bms.cpc-1,2.5.4.10=Acme\\, Inc.,countryName=DE",
        ] {
            assert_eq!(parse(same).unwrap(), canonical, "{same}");
        }
        assert_eq!(canonical.to_string(), "CN=bms.cpc-1,O=Acme\\, Inc.,C=DE");
        // Values are case-sensitive; order of RDNs matters; order inside an RDN does not.
        assert_ne!(
            parse("CN=BMS.cpc-1,O=Acme\\, Inc.,C=DE").unwrap(),
            canonical
        );
        assert_ne!(
            parse("O=Acme\\, Inc.,CN=bms.cpc-1,C=DE").unwrap(),
            canonical
        );
        assert_eq!(
            parse("OU=a+CN=x,O=b").unwrap(),
            parse("CN=x+OU=a,O=b").unwrap()
        );
    }

    #[test]
    fn escapes_and_hex_values() {
        let dn = parse(r"OU=\ Building #1\ ,CN=\#x\0Ay,UID=#0c0161").unwrap();
        assert_eq!(dn.0[0], vec![text("OU", " Building #1 ")]);
        assert_eq!(dn.0[1], vec![text("CN", "#x\ny")]);
        assert_eq!(
            dn.0[2][0].value,
            Value::Der(vec![0x0c, 0x01, 0x61]),
            "hex stays bytes"
        );
        assert_ne!(parse("CN=\\#0c").unwrap(), parse("CN=#0c").unwrap());
        assert_eq!(parse("CN=caf\\C3\\A9").unwrap(), parse("CN=café").unwrap());
        assert_eq!(dn.common_names(), ["#x\ny"]);
        // An escaped `+` before a hex digit is a `+`, not a signed hex pair.
        assert_eq!(parse(r"CN=rack\+1").unwrap().common_names(), ["rack+1"]);
        assert_ne!(parse(r"O=R\+D").unwrap(), parse(r"O=R\0D").unwrap());
        assert_ne!(parse(r"CN=rack\+1").unwrap(), parse(r"CN=rack\01").unwrap());
        // Display round-trips.
        assert_eq!(parse(&dn.to_string()).unwrap(), dn);
    }

    #[test]
    fn cn_only() {
        assert_eq!(
            parse("CN=bms.cpc-1").unwrap().as_cn_only(),
            Some("bms.cpc-1")
        );
        assert_eq!(parse(" cn = a ").unwrap().as_cn_only(), Some("a"));
        assert_eq!(parse("CN=a,O=b").unwrap().as_cn_only(), None);
        assert_eq!(parse("CN=a+OU=b").unwrap().as_cn_only(), None);
        assert_eq!(parse("O=b").unwrap().as_cn_only(), None);
    }

    #[test]
    fn malformed() {
        for (bad, why) in [
            ("", "is empty"),
            ("bms.cpc-1", "expected `=`"),
            ("CN=a,", "ends with `,`"),
            ("CN=a,,O=b", "expected `type=value`"),
            ("CN=a;O=b", "unescaped `;`"),
            ("CN=\"a\"", "unescaped `\"`"),
            ("CN=a\\", "escapes nothing"),
            ("CN=a\\x", "escapes nothing"),
            ("CM=a", "unknown attribute type \"CM\""),
            ("UID=#0", "malformed #hex"),
            ("UID=#zz", "malformed #hex"),
            ("UID=#00 x", "unexpected `x`"),
            ("CN=\\FF", "not valid UTF-8"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert_eq!(canonical_type("1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(canonical_type("1..2"), None);
        assert_eq!(canonical_type("E").as_deref(), Some("emailAddress"));
    }
}
