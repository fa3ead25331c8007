//! Field paths (`PID-5.1`, `OBX(3)-5`, `PID-3(2).1`) and locations inside a message.

use std::fmt;
use std::str::FromStr;

/// A parsed field path such as `PID-5.1`, `PID-3(2).1`, `OBX(3)-5` or `PID-5.1.2`.
///
/// Grammar: `SEG[(occurrence)]-field[(repetition)][.component[.subcomponent]]`, every index
/// 1-based as in the standard. `SEG` is a three-character segment id (`A-Z`, `0-9`);
/// `occurrence` picks among segments with that id (default 1). Without a repetition the path
/// means the whole field, and a component or subcomponent is taken from the first repetition.
/// `MSH-1` is the field separator and `MSH-2` the encoding characters, as in the standard.
///
/// Parse once with [`str::parse`] and resolve many times with
/// [`Message::lookup`](crate::hl7::Message::lookup), or pass the string to
/// [`Message::get`](crate::hl7::Message::get).
///
/// # Examples
///
/// ```
/// use mllp::hl7::FieldPath;
/// let path: FieldPath = "OBX(3)-5(2).1.2".parse().unwrap();
/// assert_eq!(path.segment(), "OBX");
/// assert_eq!(path.occurrence(), 3);
/// assert_eq!((path.field(), path.repetition(), path.component(), path.subcomponent()),
///            (5, Some(2), Some(1), Some(2)));
/// assert_eq!(path.to_string(), "OBX(3)-5(2).1.2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldPath {
    pub(crate) segment: [u8; 3],
    pub(crate) occurrence: usize,
    pub(crate) field: usize,
    pub(crate) repetition: Option<usize>,
    pub(crate) component: Option<usize>,
    pub(crate) subcomponent: Option<usize>,
}

/// Why a field path string could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not follow `SEG[(n)]-field[(n)][.component[.subcomponent]]` at this byte
    /// offset (bad segment id, missing `-`, a non-digit, an unclosed parenthesis, trailing text,
    /// or an index too large).
    #[error("invalid field path at byte {position}")]
    Syntax {
        /// Byte offset in the path where parsing stopped.
        position: usize,
    },
    /// An index is 0; HL7 indexes start at 1.
    #[error("field path index at byte {position} is zero")]
    ZeroIndex {
        /// Byte offset of the zero.
        position: usize,
    },
}

impl FieldPath {
    /// The segment id, e.g. `"PID"`.
    pub fn segment(&self) -> &str {
        // The parser only accepts ASCII uppercase letters and digits.
        std::str::from_utf8(&self.segment).unwrap_or("")
    }

    /// Which segment with that id (1 = the first).
    pub const fn occurrence(&self) -> usize {
        self.occurrence
    }

    /// The field number (`MSH-1` is the field separator).
    pub const fn field(&self) -> usize {
        self.field
    }

    /// The repetition, when the path names one.
    pub const fn repetition(&self) -> Option<usize> {
        self.repetition
    }

    /// The component, when the path names one.
    pub const fn component(&self) -> Option<usize> {
        self.component
    }

    /// The subcomponent, when the path names one.
    pub const fn subcomponent(&self) -> Option<usize> {
        self.subcomponent
    }
}

/// Reads a decimal index starting at `*at`; advances `*at` past it.
fn index(s: &[u8], at: &mut usize) -> Result<usize, PathError> {
    let start = *at;
    let mut value: usize = 0;
    while let Some(d) = s.get(*at).filter(|b| b.is_ascii_digit()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(usize::from(d - b'0')))
            .filter(|v| *v <= u32::MAX as usize)
            .ok_or(PathError::Syntax { position: *at })?;
        *at += 1;
    }
    if *at == start {
        return Err(PathError::Syntax { position: start });
    }
    if value == 0 {
        return Err(PathError::ZeroIndex { position: start });
    }
    Ok(value)
}

/// Reads `(n)` if the next byte opens a parenthesis.
fn parenthesized(s: &[u8], at: &mut usize) -> Result<Option<usize>, PathError> {
    if s.get(*at) != Some(&b'(') {
        return Ok(None);
    }
    *at += 1;
    let n = index(s, at)?;
    if s.get(*at) != Some(&b')') {
        return Err(PathError::Syntax { position: *at });
    }
    *at += 1;
    Ok(Some(n))
}

/// Reads `.n` if the next byte is a dot.
fn dotted(s: &[u8], at: &mut usize) -> Result<Option<usize>, PathError> {
    if s.get(*at) != Some(&b'.') {
        return Ok(None);
    }
    *at += 1;
    index(s, at).map(Some)
}

pub(crate) fn is_segment_id(id: &[u8]) -> bool {
    id.len() == 3
        && id
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl FromStr for FieldPath {
    type Err = PathError;

    fn from_str(path: &str) -> Result<Self, PathError> {
        let s = path.as_bytes();
        let Some(id) = s.get(..3).filter(|id| is_segment_id(id)) else {
            return Err(PathError::Syntax { position: 0 });
        };
        let segment = [id[0], id[1], id[2]];
        let mut at = 3;
        let occurrence = parenthesized(s, &mut at)?.unwrap_or(1);
        if s.get(at) != Some(&b'-') {
            return Err(PathError::Syntax { position: at });
        }
        at += 1;
        let field = index(s, &mut at)?;
        let repetition = parenthesized(s, &mut at)?;
        let component = dotted(s, &mut at)?;
        let subcomponent = if component.is_some() {
            dotted(s, &mut at)?
        } else {
            None
        };
        if at != s.len() {
            return Err(PathError::Syntax { position: at });
        }
        Ok(FieldPath {
            segment,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

impl fmt::Display for FieldPath {
    /// The canonical form: the occurrence only when it is not 1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment())?;
        if self.occurrence != 1 {
            write!(f, "({})", self.occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if let Some(r) = self.repetition {
            write!(f, "({r})")?;
        }
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

/// Where in a message something is: the content of ERR-2 (error location, data type ERL) and,
/// before v2.5, of the first components of ERR-1.
///
/// Every index is 1-based. It names positions only, never content, so it is safe to log.
///
/// # Examples
///
/// ```
/// use mllp::hl7::Location;
/// let loc = Location::new("PID", 1).field(5).component(1);
/// assert_eq!(loc.to_string(), "PID(1)-5.1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Location {
    /// The segment id (ERL.1), e.g. `"PID"`.
    pub segment: String,
    /// Which segment with that id, 1 for the first (ERL.2, segment sequence).
    pub sequence: usize,
    /// The field (ERL.3, field position), if the location is that precise.
    pub field: Option<usize>,
    /// The field repetition (ERL.4).
    pub repetition: Option<usize>,
    /// The component (ERL.5).
    pub component: Option<usize>,
    /// The subcomponent (ERL.6).
    pub subcomponent: Option<usize>,
}

impl Location {
    /// A whole segment: the `sequence`-th segment with id `segment`.
    pub fn new(segment: impl Into<String>, sequence: usize) -> Self {
        Location {
            segment: segment.into(),
            sequence,
            field: None,
            repetition: None,
            component: None,
            subcomponent: None,
        }
    }

    /// Narrows the location to a field.
    #[must_use]
    pub fn field(mut self, field: usize) -> Self {
        self.field = Some(field);
        self
    }

    /// Narrows the location to a field repetition.
    #[must_use]
    pub fn repetition(mut self, repetition: usize) -> Self {
        self.repetition = Some(repetition);
        self
    }

    /// Narrows the location to a component.
    #[must_use]
    pub fn component(mut self, component: usize) -> Self {
        self.component = Some(component);
        self
    }

    /// Narrows the location to a subcomponent.
    #[must_use]
    pub fn subcomponent(mut self, subcomponent: usize) -> Self {
        self.subcomponent = Some(subcomponent);
        self
    }
}

impl From<&FieldPath> for Location {
    fn from(path: &FieldPath) -> Self {
        Location {
            segment: path.segment().to_owned(),
            sequence: path.occurrence,
            field: Some(path.field),
            repetition: path.repetition,
            component: path.component,
            subcomponent: path.subcomponent,
        }
    }
}

impl From<FieldPath> for Location {
    fn from(path: FieldPath) -> Self {
        Location::from(&path)
    }
}

impl fmt::Display for Location {
    /// Path notation with the sequence always shown: `PID(1)-5(2).1.3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.segment, self.sequence)?;
        if let Some(field) = self.field {
            write!(f, "-{field}")?;
        }
        if let Some(r) = self.repetition {
            write!(f, "({r})")?;
        }
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FieldPath, PathError> {
        s.parse()
    }

    /// Every form from the standard's usage parses to the right indexes.
    #[test]
    fn parses_all_path_forms() {
        type Indexes = (usize, usize, Option<usize>, Option<usize>, Option<usize>);
        let cases: [(&str, Indexes); 7] = [
            ("PID-5", (1, 5, None, None, None)),
            ("PID-5.1", (1, 5, None, Some(1), None)),
            ("PID-3(2).1", (1, 3, Some(2), Some(1), None)),
            ("OBX(3)-5", (3, 5, None, None, None)),
            ("MSH-9.2", (1, 9, None, Some(2), None)),
            ("PID-5.1.2", (1, 5, None, Some(1), Some(2))),
            ("ZX1(12)-105(3).20.7", (12, 105, Some(3), Some(20), Some(7))),
        ];
        for (text, (occ, field, rep, comp, sub)) in cases {
            let p = parse(text).unwrap();
            assert_eq!(
                (
                    p.occurrence(),
                    p.field(),
                    p.repetition(),
                    p.component(),
                    p.subcomponent()
                ),
                (occ, field, rep, comp, sub),
                "{text}"
            );
            assert_eq!(p.to_string(), text.replace("(1)-", "-"));
        }
    }

    /// Malformed paths are refused with the byte offset where they went wrong.
    #[test]
    fn rejects_malformed_paths_with_position() {
        for (text, position) in [
            ("", 0),
            ("PI-5", 0),
            ("pid-5", 0),
            ("PID", 3),
            ("PID5", 3),
            ("PID-", 4),
            ("PID-x", 4),
            ("PID-5.", 6),
            ("PID-5(2", 7),
            ("PID-5.1.2.3", 9),
            ("PID-5 ", 5),
            ("PID(-5", 4),
            ("PID-99999999999999999999", 13),
        ] {
            assert_eq!(parse(text), Err(PathError::Syntax { position }), "{text}");
        }
    }

    /// Index 0 is refused: HL7 positions start at 1.
    #[test]
    fn rejects_zero_indexes() {
        assert_eq!(parse("PID-0"), Err(PathError::ZeroIndex { position: 4 }));
        assert_eq!(parse("OBX(0)-5"), Err(PathError::ZeroIndex { position: 4 }));
        assert_eq!(parse("PID-5.0"), Err(PathError::ZeroIndex { position: 6 }));
    }

    /// A location built from a path keeps every index, and prints in path notation.
    #[test]
    fn location_from_path_keeps_indexes() {
        let loc = Location::from(parse("OBX(2)-5(3).1.4").unwrap());
        assert_eq!(
            loc,
            Location::new("OBX", 2)
                .field(5)
                .repetition(3)
                .component(1)
                .subcomponent(4)
        );
        assert_eq!(loc.to_string(), "OBX(2)-5(3).1.4");
    }
}
