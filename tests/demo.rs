//! The README's first command, `cargo run --example demo`, runs to
//! completion in bounded time and narrates every step.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_demo_runs_to_completion_and_names_every_step() {
    // cargo test builds the examples next to the test binaries' folder.
    let exe = std::env::current_exe().unwrap();
    let demo = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/demo");
    assert!(
        demo.exists(),
        "{} is missing: run `cargo build --examples` first (scripts/test.sh does)",
        demo.display()
    );
    let start = Instant::now();
    let mut child = Command::new(&demo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the demo took more than 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "== 1. A trading partner's FTPS server and a mail server start",
        "$ ferry check",
        "valid — 1 server, 2 jobs",
        "== 4. The billing system drops three 837 claim files",
        "on the server now: [\"claims-001.837\", \"claims-002.837\", \"claims-003.837\"]",
        "archived locally under state/archive/acme-837-out/",
        "== 5. The clearinghouse posts two 999 acknowledgements",
        "renamed: [\"ack-001.999\", \"ack-002.999\"]",
        "== 6. The partner's server goes away",
        "| Subject: [ferry] FAILED acme-837-out: cannot reach clearinghouse",
        "== 7. The server is back",
        "| Subject: [ferry] RECOVERED acme-837-out",
        "\"claims-004.837\"]",
        "$ ferry status",
        "$ ferry history",
        "demo finished: every server stopped, nothing left running",
    ] {
        assert!(text.contains(step), "missing '{step}' in:\n{text}");
    }
    eprintln!("demo took {:?}", start.elapsed());
}
