//! Identity headers from claims: value encoding and sanitising. Pure.
//!
//! A value that could smuggle a second header or read as two lines (any control character, the
//! separators U+2028/U+2029) or is longer than [`MAX_VALUE_BYTES`] is never emitted: the header
//! is dropped whole, not truncated (half a group list is a different group list), and reported
//! to be counted. Separators count as `control_character`, keeping the metric's reasons to
//! `control_character` / `too_long` / `separator_in_item`. A joined list must split back into the
//! same items (`staff,admins` joined with `,` reads as two), so an item holding the separator
//! drops the header too (`splits_on`); `format: json` carries any item. See docs/reference.md,
//! "Claim values as headers".

use axum::http::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::core::policy::{ClaimEncoding, CompiledClaimHeader};
use crate::core::verify::Claims;

/// ingress-nginx reads the auth response headers into a 4 KiB buffer by default
/// (`proxy_buffer_size 4k`); a longer value would turn every request into a 500.
pub const MAX_VALUE_BYTES: usize = 3072;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    ControlCharacter,
    TooLong,
    /// An item of a joined list holds the separator (see `splits_on`).
    SeparatorInItem,
}

impl DropReason {
    pub fn code(self) -> &'static str {
        match self {
            DropReason::ControlCharacter => "control_character",
            DropReason::TooLong => "too_long",
            DropReason::SeparatorInItem => "separator_in_item",
        }
    }
}

/// The headers to send, and the ones withheld.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rendered {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub dropped: Vec<(HeaderName, DropReason)>,
    /// Mapped headers not set (claim absent or value dropped): a proxy that only overwrites
    /// the headers it is given (Envoy) must be told to remove client copies of these.
    pub absent: Vec<HeaderName>,
}

/// Builds every configured header whose claim is present and non-empty.
pub fn render(claims: &Claims, mapping: &[CompiledClaimHeader]) -> Rendered {
    let mut out = Rendered::default();
    for m in mapping {
        let text = claims
            .path(&m.path)
            .map_or(Ok(None), |v| encode(v, &m.encoding));
        match text.and_then(|t| t.as_deref().map(sanitise).transpose()) {
            Ok(Some(value)) => out.set.push((m.header.clone(), value)),
            Ok(None) => out.absent.push(m.header.clone()),
            Err(reason) => {
                out.dropped.push((m.header.clone(), reason));
                out.absent.push(m.header.clone());
            }
        }
    }
    out
}

/// Claim value → header text. `None` for absent-like values (null, empty string or array);
/// an error for a list that would not split back into its items.
pub fn encode(value: &Value, encoding: &ClaimEncoding) -> Result<Option<String>, DropReason> {
    let text = match (value, encoding) {
        (Value::Null, _) => return Ok(None),
        (_, ClaimEncoding::Json) => value.to_string(),
        (Value::String(s), _) => s.clone(),
        (Value::Array(items), ClaimEncoding::Text { join }) => join_items(items, join)?,
        (other, _) => other.to_string(),
    };
    Ok(if text.is_empty() { None } else { Some(text) })
}

/// The non-null items of a list as text (strings as-is, others as JSON), joined with `join`.
fn join_items(items: &[Value], join: &str) -> Result<String, DropReason> {
    let parts: Vec<String> = items
        .iter()
        .filter(|v| !v.is_null())
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    if parts.iter().any(|item| splits_on(item, join)) {
        return Err(DropReason::SeparatorInItem);
    }
    Ok(parts.join(join))
}

/// Whether an app splitting a joined list on `join` would cut `item` in two. List parsers
/// trim the whitespace around separators (`a, b`), so the separator is `join` without it:
/// `,` and `, ` both cut at every `,`. A separator of whitespace only (` `) cuts at any
/// whitespace, as `split()` with no argument and shell words do. Whitespace at an item's
/// ends is harmless otherwise (trimmed away, the item is the same). An empty `join`
/// separates nothing.
fn splits_on(item: &str, join: &str) -> bool {
    match join.trim() {
        "" if join.is_empty() => false,
        "" => item.contains(char::is_whitespace),
        separator => item.contains(separator),
    }
}

/// A control character (Unicode Cc: C0, DEL, C1 including NEL U+0085) or a line or
/// paragraph separator (Zl U+2028, Zp U+2029; no other character is in those categories).
pub fn is_line_breaking(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Text → header value, or why it must not be sent.
pub fn sanitise(text: &str) -> Result<HeaderValue, DropReason> {
    if text.len() > MAX_VALUE_BYTES {
        return Err(DropReason::TooLong);
    }
    if text.chars().any(is_line_breaking) {
        return Err(DropReason::ControlCharacter);
    }
    // Non-ASCII (a name like "José") goes out as UTF-8 bytes, which HTTP/1.1 carries as obs-text.
    HeaderValue::from_bytes(text.as_bytes()).map_err(|_| DropReason::ControlCharacter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text() -> ClaimEncoding {
        ClaimEncoding::Text { join: ",".into() }
    }

    fn join(separator: &str) -> ClaimEncoding {
        ClaimEncoding::Text {
            join: separator.into(),
        }
    }

    /// The header text of `value`, or why there is none.
    fn encoded(value: Value, encoding: &ClaimEncoding) -> Result<Option<String>, DropReason> {
        encode(&value, encoding)
    }

    /// The codes logs and metrics name a withheld header by.
    #[test]
    fn each_drop_reason_has_its_code() {
        let codes = [
            DropReason::ControlCharacter,
            DropReason::TooLong,
            DropReason::SeparatorInItem,
        ]
        .map(DropReason::code);
        assert_eq!(
            codes,
            ["control_character", "too_long", "separator_in_item"]
        );
    }

    #[test]
    fn values_encode_by_type() {
        let some = |s: &str| Ok(Some(s.to_owned()));
        assert_eq!(encoded(json!("a@b.c"), &text()), some("a@b.c"));
        assert_eq!(encoded(json!(42), &text()), some("42"));
        assert_eq!(encoded(json!(true), &text()), some("true"));
        assert_eq!(encoded(json!(["a", "b", 3]), &text()), some("a,b,3"));
        assert_eq!(
            encoded(json!(["a", "b"]), &ClaimEncoding::Json),
            some(r#"["a","b"]"#)
        );
        assert_eq!(encoded(json!({"k": 1}), &text()), some(r#"{"k":1}"#));
        assert_eq!(encoded(json!(null), &text()), Ok(None));
        assert_eq!(encoded(json!(""), &text()), Ok(None));
        assert_eq!(encoded(json!([]), &text()), Ok(None));
    }

    #[test]
    fn a_list_item_holding_the_separator_drops_the_list() {
        let split = Err(DropReason::SeparatorInItem);
        // An app splitting `staff,admins,eng` on `,` would see `admins`.
        assert_eq!(encoded(json!(["staff,admins", "eng"]), &text()), split);
        assert_eq!(encoded(json!(["eng", ","]), &text()), split);
        // Non-string items are JSON text, whose commas count too.
        assert_eq!(encoded(json!([{"a": 1, "b": 2}]), &text()), split);
        assert_eq!(encoded(json!([[1, 2]]), &text()), split);
        // `, ` is cut at `,` by parsers that trim: an item's bare `,` counts.
        assert_eq!(encoded(json!(["a,b"]), &join(", ")), split);
        assert_eq!(encoded(json!(["a|b", "c"]), &join(" | ")), split);
        // A separator of whitespace cuts at any whitespace.
        for item in ["site admins", "a\tb", "a\u{a0}b"] {
            assert_eq!(encoded(json!([item, "c"]), &join(" ")), split, "{item:?}");
        }
        // What no parser of that separator splits: emitted.
        let some = |s: &str| Ok(Some(s.to_owned()));
        assert_eq!(
            encoded(json!(["staff,admins", "eng"]), &join(";")),
            some("staff,admins;eng")
        );
        assert_eq!(
            encoded(json!(["site admins", "eng"]), &text()),
            some("site admins,eng")
        );
        assert_eq!(encoded(json!(["a b", "c"]), &join(", ")), some("a b, c"));
        assert_eq!(encoded(json!(["a", "b"]), &join("")), some("ab"));
        // An empty separator separates nothing: not even at whitespace.
        assert_eq!(encoded(json!(["a b", "c"]), &join("")), some("a bc"));
        // One string is not a list: as-is, whatever it holds.
        assert_eq!(
            encoded(json!("staff,admins"), &text()),
            some("staff,admins")
        );
        // JSON keeps any item apart: the safe format for lists.
        assert_eq!(
            encoded(json!(["staff,admins", "eng"]), &ClaimEncoding::Json),
            some(r#"["staff,admins","eng"]"#)
        );
    }

    #[test]
    fn control_characters_are_never_emitted() {
        for bad in [
            "a\r\nX-Evil: 1",
            "a\nb",
            "nul\0",
            "tab\there",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            assert_eq!(sanitise(bad), Err(DropReason::ControlCharacter), "{bad:?}");
        }
        assert!(sanitise("José Müller").is_ok());
        assert!(sanitise(&"x".repeat(MAX_VALUE_BYTES)).is_ok());
        assert_eq!(
            sanitise(&"x".repeat(MAX_VALUE_BYTES + 1)),
            Err(DropReason::TooLong)
        );
    }

    #[test]
    fn line_and_paragraph_separators_are_never_emitted() {
        for bad in [
            "Eve\u{2028}X-Admin: true",
            "Eve\u{2029}",
            "\u{2028}",
            "NEL\u{85}X-Admin: true",
            "eve@example.com\u{2029}",
        ] {
            assert_eq!(sanitise(bad), Err(DropReason::ControlCharacter), "{bad:?}");
        }
        // Other separators and format characters are ordinary text.
        for ok in ["Jos\u{a0}é", "a\u{2027}b", "a\u{202a}b", "a\u{3000}b"] {
            assert!(sanitise(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn json_format_escapes_controls_so_they_are_safe() {
        let v = encode(&json!(["a\nb"]), &ClaimEncoding::Json)
            .unwrap()
            .unwrap();
        assert_eq!(v, r#"["a\nb"]"#);
        assert!(sanitise(&v).is_ok());
    }

    #[test]
    fn render_skips_missing_and_reports_dropped() {
        let claims: Claims = serde_json::from_value(
            json!({"email": "a@b.c", "name": "bad\r\nname", "teams": ["staff,admins", "eng"]}),
        )
        .unwrap();
        let mapping = vec![
            CompiledClaimHeader {
                header: HeaderName::from_static("x-email"),
                claim: "email".into(),
                path: vec!["email".into()],
                encoding: text(),
            },
            CompiledClaimHeader {
                header: HeaderName::from_static("x-teams"),
                claim: "teams".into(),
                path: vec!["teams".into()],
                encoding: text(),
            },
            CompiledClaimHeader {
                header: HeaderName::from_static("x-name"),
                claim: "name".into(),
                path: vec!["name".into()],
                encoding: text(),
            },
            CompiledClaimHeader {
                header: HeaderName::from_static("x-groups"),
                claim: "groups".into(),
                path: vec!["groups".into()],
                encoding: text(),
            },
        ];
        let r = render(&claims, &mapping);
        assert_eq!(
            r.set,
            vec![(
                HeaderName::from_static("x-email"),
                HeaderValue::from_static("a@b.c")
            )]
        );
        assert_eq!(
            r.dropped,
            vec![
                (
                    HeaderName::from_static("x-teams"),
                    DropReason::SeparatorInItem
                ),
                (
                    HeaderName::from_static("x-name"),
                    DropReason::ControlCharacter
                ),
            ]
        );
        assert_eq!(
            r.absent,
            ["x-teams", "x-name", "x-groups"].map(HeaderName::from_static)
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                "\\PC*|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{2028}\\u{2029}a-z]{0,20}"
                    .prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn emitted_values_never_hold_control_characters(v in any_json(), json in any::<bool>()) {
                let enc = if json { ClaimEncoding::Json } else { ClaimEncoding::Text { join: ",".into() } };
                if let Ok(Some(text)) = encode(&v, &enc)
                    && let Ok(value) = sanitise(&text)
                {
                    prop_assert!(value.as_bytes().iter().all(|b| *b >= 0x20 && *b != 0x7f));
                    let text = String::from_utf8_lossy(value.as_bytes());
                    prop_assert!(!text.chars().any(char::is_control));
                    prop_assert!(!text.contains(['\u{2028}', '\u{2029}', '\u{85}']), "{:?}", text);
                    prop_assert!(value.len() <= MAX_VALUE_BYTES);
                }
            }

            /// A list emitted as text splits back, on its separator as a parser reads it,
            /// into exactly its items.
            #[test]
            fn a_joined_list_splits_back_into_its_items(
                items in prop::collection::vec("[a-z ,;|\t]{1,6}", 1..6),
                separator in prop::sample::select(vec![",", ", ", ";", "|", " | ", " "]),
            ) {
                if let Ok(Some(text)) = encode(&json!(items), &join(separator)) {
                    let pieces: Vec<&str> = match separator.trim() {
                        "" => text.split(separator).collect(),
                        core => text.split(core).collect(),
                    };
                    prop_assert_eq!(pieces.len(), items.len(), "{:?} -> {:?}", items, text);
                    for (piece, item) in pieces.iter().zip(&items) {
                        prop_assert_eq!(piece.trim(), item.trim());
                    }
                }
            }

            #[test]
            fn a_separator_anywhere_drops_the_value(
                before in "\\PC{0,20}",
                sep in prop::sample::select(vec!['\u{2028}', '\u{2029}', '\u{85}', '\n', '\r']),
                after in "\\PC{0,20}",
            ) {
                prop_assert_eq!(sanitise(&format!("{before}{sep}{after}")), Err(DropReason::ControlCharacter));
            }
        }
    }
}
