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

/// Parses listing lines. `mlsd` says which format to expect. Unparseable
/// lines (totals, banners) and unsafe names are logged and skipped.
pub fn parse(lines: &[String], mlsd: bool, dir: &str) -> Vec<RemoteEntry> {
    let mut out = Vec::new();
    for line in lines {
        let parsed = if mlsd {
            ListParser::parse_mlsd(line)
        } else {
            ListParser::parse_posix(line).or_else(|_| ListParser::parse_dos(line))
        };
        let file = match parsed {
            Ok(f) => f,
            Err(_) => {
                if !line.starts_with("total ") {
                    tracing::debug!(
                        dir,
                        line = line.as_str(),
                        "skipping a listing line ferry cannot parse"
                    );
                }
                continue;
            }
        };
        let name = file.name().to_string();
        if mlsd && (name == "." || name == "..") {
            continue; // MLSD's cdir/pdir entries
        }
        if let Some(why) = unsafe_name(&name) {
            tracing::warn!(
                dir,
                name = name.escape_debug().to_string(),
                why,
                "skipping a remote name that is not a safe file name"
            );
            continue;
        }
        let mtime: DateTime<Utc> = file.modified().into();
        out.push(RemoteEntry {
            name,
            size: file.size() as u64,
            mtime: (mtime.timestamp() > 0).then_some(mtime),
            is_file: file.is_file(),
        });
    }
    out
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
