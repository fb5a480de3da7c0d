//! The table of a `bench storm` run.

use std::fmt::Write;

use super::StormReport;
use crate::bench::report::{cells, columns, correctness_cells, header, ms, verdict};

/// The run's figures, the reconnects per second, and the verdicts.
pub fn storm_table(report: &StormReport) -> String {
    let s = &report.sizes;
    let r = &report.restart;
    let mut out = format!(
        "storm: {} agents synced with {} endpoints (+{} identities, {} nodes, {} services), \
         apiserver restarted ({})\n\
         restart: connections closed {}, listening again {}, state written again {}\n\n",
        report.agents,
        s.endpoints,
        s.identities,
        s.nodes,
        s.services,
        report.restart_kind,
        ms(r.stopped_ms),
        ms(r.listening_ms),
        ms(r.written_ms),
    );
    let mut rows = vec![header(&["PHASE", "P50", "P99", "MAX"])];
    let first = &report.initial_sync;
    rows.push(vec![
        "initial sync".into(),
        ms(first.p50_ms),
        ms(first.p99_ms),
        ms(first.max_ms),
    ]);
    let again = &report.resynced;
    let mut resync = vec![
        "resynced after restart".into(),
        ms(again.p50_ms),
        ms(again.p99_ms),
        ms(again.max_ms),
    ];
    resync.extend(correctness_cells(&report.correctness));
    rows.push(resync);
    let width = rows[0].len();
    for row in &mut rows {
        row.resize(width, String::new());
    }
    out.push_str(&columns(&rows));

    let _ = writeln!(out, "\nreconnects per second since the restart:");
    let mut bins = vec![cells(&[
        "SECOND",
        "ATTEMPTS",
        "AGENTS DIALING",
        "STREAMS OPENED",
    ])];
    for b in &report.reconnects {
        bins.push(vec![
            format!("{}-{}s", b.second, b.second + 1),
            b.attempts.to_string(),
            b.agents.to_string(),
            b.connected.to_string(),
        ]);
    }
    out.push_str(&columns(&bins));
    let _ = writeln!(
        out,
        "\nbusiest second: {} of {} agents dialed (any 1 s window: {}); target at most half: {}",
        report.busiest_second_agents,
        report.agents,
        report.busiest_window_agents,
        if report.target_met { "met" } else { "MISSED" }
    );
    let _ = writeln!(
        out,
        "{}",
        verdict(
            report.is_correct(),
            "every agent resynced to exactly the source's state; nothing lost, phantom or \
             withdrawn; no flaps"
        )
    );
    out
}
