//! Coverage-free fuzzing on stable Rust: seeded mutations of valid inputs
//! fed to the configuration loader, the listing parser, the HASH reply
//! parser, the X12 envelope reader and the FTP reply reader (a fake server answering every command
//! with mutated replies). None may panic or hang.
//!
//! Each target runs `FERRY_FUZZ_SECS` seconds (default 3, as in CI);
//! `bash bench/fuzz.sh` runs each for 10 minutes. A crash writes its input
//! to `target/fuzz-crashes/` and fails the test; `FERRY_FUZZ_SEED` repeats a run.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::config::{Server, TlsMode};
use ferry::transport::{HashCommand, listing, parse_hash_reply};

fn seconds() -> Duration {
    Duration::from_secs_f64(
        std::env::var("FERRY_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0),
    )
}

/// Seeded mutations of the seeds: byte flips, insertions of tokens that
/// matter to parsers, deletions, duplications and splices.
struct Mutator {
    rng: fastrand::Rng,
    seeds: Vec<Vec<u8>>,
}

const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b":",
    b" ",
    b"${",
    b"}",
    b"{",
    b"[",
    b"]",
    b"'",
    b"\"",
    b"- ",
    b"..",
    b"/",
    b"\t",
    b"#",
    b"&a",
    b"*a",
    b"!!",
    b"\x00",
    b"\xff",
    b"99999999999999999999",
    b"-1",
    b"213 ",
    b"550 ",
    b"211-",
    b"227 ",
    b"(127,0,0,1,0,0)",
    b"SHA-256 ",
    b"type=file;",
    b"size=",
    b"modify=",
    b"<DIR>",
    b"AM",
    b"PM",
    b" -> ",
    b"\xc3\xa9",
    b"~",
    b"*",
    b"ISA*",
    b"GS*",
    b"ST*",
    b"SE*",
    b"GE*",
    b"IEA*",
    b"TA1*",
    b"AK2*",
    b"HL*",
    b"TRN*",
    b"STC*",
];

impl Mutator {
    fn new(target: &str, seeds: Vec<Vec<u8>>) -> Mutator {
        let seed = std::env::var("FERRY_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        eprintln!("{target}: seed {seed}");
        Mutator {
            rng: fastrand::Rng::with_seed(seed),
            seeds,
        }
    }

    fn next(&mut self) -> Vec<u8> {
        let mut v = self.seeds[self.rng.usize(..self.seeds.len())].clone();
        for _ in 0..self.rng.usize(1..9) {
            let at = self.rng.usize(..=v.len());
            match self.rng.u8(..6) {
                0 if !v.is_empty() => {
                    let i = self.rng.usize(..v.len());
                    v[i] ^= 1 << self.rng.u8(..8);
                }
                1 => {
                    let t = TOKENS[self.rng.usize(..TOKENS.len())];
                    v.splice(at..at, t.iter().copied());
                }
                2 if !v.is_empty() => {
                    let end = (at + self.rng.usize(..16)).min(v.len());
                    v.drain(at.min(end)..end);
                }
                3 if !v.is_empty() => {
                    let end = (at + self.rng.usize(..64)).min(v.len());
                    let part: Vec<u8> = v[at.min(end)..end].to_vec();
                    v.splice(at..at, part);
                }
                4 => {
                    let other = &self.seeds[self.rng.usize(..self.seeds.len())];
                    let from = self.rng.usize(..=other.len());
                    let part: Vec<u8> = other[from..].to_vec();
                    v.truncate(at);
                    v.extend(part);
                }
                _ => {
                    let n = self.rng.usize(..8);
                    v.splice(at..at, (0..n).map(|_| self.rng.u8(..)));
                }
            }
        }
        v.truncate(64 * 1024);
        v
    }
}

/// Runs `f` on mutated inputs for the target's time; panics become files.
fn fuzz(target: &str, seeds: Vec<Vec<u8>>, mut f: impl FnMut(&[u8])) {
    let mut m = Mutator::new(target, seeds);
    let deadline = Instant::now() + seconds();
    let (mut runs, mut crashes) = (0u64, Vec::new());
    let started = Instant::now();
    while Instant::now() < deadline {
        let input = m.next();
        runs += 1;
        if std::panic::catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("{target}-{runs}.bin"));
            std::fs::write(&file, &input).unwrap();
            crashes.push(file);
        }
    }
    println!(
        "fuzz {target}: {runs} executions in {:.1} s, {} crashes",
        started.elapsed().as_secs_f64(),
        crashes.len()
    );
    assert!(crashes.is_empty(), "{target} crashed on {crashes:?}");
}

#[test]
fn fuzz_the_configuration_loader_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    let agent = support::BASE_AGENT.to_string()
        + "mail:\n  smtp: { host: smtp.example.org, port: 587, user: ferry, password: \"${HOME}\" }\n  from: \"ferry <f@example.org>\"\n  to: [a@example.org]\n  digest: daily at 07:00\ndefaults:\n  timezone: America/New_York\n  retry: { attempts: 3, initial_delay: 10s, max_delay: 10m }\n";
    let job = support::BASE_JOB.to_string()
        + "include: [\"*.837\"]\nschedule: \"0 */15 * * * *\"\nwatch: true\nverify: auto\nafter_push: archive\nretry: { attempts: 2 }\n";
    let seeds = vec![agent.clone().into_bytes(), job.clone().into_bytes()];
    let agent_path = dir.path().join("ferry.yaml");
    let job_path = dir.path().join("jobs/a.yaml");
    let mut flip = false;
    fuzz("config", seeds, |input| {
        flip = !flip;
        let (a, j): (&[u8], &[u8]) = if flip {
            (input, job.as_bytes())
        } else {
            (agent.as_bytes(), input)
        };
        std::fs::write(&agent_path, a).unwrap();
        std::fs::write(&job_path, j).unwrap();
        let _ = ferry::config::load(&agent_path);
    });
}

#[test]
fn fuzz_the_listing_parser_never_panics() {
    let seeds: Vec<Vec<u8>> = [
        "-rw-r--r--    1 1000     1000         1234 Nov 24 01:50 claims batch 1.837",
        "-rw-r--r--+   1 1000     1000         1234 Jan 02  2025 müller.835",
        "lrwxrwxrwx    1 1000     1000           10 Nov 24 01:50 link.837 -> acl.837",
        "drwxr-xr-x    2 1000     1000         4096 Nov 24 01:50 processed",
        "11-24-2026  01:50PM                 77 four.835",
        "11-24-26  01:50AM       <DIR>          archive",
        "type=file;size=99;modify=20261124015000; a b.999",
        "type=cdir;modify=20261124015000; .",
        "total 12",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("listing", seeds, |input| {
        let line = String::from_utf8_lossy(input);
        for mlsd in [false, true] {
            if let listing::Line::Entry(e) = listing::parse_line(&line, mlsd, "/in") {
                assert!(
                    listing::unsafe_name(&e.name).is_none(),
                    "unsafe name {:?}",
                    e.name
                );
            }
        }
    });
}

#[test]
fn fuzz_the_hash_reply_parser_never_panics() {
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let seeds: Vec<Vec<u8>> = [
        format!("213 SHA-256 0-4 {hex} test.txt"),
        format!("213-Computing SHA-256 digest\r\n213 SHA-256 0-1048576 {hex} a b.837"),
        format!("250 {hex}"),
        format!("213 {hex}"),
        "213 SHA-1 0-4 a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 test.txt".to_string(),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("hash-reply", seeds, |input| {
        let text = String::from_utf8_lossy(input);
        for cmd in [HashCommand::Hash, HashCommand::XSha256] {
            let _ = parse_hash_reply(&text, cmd);
        }
    });
}

/// Hands out one byte per read: the reader must not depend on where reads end.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Ok(1)
    }
}

#[test]
fn fuzz_the_x12_envelope_reader_never_panics() {
    use support::x12;
    let sent = x12::p837(101, 101, &["PCN0001", "PCN0002"]);
    let pipes = x12::Style {
        element: '|',
        component: '>',
        repetition: '!',
        terminator: '\n',
        wrap: "",
    };
    let seeds: Vec<Vec<u8>> = vec![
        sent.render(x12::PLAIN),
        sent.render(x12::CRLF),
        sent.render(pipes),
        x12::a999(
            &sent,
            &[("0001", "R", &["IK3*N4*9**3", "IK4*2**7*XX"])],
            "R",
        )
        .render(x12::PLAIN),
        x12::ta1(&sent, "R", "022").render(x12::CRLF),
        x12::c277(&sent, &[("PCN0001", "A2"), ("PCN0002", "A7")]).render(x12::PLAIN),
        x12::r835(5).render(x12::PLAIN),
    ];
    fuzz("x12", seeds, |input| {
        let env = ferry::edi::read(input).expect("reading from memory cannot fail");
        let _ = ferry::edi::gate::check(&env, &ferry::edi::Rules::default());
        let _ = ferry::edi::ack::kinds(&env);
        // Where reads end changes nothing.
        let slow = ferry::edi::read(Trickle(input)).expect("reading from memory cannot fail");
        assert_eq!(env, slow, "the same bytes read in 1-byte reads differ");
    });
}

/// A plain-FTP server on loopback that answers the greeting and every
/// command with the next mutated reply; the session must end in an error
/// or a result, never a panic or a hang (every step has a 60 ms timeout).
#[test]
fn fuzz_the_ftp_reply_reader_never_panics_or_hangs() {
    let replies: Vec<Vec<u8>> = [
        "220 ready\r\n",
        "331 password please\r\n",
        "230 logged in\r\n",
        "200 Type set to I\r\n",
        "257 \"/\" is the current directory\r\n",
        "211-Features:\r\n MLST size*;modify*;type*;\r\n REST STREAM\r\n EPSV\r\n HASH SHA-256*;\r\n SIZE\r\n211 End\r\n",
        "213 12345\r\n",
        "550 Could not get file size.\r\n",
        "250-Listing /x\r\n type=file;size=5;modify=20261124015000; /x\r\n250 End\r\n",
        "213 SHA-256 0-4 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 /x\r\n",
        "421 too many\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let mut m = Mutator::new("ftp-reply", replies.clone());
    let server = std::thread::spawn(move || {
        let mut served = 0u64;
        for conn in listener.incoming() {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let Ok(mut conn) = conn else { continue };
            served += 1;
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            // Mostly valid replies in order, each with a chance of mutation.
            let mut script: Vec<Vec<u8>> = replies.clone();
            for r in script.iter_mut() {
                if fastrand::u8(..4) == 0 {
                    *r = m.next();
                }
            }
            let _ = conn.write_all(&script[0]);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            for r in script.iter().skip(1).cycle().take(30) {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if conn.write_all(r).is_err() {
                    break;
                }
            }
        }
        served
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server_cfg = Arc::new(Server {
        tls: TlsMode::None,
        user: "u".into(),
        password: Some(ferry::config::Secret::new("p".into())),
        timeout: Duration::from_millis(60),
        ..Server::new("fuzz", "127.0.0.1", port)
    });
    let deadline = Instant::now() + seconds();
    let (mut runs, mut ok) = (0u64, 0u64);
    let started = Instant::now();
    while Instant::now() < deadline {
        runs += 1;
        let s = server_cfg.clone();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(async move {
                let t = Instant::now();
                if let Ok(mut session) = ferry::transport::connect(s).await {
                    let _ = session.size("/x").await;
                    let _ = session.stat("/x").await;
                    let _ = session.sha256("/x").await;
                    session.close().await;
                }
                t.elapsed()
            })
        }));
        match outcome {
            Ok(took) => {
                ok += 1;
                assert!(
                    took < Duration::from_secs(10),
                    "a session hung for {took:?}"
                );
            }
            Err(_) => panic!("the FTP session panicked on a server's reply (run {runs})"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    let served = server.join().unwrap();
    println!(
        "fuzz ftp-reply: {runs} sessions in {:.1} s ({served} connections), 0 crashes",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(ok, runs);
}
