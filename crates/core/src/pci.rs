//! The Permission Creep Index, version `pci-v3`. The formula and a worked example are in `docs/pci.md`;
//! this module is its only implementation, and any change to the numbers below is a new version.
//!
//! In short: every granted action carries a risk weight (by access level and risk tags) times a reach
//! factor (all resources vs. some, unconditional vs. conditional). `U` sums the weights of granted actions
//! not used in the lookback, `T` the weights of all granted actions, and
//!
//! ```text
//! PCI = round(100 × (U / T) × (1 − e^(−U / K)))      K = 10
//! ```
//!
//! The first factor is the share of risky grants left unused (it falls as usage matches grants); the
//! second grows with how much unused risk there is in absolute terms, so five unused read actions stay
//! low while hundreds of unused write and permissions-management actions saturate towards 100.

use grantwatch_types::{Pci, PciBand};

use crate::catalog::{AccessLevel, ActionId, ActionSet, Catalog};

pub const PCI_VERSION: &str = "pci-v3";

/// Saturation constant `K`: the unused risk at which the magnitude factor reaches 1 − 1/e ≈ 0.63.
pub const SATURATION: f64 = 10.0;

/// Risk weight of one granted action before reach.
pub fn action_weight(catalog: &Catalog, id: ActionId) -> f64 {
    let base: f64 = match catalog.access_level(id) {
        AccessLevel::PermissionsManagement => 1.0,
        AccessLevel::Write => 0.6,
        AccessLevel::Tagging => 0.2,
        AccessLevel::Read => 0.15,
        AccessLevel::List => 0.05,
    };
    let tags = catalog.risk_tags(id);
    if tags.privilege_escalation || tags.credential_exposure { base.max(1.0) } else { base }
}

/// Reach of a grant: 1.0 on every resource, 0.5 on some; halved again when only conditionally granted.
pub fn reach(unscoped: bool, conditional: bool) -> f64 {
    let r = if unscoped { 1.0 } else { 0.5 };
    if conditional { r * 0.5 } else { r }
}

/// What the score is computed from.
pub struct PciInput<'a> {
    pub granted: &'a ActionSet,
    pub unscoped: &'a ActionSet,
    pub conditional: &'a ActionSet,
    /// Granted actions used in the lookback.
    pub used: &'a ActionSet,
    /// Actions not granted but reachable through the escalation graph (`crate::escalation`): they
    /// count as granted on some resources (reach 0.5), and are never used by this identity (what it
    /// does as another identity is that identity's usage).
    pub reachable: &'a ActionSet,
}

/// Computes the PCI of one identity.
pub fn score(catalog: &Catalog, input: &PciInput<'_>) -> Pci {
    let (mut unused, mut total) = (0.0f64, 0.0f64);
    for id in input.granted.iter() {
        let w = action_weight(catalog, id) * reach(input.unscoped.contains(id), input.conditional.contains(id));
        total += w;
        if !input.used.contains(id) {
            unused += w;
        }
    }
    for id in input.reachable.iter().filter(|&id| !input.granted.contains(id)) {
        let w = action_weight(catalog, id) * reach(false, false);
        total += w;
        unused += w;
    }
    let value = if total > 0.0 { 100.0 * (unused / total) * (1.0 - (-unused / SATURATION).exp()) } else { 0.0 };
    let score = value.round().clamp(0.0, 100.0) as u8;
    Pci {
        score,
        band: PciBand::of(score),
        version: PCI_VERSION.to_string(),
        unused_risk: round2(unused),
        granted_risk: round2(total),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::RiskTags;
    use proptest::prelude::*;

    fn catalog() -> Catalog {
        let e = |n: &str, l| ("svc".to_string(), n.to_string(), l, vec!["*".to_string()], RiskTags::default());
        Catalog::from_entries([
            e("Read1", AccessLevel::Read),
            e("Read2", AccessLevel::Read),
            e("Write1", AccessLevel::Write),
            e("Write2", AccessLevel::Write),
            e("Perm1", AccessLevel::PermissionsManagement),
            e("List1", AccessLevel::List),
        ])
    }

    fn set(c: &Catalog, names: &[&str]) -> ActionSet {
        let mut s = c.empty_set();
        for n in names {
            s.insert(c.lookup(&format!("svc:{n}")).unwrap());
        }
        s
    }

    #[test]
    fn full_use_scores_zero_and_no_grants_scores_zero() {
        let c = catalog();
        let g = c.full_set();
        let p = score(
            &c,
            &PciInput { granted: &g, unscoped: &g, conditional: &c.empty_set(), used: &g, reachable: &c.empty_set() },
        );
        assert_eq!(p.score, 0);
        let e = c.empty_set();
        assert_eq!(
            score(&c, &PciInput { granted: &e, unscoped: &e, conditional: &e, used: &e, reachable: &c.empty_set() })
                .score,
            0
        );
    }

    #[test]
    fn worked_example_from_docs() {
        // docs/pci.md: granted Read1, Read2, Write1, Write2, Perm1 on "*"; used Read1 and Write1.
        // U = 0.15 + 0.6 + 1.0 = 1.75, T = 2.5; PCI = 100 × 0.7 × (1 − e^−0.175) = 11.24 → 11.
        let c = catalog();
        let g = set(&c, &["Read1", "Read2", "Write1", "Write2", "Perm1"]);
        let used = set(&c, &["Read1", "Write1"]);
        let p = score(
            &c,
            &PciInput {
                granted: &g,
                unscoped: &g,
                conditional: &c.empty_set(),
                used: &used,
                reachable: &c.empty_set(),
            },
        );
        assert_eq!((p.score, p.unused_risk, p.granted_risk), (11, 1.75, 2.5));
        assert_eq!(p.band, PciBand::Low);
        assert_eq!(p.version, "pci-v3");
    }

    #[test]
    fn aws_admin_unused_is_high() {
        let c = Catalog::aws().unwrap();
        let g = c.full_set();
        let used = c.expand("s3:Get*");
        let p = score(
            &c,
            &PciInput {
                granted: &g,
                unscoped: &g,
                conditional: &c.empty_set(),
                used: &used,
                reachable: &c.empty_set(),
            },
        );
        assert!(p.score >= 95, "{p:?}");
        assert_eq!(p.band, PciBand::High);
    }

    #[test]
    fn reachable_actions_raise_the_score_at_half_reach() {
        // Holding Read1 (used), reaching Perm1 through another identity: T = 0.15 + 0.5, U = 0.5.
        let c = catalog();
        let g = set(&c, &["Read1"]);
        let reach = set(&c, &["Read1", "Perm1"]);
        let p = score(
            &c,
            &PciInput { granted: &g, unscoped: &g, conditional: &c.empty_set(), used: &g, reachable: &reach },
        );
        assert_eq!((p.unused_risk, p.granted_risk), (0.5, 0.65));
        let alone = score(
            &c,
            &PciInput { granted: &g, unscoped: &g, conditional: &c.empty_set(), used: &g, reachable: &c.empty_set() },
        );
        assert!(p.score > alone.score);
    }

    proptest! {
        #[test]
        fn score_in_range_and_monotone_in_usage(granted in prop::collection::vec(any::<bool>(), 6), used in prop::collection::vec(any::<bool>(), 6), extra in 0usize..6) {
            let c = catalog();
            let mut g = c.empty_set();
            let mut u = c.empty_set();
            for i in 0..6u32 {
                if granted[i as usize] { g.insert(i); }
                if used[i as usize] { u.insert(i); }
            }
            let empty = c.empty_set();
            let p = score(&c, &PciInput { granted: &g, unscoped: &g, conditional: &empty, used: &u, reachable: &c.empty_set() });
            prop_assert!(p.score <= 100);
            // Using one more granted action never raises the score.
            let mut u2 = u.clone();
            u2.insert(extra as u32);
            let p2 = score(&c, &PciInput { granted: &g, unscoped: &g, conditional: &empty, used: &u2, reachable: &c.empty_set() });
            prop_assert!(p2.score <= p.score);
        }
    }
}
