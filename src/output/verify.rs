//! `backstop verify`'s report, for people.

use crate::contract::verify::VerifyReport;

pub fn render_verify(r: &VerifyReport) -> String {
    let mut out = String::new();
    if r.ok {
        out.push_str(&format!(
            "verify: OK: {} rows in {} seals match the log; {} rows not yet sealed; projections equal their rebuild from the log\n",
            r.rows_checked, r.seals_checked, r.unsealed_rows
        ));
        if let Some(cut) = r.cut {
            out.push_str(&format!(
                "  retention: {} sealed rows from before {} were archived and dropped, as the retention records say; \
                 projection rows from then were checked when archived (backstop verify --archive DIR checks an archive)\n",
                r.archived_rows,
                cut.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
    } else {
        out.push_str(&format!(
            "verify: FAILED: {} problem(s){}\n",
            r.problems.len(),
            r.first_bad_seq
                .map(|s| format!("; first bad seq {s}"))
                .unwrap_or_default()
        ));
        for p in &r.problems {
            out.push_str(&format!("  {:<12} {}\n", p.kind, p.detail));
        }
    }
    if let Some((no, hash)) = &r.head {
        out.push_str(&format!("  head: seal {no} {hash}\n"));
    }
    out
}
