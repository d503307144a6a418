//! The transition table: which command may move a request from which state, and where to.
//!
//! It is the one place that decides legality; every write of the ledger goes through [`next`], so a
//! stored request can only be in a state this table reaches.

use grantwatch_types::{AccessCommand, AccessState};

/// A command the table does not allow in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {command} a request that is {from}{}", if from.is_terminal() { " (it is final)" } else { "" })]
pub struct TransitionError {
    pub from: AccessState,
    pub command: AccessCommand,
}

/// The state a new request starts in ([`AccessCommand::Submit`] creates it; it is not a transition
/// from any state).
pub const INITIAL: AccessState = AccessState::Pending;

/// The state `command` leads to from `state`, or why it may not be applied.
///
/// | from       | command                                  | to         |
/// |------------|------------------------------------------|------------|
/// | pending    | add_approval                             | pending    |
/// | pending    | approve                                  | approved   |
/// | pending    | deny                                     | denied     |
/// | pending    | cancel                                   | cancelled  |
/// | approved   | cancel                                   | cancelled  |
/// | approved   | activate                                 | active     |
/// | approved   | fail                                     | failed     |
/// | active     | request_revoke, claim, revoke_failed     | active     |
/// | active     | expire                                   | expired    |
/// | active     | revoke                                   | revoked    |
/// | active     | fail                                     | failed     |
///
/// Everything else is refused, in particular any command on a terminal state and `submit` on any.
pub fn next(state: AccessState, command: AccessCommand) -> Result<AccessState, TransitionError> {
    use AccessCommand as C;
    use AccessState as S;
    let to = match (state, command) {
        (S::Pending, C::AddApproval) => S::Pending,
        (S::Pending, C::Approve) => S::Approved,
        (S::Pending, C::Deny) => S::Denied,
        (S::Pending | S::Approved, C::Cancel) => S::Cancelled,
        (S::Approved, C::Activate) => S::Active,
        (S::Approved | S::Active, C::Fail) => S::Failed,
        (S::Active, C::RequestRevoke | C::Claim | C::RevokeFailed) => S::Active,
        (S::Active, C::Expire) => S::Expired,
        (S::Active, C::Revoke) => S::Revoked,
        _ => return Err(TransitionError { from: state, command }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_exactly_its_documented_edges() {
        let legal = AccessState::ALL
            .iter()
            .flat_map(|&s| AccessCommand::ALL.iter().map(move |&c| (s, c)))
            .filter(|&(s, c)| next(s, c).is_ok())
            .count();
        // 4 from pending, 3 from approved, 6 from active.
        assert_eq!(legal, 13);
        for s in AccessState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for c in AccessCommand::ALL {
                assert_eq!(next(s, c), Err(TransitionError { from: s, command: c }));
            }
        }
    }

    #[test]
    fn errors_name_the_illegal_transition() {
        let e = next(AccessState::Expired, AccessCommand::Approve).unwrap_err();
        assert_eq!(e.to_string(), "cannot approve a request that is expired (it is final)");
        let e = next(AccessState::Pending, AccessCommand::Activate).unwrap_err();
        assert_eq!(e.to_string(), "cannot activate a request that is pending");
    }
}
