//! Sharing one database's connection budget across a fleet of pglittle
//! instances, with no coordinator: the pure part of fleet sync.
//!
//! Several instances (a fleet, named say "orders") run as sidecars in front
//! of one database and share its budget B (`max_db_connections`). Every
//! sync period each instance, on its probe connection, publishes its state
//! in that connection's `application_name` ([`encode`]) and reads the other
//! members' states back from `pg_stat_activity` ([`members_of`]). The
//! database is the blackboard: a member whose probe connection closes (the
//! process died) drops out of `pg_stat_activity` by itself, and its cap is
//! free room for the others from the next round on.
//!
//! # One round, as the caller runs it
//! 1. Read the rows of the fleet, leaving out this connection's own row by
//!    pid: `SELECT application_name FROM pg_stat_activity WHERE
//!    starts_with(application_name, $1) AND pid <> pg_backend_pid()`, with
//!    `$1` = [`fleet_prefix`] (not `LIKE`: `_` is a wildcard there). Decode
//!    them with [`members_of`].
//! 2. Ask [`next_cap`] with a [`Round`], and carry out its [`Step`] in the
//!    order it names:
//!    - [`Step::Raise`]: publish first (`SET application_name`), then let the
//!      pool open up to the new cap. If the publish cannot happen within
//!      [`RAISE_WITHIN`] of the read ([`raise_in_time`]), carry out
//!      [`Decision::without_raise`] instead.
//!    - [`Step::Lower`]: lower the pool's limit and close connections down to
//!      it first (idle ones at once, busy ones as they come back), and
//!      publish the lower cap only once the pool holds no more than it.
//!      Until then keep publishing the old cap.
//!    - [`Step::Keep`]: publish, to refresh demand and held.
//! 3. Count the round (`Round::rounds`) once the publish is done, and run
//!    the next after the sync period, or after [`SOON`] (if shorter) when
//!    [`Decision::soon`] says so.
//!
//! An instance that cannot reach the database does not call [`next_cap`]:
//! it keeps its last cap. Its row stays visible as long as its probe
//! connection lives; when the probe connection is lost, reconnect, count
//! rounds from 0 again and publish the cap still held.
//!
//! # The safety invariant
//! At every instant the caps published by the fleet add up to at most B,
//! and every instance holds at most its published cap, so the connections
//! held by the fleet add up to at most B. Lowering never breaks it (the
//! connections go before the cap is published). A raise takes only a slice
//! of the free room `F = B - sum of published caps` seen in the snapshot.
//! The F free units are dealt round-robin over the n members that
//! published themselves short (cap below their fair share, the `+` after
//! the cap), in the deal order (smaller caps first, then larger bids, then
//! instance id): the member at place p gets `F / n`, plus one if
//! `p < F % n`. Who takes part and in what order depend only on what the
//! members published, so all members reading one snapshot agree on it, and
//! the slices of one snapshot add up to exactly F: even when every member
//! acts on the same snapshot at once, the caps add up to at most B. A member
//! not published as short takes nothing this round (it publishes that it is
//! short, and is dealt in from the next round), and neither does a member
//! in its first round (it joins with cap 0, so every snapshot a raise is
//! dealt from counts it). Its second round comes [`SOON`] later rather
//! than a sync period: longer than [`RAISE_WITHIN`], so any raise dealt
//! from a snapshot read before it joined is already published when it
//! reads, and the room it is dealt from is really free. A newcomer bids an
//! equal share from its first round; it gets it then if that much room is
//! free, or as the others hand back their surplus.
//!
//! When members act on snapshots of different ages within a round, the
//! room left still covers what the members yet to act may take: a member
//! on a newer snapshot sees the raises already published and deals only
//! the room really left, while the members yet to act have not changed
//! what they published, so they keep their part and their order in the
//! dealing. That argument is informal; the property tests check the
//! invariant after every half-step of random interleavings of stale and
//! fresh snapshots, with members joining and dying. It assumes that a step
//! (read, decide, publish) is short against the time between two reads of
//! one member, hence [`raise_in_time`]: a member that read twice while
//! another's raise was unpublished could deal itself room twice.
//!
//! How fast a load that moves is followed: a member whose load rose
//! publishes itself short (and runs its next round [`SOON`]); a member
//! above its fair share then gives back its whole surplus at once, since
//! someone waits for it (with nobody short it gives back half a round,
//! so a dip does not throw away connections it will want again), and runs
//! its next round soon to publish the lower cap once its pools are down to
//! it; the short member takes the room from its next round on.
//!
//! Limits: all members must use the same B; instance ids must be unique
//! (a duplicate gives up its extra unit, so the sum still holds, but the
//! fair shares are skewed); and a member whose probe connection closes
//! while its pool connections live on (a partition, a backend busy in a
//! long query) is counted out before its connections are, until they close.

use std::cmp::{Ordering, Reverse};
use std::time::{Duration, Instant};

use super::budget::share;
pub use crate::config::fleet::{
    check_fleet, check_instance, NameError, NameKind, MAX_FLEET_LEN, MAX_INSTANCE_LEN,
};

/// Every published application_name starts with this.
pub const PREFIX: &str = "pglittle-fleet:";
/// PostgreSQL keeps NAMEDATALEN - 1 bytes of an application_name.
pub const APPLICATION_NAME_MAX: usize = 63;
/// Published figures have at most 5 digits; larger ones are published as
/// this (and a budget above it is treated as this).
pub const MAX_FIGURE: u32 = 99_999;
const FIGURE_DIGITS: usize = 5;
/// Follows the cap of a member that is [`Published::short`].
const SHORT_MARK: &str = "+";
// The longest encoding: the prefix, the two names, three tagged figures
// and the short mark.
const _: () = assert!(
    PREFIX.len()
        + MAX_FLEET_LEN
        + 1
        + MAX_INSTANCE_LEN
        + 3 * (2 + FIGURE_DIGITS)
        + SHORT_MARK.len()
        <= APPLICATION_NAME_MAX
);
/// Every member wants at least this many connections, so an idle one can
/// still serve its first query (as far as the budget goes).
pub const FLOOR: u32 = 1;
/// For its first rounds an instance bids at least an equal share of the
/// budget: it has no measured demand yet, and its clients are on the way.
pub const NEW_ROUNDS: u32 = 3;
/// A cap above the fair share gives back this part of the surplus per round
/// (rounded up, so at least one) while no other member waits for room; when
/// one is published short, the whole surplus goes back at once.
pub const GIVE_BACK_PART: u32 = 2;
/// A raise must be published within this time of the snapshot it was dealt
/// from (or half the sync period, if less: [`raise_in_time`]), or be
/// dropped: the safety argument needs a step to be short against the time
/// between two reads of one member.
pub const RAISE_WITHIN: Duration = Duration::from_millis(500);
/// A round that leaves something for the next to finish is followed by the
/// next this soon (or after the sync period, if shorter), not a whole sync
/// period later ([`Decision::soon`]). After the round that joins a member
/// with cap 0: every raise dealt from a snapshot that did not count it yet
/// has been published (or dropped) by then, so its own first raise is
/// dealt from room that is really free. Longer than [`RAISE_WITHIN`], so a
/// member still never reads twice while a raise dealt before its first
/// read is unpublished.
pub const SOON: Duration = Duration::from_millis(600);
const _: () = assert!(SOON.as_millis() > RAISE_WITHIN.as_millis());

/// The state one member publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub fleet: String,
    pub instance: String,
    /// The connections this member bids for: its demand, raised to
    /// [`FLOOR`], and to an equal share while it is new.
    pub demand: u32,
    /// The most it may hold.
    pub cap: u32,
    /// What it held when it published.
    pub held: u32,
    /// Its cap is below its fair share as it last computed it: it takes
    /// part in the dealing of free room.
    pub short: bool,
}

/// The application_name publishing `p`:
/// `pglittle-fleet:<fleet>:<instance>:d<demand>:c<cap>[+]:h<held>`, with
/// `+` after the cap when the member is short, figures capped at
/// [`MAX_FIGURE`]. It fits [`APPLICATION_NAME_MAX`] when the names
/// pass [`check_fleet`] and [`check_instance`] (check them at startup: a
/// longer name would be cut by PostgreSQL, and a member nobody can decode
/// is a member whose cap nobody counts).
pub fn encode(p: &Published) -> String {
    let mark = if p.short { SHORT_MARK } else { "" };
    format!(
        "{PREFIX}{}:{}:d{}:c{}{mark}:h{}",
        p.fleet,
        p.instance,
        p.demand.min(MAX_FIGURE),
        p.cap.min(MAX_FIGURE),
        p.held.min(MAX_FIGURE),
    )
}

/// The state published in `name`, or `None` for any application_name that
/// [`encode`] would not write.
pub fn decode(name: &str) -> Option<Published> {
    let mut parts = name.strip_prefix(PREFIX)?.split(':');
    let fleet = parts.next()?;
    let instance = parts.next()?;
    let demand = figure(parts.next()?, 'd')?;
    let cap = parts.next()?;
    let (cap, short) = match cap.strip_suffix(SHORT_MARK) {
        Some(cap) => (cap, true),
        None => (cap, false),
    };
    let cap = figure(cap, 'c')?;
    let held = figure(parts.next()?, 'h')?;
    if parts.next().is_some() {
        return None;
    }
    check_fleet(fleet).ok()?;
    check_instance(instance).ok()?;
    Some(Published {
        fleet: fleet.to_owned(),
        instance: instance.to_owned(),
        demand,
        cap,
        held,
        short,
    })
}

/// A figure tagged `tag`: the tag then 1 to 5 ASCII digits.
fn figure(part: &str, tag: char) -> Option<u32> {
    let digits = part.strip_prefix(tag)?;
    let well_formed =
        (1..=FIGURE_DIGITS).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return None;
    }
    digits.parse().ok()
}

/// What every application_name of `fleet` starts with, for the caller's
/// query (`starts_with(application_name, $1)`).
pub fn fleet_prefix(fleet: &str) -> String {
    format!("{PREFIX}{fleet}:")
}

/// The members of `fleet` among application names read from
/// `pg_stat_activity`. Other fleets and other names are skipped. The
/// caller leaves out its own row by pid, not by instance id, so that a
/// stale row under the same id still counts.
pub fn members_of<'a>(fleet: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<Published> {
    names
        .into_iter()
        .filter_map(decode)
        .filter(|p| p.fleet == fleet)
        .collect()
}

/// What one instance knows at one sync round.
#[derive(Clone, Copy, Debug)]
pub struct Round<'a> {
    /// B, the fleet's budget (`max_db_connections`); the same on every member.
    pub budget: u32,
    /// What this instance has published (and others can see): its cap is
    /// the current cap. At its first round: its names, zeros, not short.
    pub mine: &'a Published,
    /// The connections it would like now (busy plus queued, from its
    /// auto-size controller).
    pub demand: u32,
    /// The connections its pool holds now.
    pub held: u32,
    /// The other members' states, as read this round.
    pub members: &'a [Published],
    /// Rounds completed since it joined (0 in the first, and again after the
    /// probe connection was lost). It takes nothing in round 0.
    pub rounds: u32,
}

/// What to do with the cap, in the order the variant names. The pool's
/// limit and the published cap are the same number, [`Step::cap`]; what
/// differs is which of them changes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Publish `to` first, then let the pool open up to it.
    Raise { from: u32, to: u32 },
    /// Close the pool down to `to` first, then publish it.
    Lower { from: u32, to: u32 },
    /// Publish the same cap again.
    Keep { cap: u32 },
}

impl Step {
    /// The cap once the step is done: published, and the pool's limit.
    pub fn cap(self) -> u32 {
        match self {
            Step::Raise { to, .. } | Step::Lower { to, .. } => to,
            Step::Keep { cap } => cap,
        }
    }
}

/// The outcome of one round for this instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub step: Step,
    /// This instance's max-min fair share of the budget.
    pub target: u32,
    /// What to publish, at the point the step says: the new cap, the bid,
    /// and `held` clamped to the cap (the caller may refresh it).
    pub publish: Published,
    /// The next round should come [`SOON`]: this one joined the fleet, or
    /// published this member short for the first time (it is dealt room
    /// from the next round on), or lowered the cap (published once the
    /// pools have closed down to it).
    pub soon: bool,
}

impl Decision {
    /// The same round with a raise given up (published too late to be
    /// safe): the old cap is kept, and still published as short.
    pub fn without_raise(&self) -> Decision {
        let Step::Raise { from, .. } = self.step else {
            return self.clone();
        };
        let mut publish = self.publish.clone();
        publish.cap = from;
        publish.held = publish.held.min(from);
        publish.short = from < self.target;
        Decision {
            step: Step::Keep { cap: from },
            target: self.target,
            publish,
            soon: self.soon,
        }
    }
}

/// This instance's step for one round: toward its fair share of the budget,
/// raising only within its slice of the free room, lowering by
/// [`GIVE_BACK_PART`] of the surplus, or by all of it when another member
/// waits for room. See the module documentation.
pub fn next_cap(r: &Round) -> Decision {
    let budget = r.budget.min(MAX_FIGURE);
    let want = bid(r, budget);
    let target = my_target(budget, r, want);
    let cap = r.mine.cap;
    let step = match cap.cmp(&target) {
        Ordering::Greater if r.members.iter().any(|m| m.short) => Step::Lower {
            from: cap,
            to: target,
        },
        Ordering::Greater => Step::Lower {
            from: cap,
            to: cap - (cap - target).div_ceil(GIVE_BACK_PART),
        },
        Ordering::Less if r.rounds > 0 => {
            let to = cap + my_slice(budget, r).min(target - cap);
            if to > cap {
                Step::Raise { from: cap, to }
            } else {
                Step::Keep { cap }
            }
        }
        _ => Step::Keep { cap },
    };
    let short = step.cap() < target;
    let lowered = matches!(step, Step::Lower { .. });
    Decision {
        step,
        target,
        publish: Published {
            fleet: r.mine.fleet.clone(),
            instance: r.mine.instance.clone(),
            demand: want,
            cap: step.cap(),
            held: r.held.min(step.cap()),
            short,
        },
        soon: r.rounds == 0 || (short && !r.mine.short) || lowered,
    }
}

/// Whether a raise dealt from a snapshot read at `read_at` may still be
/// published at `now`, with rounds every `period`: within [`RAISE_WITHIN`],
/// and within half the period, so that no member reads twice (rounds come
/// at least `min(period, SOON)` apart) while it is unpublished.
pub fn raise_in_time(read_at: Instant, now: Instant, period: Duration) -> bool {
    now.saturating_duration_since(read_at) <= RAISE_WITHIN.min(period / 2)
}

/// The demand this instance publishes: at least [`FLOOR`], and at least an
/// equal share while it is new.
fn bid(r: &Round, budget: u32) -> u32 {
    let members = u32::try_from(r.members.len() + 1).unwrap_or(u32::MAX);
    let mut want = r.demand.max(FLOOR);
    if r.rounds < NEW_ROUNDS {
        want = want.max(budget / members);
    }
    want.min(MAX_FIGURE)
}

/// This instance's fair share, with its own bid `want` in place of what it
/// published last.
fn my_target(budget: u32, r: &Round, want: u32) -> u32 {
    let mut wants: Vec<(&str, u32)> = vec![(&r.mine.instance, want)];
    wants.extend(r.members.iter().map(|m| (m.instance.as_str(), m.demand)));
    fair_shares(budget, &wants).first().copied().unwrap_or(0)
}

/// Max-min fair water-filling of `budget` over `(instance, want)` pairs,
/// wants raised to [`FLOOR`]. The split is computed in a canonical order,
/// so every member computes the same one whatever order it lists them in;
/// the odd units go to the largest wants, then to the lowest instance ids
/// (as [`deal_key`] deals free room).
fn fair_shares(budget: u32, wants: &[(&str, u32)]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..wants.len()).collect();
    // `share` hands its odd units to the largest wants, last listed first.
    order.sort_by(|&a, &b| wants[b].cmp(&wants[a]));
    let sorted: Vec<usize> = order
        .iter()
        .map(|&i| wants[i].1.max(FLOOR) as usize)
        .collect();
    let got = share(&sorted, budget as usize);
    let mut shares = vec![0; wants.len()];
    for (&i, g) in order.iter().zip(got) {
        shares[i] = u32::try_from(g).unwrap_or(u32::MAX);
    }
    shares
}

/// The order free units are dealt in: smaller caps first, then larger bids,
/// then instance id. It depends only on a member's own published state, so
/// members that have not acted yet keep their order in every snapshot.
/// Among equal caps it is the order [`fair_shares`] gives its own odd units
/// in, so the member whose fair share is one above the others' gets the
/// odd free unit.
fn deal_key(p: &Published) -> (u32, Reverse<u32>, &str) {
    (p.cap, Reverse(p.demand), &p.instance)
}

/// This instance's slice of the free room: the free units dealt round-robin,
/// in [`deal_key`] order, over the members published as
/// [`Published::short`]. A member not published as short takes nothing (it
/// publishes that it is short this round, and is dealt in from the next).
/// A member that shares its instance id with another cannot tell their
/// places apart, and takes only the even part.
fn my_slice(budget: u32, r: &Round) -> u32 {
    if !r.mine.short {
        return 0;
    }
    let caps: u64 = r.members.iter().map(|m| u64::from(m.cap)).sum::<u64>() + u64::from(r.mine.cap);
    let free = u64::from(budget).saturating_sub(caps);
    let me = deal_key(r.mine);
    let rivals = r.members.iter().filter(|m| m.short);
    let n = rivals.clone().count() as u64 + 1;
    let place = rivals.filter(|m| deal_key(m) < me).count() as u64;
    let twin = r.members.iter().any(|m| m.instance == r.mine.instance);
    let odd = !twin && place < free % n;
    u32::try_from(free / n + u64::from(odd)).unwrap_or(0)
}

/// One row of `SHOW FLEET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    pub instance: String,
    pub demand: u32,
    pub cap: u32,
    pub held: u32,
    /// Its fair share of the budget, from the published bids.
    pub target: u32,
    /// It published itself short of its fair share.
    pub short: bool,
    pub is_me: bool,
}

/// The fleet as this instance sees it, for `SHOW FLEET` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetView {
    pub fleet: String,
    pub budget: u32,
    /// Every member, this one included, by instance id.
    pub members: Vec<MemberRow>,
    pub demand: u64,
    pub caps: u64,
    pub held: u64,
    /// The budget not covered by published caps (0 when overcommitted).
    pub free: u64,
}

/// The figures of the fleet: this instance's state `mine` (as just
/// published) and the other `members`.
pub fn view(budget: u32, mine: &Published, members: &[Published]) -> FleetView {
    let all: Vec<(&Published, bool)> = std::iter::once((mine, true))
        .chain(members.iter().map(|m| (m, false)))
        .collect();
    let wants: Vec<(&str, u32)> = all
        .iter()
        .map(|(p, _)| (p.instance.as_str(), p.demand))
        .collect();
    let targets = fair_shares(budget.min(MAX_FIGURE), &wants);
    let mut rows: Vec<MemberRow> = all
        .iter()
        .zip(targets)
        .map(|((p, is_me), target)| MemberRow {
            instance: p.instance.clone(),
            demand: p.demand,
            cap: p.cap,
            held: p.held,
            target,
            short: p.short,
            is_me: *is_me,
        })
        .collect();
    rows.sort_by(|a, b| a.instance.cmp(&b.instance).then(b.is_me.cmp(&a.is_me)));
    let sum = |f: fn(&MemberRow) -> u32| rows.iter().map(|r| u64::from(f(r))).sum::<u64>();
    let (demand, caps, held) = (sum(|r| r.demand), sum(|r| r.cap), sum(|r| r.held));
    FleetView {
        fleet: mine.fleet.clone(),
        budget,
        free: u64::from(budget).saturating_sub(caps),
        members: rows,
        demand,
        caps,
        held,
    }
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
