//! Resource-pattern vs ARN-template matching.
//!
//! A template (`arn:${Partition}:s3:::${BucketName}/${ObjectName}`) and a policy pattern
//! (`arn:aws:s3:::mybucket/*`) are both globs. Two questions are asked:
//! * `intersects`: could some concrete ARN match both? (the statement applies to the resource type)
//! * `covers`: does the pattern match every ARN the template describes? (conservative: may say no)
//!
//! ARNs are split at their first five colons. The partition is ignored (policies only ever meet their own
//! partition). Service, region and account are compared case-insensitively, the resource part case-sensitively.
//! In a template, `${Var}` and a literal `*` match anything, including `/` and `:`. In a pattern, `*` and `?`
//! are globs, `${*}`, `${?}`, `${$}` are escaped literals, and any other `${...}` (a policy variable such as
//! `${aws:username}`) may match anything for `intersects` but never counts as covering. A pattern with fewer
//! than six colon-separated parts is matched against the whole template string.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Lit(u8),
    One,
    Any,
    /// A template variable that never holds a `/` (see [`Template::new`]).
    AnySeg,
    /// A policy variable: anything for `intersects`, nothing for `covers`.
    Var,
}

fn push(out: &mut Vec<Tok>, t: Tok) {
    if t == Tok::Any && out.last() == Some(&Tok::Any) {
        return;
    }
    out.push(t);
}

fn tokens(s: &str, template: bool, lower: bool, no_slash: &dyn Fn(&[u8]) -> bool) -> Vec<Tok> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'$'
            && b.get(i + 1) == Some(&b'{')
            && let Some(end) = b.get(i + 2..).and_then(|r| r.iter().position(|&x| x == b'}'))
        {
            let inner = b.get(i + 2..i + 2 + end).unwrap_or(&[]);
            let tok = match (template, inner) {
                (true, name) if no_slash(name) => Tok::AnySeg,
                (true, _) => Tok::Any,
                (false, [x @ (b'*' | b'?' | b'$')]) => Tok::Lit(*x),
                (false, _) => Tok::Var,
            };
            push(&mut out, tok);
            i += end + 3;
            continue;
        }
        let tok = match c {
            b'*' => Tok::Any,
            b'?' if !template => Tok::One,
            _ if lower => Tok::Lit(c.to_ascii_lowercase()),
            _ => Tok::Lit(c),
        };
        push(&mut out, tok);
        i += 1;
    }
    out
}

/// Could some string match both `a` and `b`? (product-automaton reachability)
fn intersects(a: &[Tok], b: &[Tok]) -> bool {
    let (n, m) = (a.len(), b.len());
    let w = m + 1;
    let mut seen = vec![false; (n + 1) * w];
    let mut stack = vec![(0usize, 0usize)];
    let wild = |t: Option<&Tok>| matches!(t, Some(Tok::Any | Tok::Var | Tok::AnySeg));
    while let Some((i, j)) = stack.pop() {
        match seen.get_mut(i * w + j) {
            Some(s) if !*s => *s = true,
            _ => continue,
        }
        if i == n && j == m {
            return true;
        }
        let (x, y) = (a.get(i), b.get(j));
        let (wx, wy) = (wild(x), wild(y));
        if wx {
            stack.push((i + 1, j));
        }
        if wy {
            stack.push((i, j + 1));
        }
        if let (Some(x), Some(y)) = (x, y) {
            let compatible = match (x, y) {
                (Tok::Lit(c), Tok::Lit(d)) => c == d,
                (Tok::AnySeg, Tok::Lit(b'/')) | (Tok::Lit(b'/'), Tok::AnySeg) => false,
                _ => true,
            };
            if compatible && !(wx && wy) {
                stack.push((if wx { i } else { i + 1 }, if wy { j } else { j + 1 }));
            }
        }
    }
    false
}

/// Does pattern `p` match every string of template `t`? `t`'s wildcards are opaque symbols only a `*` of `p`
/// can absorb: sound (never claims coverage wrongly), not complete. This is plain glob matching with the
/// template as the text, so it is [`crate::glob::match_by`]'s.
fn covers(p: &[Tok], t: &[Tok]) -> bool {
    let single = |pt: &Tok, tt: &Tok| match (pt, tt) {
        (Tok::Lit(c), Tok::Lit(d)) => c == d,
        (Tok::One, Tok::Lit(_)) => true,
        _ => false,
    };
    crate::glob::match_by(p, t, |pt| *pt == Tok::Any, single)
}

/// A catalog ARN template, pre-tokenized.
#[derive(Debug)]
pub(crate) struct Template {
    /// `[service, region, account, resource]`, or `None` if the template is not a six-part ARN.
    segs: Option<[Vec<Tok>; 4]>,
    whole: Vec<Tok>,
}

impl Template {
    /// `segment_vars`: for the template's service, the variables that some template of that service follows
    /// with a `/` (`${BucketName}` in `${BucketName}/${ObjectName}`): these are path segments and never hold
    /// a `/`, so `arn:aws:s3:::b/*` does not match `arn:${Partition}:s3:::${BucketName}`. Every other variable
    /// matches anything, `/` included (object keys, log group names, IAM paths, ECR repository names).
    pub(crate) fn new(s: &str, segment_vars: &dyn Fn(&str, &[u8]) -> bool) -> Template {
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        let service = parts.get(2).copied().unwrap_or("");
        let ns = |v: &[u8]| segment_vars(service, v);
        let none = |_: &[u8]| false;
        let segs = match parts.as_slice() {
            [_, _, service, region, account, resource] => Some([
                tokens(service, true, true, &none),
                tokens(region, true, true, &none),
                tokens(account, true, true, &none),
                tokens(resource, true, false, &ns),
            ]),
            _ => None,
        };
        Template { segs, whole: tokens(s, true, false, &ns) }
    }
}

/// `(service, variable)` pairs where the variable is directly followed by `/` in some template of the service.
pub(crate) fn segment_variables<'a>(
    templates: impl IntoIterator<Item = &'a str>,
) -> rustc_hash::FxHashSet<(String, String)> {
    let mut out = rustc_hash::FxHashSet::default();
    for t in templates {
        let service = t.split(':').nth(2).unwrap_or("");
        let mut rest = t;
        while let Some(start) = rest.find("${") {
            let after = rest.get(start + 2..).unwrap_or("");
            let Some(end) = after.find('}') else { break };
            if after.get(end + 1..end + 2) == Some("/") {
                out.insert((service.to_string(), after.get(..end).unwrap_or("").to_string()));
            }
            rest = after.get(end + 1..).unwrap_or("");
        }
    }
    out
}

/// A policy `Resource` pattern, pre-tokenized.
#[derive(Debug)]
pub(crate) enum Pattern {
    /// `*` (or `**`...): every resource, including "no resource type".
    All,
    Segs([Vec<Tok>; 4]),
    Whole(Vec<Tok>),
}

impl Pattern {
    pub(crate) fn new(s: &str) -> Pattern {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|c| c == b'*') {
            return Pattern::All;
        }
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        match parts.as_slice() {
            [arn, _, service, region, account, resource] if arn.eq_ignore_ascii_case("arn") => Pattern::Segs([
                tokens(service, false, true, &|_| false),
                tokens(region, false, true, &|_| false),
                tokens(account, false, true, &|_| false),
                tokens(resource, false, false, &|_| false),
            ]),
            _ => Pattern::Whole(tokens(s, false, false, &|_| false)),
        }
    }

    /// Matching against the "no resource type" pseudo-template `*`: the pattern must match the string `*`.
    pub(crate) fn matches_star(&self) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Segs(_) => false,
            Pattern::Whole(p) => covers(p, &[Tok::Lit(b'*')]),
        }
    }

    /// `(intersects, covers)` against a template.
    pub(crate) fn against(&self, t: &Template) -> (bool, bool) {
        match (self, &t.segs) {
            (Pattern::All, _) => (true, true),
            (Pattern::Segs(p), Some(ts)) => {
                // Fast reject on a literal service (the common case; templates' services are literal).
                if let ([ps, ..], [tsv, ..]) = (p, ts)
                    && ps.iter().chain(tsv.iter()).all(|t| matches!(t, Tok::Lit(_)))
                    && ps != tsv
                {
                    return (false, false);
                }
                let inter = p.iter().zip(ts.iter()).all(|(p, t)| intersects(t, p));
                let cov = inter && p.iter().zip(ts.iter()).all(|(p, t)| covers(p, t));
                (inter, cov)
            }
            (Pattern::Segs(_), None) => (false, false),
            (Pattern::Whole(p), _) => {
                let inter = intersects(&t.whole, p);
                (inter, inter && covers(p, &t.whole))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, template: &str) -> (bool, bool) {
        let seg = segment_variables(["arn:${Partition}:s3:::${BucketName}/${ObjectName}"]);
        Pattern::new(pattern).against(&Template::new(template, &|s, v| {
            seg.contains(&(s.to_string(), String::from_utf8_lossy(v).into_owned()))
        }))
    }

    #[test]
    fn s3_object_vs_bucket() {
        let obj = "arn:${Partition}:s3:::${BucketName}/${ObjectName}";
        let bucket = "arn:${Partition}:s3:::${BucketName}";
        assert_eq!(m("arn:aws:s3:::b/*", obj), (true, false));
        assert_eq!(m("arn:aws:s3:::b/*", bucket), (false, false));
        assert_eq!(m("arn:aws:s3:::b", bucket), (true, false));
        assert_eq!(m("arn:aws:s3:::b*", bucket), (true, false));
        assert_eq!(m("arn:aws:s3:::b/x/y", obj), (true, false));
        assert_eq!(m("arn:aws:s3:::*", bucket), (true, true));
        assert_eq!(m("arn:aws:s3:::*", obj), (true, true));
        assert_eq!(m("arn:aws:s3:::*/*", obj), (true, true));
        assert_eq!(m("arn:aws:s3:::*/*", bucket), (false, false));
        assert_eq!(m("*", obj), (true, true));
        assert_eq!(m("arn:aws:ec2:*:*:instance/*", obj), (false, false));
    }

    #[test]
    fn regions_accounts_and_variables() {
        let t = "arn:${Partition}:dynamodb:${Region}:${Account}:table/${TableName}";
        assert_eq!(m("arn:aws:dynamodb:*:*:table/*", t), (true, true));
        assert_eq!(m("arn:aws:dynamodb:us-east-1:123456789012:table/T", t), (true, false));
        assert_eq!(m("arn:aws:dynamodb:us-east-1:*:*", t), (true, false));
        assert_eq!(m("arn:aws:dynamodb:*:*:table/${aws:username}", t), (true, false));
        let iam = "arn:${Partition}:iam::${Account}:user/${UserNameWithPath}";
        assert_eq!(m("arn:aws:iam::*:user/*", iam), (true, true));
        assert_eq!(m("arn:aws:iam:us-east-1:*:user/*", iam), (false, false));
        assert_eq!(m("arn:*", iam), (true, true));
        let logs = "arn:${Partition}:logs:${Region}:${Account}:log-group:${LogGroupName}:log-stream:${LogStreamName}";
        assert_eq!(m("arn:aws:logs:*:*:*", logs), (true, true));
        assert_eq!(m("arn:aws:logs:*:*:log-group:/x:*", logs), (true, false));
    }

    #[test]
    fn glob_primitives() {
        let t = |s: &str| tokens(s, true, false, &|_| false);
        let p = |s: &str| tokens(s, false, false, &|_| false);
        assert!(intersects(&t("a${X}c"), &p("ab?")));
        assert!(!intersects(&t("a${X}c"), &p("ab?d")));
        assert!(covers(&p("a*"), &t("a${X}")));
        assert!(!covers(&p("a?"), &t("a${X}")));
        assert!(covers(&p("${*}"), &[Tok::Lit(b'*')]));
        assert!(Pattern::new("*").matches_star() && !Pattern::new("arn:aws:s3:::*").matches_star());
    }
}
