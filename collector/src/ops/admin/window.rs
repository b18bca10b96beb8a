//! `--auto-defrag-window`: when automatic defragmentation may start, in UTC.
//!
//! Format: `[DAYS ]HH:MM-HH:MM`, e.g. `02:00-04:00` (every day) or `Sat,Sun 01:30-05:00`.
//! DAYS is a comma-separated list of `Mon`…`Sun`. The end may be `24:00`; an end earlier than
//! the start wraps past midnight (`Sat 23:00-01:00` runs from Saturday 23:00 to Sunday 01:00).
//! The window bounds when a run may *start*; a run that started inside it finishes.

use std::{fmt, str::FromStr};

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A weekly maintenance window in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Bit i set: day i (Monday = 0) is in.
    days: u8,
    /// Minutes after midnight.
    start: u16,
    /// Minutes after midnight (1440 = 24:00).
    end: u16,
}

fn minutes(s: &str, allow_24: bool) -> Result<u16, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected HH:MM"))?;
    let digits = |t: &str, max_len: usize| {
        !t.is_empty() && t.len() <= max_len && t.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
        return Err(format!("{s:?}: expected HH:MM"));
    }
    let (h, m): (u16, u16) = (h.parse().unwrap_or(99), m.parse().unwrap_or(99));
    if m >= 60 {
        return Err(format!("{s:?}: minutes must be 00-59"));
    }
    match (h, m) {
        (24, 0) if allow_24 => Ok(1440),
        (h, m) if h < 24 => Ok(h * 60 + m),
        _ => Err(format!("{s:?}: hour must be 00-23 (or 24:00 as an end)")),
    }
}

impl FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (days, times) = match s.rsplit_once(' ') {
            Some((d, t)) => (Some(d.trim()), t),
            None => (None, s),
        };
        let days = match days {
            None => 0x7f,
            Some(list) => list.split(',').try_fold(0u8, |acc, d| {
                let d = d.trim();
                DAY_NAMES
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(d))
                    .map(|i| acc | (1 << i))
                    .ok_or_else(|| format!("{d:?}: not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
            })?,
        };
        let (start, end) = times.split_once('-').ok_or_else(|| {
            format!("{s:?}: expected [DAYS ]HH:MM-HH:MM (UTC), e.g. Sat 02:00-04:00")
        })?;
        let (start, end) = (minutes(start.trim(), false)?, minutes(end.trim(), true)?);
        if start == end {
            return Err(format!("{s:?}: the window is empty (start equals end)"));
        }
        Ok(Self { days, start, end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days != 0x7f {
            let days: Vec<&str> = (0..7)
                .filter(|i| self.days & (1 << i) != 0)
                .map(|i| DAY_NAMES[i])
                .collect();
            write!(f, "{} ", days.join(","))?;
        }
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02} UTC",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

impl Window {
    /// Every day, all day.
    pub const ALWAYS: Self = Self {
        days: 0x7f,
        start: 0,
        end: 1440,
    };

    fn day_in(&self, day: u64) -> bool {
        self.days & (1 << (day % 7)) != 0
    }

    /// Whether `now_ms` (Unix ms) is inside the window.
    pub fn contains(&self, now_ms: u64) -> bool {
        let minute_of_day = (now_ms / 60_000 % 1440) as u16;
        // 1970-01-01 was a Thursday (day 3 with Monday = 0).
        let day = (now_ms / 86_400_000 + 3) % 7;
        if self.start < self.end {
            self.day_in(day) && (self.start..self.end).contains(&minute_of_day)
        } else {
            (self.day_in(day) && minute_of_day >= self.start)
                || (self.day_in(day + 6) && minute_of_day < self.end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of 2026-11-28 (a Saturday) at `h:m` UTC.
    fn sat(h: u64, m: u64) -> u64 {
        (20_785 * 86_400 + h * 3600 + m * 60) * 1000
    }

    #[test]
    fn windows_parse_and_contain_the_right_times() {
        assert_eq!((20_785 + 3) % 7, 5, "2026-11-28 is a Saturday");
        let w: Window = "02:00-04:00".parse().unwrap();
        assert!(w.contains(sat(2, 0)) && w.contains(sat(3, 59)));
        assert!(!w.contains(sat(4, 0)) && !w.contains(sat(1, 59)));
        let w: Window = "Sat 02:00-04:00".parse().unwrap();
        assert!(w.contains(sat(2, 30)));
        assert!(!w.contains(sat(2, 30) + 86_400_000));
        assert_eq!(w.to_string(), "Sat 02:00-04:00 UTC");
        let wrap: Window = "sat,Sun 23:00-01:00".parse().unwrap();
        assert!(wrap.contains(sat(23, 30)));
        assert!(wrap.contains(sat(0, 30) + 86_400_000), "Sunday 00:30");
        assert!(
            !wrap.contains(sat(0, 30)),
            "Saturday 00:30 belongs to Friday's night"
        );
        let all: Window = "00:00-24:00".parse().unwrap();
        assert_eq!(all, Window::ALWAYS);
        for bad in [
            "",
            "2-4",
            "02:00",
            "25:00-26:00",
            "02:00-02:00",
            "Xyz 01:00-02:00",
            "01:0-02:00",
            "24:00-01:00",
        ] {
            assert!(bad.parse::<Window>().is_err(), "{bad:?} accepted");
        }
    }
}
