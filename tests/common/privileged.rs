//! The one switch for tests that need root (a loop-mounted filesystem) or a Docker engine (the
//! containers half of the integration suite, whose LocalStack image is built with debootstrap).
//! A developer's `cargo test` passes without either; such a test then says on stderr that it did
//! not run and how to run it, and CI sets the switch and checks that every one of them passed.
//! A privileged test of the standard harness names itself in a `const NAME: &str` (which is
//! how `.ci/run` knows to expect it) and ends with `report_ran(NAME)`.

use std::io::Write;

/// Set to `1` to run the tests that need root and Docker (unset or `0`: do not).
pub const SWITCH: &str = "WHEELHOUSE_PRIVILEGED_TESTS";

/// Whether the tests that need root and Docker are to run. Any other value than `1`, `0` or
/// empty is a mistake worth stopping for: a typo must not turn into a silent skip.
pub fn enabled() -> bool {
    match std::env::var(SWITCH).as_deref() {
        Ok("1") => true,
        Ok("0") | Ok("") | Err(std::env::VarError::NotPresent) => false,
        Ok(other) => panic!("{SWITCH}={other:?}: expected 1 (run them) or 0 (do not)"),
        Err(err) => panic!("{SWITCH}: {err}"),
    }
}

/// One line on the process's stderr naming what did not run, what it needs and how to run it.
/// Written past the test harness's output capture, which would otherwise hide it.
pub fn report_not_run(what: &str, needs: &str) {
    report_left_out(what, &format!("needs {needs}; set {SWITCH}=1 to run it"));
}

/// One line on the process's stderr naming what a test could not check here, and why.
pub fn report_left_out(what: &str, why: &str) {
    let line = format!("not run: {what} ({why})\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Where [`report_ran`] also appends the name of each privileged test that ran and passed, one
/// per line: what CI counts. A file rather than the test output, in which lines of tests
/// running side by side interleave.
pub const REPORT: &str = "WHEELHOUSE_PRIVILEGED_REPORT";

/// Marks a privileged test that ran and passed: a line on stderr (past the output capture) and
/// one in the [`REPORT`] file when that is set.
pub fn report_ran(what: &str) {
    let line = format!("privileged test ran: {what}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(REPORT) {
        // One short append: whole even with other test processes appending at the same time.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(format!("{what}\n").as_bytes()));
        if let Err(err) = appended {
            panic!("{REPORT}={}: {err}", path.to_string_lossy());
        }
    }
}
