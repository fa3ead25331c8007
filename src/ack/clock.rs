//! MSH-7 timestamps and MSH-10 control ids for generated acknowledgments.
//!
//! Both are computed from `SystemTime` by hand rather than with a date crate: the ACK needs one
//! fixed UTC format (`YYYYMMDDHHMMSS+0000`), which is twenty lines of civil-calendar arithmetic,
//! and a dependency would add compile time and a public-version coupling for nothing else.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BufMut;

use crate::hl7::Delimiters;

/// Year, month, day of the proleptic Gregorian calendar for a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// An HL7 DTM/TS in UTC with an explicit offset, `YYYYMMDDHHMMSS+0000`, on the stack.
#[derive(Clone, Copy)]
pub(crate) struct Stamp([u8; 19]);

impl Stamp {
    /// The whole timestamp.
    pub(crate) fn as_str(&self) -> &str {
        // ASCII digits and `+`: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// As written into a message with delimiters `d`: without its `+0000` offset when `+` is
    /// one of them, or the offset would split the field.
    pub(crate) fn for_delimiters(&self, d: &Delimiters) -> &str {
        if d.is_special(b'+') {
            &self.as_str()[..14]
        } else {
            self.as_str()
        }
    }
}

/// `time` as an HL7 DTM/TS in UTC with an explicit offset: `YYYYMMDDHHMMSS+0000`.
/// Times before 1970 (a broken clock) are written as 1970-01-01.
pub(crate) fn timestamp(time: SystemTime) -> Stamp {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    // Digit by digit into a fixed buffer: every ACK carries one, and `format!` cost as much as
    // the rest of building the ACK's MSH.
    let mut out = *b"00000000000000+0000";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(4, 2, u64::from(month));
    put(6, 2, u64::from(day));
    put(8, 2, (of_day / 3600) as u64);
    put(10, 2, (of_day / 60 % 60) as u64);
    put(12, 2, (of_day % 60) as u64);
    Stamp(out)
}

const BASE36: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `n` in base 36, at least `min_width` digits, written at the end of `digits`.
fn base36(mut n: u64, min_width: usize, digits: &mut [u8; 13]) -> &[u8] {
    let mut i = digits.len();
    while n > 0 || digits.len() - i < min_width.max(1) {
        i -= 1;
        digits[i] = BASE36[(n % 36) as usize];
        n /= 36;
    }
    &digits[i..]
}

/// The process's control-id prefix: its start time in milliseconds, base 36, 8 characters
/// (36^8 ms is 89 years, so the tag wraps in 2059 and stays 8 characters).
fn process_tag() -> &'static [u8] {
    static TAG: OnceLock<Vec<u8>> = OnceLock::new();
    TAG.get_or_init(|| {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        base36(millis % 36u64.pow(8), 8, &mut [b'0'; 13]).to_vec()
    })
}

/// The process-wide count of control ids given out.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a new control id at the end of `out` (the ACK being built): `prefix`, the 8-character
/// process tag, then a process-wide counter in base 36. Without a prefix it stays within 20
/// characters (MSH-10's length before v2.5) for the first 36^12 (4.7 × 10^18) acknowledgments
/// of a process.
pub(crate) fn write_control_id(prefix: &[u8], out: &mut impl BufMut) {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    out.put_slice(prefix);
    out.put_slice(process_tag());
    out.put_slice(base36(n, 1, &mut [b'0'; 13]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Known instants format as the expected HL7 timestamps, leap days included.
    #[test]
    fn formats_known_instants() {
        let at = |secs: u64| {
            timestamp(UNIX_EPOCH + Duration::from_secs(secs))
                .as_str()
                .to_owned()
        };
        assert_eq!(at(0), "19700101000000+0000");
        assert_eq!(at(951_782_400), "20000229000000+0000");
        assert_eq!(at(1_704_164_645), "20240102030405+0000");
        assert_eq!(at(4_102_444_799), "20991231235959+0000");
        assert_eq!(
            timestamp(UNIX_EPOCH - Duration::from_secs(5)).as_str(),
            "19700101000000+0000"
        );
    }

    /// Every day from 1970 to 2100 follows the previous one in the calendar.
    #[test]
    fn civil_dates_are_consecutive() {
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for d in 1..47_482 {
            let (y, m, day) = civil_from_days(d);
            let days_in_month = match m {
                2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            assert!((1..=days_in_month).contains(&day), "{y}-{m}-{day}");
            let next_ok = (y, m, day) == (prev.0, prev.1, prev.2 + 1)
                || (day == 1 && ((y, m) == (prev.0, prev.1 + 1) || (y, m) == (prev.0 + 1, 1)));
            assert!(next_ok, "{prev:?} -> {y}-{m}-{day}");
            prev = (y, m, day);
        }
    }

    /// The `+0000` offset is left out exactly when `+` is one of the message's delimiters (it
    /// would split MSH-7 there).
    #[test]
    fn offset_is_left_out_where_plus_is_a_delimiter() {
        let stamp = timestamp(UNIX_EPOCH + Duration::from_secs(1_704_164_645));
        let usual = Delimiters::default();
        let plus = Delimiters::new(b'|', b"+~\\&").unwrap();
        assert_eq!(stamp.for_delimiters(&usual), "20240102030405+0000");
        assert_eq!(stamp.for_delimiters(&plus), "20240102030405");
    }

    /// Base 36 digits are upper case and padded to the minimum width.
    #[test]
    fn base36_pads_and_encodes() {
        let enc = |n, w| String::from_utf8(base36(n, w, &mut [b'0'; 13]).to_vec()).unwrap();
        assert_eq!(enc(0, 1), "0");
        assert_eq!(enc(35, 1), "Z");
        assert_eq!(enc(36, 4), "0010");
        assert_eq!(enc(u64::MAX, 1), "3W5E11264SGSF");
    }

    /// Control ids are distinct, ASCII alphanumeric, and at most 20 characters.
    #[test]
    fn control_ids_are_unique_and_short() {
        let ids: std::collections::HashSet<Vec<u8>> = (0..10_000)
            .map(|_| {
                let mut id = Vec::new();
                write_control_id(b"", &mut id);
                id
            })
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| id.len() <= 20 && id.iter().all(u8::is_ascii_alphanumeric))
        );
    }
}
