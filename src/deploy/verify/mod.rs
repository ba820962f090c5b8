//! `wheelhouse-deploy verify`: proves that a deployed appliance works, as a table of checks.
//!
//! - [`endpoint`]: what a client sees through the load balancer: DNS, the certificate, the
//!   redirect to HTTPS, the credentials asked for, and a probe wheel uploaded, listed, read
//!   (`.metadata`), downloaded from every replica and removed.
//! - [`services`]: what AWS says of the stack's parts: tasks, targets, mount targets, backup
//!   plan and alarms.
//! - [`probe`]: the probe wheel.

pub mod endpoint;
pub mod probe;
pub mod services;

use std::fmt::Write;

use console::style;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub check: String,
    pub passed: bool,
    /// What was seen: on a failure, what is wrong and where to look.
    pub detail: String,
}

impl Row {
    pub fn pass(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Row {
            check: check.into(),
            passed: true,
            detail: detail.into(),
        }
    }

    pub fn fail(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Row {
            check: check.into(),
            passed: false,
            detail: detail.into(),
        }
    }
}

/// The report as a table, failures marked, and a last line that counts them.
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for row in rows {
        let mark = if row.passed {
            style("ok  ").green()
        } else {
            style("FAIL").red().bold()
        };
        let _ = writeln!(out, "{mark}  {:<width$}  {}", row.check, row.detail);
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    if failed == 0 {
        let _ = writeln!(out, "\nAll {} checks passed.", rows.len());
    } else {
        let _ = writeln!(out, "\n{failed} of {} checks failed.", rows.len());
    }
    out
}

/// An error and every cause under it, on one line: reqwest's own message alone says "error
/// sending request" and hides the certificate or DNS failure beneath.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_counts_the_failures() {
        let rows = [
            Row::pass("DNS", "resolves"),
            Row::fail("certificate", "expired"),
        ];
        let text = console::strip_ansi_codes(&table(&rows)).into_owned();
        assert!(text.contains("ok    DNS          resolves"), "{text}");
        assert!(text.contains("FAIL  certificate  expired"), "{text}");
        assert!(text.ends_with("1 of 2 checks failed.\n"), "{text}");
    }
}
