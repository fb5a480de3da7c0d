//! `/`: one self-contained HTML page (no scripts, no external assets): the mesh as an SVG
//! graph (module `graph`), then every link and every global service with the backends
//! selected now. It refreshes itself, so it can
//! stay open on a screen — unless asked with `?refresh=0` (a screenshot, say).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::mesh::{PeerStatus, ServiceView};

use super::graph;
use super::render::{affinity, cluster_state, last_event, last_failure, link_name, synced_summary};
use super::report::StatusReport;

/// Often enough to watch a failover happen, rarely enough to cost nothing.
const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f0f0f0}.yes{color:#070}.no{color:#b00;font-weight:bold}\
.muted{color:#777}code{font-size:.95em}";

/// The page for this status and these services, as of `now_unix_ms`; `lags` holds each
/// link's mean propagation lag in seconds, where it has readings. With `refresh`, the
/// page reloads itself every few seconds.
pub fn render(
    status: &StatusReport,
    services: &[ServiceView],
    now_unix_ms: u64,
    lags: &BTreeMap<String, f64>,
    refresh: bool,
) -> String {
    let mut out = String::new();
    let title = format!("fleetmesh agent: {}", status.cluster);
    let reload = if refresh {
        format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">")
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{reload}\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    // A removed peer whose cache keys still drain is no link.
    let links: Vec<PeerStatus> = status
        .peers
        .iter()
        .filter(|p| p.is_link())
        .cloned()
        .collect();
    let ready = links.iter().filter(|p| p.ready).count();
    let _ = writeln!(
        out,
        "<p>cluster id {} — {} — {ready}/{} links ready</p>",
        status.cluster_id,
        yes_no_span(status.ready, "ready", "not ready"),
        links.len()
    );
    if !status.not_ready.is_empty() {
        out.push_str("<ul>");
        for why in &status.not_ready {
            let _ = write!(out, "<li>waiting for {}</li>", escape(why));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2>Mesh</h2>\n<figure>");
    out.push_str(&graph::render(status.cluster.as_str(), &links, |c| {
        lags.get(c).copied()
    }));
    out.push_str(
        "<figcaption class=\"muted\">links: <span class=\"yes\">green</span> ready, \
         <span style=\"color:#d99000\">amber</span> connected, <span class=\"no\">red \
         dashed</span> down; mean propagation lag on each</figcaption></figure>\n",
    );
    links_section(&mut out, &links, now_unix_ms);
    services_section(&mut out, services);
    out.push_str(
        "<p class=\"muted\">JSON: <a href=\"/v1/status\">/v1/status</a> \
        <a href=\"/v1/services\">/v1/services</a> <a href=\"/v1/nodes\">/v1/nodes</a> \
        <a href=\"/v1/conflicts\">/v1/conflicts</a> · <a href=\"/metrics\">/metrics</a></p>\n\
        </body></html>\n",
    );
    out
}

fn links_section(out: &mut String, links: &[PeerStatus], now_unix_ms: u64) {
    out.push_str("<h2>Links</h2>\n");
    if links.is_empty() {
        out.push_str(
            "<p class=\"muted\">no links configured: the remotes directory is empty</p>\n",
        );
        return;
    }
    out.push_str(
        "<table><tr><th>cluster</th><th>ready</th><th>connected</th><th>synced</th>\
         <th>nodes</th><th>endpoints</th><th>identities</th><th>services</th>\
         <th>reconnects</th><th>refused</th><th>last event</th><th>last failure</th></tr>\n",
    );
    for p in links {
        let last_event = last_event(p, now_unix_ms);
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&link_name(p)),
            yes_no_span(p.ready, "yes", "no"),
            yes_no_span(p.connected, "yes", "no"),
            escape(&synced_summary(p)),
            p.counts.nodes,
            p.counts.endpoints,
            p.counts.identities,
            p.counts.services,
            p.reconnects,
            p.refused_events,
            escape(&last_event),
            escape(&last_failure(p, now_unix_ms)),
        );
    }
    out.push_str("</table>\n");
}

fn services_section(out: &mut String, services: &[ServiceView]) {
    out.push_str("<h2>Global services</h2>\n");
    if services.is_empty() {
        out.push_str("<p class=\"muted\">no global services</p>\n");
        return;
    }
    out.push_str(
        "<table><tr><th>service</th><th>affinity</th><th>selection</th><th>cluster</th>\
         <th>ready</th><th>state</th><th>selected backends</th></tr>\n",
    );
    for svc in services {
        let span = svc.clusters.len().max(1);
        for (i, c) in svc.clusters.iter().enumerate() {
            out.push_str("<tr>");
            if i == 0 {
                let _ = write!(
                    out,
                    "<td rowspan=\"{span}\"><code>{}</code></td><td rowspan=\"{span}\">{}</td>\
                     <td rowspan=\"{span}\">{}</td>",
                    escape(&svc.name.to_string()),
                    escape(&affinity(svc)),
                    escape(svc.reason.describe()),
                );
            }
            let ready = c
                .backends
                .iter()
                .filter(|b| b.backend.conditions.ready)
                .count();
            let selected: Vec<String> = svc
                .selected
                .iter()
                .filter(|s| s.cluster == c.cluster)
                .map(|s| s.ip.to_string())
                .collect();
            let selected = if selected.is_empty() {
                "<span class=\"muted\">none</span>".to_string()
            } else {
                format!("<code>{}</code>", escape(&selected.join(" ")))
            };
            let cluster = if c.local {
                format!("{} (local)", c.cluster)
            } else {
                c.cluster.to_string()
            };
            let _ = writeln!(
                out,
                "<td>{}</td><td>{ready}/{}</td><td>{}</td><td>{selected}</td></tr>",
                escape(&cluster),
                c.backends.len(),
                escape(&cluster_state(c.stale, c.withdrawn, c.shared)),
            );
        }
    }
    out.push_str("</table>\n");
}

fn yes_no_span(b: bool, yes: &str, no: &str) -> String {
    if b {
        format!("<span class=\"yes\">{}</span>", escape(yes))
    } else {
        format!("<span class=\"no\">{}</span>", escape(no))
    }
}

/// Text as HTML: everything shown may come from a peer or a config file.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{Failure, PeerStatus};
    use crate::model::ClusterName;

    fn mk_status(peers: Vec<PeerStatus>) -> StatusReport {
        StatusReport {
            cluster: ClusterName::new("c1").unwrap(),
            cluster_id: 1,
            peers,
            ready: false,
            not_ready: vec!["c2: connecting".into()],
        }
    }

    #[test]
    fn the_page_shows_links_and_escapes_what_peers_sent() {
        let c2 = PeerStatus {
            cluster: "c2".into(),
            last_failure: Some(Failure {
                reason: "bad <certificate> & \"more\"".into(),
                at_unix_ms: 0,
            }),
            ..PeerStatus::default()
        };
        let html = render(&mk_status(vec![c2]), &[], 30_000, &BTreeMap::new(), true);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<td>c2</td>"));
        assert!(html.contains("30s ago: bad &lt;certificate&gt; &amp; &quot;more&quot;"));
        assert!(html.contains("waiting for c2: connecting"));
        assert!(html.contains("no global services"));
        assert!(!html.contains("<certificate>"));
        // Self-contained: nothing is loaded from elsewhere.
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
