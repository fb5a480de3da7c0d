//! The mesh as a server-rendered SVG for the status page: this agent's cluster in the
//! middle, every peer around it, one edge per link coloured by its state and labelled
//! with the link's mean propagation lag. Plain SVG elements, no script: the page stays
//! one self-contained document.

use std::f64::consts::PI;
use std::fmt::Write;

use crate::mesh::PeerStatus;

use super::page::escape;

const SIZE: f64 = 420.0;
const RADIUS: f64 = 150.0;
const NODE_RADIUS: f64 = 30.0;

/// A link's state as the graph colours it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeState {
    Ready,
    /// Connected, not (yet) synced or validated.
    Connected,
    Down,
}

impl EdgeState {
    pub fn of(p: &PeerStatus) -> Self {
        if p.ready {
            Self::Ready
        } else if p.connected {
            Self::Connected
        } else {
            Self::Down
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Connected => "connected",
            Self::Down => "down",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Self::Ready => "#2a8a2a",
            Self::Connected => "#d99000",
            Self::Down => "#c02020",
        }
    }
}

/// The SVG of `local` and its `peers` (the link to the local apiserver included: drawn
/// as a ring on the middle node). `lag_seconds(cluster)` is a link's mean propagation
/// lag, if it has any reading.
pub fn render(
    local: &str,
    peers: &[PeerStatus],
    lag_seconds: impl Fn(&str) -> Option<f64>,
) -> String {
    let mut out = String::new();
    let centre = SIZE / 2.0;
    let _ = write!(
        out,
        "<svg id=\"mesh-graph\" width=\"{SIZE}\" \
         height=\"{SIZE}\" viewBox=\"0 0 {SIZE} {SIZE}\" role=\"img\" \
         aria-label=\"mesh graph\" font-family=\"system-ui,sans-serif\" font-size=\"12\">"
    );
    let remote: Vec<&PeerStatus> = peers.iter().filter(|p| !p.local).collect();
    let positions: Vec<(f64, f64)> = (0..remote.len())
        .map(|i| {
            let angle = -PI / 2.0 + 2.0 * PI * i as f64 / remote.len().max(1) as f64;
            (centre + RADIUS * angle.cos(), centre + RADIUS * angle.sin())
        })
        .collect();
    // Edges first, so the nodes are drawn over their ends.
    for (p, (x, y)) in remote.iter().zip(&positions) {
        let state = EdgeState::of(p);
        let lag = lag_seconds(&p.cluster).map_or_else(
            || "lag -".to_string(),
            |s| format!("lag {:.1} ms", s * 1000.0),
        );
        let _ = write!(
            out,
            "<g class=\"link link-{}\" data-cluster=\"{}\" data-state=\"{}\">\
             <line x1=\"{centre:.1}\" y1=\"{centre:.1}\" x2=\"{x:.1}\" y2=\"{y:.1}\" \
             stroke=\"{}\" stroke-width=\"3\"{}/>\
             <text class=\"lag\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333\">{}</text>\
             <title>{}: {}</title></g>",
            state.name(),
            escape(&p.cluster),
            state.name(),
            state.colour(),
            if state == EdgeState::Down {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            },
            (centre + x) / 2.0,
            (centre + y) / 2.0 - 4.0,
            escape(&lag),
            escape(&p.cluster),
            state.name()
        );
    }
    let own_link = peers.iter().find(|p| p.local).map(EdgeState::of);
    node(
        &mut out,
        local,
        centre,
        centre,
        own_link.map_or("#888", EdgeState::colour),
        "local",
    );
    for (p, (x, y)) in remote.iter().zip(&positions) {
        node(
            &mut out,
            &p.cluster,
            *x,
            *y,
            EdgeState::of(p).colour(),
            "peer",
        );
    }
    out.push_str("</svg>");
    out
}

fn node(out: &mut String, name: &str, x: f64, y: f64, ring: &str, class: &str) {
    let _ = write!(
        out,
        "<g class=\"cluster {class}\" data-cluster=\"{}\">\
         <circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{NODE_RADIUS}\" fill=\"#f4f6fa\" \
         stroke=\"{ring}\" stroke-width=\"3\"/>\
         <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text></g>",
        escape(name),
        y + 4.0,
        escape(name)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_peer(cluster: &str, local: bool, connected: bool, ready: bool) -> PeerStatus {
        PeerStatus {
            cluster: cluster.into(),
            local,
            connected,
            ready,
            ..PeerStatus::default()
        }
    }

    #[test]
    fn every_peer_is_a_node_with_an_edge_coloured_by_its_state() {
        let peers = [
            mk_peer("c1", true, true, true),
            mk_peer("c2", false, true, true),
            mk_peer("c3", false, true, false),
            mk_peer("c<4>", false, false, false),
        ];
        let svg = render("c1", &peers, |c| (c == "c2").then_some(0.0042));
        assert_eq!(svg.matches("<g class=\"link ").count(), 3);
        assert_eq!(svg.matches("<g class=\"cluster ").count(), 4);
        assert!(svg.contains("data-cluster=\"c2\" data-state=\"ready\""));
        assert!(svg.contains("data-cluster=\"c3\" data-state=\"connected\""));
        assert!(svg.contains("data-cluster=\"c&lt;4&gt;\" data-state=\"down\""));
        assert!(svg.contains(">lag 4.2 ms<"));
        assert!(svg.contains(">lag -<"));
    }
}
