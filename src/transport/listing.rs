//! Directory listings: MLSD when the server offers it, else LIST in Unix or
//! DOS format. A name a hostile server could use to make ferry write outside
//! `local_dir` is never returned.

use chrono::{DateTime, Utc};
use suppaftp::list::ListParser;

/// One entry of a remote folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    pub name: String,
    pub size: u64,
    /// As the server reports it; LIST times are only minute- or day-precise.
    pub mtime: Option<DateTime<Utc>>,
    pub is_file: bool,
}

/// Why a name was refused.
pub fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("a folder reference")
    } else if name.contains('/') || name.contains('\\') {
        Some("contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("contains control characters")
    } else if name.starts_with('~') || name.len() > 255 {
        Some("not a plain file name")
    } else {
        None
    }
}

/// What one listing line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Entry(RemoteEntry),
    /// Nothing to report: a `total` line, `.`/`..`, a name refused as unsafe (logged).
    Skip,
    /// A line ferry cannot read: reported, so a partner's odd listing is seen.
    Unparsed,
}

/// Reads one listing line. `mlsd` says which format to expect; LIST lines
/// are tried as Unix (suppaftp's parser, then a looser one for ACL markers,
/// symlinks and odd columns) and as DOS (two- or four-digit years).
pub fn parse_line(line: &str, mlsd: bool, dir: &str) -> Line {
    if line.starts_with("total ") || line.trim().is_empty() {
        return Line::Skip;
    }
    // RFC 3659: an MLSD entry is `facts SP name` (facts end in ';'), or
    // `SP name` without facts; anything else is not an entry.
    let mlsd_shaped = line.starts_with(' ') || line.contains("; ");
    let parsed = if mlsd {
        if !mlsd_shaped {
            return Line::Unparsed;
        }
        ListParser::parse_mlsd(line).ok().map(|f| from_file(&f))
    } else {
        // ferry's own DOS reader first: suppaftp's takes a four-digit year
        // for a two-digit one and reads part of the time into the name.
        ListParser::parse_posix(line)
            .ok()
            .map(|f| from_file(&f))
            .or_else(|| loose_unix(line))
            .or_else(|| loose_dos(line))
            .or_else(|| ListParser::parse_dos(line).ok().map(|f| from_file(&f)))
    };
    let Some(entry) = parsed else {
        return Line::Unparsed;
    };
    if entry.name == "." || entry.name == ".." {
        return Line::Skip; // MLSD's cdir/pdir, `ls -a`'s entries
    }
    if let Some(why) = unsafe_name(&entry.name) {
        tracing::warn!(
            dir,
            name = entry.name.escape_debug().to_string(),
            why,
            "skipping a remote name that is not a safe file name"
        );
        return Line::Skip;
    }
    Line::Entry(entry)
}

fn from_file(file: &suppaftp::list::File) -> RemoteEntry {
    let mtime: DateTime<Utc> = file.modified().into();
    RemoteEntry {
        name: file.name().to_string(),
        size: file.size() as u64,
        mtime: (mtime.timestamp() > 0).then_some(mtime),
        is_file: file.is_file(),
    }
}

/// `-rw-r--r--+ 1 own grp 1234 Nov 24 01:50 name` (ACL marker, `@`, `.`),
/// `lrwxrwxrwx ... name -> target` (a symlink: listed, never a plain file).
fn loose_unix(line: &str) -> Option<RemoteEntry> {
    let (fields, rest) = fields(line, 8)?;
    // One run of spaces separates the time from the name; a name may start with spaces.
    let name = rest
        .strip_prefix(' ')
        .unwrap_or(rest)
        .trim_end_matches(['\r', '\n']);
    let perms = fields[0];
    let kind = perms.chars().next()?;
    if perms.len() < 10 || !"-dlbcps".contains(kind) {
        return None;
    }
    let size: u64 = fields[4].parse().ok()?;
    let month = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| fields[5].eq_ignore_ascii_case(m))?
        + 1;
    let day: u32 = fields[6].parse().ok()?;
    let (name, is_file) = match kind {
        'l' => (name.split(" -> ").next().unwrap_or(name), false),
        '-' => (name, true),
        _ => (name, false),
    };
    if name.is_empty() {
        return None;
    }
    let mtime = unix_time(month as u32, day, fields[7]);
    Some(RemoteEntry {
        name: name.to_string(),
        size,
        mtime,
        is_file,
    })
}

/// The first `n` whitespace-separated fields of `line`, and what follows them.
fn fields(line: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut rest = line;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace)?;
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    Some((out, rest))
}

/// `Mon DD HH:MM` (this year, or last year when that would be in the future)
/// or `Mon DD YYYY`, as UTC.
fn unix_time(month: u32, day: u32, t: &str) -> Option<DateTime<Utc>> {
    use chrono::{Datelike, NaiveDate, TimeZone};
    if let Some((h, m)) = t.split_once(':') {
        let now = Utc::now();
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        let at = |y: i32| {
            NaiveDate::from_ymd_opt(y, month, day)
                .and_then(|d| d.and_hms_opt(h, m, 0))
                .map(|dt| Utc.from_utc_datetime(&dt))
        };
        let this = at(now.year())?;
        if this > now + chrono::Duration::days(1) {
            at(now.year() - 1)
        } else {
            Some(this)
        }
    } else {
        let y: i32 = t.parse().ok()?;
        NaiveDate::from_ymd_opt(y, month, day)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|dt| Utc.from_utc_datetime(&dt))
    }
}

/// `11-24-2026  01:50PM  1234 name` or `<DIR>`, with two- or four-digit years.
fn loose_dos(line: &str) -> Option<RemoteEntry> {
    use chrono::{NaiveDate, NaiveTime, TimeZone};
    let (fields, rest) = fields(line, 3)?;
    let (date, time, size_or_dir) = (fields[0], fields[1], fields[2]);
    let name = rest.trim_start().trim_end_matches(['\r', '\n']);
    if name.is_empty() {
        return None;
    }
    let mut d = date.split(['-', '/']);
    let (mo, da, yr): (u32, u32, i32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let yr = match yr {
        0..=69 => 2000 + yr,
        70..=99 => 1900 + yr,
        y => y,
    };
    let time = NaiveTime::parse_from_str(time, "%I:%M%p")
        .or_else(|_| NaiveTime::parse_from_str(time, "%H:%M"))
        .ok()?;
    let mtime =
        NaiveDate::from_ymd_opt(yr, mo, da).map(|d| Utc.from_utc_datetime(&d.and_time(time)));
    let (size, is_file) = if size_or_dir.eq_ignore_ascii_case("<DIR>") {
        (0, false)
    } else {
        (size_or_dir.parse().ok()?, true)
    };
    Some(RemoteEntry {
        name: name.to_string(),
        size,
        mtime,
        is_file,
    })
}

/// Parses listing lines (see [`parse_line`]); unparseable lines are logged
/// at warning level and counted in the second value.
pub fn parse(lines: &[String], mlsd: bool, dir: &str) -> Vec<RemoteEntry> {
    parse_counted(lines, mlsd, dir).0
}

pub fn parse_counted(lines: &[String], mlsd: bool, dir: &str) -> (Vec<RemoteEntry>, u64) {
    let mut c = Collector::default();
    for line in lines {
        c.push(Some(line), mlsd, dir);
    }
    (c.entries, c.unparsed)
}

/// Builds a listing line by line, as it streams in.
#[derive(Debug, Default)]
pub struct Collector {
    pub entries: Vec<RemoteEntry>,
    /// Lines that could not be read (each logged as a warning).
    pub unparsed: u64,
    last_was_entry: bool,
}

impl Collector {
    /// Adds one line; `None` is a line too long to keep.
    pub fn push(&mut self, line: Option<&str>, mlsd: bool, dir: &str) {
        let parsed = match line {
            Some(text) => parse_line(text, mlsd, dir),
            None => Line::Unparsed,
        };
        match parsed {
            Line::Entry(e) => {
                self.entries.push(e);
                self.last_was_entry = true;
                return;
            }
            Line::Skip => {}
            Line::Unparsed => {
                self.unparsed += 1;
                warn_unparsed(dir, line.unwrap_or("(a line longer than 8 KiB)"));
                // A line that cannot be read right after an entry may be the
                // rest of that entry's name (a name with a line feed): the
                // entry is not trusted either.
                if self.last_was_entry
                    && let Some(e) = self.entries.pop()
                {
                    self.unparsed += 1;
                    warn_unparsed(dir, &e.name);
                }
            }
        }
        self.last_was_entry = false;
    }
}

/// Logs a listing line ferry cannot read (shortened, control characters escaped).
pub fn warn_unparsed(dir: &str, line: &str) {
    let shown: String = line.chars().take(200).collect();
    tracing::warn!(
        dir,
        line = shown.escape_debug().to_string(),
        "a listing line ferry cannot read; the entry is not transferred"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unix_listing_keeps_spaces_and_utf8_in_names() {
        let l = lines(&[
            "total 12",
            "-rw-r--r--    1 1000     1000         1234 Nov 24 01:50 claims batch 1.837",
            "-rw-r--r--    1 1000     1000           10 Jan 02  2025 müller-ä.835",
            "drwxr-xr-x    2 1000     1000         4096 Nov 24 01:50 processed",
        ]);
        let e = parse(&l, false, "/in");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].name, "claims batch 1.837");
        assert_eq!(e[0].size, 1234);
        assert!(e[0].is_file);
        assert_eq!(e[1].name, "müller-ä.835");
        assert!(!e[2].is_file);
    }

    #[test]
    fn dos_listing_is_understood() {
        let l = lines(&[
            "11-24-26  01:50AM                 1234 claims.837",
            "11-24-26  01:50AM       <DIR>          archive",
        ]);
        let e = parse(&l, false, "/in");
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].name.as_str(), e[0].size, e[0].is_file),
            ("claims.837", 1234, true)
        );
        assert!(!e[1].is_file);
    }

    #[test]
    fn mlsd_listing_is_understood_and_skips_folder_references() {
        let l = lines(&[
            "type=cdir;modify=20261124015000; .",
            "type=pdir;modify=20261124015000; ..",
            "type=file;size=99;modify=20261124015000; a b.999",
            "type=dir;modify=20261124015000; sub",
        ]);
        let e = parse(&l, true, "/in");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            (e[0].name.as_str(), e[0].size, e[0].is_file),
            ("a b.999", 99, true)
        );
        assert_eq!(
            e[0].mtime.unwrap().to_rfc3339(),
            "2026-11-24T01:50:00+00:00"
        );
    }

    #[test]
    fn acl_markers_symlinks_and_four_digit_dos_years_are_read() {
        let l = lines(&[
            "-rw-r--r--+   1 1000     1000         1234 Nov 24 01:50 acl.837",
            "lrwxrwxrwx    1 1000     1000           10 Nov 24 01:50 link.837 -> acl.837",
            "11-24-2026  01:50PM                 77 four.835",
            "12-01-2026  09:40AM                    9 r0.835",
            "11-24-26  01:50AM       <DIR>          archive",
            "this is not a listing line",
        ]);
        let (e, unparsed) = parse_counted(&l, false, "/in");
        let got: Vec<(&str, u64, bool)> = e
            .iter()
            .map(|e| (e.name.as_str(), e.size, e.is_file))
            .collect();
        assert_eq!(
            got,
            [
                ("acl.837", 1234, true),
                ("link.837", 10, false),
                ("four.835", 77, true),
                ("r0.835", 9, true),
            ]
        );
        // The bad line, and the entry just before it: it may be the first
        // half of a name with a line feed that the bad line continues.
        assert_eq!(unparsed, 2);
        assert_eq!(
            e[2].mtime.unwrap().to_rfc3339(),
            "2026-11-24T13:50:00+00:00"
        );
    }

    #[test]
    fn hostile_names_are_never_returned() {
        let l = lines(&[
            "type=file;size=1;modify=20261124015000; ../../etc/passwd",
            "type=file;size=1;modify=20261124015000; /etc/passwd",
            "type=file;size=1;modify=20261124015000; ..\\evil.837",
            "type=file;size=1;modify=20261124015000; bell\u{7}.837",
            "type=file;size=1;modify=20261124015000; ..",
            "type=file;size=1;modify=20261124015000; good.837",
        ]);
        let e = parse(&l, true, "/in");
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["good.837"]);
        let l = lines(&["-rw-r--r--    1 1000     1000            1 Nov 24 01:50 ../x.837"]);
        assert!(parse(&l, false, "/in").is_empty());
    }
}
