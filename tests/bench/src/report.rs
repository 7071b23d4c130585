//! Figures and how they are shown: a table for people, JSON for tools.

use std::path::Path;

use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// What we aim for, in words ("< 300 ms").
    pub target: String,
    /// Whether the value meets the target.
    pub met: bool,
    /// The published figure of the field it compares with.
    pub anchor: String,
}

pub fn table(figures: &[Figure]) -> String {
    let mut rows = vec![[
        "FIGURE".to_string(),
        "VALUE".to_string(),
        "TARGET".to_string(),
        "MET".to_string(),
        "ANCHOR".to_string(),
    ]];
    for f in figures {
        rows.push([
            f.name.clone(),
            format!("{:.1} {}", f.value, f.unit),
            f.target.clone(),
            if f.met { "yes" } else { "NO" }.to_string(),
            f.anchor.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// # Errors
/// The file cannot be written.
pub fn write_json(path: &Path, figures: &[Figure]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(figures)?)?;
    Ok(())
}

/// The median and the maximum of some samples, in the samples' unit.
pub fn median_and_worst(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let median = samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN);
    let worst = samples.last().copied().unwrap_or(f64::NAN);
    (median, worst)
}

/// The value below which `fraction` of the samples fall (nearest rank).
pub fn percentile(samples: &mut [f64], fraction: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 * fraction).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}
