//! The one wildcard matcher of grantwatch: `*` (any run, empty included) and, where the syntax has it,
//! `?` (exactly one byte), over bytes.
//!
//! Callers pick the dialect ([`Glob`]): IAM action patterns (`s3:Get*`) are ASCII case-insensitive, ARNs
//! and resource patterns are case-sensitive, allowlisted identity ARNs know only `*`. [`match_by`] is the
//! same algorithm over any token type, for matchers whose symbols are not bytes (the policy evaluator's
//! resource templates, `policy::arn_match`).
//!
//! Why this algorithm: the obvious recursive matcher backtracks into every earlier `*` and takes
//! exponential time on hostile patterns (`a*a*a*a*…b` against `aaaa…`), and patterns here come from
//! policies and configuration we do not control. Matching only ever needs to retry from the *last* `*`
//! seen: a later star can absorb anything an earlier one could, so earlier choices never need revisiting.
//! Each text position is thus retried at most once per pattern segment: at most
//! `(|pattern| + 1) · (|text| + 1)` steps, linear in the text for a given pattern, never exponential, and
//! no allocation. It deliberately does no substring-search acceleration (KMP, Two-Way): patterns are
//! short (IAM caps them at a few hundred bytes) and the simple loop is what the hot paths want.
//!
//! What it is not: `?` matches one *byte*, not one Unicode character (ARNs and action names are ASCII);
//! there are no character classes, braces or escapes; and it matches one string, it does not decide
//! whether two patterns overlap (`policy::arn_match` does that with its own product automaton).

/// Case rule of a [`Glob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Sensitive,
    /// ASCII letters compare without case; other bytes exactly.
    AsciiInsensitive,
}

/// A wildcard dialect: which case rule applies and whether `?` is a wildcard or a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Glob {
    pub case: Case,
    /// `?` matches exactly one byte; when false it is a literal `?`.
    pub question_mark: bool,
}

impl Glob {
    /// IAM action names (`s3:Get*`, `ec2:Describe?pcs`): AWS compares them without case.
    pub const IAM_ACTION: Glob = Glob { case: Case::AsciiInsensitive, question_mark: true };
    /// ARNs and resource patterns: case-sensitive (`arn:aws:s3:::Bucket` is not `…:::bucket`).
    pub const RESOURCE: Glob = Glob { case: Case::Sensitive, question_mark: true };
    /// Only `*` is special, case-sensitive: the detection allowlists' identity patterns, whose syntax has
    /// always treated `?` literally (IAM names cannot contain `?`, so it never matches there anyway).
    pub const STAR_ONLY: Glob = Glob { case: Case::Sensitive, question_mark: false };
    /// Azure operation and GCP permission patterns: only `*` is special, and case does not matter.
    pub const CLOUD_ACTION: Glob = Glob { case: Case::AsciiInsensitive, question_mark: false };

    /// Whether `text` matches `pattern` in this dialect.
    pub fn matches(self, pattern: &str, text: &str) -> bool {
        self.matches_bytes(pattern.as_bytes(), text.as_bytes())
    }

    pub fn matches_bytes(self, pattern: &[u8], text: &[u8]) -> bool {
        self.run_bytes(pattern, text).0
    }

    fn run_bytes(self, pattern: &[u8], text: &[u8]) -> (bool, usize) {
        let single = |p: &u8, t: &u8| {
            (self.question_mark && *p == b'?')
                || match self.case {
                    Case::Sensitive => p == t,
                    Case::AsciiInsensitive => p.eq_ignore_ascii_case(t),
                }
        };
        run(pattern, text, |p| *p == b'*', single)
    }
}

/// Glob matching over any tokens: `is_star(p)` says a pattern token matches any run of text tokens,
/// `single(p, t)` whether a non-star pattern token matches one text token. See the module docs for the
/// algorithm and its bound.
pub fn match_by<P, T>(
    pattern: &[P],
    text: &[T],
    is_star: impl Fn(&P) -> bool,
    single: impl Fn(&P, &T) -> bool,
) -> bool {
    run(pattern, text, is_star, single).0
}

/// The matcher, also returning how many steps it took (the tests check the bound).
fn run<P, T>(
    pattern: &[P],
    text: &[T],
    is_star: impl Fn(&P) -> bool,
    single: impl Fn(&P, &T) -> bool,
) -> (bool, usize) {
    let (mut pi, mut ti) = (0usize, 0usize);
    // The last star seen and the text position its current attempt resumes from.
    let mut star: Option<(usize, usize)> = None;
    let mut steps = 0usize;
    while let Some(t) = text.get(ti) {
        steps += 1;
        match pattern.get(pi) {
            Some(p) if is_star(p) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(p) if single(p, t) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last star absorb one more text token and retry the segment after it.
                Some((s, mark)) => {
                    star = Some((s, mark + 1));
                    pi = s + 1;
                    ti = mark + 1;
                }
                None => return (false, steps),
            },
        }
    }
    // Text consumed: only stars may remain.
    while pattern.get(pi).is_some_and(&is_star) {
        steps += 1;
        pi += 1;
    }
    (pi == pattern.len(), steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, as directly as it can be written: exponential, fine for short strings.
    fn reference(g: Glob, p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| reference(g, rest, &t[i..])),
            Some((c, rest)) => match t.split_first() {
                Some((d, t_rest)) => {
                    let one = (g.question_mark && *c == b'?')
                        || match g.case {
                            Case::Sensitive => c == d,
                            Case::AsciiInsensitive => c.eq_ignore_ascii_case(d),
                        };
                    one && reference(g, rest, t_rest)
                }
                None => false,
            },
        }
    }

    /// The definition again, as a table over (pattern prefix, text prefix): quadratic, for long inputs.
    fn reference_fast(g: Glob, p: &[u8], t: &[u8]) -> bool {
        let mut row = vec![false; t.len() + 1];
        row[0] = true;
        for c in p {
            let mut next = vec![false; t.len() + 1];
            for j in 0..=t.len() {
                next[j] = if *c == b'*' {
                    row[j] || (j > 0 && next[j - 1])
                } else {
                    j > 0 && row[j - 1] && reference(g, &[*c], &t[j - 1..j])
                };
            }
            row = next;
        }
        row[t.len()]
    }

    const DIALECTS: [Glob; 4] = [Glob::IAM_ACTION, Glob::RESOURCE, Glob::STAR_ONLY, Glob::CLOUD_ACTION];

    #[test]
    fn examples() {
        let a = Glob::IAM_ACTION;
        assert!(a.matches("s3:get*", "s3:GetObject"));
        assert!(a.matches("S3:GetObjec?", "s3:getobject"));
        assert!(a.matches("*:GetObject", "s3:GetObject"));
        assert!(a.matches("dynamodb:*Item", "dynamodb:GetItem"));
        assert!(!a.matches("s3:Put*", "s3:GetObject"));
        assert!(a.matches("*", "") && !a.matches("?", ""));
        let r = Glob::RESOURCE;
        assert!(r.matches("arn:aws:s3:::b/*", "arn:aws:s3:::b/x/y"));
        assert!(!r.matches("arn:aws:s3:::B/*", "arn:aws:s3:::b/x"));
        assert!(r.matches("arn:aws:s3:::b?", "arn:aws:s3:::bx"));
        let s = Glob::STAR_ONLY;
        assert!(s.matches("arn:aws:iam::*:role/ci-*", "arn:aws:iam::1:role/ci-deploy"));
        assert!(!s.matches("arn:aws:iam::*:role/ci-*", "arn:aws:iam::1:user/ci-deploy"));
        assert!(!s.matches("role/?", "role/x") && s.matches("role/?", "role/?"));
        assert!(s.matches("exact", "exact") && !s.matches("exact", "exactly"));
        assert!(s.matches("a*b*c", "abc") && s.matches("a*b*c", "axxbyyc") && !s.matches("a*b*c", "acb"));
    }

    #[test]
    fn pathological_patterns_stay_within_the_bound() {
        let text = "a".repeat(20_000);
        let cases = [
            format!("{}b", "a*".repeat(60)),
            format!("*{}b", "a".repeat(200)),
            format!("{}*b", "*a".repeat(100)),
            format!("*{}*b", "?".repeat(150)),
            format!("{}?", "*".repeat(500)),
        ];
        for p in &cases {
            for g in DIALECTS {
                let (got, steps) = g.run_bytes(p.as_bytes(), text.as_bytes());
                let bound = (p.len() + 1) * (text.len() + 1);
                assert!(steps <= bound, "{steps} steps > {bound} for {p:?}");
                assert_eq!(got, reference_fast(g, p.as_bytes(), text.as_bytes()), "{p:?}");
            }
        }
        assert!(!Glob::RESOURCE.matches(&cases[0], &text));
        assert!(Glob::RESOURCE.matches(&cases[4], &text));
    }

    #[test]
    fn tokens_other_than_bytes() {
        // `None` is a star; `Some(x)` matches `x`.
        let p = [Some(1), None, Some(3)];
        assert!(match_by(&p, &[1, 2, 2, 3], Option::is_none, |p, t| *p == Some(*t)));
        assert!(!match_by(&p, &[1, 2, 2], Option::is_none, |p, t| *p == Some(*t)));
    }

    fn pattern() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop::sample::select(b"aAb?*".to_vec()), 0..10)
    }
    fn text() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop::sample::select(b"aAb?".to_vec()), 0..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_the_definition(p in pattern(), t in text()) {
            for g in DIALECTS {
                prop_assert_eq!(g.matches_bytes(&p, &t), reference(g, &p, &t), "{:?} {:?} {:?}", g, p, t);
            }
        }

        #[test]
        fn case_insensitive_is_sensitive_on_lowercased_input(p in pattern(), t in text()) {
            let (lp, lt) = (p.to_ascii_lowercase(), t.to_ascii_lowercase());
            prop_assert_eq!(Glob::IAM_ACTION.matches_bytes(&p, &t), Glob::RESOURCE.matches_bytes(&lp, &lt));
        }

        #[test]
        fn a_pattern_matches_itself_and_star_matches_all(t in text()) {
            let literal: Vec<u8> = t.iter().copied().filter(|c| *c != b'*').collect();
            for g in DIALECTS {
                prop_assert!(g.matches_bytes(&literal, &literal));
                prop_assert!(g.matches_bytes(b"*", &t));
            }
        }
    }
}
