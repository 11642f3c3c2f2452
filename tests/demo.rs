//! `accessgate demo` does what the README says: the printed curl lines give a 200 with
//! identity headers and a 401.

mod common;

use std::process::Command;
use std::time::Duration;

use common::spawn_demo;

fn run_curl(line: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{} -s -S", line.trim()))
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn demo_prints_working_curl_lines() {
    let demo = spawn_demo();
    demo.wait_line("Mint more tokens", Duration::from_secs(30));
    // The banner's last line, the mint command, follows that heading.
    demo.wait_line("/mint", Duration::from_secs(10));
    let output = demo.output();
    let curls: Vec<&str> = output
        .lines()
        .filter(|l| l.trim_start().starts_with("curl -i"))
        .collect();
    assert_eq!(curls.len(), 2, "{output}");

    let allowed = run_curl(curls[0]);
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    let lower = allowed.to_ascii_lowercase();
    assert!(
        lower.contains("x-auth-request-email: alice@example.com"),
        "{allowed}"
    );
    assert!(
        lower.contains("x-auth-request-groups: engineering,sre"),
        "{allowed}"
    );

    let denied = run_curl(curls[1]);
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    assert!(denied.contains("token_missing"), "{denied}");

    let mint = output.lines().find(|l| l.contains("/mint")).unwrap();
    let token = run_curl(mint);
    assert_eq!(token.split('.').count(), 3, "{token}");
}
