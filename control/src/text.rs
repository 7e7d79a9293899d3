//! The one rule for text people give us (key names and descriptions, revoke reasons, token
//! names, account names): no character that can make the text lie about itself. Every write
//! path calls [`check`]; the dashboard shows what was stored before the rule with the same set
//! made visible (`control/assets/lib.js`, `userText`), and a test checks that the two sets are
//! one (`control/tests/text_rule.rs`).
//!
//! Refused: Unicode's control characters (Cc: NUL, ESC, CR, LF...), format characters (Cf: the
//! bidirectional overrides, embeddings, isolates and marks, zero-width characters, tags...),
//! the line and paragraph separators (Zl, Zp), every other default-ignorable code point (what a
//! renderer draws as nothing: variation selectors, the Hangul fillers, the combining grapheme
//! joiner...) and noncharacters. A name stored as U+202E followed by "noitcudorp" renders as
//! "production"; "Prod", U+200B, " key" looks like "Prod key"; a CR/LF in a reason forges a line
//! in the audit view. Visible text, emoji and every script stay allowed.
//!
//! It lives in `control`, not `shared`: only the control plane takes such text, and the edge
//! never reads it. The table is small and checked against the Unicode data of the JavaScript
//! engine the dashboard runs on, so no Unicode crate is needed.

use crate::error::AppError;

/// Why a character is refused: what a person should be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A control character (Cc): NUL, ESC, CR, LF, TAB, DEL, the C1 controls.
    Control,
    /// A bidirectional override, embedding, isolate or mark: reorders the text around it.
    Bidi,
    /// A zero-width character: joins or splits text without showing.
    ZeroWidth,
    /// A line or paragraph separator.
    LineBreak,
    /// Another format character (Cf).
    Format,
    /// Another character that renders as nothing (Unicode's default-ignorable code points).
    Invisible,
    /// A noncharacter (U+FFFE, U+FFFF, U+FDD0..U+FDEF and their kin in every plane).
    Noncharacter,
}

impl Class {
    /// The stable name the API reports (`reason` of the refusal).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::Bidi => "bidi",
            Self::ZeroWidth => "zero_width",
            Self::LineBreak => "line_break",
            Self::Format => "format",
            Self::Invisible => "invisible",
            Self::Noncharacter => "noncharacter",
        }
    }

    /// In words, for the problem's `detail`.
    const fn words(self) -> &'static str {
        match self {
            Self::Control => "a control character",
            Self::Bidi => "a bidirectional control",
            Self::ZeroWidth => "a zero-width character",
            Self::LineBreak => "a line break",
            Self::Format => "a format character",
            Self::Invisible => "an invisible character",
            Self::Noncharacter => "a noncharacter",
        }
    }
}

/// One range of refused code points: first, last, Unicode general category, class.
type Range = (u32, u32, &'static str, Class);

use Class::{Bidi, Control, Format, Invisible, LineBreak, ZeroWidth};

/// Every refused code point but the noncharacters, in order (as of Unicode 17.0).
const REFUSED: &[Range] = &[
    (0x0000, 0x001F, "Cc", Control),
    (0x007F, 0x009F, "Cc", Control),
    (0x00AD, 0x00AD, "Cf", Format),
    (0x034F, 0x034F, "Mn", Invisible),
    (0x0600, 0x0605, "Cf", Format),
    (0x061C, 0x061C, "Cf", Bidi),
    (0x06DD, 0x06DD, "Cf", Format),
    (0x070F, 0x070F, "Cf", Format),
    (0x0890, 0x0891, "Cf", Format),
    (0x08E2, 0x08E2, "Cf", Format),
    (0x115F, 0x1160, "Lo", Invisible),
    (0x17B4, 0x17B5, "Mn", Invisible),
    (0x180B, 0x180D, "Mn", Invisible),
    (0x180E, 0x180E, "Cf", Format),
    (0x180F, 0x180F, "Mn", Invisible),
    (0x200B, 0x200D, "Cf", ZeroWidth),
    (0x200E, 0x200F, "Cf", Bidi),
    (0x2028, 0x2028, "Zl", LineBreak),
    (0x2029, 0x2029, "Zp", LineBreak),
    (0x202A, 0x202E, "Cf", Bidi),
    (0x2060, 0x2060, "Cf", ZeroWidth),
    (0x2061, 0x2064, "Cf", Format),
    (0x2065, 0x2065, "Cn", Invisible),
    (0x2066, 0x2069, "Cf", Bidi),
    (0x206A, 0x206F, "Cf", Format),
    (0x3164, 0x3164, "Lo", Invisible),
    (0xFE00, 0xFE0F, "Mn", Invisible),
    (0xFEFF, 0xFEFF, "Cf", ZeroWidth),
    (0xFFA0, 0xFFA0, "Lo", Invisible),
    (0xFFF0, 0xFFF8, "Cn", Invisible),
    (0xFFF9, 0xFFFB, "Cf", Format),
    (0x110BD, 0x110BD, "Cf", Format),
    (0x110CD, 0x110CD, "Cf", Format),
    (0x13430, 0x1343F, "Cf", Format),
    (0x1BCA0, 0x1BCA3, "Cf", Format),
    (0x1D173, 0x1D17A, "Cf", Format),
    (0xE0000, 0xE0000, "Cn", Invisible),
    (0xE0001, 0xE0001, "Cf", Format),
    (0xE0002, 0xE001F, "Cn", Invisible),
    (0xE0020, 0xE007F, "Cf", Format),
    (0xE0080, 0xE00FF, "Cn", Invisible),
    (0xE0100, 0xE01EF, "Mn", Invisible),
    (0xE01F0, 0xE0FFF, "Cn", Invisible),
];

/// The names of the refused characters people meet (the C0 controls by their aliases).
const C0_NAMES: [&str; 32] = [
    "NULL",
    "START OF HEADING",
    "START OF TEXT",
    "END OF TEXT",
    "END OF TRANSMISSION",
    "ENQUIRY",
    "ACKNOWLEDGE",
    "BELL",
    "BACKSPACE",
    "CHARACTER TABULATION",
    "LINE FEED",
    "LINE TABULATION",
    "FORM FEED",
    "CARRIAGE RETURN",
    "SHIFT OUT",
    "SHIFT IN",
    "DATA LINK ESCAPE",
    "DEVICE CONTROL ONE",
    "DEVICE CONTROL TWO",
    "DEVICE CONTROL THREE",
    "DEVICE CONTROL FOUR",
    "NEGATIVE ACKNOWLEDGE",
    "SYNCHRONOUS IDLE",
    "END OF TRANSMISSION BLOCK",
    "CANCEL",
    "END OF MEDIUM",
    "SUBSTITUTE",
    "ESCAPE",
    "INFORMATION SEPARATOR FOUR",
    "INFORMATION SEPARATOR THREE",
    "INFORMATION SEPARATOR TWO",
    "INFORMATION SEPARATOR ONE",
];

const NAMES: &[(u32, &str)] = &[
    (0x007F, "DELETE"),
    (0x0085, "NEXT LINE"),
    (0x00AD, "SOFT HYPHEN"),
    (0x034F, "COMBINING GRAPHEME JOINER"),
    (0x061C, "ARABIC LETTER MARK"),
    (0x115F, "HANGUL CHOSEONG FILLER"),
    (0x1160, "HANGUL JUNGSEONG FILLER"),
    (0x180E, "MONGOLIAN VOWEL SEPARATOR"),
    (0x200B, "ZERO WIDTH SPACE"),
    (0x200C, "ZERO WIDTH NON-JOINER"),
    (0x200D, "ZERO WIDTH JOINER"),
    (0x200E, "LEFT-TO-RIGHT MARK"),
    (0x200F, "RIGHT-TO-LEFT MARK"),
    (0x2028, "LINE SEPARATOR"),
    (0x2029, "PARAGRAPH SEPARATOR"),
    (0x202A, "LEFT-TO-RIGHT EMBEDDING"),
    (0x202B, "RIGHT-TO-LEFT EMBEDDING"),
    (0x202C, "POP DIRECTIONAL FORMATTING"),
    (0x202D, "LEFT-TO-RIGHT OVERRIDE"),
    (0x202E, "RIGHT-TO-LEFT OVERRIDE"),
    (0x2060, "WORD JOINER"),
    (0x2061, "FUNCTION APPLICATION"),
    (0x2062, "INVISIBLE TIMES"),
    (0x2063, "INVISIBLE SEPARATOR"),
    (0x2064, "INVISIBLE PLUS"),
    (0x2066, "LEFT-TO-RIGHT ISOLATE"),
    (0x2067, "RIGHT-TO-LEFT ISOLATE"),
    (0x2068, "FIRST STRONG ISOLATE"),
    (0x2069, "POP DIRECTIONAL ISOLATE"),
    (0x3164, "HANGUL FILLER"),
    (0xFEFF, "ZERO WIDTH NO-BREAK SPACE"),
    (0xFFA0, "HALFWIDTH HANGUL FILLER"),
];

/// A refused character found in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The character.
    pub ch: char,
    /// Its position: the index of the character (Unicode scalar value, from 0) in the text as
    /// it was sent.
    pub index: usize,
    /// Why it is refused.
    pub class: Class,
    /// Its Unicode general category (`Cc`, `Cf`, `Zl`, `Mn`, ...).
    pub category: &'static str,
}

impl Refused {
    /// `U+202E`.
    pub fn code_point(&self) -> String {
        format!("U+{:04X}", u32::from(self.ch))
    }

    /// Its Unicode name (an alias for the C0 controls), if it is one people meet.
    pub fn name(&self) -> Option<&'static str> {
        let cp = u32::from(self.ch);
        if let Some(name) = usize::try_from(cp).ok().and_then(|i| C0_NAMES.get(i)) {
            return Some(name);
        }
        NAMES
            .binary_search_by_key(&cp, |(c, _)| *c)
            .ok()
            .map(|i| NAMES[i].1)
    }

    /// One sentence: `name holds U+202E RIGHT-TO-LEFT OVERRIDE (Cf, a bidirectional control)
    /// at character 0`.
    pub fn describe(&self, field: &str) -> String {
        let name = self.name().map(|n| format!(" {n}")).unwrap_or_default();
        format!(
            "{field} holds {}{name} ({}, {}) at character {}: control, format and invisible \
             characters are refused",
            self.code_point(),
            self.category,
            self.class.words(),
            self.index
        )
    }
}

/// The rule applied to the field `field` as the API answers it: a 422 `validation_failed`
/// naming the field, the character (`character` as `U+XXXX`, `character_name` where it has a
/// common one, `category`, `reason`) and its `position` (character index in the text as sent).
pub fn guard(field: &'static str, text: &str) -> Result<(), AppError> {
    check(text).map_err(|r| {
        AppError::validation(r.describe(field))
            .with_field("field", field)
            .with_field("character", r.code_point())
            .with_field("character_name", r.name())
            .with_field("category", r.category)
            .with_field("reason", r.class.name())
            .with_field("position", r.index)
    })
}

/// How `c` is refused, if it is: its class and general category.
pub fn classify(c: char) -> Option<(Class, &'static str)> {
    let cp = u32::from(c);
    if (0xFDD0..=0xFDEF).contains(&cp) || cp & 0xFFFE == 0xFFFE {
        return Some((Class::Noncharacter, "Cn"));
    }
    let i = REFUSED.partition_point(|&(_, last, _, _)| last < cp);
    REFUSED
        .get(i)
        .filter(|&&(first, _, _, _)| first <= cp)
        .map(|&(_, _, category, class)| (class, category))
}

/// The first refused character of `text`, if any.
pub fn check(text: &str) -> Result<(), Refused> {
    match text
        .chars()
        .enumerate()
        .find_map(|(index, ch)| classify(ch).map(|c| (index, ch, c)))
    {
        None => Ok(()),
        Some((index, ch, (class, category))) => Err(Refused {
            ch,
            index,
            class,
            category,
        }),
    }
}

/// `text` with every refused character replaced by a visible `⟨U+XXXX⟩`: how the dashboard
/// shows text stored before the rule (`userText` in `control/assets/lib.js` for the pages'
/// scripts).
pub fn visible(text: &str) -> String {
    text.chars()
        .map(|c| match classify(c) {
            Some(_) => format!("⟨U+{:04X}⟩", u32::from(c)),
            None => c.to_string(),
        })
        .collect()
}

/// The refused BMP code points as a regular-expression class body (`\u0000-\u001f...`): the
/// OpenAPI patterns of the fields the rule guards. Code points past U+FFFF have no spelling
/// that ECMA-262 without the `u` flag and Python's `re` read alike, so they are left to the
/// service's 422 (and to `docs/security.md`).
pub fn bmp_class() -> String {
    let mut ranges: Vec<(u32, u32)> = REFUSED
        .iter()
        .filter(|r| r.0 <= 0xFFFF)
        .map(|r| (r.0, r.1))
        .chain([(0xFDD0, 0xFDEF), (0xFFFE, 0xFFFF)])
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (first, last) in ranges {
        match merged.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
        .iter()
        .map(|&(first, last)| {
            if first == last {
                format!("\\u{first:04x}")
            } else {
                format!("\\u{first:04x}-\\u{last:04x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_disjoint() {
        for pair in REFUSED.windows(2) {
            assert!(pair[0].0 <= pair[0].1 && pair[0].1 < pair[1].0, "{pair:?}");
        }
        for pair in NAMES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{pair:?}");
        }
        for &(cp, _) in NAMES {
            assert!(classify(char::from_u32(cp).unwrap()).is_some(), "{cp:X}");
        }
    }

    #[test]
    fn each_class_is_refused_with_its_position() {
        let cases: &[(&str, u32, usize, Class, &str)] = &[
            ("\u{202E}noitcudorp", 0x202E, 0, Class::Bidi, "Cf"),
            ("ab\u{2066}c", 0x2066, 2, Class::Bidi, "Cf"),
            ("x\u{200F}", 0x200F, 1, Class::Bidi, "Cf"),
            ("\u{061C}", 0x061C, 0, Class::Bidi, "Cf"),
            ("Prod\u{200B} key", 0x200B, 4, Class::ZeroWidth, "Cf"),
            ("é\u{FEFF}", 0xFEFF, 1, Class::ZeroWidth, "Cf"),
            ("a\u{2060}", 0x2060, 1, Class::ZeroWidth, "Cf"),
            ("nul\0", 0, 3, Class::Control, "Cc"),
            ("esc\u{1b}[2J", 0x1B, 3, Class::Control, "Cc"),
            ("line\r\nforged", 0x0D, 4, Class::Control, "Cc"),
            ("tab\there", 0x09, 3, Class::Control, "Cc"),
            ("c1\u{85}", 0x85, 2, Class::Control, "Cc"),
            ("a\u{2028}b", 0x2028, 1, Class::LineBreak, "Zl"),
            ("a\u{2029}b", 0x2029, 1, Class::LineBreak, "Zp"),
            ("soft\u{AD}", 0xAD, 4, Class::Format, "Cf"),
            ("tag\u{E0041}", 0xE0041, 3, Class::Format, "Cf"),
            ("vs\u{FE0F}", 0xFE0F, 2, Class::Invisible, "Mn"),
            ("\u{3164}", 0x3164, 0, Class::Invisible, "Lo"),
            ("non\u{FFFF}", 0xFFFF, 3, Class::Noncharacter, "Cn"),
            ("non\u{10FFFE}", 0x10FFFE, 3, Class::Noncharacter, "Cn"),
            ("non\u{FDD0}", 0xFDD0, 3, Class::Noncharacter, "Cn"),
        ];
        for &(text, cp, index, class, category) in cases {
            let refused = check(text).unwrap_err();
            assert_eq!(u32::from(refused.ch), cp, "{text:?}");
            assert_eq!(refused.index, index, "{text:?}");
            assert_eq!(refused.class, class, "{text:?}");
            assert_eq!(refused.category, category, "{text:?}");
        }
    }

    #[test]
    fn visible_text_of_every_script_passes() {
        for text in [
            "Production key",
            "Clé de production – été",
            "מפתח ייצור",
            "مفتاح الإنتاج",
            "本番キー　東京",
            "🔑 deploy",
            "👩‍💻",
            "a b\u{A0}c",
        ] {
            // The emoji ZWJ sequence is the one exception worth naming: it is refused.
            if text.contains('\u{200D}') {
                assert!(check(text).is_err());
            } else {
                assert_eq!(check(text), Ok(()), "{text:?}");
            }
        }
    }

    #[test]
    fn the_refusal_names_the_character_and_where() {
        let refused = check("ok\u{202E}").unwrap_err();
        assert_eq!(refused.code_point(), "U+202E");
        assert_eq!(refused.name(), Some("RIGHT-TO-LEFT OVERRIDE"));
        assert_eq!(
            refused.describe("name"),
            "name holds U+202E RIGHT-TO-LEFT OVERRIDE (Cf, a bidirectional control) at \
             character 2: control, format and invisible characters are refused"
        );
        assert_eq!(check("\u{1b}").unwrap_err().name(), Some("ESCAPE"));
        assert_eq!(visible("a\u{202E}b\nc"), "a⟨U+202E⟩b⟨U+000A⟩c");
        assert_eq!(check("\u{600}").unwrap_err().name(), None);
    }

    #[test]
    fn the_schema_class_covers_the_bmp_part() {
        let class = bmp_class();
        assert!(class.starts_with("\\u0000-\\u001f\\u007f-\\u009f\\u00ad"));
        assert!(class.contains("\\u2028-\\u202e") && class.contains("\\ufffe-\\uffff"));
        for escape in class.split("\\u").skip(1) {
            assert!(escape.len() >= 4 && escape[..4].chars().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
