//! The explained alert: what every analytic (rule, Sigma rule, anomaly, model) raises.

use serde::{Deserialize, Serialize};

/// One measured fact behind an alert: a feature's value, the baseline it was compared with, and how far
/// off it is. Models report the features that drove their score; rules report the fields they matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Feature or field name (`events_per_hour`, `new_region`, `eventName`).
    pub name: String,
    /// The observed value.
    pub value: f64,
    /// The baseline's center (mean of the identity's or the peer group's history), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The baseline's spread (standard deviation), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread: Option<f64>,
    /// How unusual the value is (a z-score for models), if scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}
