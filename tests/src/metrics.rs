//! A small reader of the Prometheus text exposition format, enough to check
//! `/metrics` exactly.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// The labels, by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Parses the text format; `Err` names the first line it cannot read.
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_line(l).ok_or_else(|| format!("cannot parse metrics line {l:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut s = after;
        loop {
            s = s.trim_start_matches([',', ' ']);
            if let Some(r) = s.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = s.find('=')?;
            let key = s[..eq].trim();
            s = s[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.insert(key.to_owned(), value);
            s = &s[end + 1..];
        }
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The value of the sample named `name` whose label set is exactly `labels`.
pub fn find(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let text = "# HELP meshtable_nodes nodes\n# TYPE meshtable_nodes gauge\n\
            meshtable_nodes{network=\"a\",status=\"online\"} 2\n\
            meshtable_ingest_duplicates_total 0\n\
            odd{l=\"q\\\"uote\\\\, x\"} 1.5e3 1700000000000\n";
        let samples = parse_metrics(text).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(
            find(
                &samples,
                "meshtable_nodes",
                &[("network", "a"), ("status", "online")]
            ),
            Some(2.0)
        );
        assert_eq!(find(&samples, "meshtable_nodes", &[("network", "a")]), None);
        assert_eq!(
            find(&samples, "meshtable_ingest_duplicates_total", &[]),
            Some(0.0)
        );
        assert_eq!(
            find(&samples, "odd", &[("l", "q\"uote\\, x")]),
            Some(1500.0)
        );
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_metrics("name{unclosed=\"x} 1").is_err());
        assert!(parse_metrics("name notanumber").is_err());
    }
}
