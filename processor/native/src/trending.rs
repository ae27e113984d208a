//! processor/trending.py: the decayed engagement mass of one post, operation for
//! operation (the same libm pow, the same order), so both implementations agree to
//! the last bit.

const MAX_EXPONENT: f64 = 512.0;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub half_life_ms: f64,
    pub like_weight: f64,
    pub comment_weight: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trending {
    pub like_mass: f64,
    pub comment_mass: f64,
    pub epoch_ms: i64,
    pub counted_likers: i64,
    pub counted_commenters: i64,
    pub ignored_events: i64,
    pub last_engagement_ms: i64,
}

/// 2^x through libm's pow, as Python's math.pow(2.0, x). (LLVM would rewrite a
/// literal-base pow(2, x) into exp2(x), which can differ in the last bit.)
fn pow2(x: f64) -> f64 {
    std::hint::black_box(2f64).powf(x)
}

fn ratio(cfg: &Config, delta_ms: i128) -> f64 {
    delta_ms as f64 / cfg.half_life_ms
}

fn max0(x: f64) -> f64 {
    // Python's max(0.0, x): 0.0 unless x is greater.
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// trending.py Role: what a user's contribution counts as (its mass and its count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    None,
    Liker,
    Commenter,
}

impl Role {
    /// A (non-author) user who likes the post or not and has live comments.
    pub fn of(liked: bool, live_comments: i64) -> Role {
        if live_comments > 0 {
            Role::Commenter
        } else if liked {
            Role::Liker
        } else {
            Role::None
        }
    }

    fn weight(self, cfg: &Config) -> f64 {
        match self {
            Role::None => 0.0,
            Role::Liker => cfg.like_weight,
            Role::Commenter => cfg.comment_weight,
        }
    }
}

fn term(cfg: &Config, w: f64, t_ms: i64, epoch_ms: i64) -> f64 {
    w * pow2(ratio(cfg, i128::from(t_ms) - i128::from(epoch_ms)))
}

pub fn move_epoch(cfg: &Config, state: &mut Trending, epoch_ms: i64) {
    let factor = pow2(ratio(
        cfg,
        i128::from(state.epoch_ms) - i128::from(epoch_ms),
    ));
    state.like_mass *= factor;
    state.comment_mass *= factor;
    state.epoch_ms = epoch_ms;
}

fn rebase(cfg: &Config, state: &mut Trending, t_ms: i64) {
    if ratio(cfg, i128::from(t_ms) - i128::from(state.epoch_ms)) <= MAX_EXPONENT {
        return;
    }
    move_epoch(cfg, state, t_ms);
}

/// trending.py change_role: replace a user's contribution as `old` dated old_t
/// (default t_ms) by one as `new` dated t_ms.
pub fn change_role(
    cfg: &Config,
    state: &mut Trending,
    old: Role,
    new: Role,
    t_ms: i64,
    old_t_ms: Option<i64>,
) -> bool {
    let old_t = old_t_ms.unwrap_or(t_ms);
    if old == new && (old_t == t_ms || old == Role::None) {
        state.ignored_events += 1;
        return false;
    }
    rebase(cfg, state, t_ms.max(old_t));
    match old {
        Role::None => {}
        Role::Liker => {
            let t = term(cfg, old.weight(cfg), old_t, state.epoch_ms);
            state.like_mass = max0(state.like_mass - t);
            state.counted_likers -= 1;
        }
        Role::Commenter => {
            let t = term(cfg, old.weight(cfg), old_t, state.epoch_ms);
            state.comment_mass = max0(state.comment_mass - t);
            state.counted_commenters -= 1;
        }
    }
    if new != Role::None {
        let t = term(cfg, new.weight(cfg), t_ms, state.epoch_ms);
        if new == Role::Commenter {
            state.comment_mass += t;
            state.counted_commenters += 1;
        } else {
            state.like_mass += t;
            state.counted_likers += 1;
        }
        state.last_engagement_ms = state.last_engagement_ms.max(t_ms);
    }
    if state.counted_likers == 0 {
        state.like_mass = 0.0;
    }
    if state.counted_commenters == 0 {
        state.comment_mass = 0.0;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const EQUAL: Config = Config {
        half_life_ms: 60_000.0,
        like_weight: 2.0,
        comment_weight: 2.0,
    };

    #[test]
    fn equal_weights_keep_likers_and_commenters_apart() {
        let mut s = Trending::default();
        assert!(change_role(
            &EQUAL,
            &mut s,
            Role::None,
            Role::Liker,
            0,
            None
        ));
        assert!(change_role(
            &EQUAL,
            &mut s,
            Role::None,
            Role::Liker,
            0,
            None
        ));
        // Same weight, same time: only the role changes, and it must move.
        assert!(change_role(
            &EQUAL,
            &mut s,
            Role::Liker,
            Role::Commenter,
            0,
            Some(0)
        ));
        assert_eq!((s.counted_likers, s.counted_commenters), (1, 1));
        assert_eq!((s.like_mass, s.comment_mass), (2.0, 2.0));
        assert!(change_role(
            &EQUAL,
            &mut s,
            Role::Commenter,
            Role::None,
            0,
            Some(0)
        ));
        assert_eq!((s.counted_commenters, s.comment_mass), (0, 0.0));
        assert!(!change_role(
            &EQUAL,
            &mut s,
            Role::Liker,
            Role::Liker,
            0,
            Some(0)
        ));
        assert_eq!(s.ignored_events, 1);
    }

    #[test]
    fn a_contribution_decays_by_half_each_half_life() {
        let mut s = Trending::default();
        change_role(&EQUAL, &mut s, Role::None, Role::Liker, -60_000, None);
        assert_eq!(s.like_mass, 1.0); // relative to epoch 0: one half-life earlier
        assert_eq!(s.last_engagement_ms, 0); // never moves back
    }
}
