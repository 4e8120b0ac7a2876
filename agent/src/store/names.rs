//! Checks of strings from tenants that end up in a privileged program's configuration:
//! the HTTP hosts and paths of loadbalancer rules (Ingress rules), which haproxy-manager
//! writes into HAProxy's configuration. The store refuses objects that fail them, and
//! kube-manager reports such Ingress rules as events.

/// Longest host name (RFC 1123).
const MAX_HOST: usize = 253;
/// Longest path taken.
const MAX_PATH: usize = 1024;

/// Checks an HTTP host of a rule: an RFC 1123 name (labels of letters, digits and inner
/// hyphens, 1-63 each), optionally with one leading `*.` wildcard label.
pub fn check_host(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || host.len() > MAX_HOST {
        return Err(format!(
            "host {:?} is not 1..={MAX_HOST} characters",
            host.escape_debug().to_string()
        ));
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        return Err(format!(
            "host {:?} is not a DNS name (RFC 1123 labels, optionally one leading \"*.\")",
            host.escape_debug().to_string()
        ));
    }
    Ok(())
}

/// Checks an HTTP path of a rule: starts with `/`, at most [`MAX_PATH`] bytes, made of
/// URL path characters (RFC 3986 unreserved, `%XX` escapes, and `/ : @ ! & ( ) * + , ; =`).
/// `'` and `$` are path characters too, but not here: they quote and expand in HAProxy.
pub fn check_path(path: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "path {:?} is not an absolute URL path of at most {MAX_PATH} characters \
             (letters, digits, - . _ ~ / : @ ! & ( ) * + , ; = and %XX escapes)",
            path.escape_debug().to_string()
        )
    };
    if !path.starts_with('/') || path.len() > MAX_PATH {
        return Err(bad());
    }
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if !(i + 2 < b.len()
                    && b[i + 1].is_ascii_hexdigit()
                    && b[i + 2].is_ascii_hexdigit())
                {
                    return Err(bad());
                }
                i += 3;
                continue;
            }
            c if c.is_ascii_alphanumeric() => {}
            b'-' | b'.' | b'_' | b'~' | b'/' | b':' | b'@' | b'!' | b'&' | b'(' | b')' | b'*'
            | b'+' | b',' | b';' | b'=' => {}
            _ => return Err(bad()),
        }
        i += 1;
    }
    Ok(())
}
