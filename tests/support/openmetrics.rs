//! A small parser of the OpenMetrics text format (what both binaries' `/metrics` serve),
//! strict where a scrape could go wrong: every sample belongs to the family declared
//! just before it, with a name its type allows (`_total` for a counter, `_bucket`, `_sum`
//! and `_count` for a histogram, the bare name for a gauge), label values unescaped, the
//! text ends with `# EOF`, and a histogram's `+Inf` bucket equals its count.

use std::collections::BTreeMap;

/// A family's declared type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl MetricType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "gaugehistogram" => Self::GaugeHistogram,
            "summary" => Self::Summary,
            "info" => Self::Info,
            "stateset" => Self::StateSet,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }

    /// The suffixes a sample of this type may add to its family's name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Counter => &["_total", "_created"],
            Self::Gauge | Self::StateSet | Self::Unknown => &[""],
            Self::Info => &["_info"],
            Self::Histogram => &["_bucket", "_count", "_sum", "_created"],
            Self::GaugeHistogram => &["_bucket", "_gcount", "_gsum"],
            Self::Summary => &["", "_count", "_sum", "_created"],
        }
    }
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The family name's suffix this sample carries (`_total`, `_bucket`, …, or "").
    pub suffix: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A metric family: its type, help and samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub kind: MetricType,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

/// Parses an exposition into its families by name; an error names the line and why.
pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families = BTreeMap::<String, Family>::new();
    let mut current: Option<String> = None;
    let mut lines = text.split_inclusive('\n').enumerate();
    let mut saw_eof = false;
    for (n, raw) in lines.by_ref() {
        let at = |why: String| format!("line {}: {why}: {raw:?}", n + 1);
        let line = raw
            .strip_suffix('\n')
            .ok_or_else(|| at("no newline at its end".into()))?;
        if line == "# EOF" {
            saw_eof = true;
            break;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (keyword, name, rest) = (parts.next(), parts.next(), parts.next());
            let (Some(keyword), Some(name), Some(rest)) = (keyword, name, rest) else {
                return Err(at(
                    "a metadata line needs a keyword, a name and a value".into()
                ));
            };
            if !matches!(keyword, "TYPE" | "HELP" | "UNIT") {
                return Err(at(format!("unknown metadata {keyword:?}")));
            }
            // A family's metadata and samples are together: a new name starts a family.
            if current.as_deref() != Some(name) {
                if families.contains_key(name) {
                    return Err(at(format!("family {name} is not in one piece")));
                }
                families.insert(
                    name.to_string(),
                    Family {
                        kind: MetricType::Unknown,
                        help: None,
                        samples: Vec::new(),
                    },
                );
                current = Some(name.to_string());
            }
            let family = families.get_mut(name).expect("declared");
            match keyword {
                "TYPE" => {
                    if !family.samples.is_empty() {
                        return Err(at(format!("the type of {name} after its samples")));
                    }
                    family.kind = MetricType::parse(rest)
                        .ok_or_else(|| at(format!("unknown type {rest:?}")))?;
                }
                "HELP" => family.help = Some(rest.to_string()),
                _ => {}
            }
            continue;
        }
        let (name, labels, value) = sample_line(line).map_err(at)?;
        let family_name = current
            .as_deref()
            .ok_or_else(|| at("a sample before any family".into()))?;
        let family = families.get_mut(family_name).expect("declared");
        let suffix = name
            .strip_prefix(family_name)
            .filter(|s| family.kind.suffixes().contains(s))
            .ok_or_else(|| {
                at(format!(
                    "sample {name} does not belong to the {:?} family {family_name}",
                    family.kind
                ))
            })?;
        if suffix == "_bucket" && !labels.contains_key("le") {
            return Err(at("a bucket without le".into()));
        }
        family.samples.push(Sample {
            suffix: suffix.to_string(),
            labels,
            value,
        });
    }
    if !saw_eof {
        return Err("the exposition does not end with # EOF".into());
    }
    if let Some((n, line)) = lines.next() {
        return Err(format!("line {}: text after # EOF: {line:?}", n + 1));
    }
    for (name, family) in &families {
        check_histogram(name, family)?;
    }
    Ok(families)
}

/// A histogram's `+Inf` bucket of each label set equals that set's `_count`.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    if family.kind != MetricType::Histogram {
        return Ok(());
    }
    for count in family.samples.iter().filter(|s| s.suffix == "_count") {
        let inf = family.samples.iter().find(|s| {
            s.suffix == "_bucket"
                && s.labels.get("le").map(String::as_str) == Some("+Inf")
                && s.labels
                    .iter()
                    .filter(|(k, _)| *k != "le")
                    .eq(count.labels.iter())
        });
        match inf {
            Some(b) if b.value == count.value => {}
            _ => {
                return Err(format!(
                    "histogram {name}{:?}: no +Inf bucket equal to its count {}",
                    count.labels, count.value
                ));
            }
        }
    }
    Ok(())
}

/// `name{labels} value [timestamp] [# exemplar]`.
fn sample_line(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = parse_labels(inner, &mut labels)?;
    }
    let rest = rest.strip_prefix(' ').ok_or("a space before the value")?;
    let value_text = rest.split(' ').next().unwrap_or_default();
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok((name.to_string(), labels, value))
}

/// Reads `a="x",b="y"}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(
    mut text: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        if let Some(after) = text.strip_prefix('}') {
            return Ok(after);
        }
        let (key, after_key) = text.split_once("=\"").ok_or("a label needs =\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('"' | '\\'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?} in label {key}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("label {key}'s value never ends")),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        text = &after_key[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
}
