//! Shared pieces of the registry and policy checkers: positions in the file,
//! durations, and the error list they return.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// One problem in a file, with where it is and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.col, self.key, self.message
            )
        }
    }
}

/// The most issues one check reports: a file of thousands of mistakes is
/// fixed from the top, and each issue costs a scan of the text.
pub const MAX_ISSUES: usize = 200;

/// The largest registry, policy or anchor file read: a larger one (or a
/// device that never ends) is refused before it fills memory.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Read a text file of at most `MAX_FILE_BYTES`.
pub fn read_capped(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than {} MiB", MAX_FILE_BYTES / (1024 * 1024)),
        ));
    }
    String::from_utf8(buf).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// Collects issues against one file's text.
pub struct Checker<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub issues: Vec<Issue>,
    /// Issues found past MAX_ISSUES, counted but not described.
    pub more: usize,
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Checker<'a> {
        Checker {
            file,
            text,
            issues: Vec::new(),
            more: 0,
        }
    }

    /// Whether another issue would still be described (callers skip costly
    /// hints when it would not).
    pub fn has_room(&self) -> bool {
        self.issues.len() < MAX_ISSUES
    }

    /// Whether a "did you mean" hint is still worth its cost: the first
    /// issues get one, a file of thousands of mistakes does not need more.
    pub fn wants_hints(&self) -> bool {
        self.issues.len() < 10
    }

    pub fn at(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        if !self.has_room() {
            self.more += 1;
            return;
        }
        let (line, col) = line_col(self.text, span.start);
        self.issues.push(Issue {
            file: self.file.to_string(),
            line,
            col,
            key: key.into(),
            message: message.into(),
        });
    }

    /// The issues, and a last one counting those past MAX_ISSUES.
    pub fn into_issues(mut self) -> Vec<Issue> {
        if self.more > 0 {
            self.issues.push(Issue {
                file: self.file.to_string(),
                line: 0,
                col: 0,
                key: String::new(),
                message: format!("and {} more issues (the first {MAX_ISSUES} are listed)", self.more),
            });
        }
        self.issues
    }

    /// A parse or type error from the TOML deserializer.
    pub fn toml_error(&mut self, e: &toml::de::Error) {
        let span = e.span().unwrap_or(0..0);
        let mut message = e.message().trim().to_string();
        let key = key_at(self.text, span.start);
        for (from, to) in [
            ("expected f64", "expected a number"),
            ("expected i64", "expected a whole number"),
            ("expected a string", "expected a string (in quotes)"),
        ] {
            message = message.replace(from, to);
        }
        if message.starts_with("duplicate key") {
            message = format!("[{key}] is defined twice; define each one once");
        }
        self.at(span, key, message);
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// The dotted key a position belongs to, from the nearest table header and
/// the key on its line (best effort, for messages about wrong types).
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let header = |l: &str| l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
    if line.starts_with('[') {
        return header(line);
    }
    let mut table = String::new();
    for l in text[..line_start].lines() {
        let t = l.trim();
        if t.starts_with('[') {
            table = header(t);
        }
    }
    let key = if line.contains('=') {
        line.split('=').next().map(str::trim).unwrap_or("")
    } else {
        ""
    };
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// Parse "90s", "15m", "2h", "30d", "1w" (or a plain number of seconds).
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let err = || format!("{s:?} is not a duration: use a number and a unit, like 90s, 15m, 2h or 30d");
    if s.is_empty() {
        return Err(err());
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let mult = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        _ => return Err(err()),
    };
    let secs = n * mult;
    if !secs.is_finite() || secs < 0.0 {
        return Err(err());
    }
    Ok(secs)
}

/// Names for a message: all of a few, the first twenty of many.
pub fn some_of(names: &[&str]) -> String {
    if names.len() <= 20 {
        names.join(", ")
    } else {
        format!("{}, and {} more", names[..20].join(", "), names.len() - 20)
    }
}

/// The closest valid spelling, for "did you mean" hints. Options whose
/// length alone puts them out of reach are not compared, and a comparison
/// stops as soon as it is out of reach.
pub fn suggest<'b>(word: &str, options: &[&'b str]) -> Option<&'b str> {
    let w: Vec<char> = word.chars().collect();
    options
        .iter()
        .filter_map(|o| {
            let m = o.chars().count();
            let limit = 2.max(m / 3);
            if w.len().abs_diff(m) > limit {
                return None;
            }
            levenshtein_within(&w, o, limit).map(|d| (d, *o))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

/// The edit distance from `a` to `b` when it is at most `limit`.
fn levenshtein_within(a: &[char], b: &str, limit: usize) -> Option<usize> {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        // Every later row is at least this row's minimum.
        if cur.iter().min().is_some_and(|m| *m > limit) {
            return None;
        }
        prev = cur;
    }
    Some(prev[b.len()]).filter(|d| *d <= limit)
}

/// The decimal a person wrote: 0.1 is 0.1, not the binary float nearest to it.
pub fn decimal(v: f64) -> rust_decimal::Decimal {
    use std::str::FromStr;
    rust_decimal::Decimal::from_str(&v.to_string())
        .or_else(|_| rust_decimal::Decimal::from_scientific(&format!("{v:e}")))
        .map(|d| d.normalize())
        .unwrap_or_default()
}

pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90.0));
        assert_eq!(parse_duration("15m"), Ok(900.0));
        assert_eq!(parse_duration("2h"), Ok(7200.0));
        assert_eq!(parse_duration("30d"), Ok(30.0 * 86400.0));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn positions() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 11), (2, 6));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("irreversable", &["read", "reversible", "irreversible"]),
            Some("irreversible")
        );
        assert_eq!(suggest("zzz", &["read", "reversible"]), None);
    }
}
