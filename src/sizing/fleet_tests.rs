//! Fleet sync arithmetic: the published encoding, single decisions, and a
//! simulated fleet acting on stale and fresh snapshots in random orders,
//! with the budget checked after every step.

use proptest::prelude::*;

use super::*;

/// A member's published state; short when its bid is above its cap.
fn published(instance: &str, demand: u32, cap: u32, held: u32) -> Published {
    Published {
        fleet: "orders".into(),
        instance: instance.into(),
        demand,
        cap,
        held,
        short: demand > cap,
    }
}

/// `p` as published before its member found itself short: it bids more
/// than its cap but does not wait for room yet.
fn not_short(mut p: Published) -> Published {
    p.short = false;
    p
}

fn round<'a>(budget: u32, mine: &'a Published, members: &'a [Published]) -> Round<'a> {
    Round {
        budget,
        mine,
        demand: mine.demand,
        held: mine.held,
        members,
        rounds: NEW_ROUNDS,
    }
}

// ---- encoding ---------------------------------------------------------------

#[test]
fn encoding_round_trips_and_fits() {
    let p = published("pod-7x2k", 12, 30, 7);
    let name = encode(&p);
    assert_eq!(name, "pglittle-fleet:orders:pod-7x2k:d12:c30:h7");
    assert_eq!(decode(&name), Some(p));
    let p = published("pod-7x2k", 40, 30, 30);
    let name = encode(&p);
    assert_eq!(name, "pglittle-fleet:orders:pod-7x2k:d40:c30+:h30");
    assert_eq!(decode(&name), Some(p));

    let longest = Published {
        fleet: "f".repeat(MAX_FLEET_LEN),
        instance: "i".repeat(MAX_INSTANCE_LEN),
        demand: MAX_FIGURE,
        cap: MAX_FIGURE,
        held: MAX_FIGURE,
        short: true,
    };
    let name = encode(&longest);
    assert!(name.len() <= APPLICATION_NAME_MAX, "{} bytes", name.len());
    assert_eq!(decode(&name), Some(longest));
}

#[test]
fn figures_above_five_digits_are_capped() {
    let name = encode(&published("a", 1_000_000, 7, u32::MAX));
    assert_eq!(name, "pglittle-fleet:orders:a:d99999:c7+:h99999");
}

#[test]
fn decode_rejects_what_encode_would_not_write() {
    for name in [
        "",
        "psql",
        "pglittle-fleet:",
        "pglittle-fleet:orders:a:d1:c2",
        "pglittle-fleet:orders:a:d1:c2:h3:x",
        "pglittle-fleet:orders:a:d1:c2:h3:",
        "pglittle-fleet:orders:a:c1:d2:h3",
        "pglittle-fleet:orders:a:d:c2:h3",
        "pglittle-fleet:orders:a:d+1:c2:h3",
        "pglittle-fleet:orders:a:d-1:c2:h3",
        "pglittle-fleet:orders:a:d1:c2++:h3",
        "pglittle-fleet:orders:a:d1:c+2:h3",
        "pglittle-fleet:orders:a:d1:c+:h3",
        "pglittle-fleet:orders:a:d1:c2:h3+",
        "pglittle-fleet:orders:a:d123456:c2:h3",
        "pglittle-fleet:orders:a:d1 :c2:h3",
        "pglittle-fleet:orders:A:d1:c2:h3",
        "pglittle-fleet::a:d1:c2:h3",
        "pglittle-fleet:orders::d1:c2:h3",
        "pglittle-fleet:way-too-long-fleet:a:d1:c2:h3",
        "pglittle-fleet:orders:an-instance-id-too-long:d1:c2:h3",
        "Pglittle-fleet:orders:a:d1:c2:h3",
        "pglittle-fleet:orders:é:d1:c2:h3",
        "pglittle-fleet:orders:a:d١:c2:h3",
    ] {
        assert_eq!(decode(name), None, "{name:?}");
    }
}

#[test]
fn members_of_keeps_one_fleet() {
    let names = [
        "pglittle-fleet:orders:a:d1:c2:h0",
        "pglittle-fleet:billing:b:d1:c2:h0",
        "psql",
        "pglittle-fleet:orders:c:d3:c4:h1",
        "pglittle-fleet:orders:a:d9:c9:h9",
    ];
    let got = members_of("orders", names);
    let ids: Vec<&str> = got.iter().map(|p| p.instance.as_str()).collect();
    assert_eq!(ids, ["a", "c", "a"], "rows of the same id all count");
    assert_eq!(fleet_prefix("orders"), "pglittle-fleet:orders:");
    assert!(names[0].starts_with(&fleet_prefix("orders")));
}

#[test]
fn names_are_checked_with_a_message() {
    assert_eq!(check_fleet("orders"), Ok(()));
    assert_eq!(check_instance("pod_1-a"), Ok(()));
    assert_eq!(
        check_fleet(""),
        Err(NameError::Empty {
            kind: NameKind::Fleet
        })
    );
    let err = check_instance("Pod-1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the instance id \"Pod-1\" contains 'P'; only lowercase letters a-z, digits 0-9, \
         '_' and '-' are allowed"
    );
    let err = check_fleet("orders-eu-west").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the fleet name \"orders-eu-west\" is 14 bytes long; at most 10 fit in the \
         application_name pglittle publishes"
    );
    assert!(matches!(
        check_instance("a:b"),
        Err(NameError::BadChar { found: ':', .. })
    ));
}

// ---- single decisions -------------------------------------------------------

#[test]
fn first_round_joins_with_a_bid_and_takes_nothing() {
    let mine = published("c", 0, 0, 0);
    let others = [published("a", 10, 20, 5), published("b", 10, 20, 5)];
    let r = Round {
        rounds: 0,
        ..round(90, &mine, &others)
    };
    let d = next_cap(&r);
    assert_eq!(d.step, Step::Keep { cap: 0 }, "free room 50, but joining");
    assert_eq!(d.publish.demand, 30, "a new instance bids an equal share");
    assert_eq!(d.target, 30);
    assert!(d.publish.short);
    // From the next round on it takes its slice of the free room: all of
    // it, as the only member short, up to its share.
    let mine = d.publish;
    let r = Round {
        rounds: 1,
        ..round(90, &mine, &others)
    };
    let d = next_cap(&r);
    assert_eq!(d.step, Step::Raise { from: 0, to: 30 });
    assert_eq!(d.publish.cap, 30);
    assert!(!d.publish.short);
    // Once no longer new it bids its demand, raised to the floor.
    let d = next_cap(&Round {
        rounds: NEW_ROUNDS,
        demand: 0,
        ..r
    });
    assert_eq!(d.publish.demand, FLOOR);
    assert_eq!(d.step, Step::Raise { from: 0, to: 1 });
}

#[test]
fn a_cap_above_the_fair_share_is_given_back_gradually() {
    // b bids more than its cap but has not published itself short: no one
    // waits for the room yet.
    let mine = published("a", 10, 50, 40);
    let others = [not_short(published("b", 60, 40, 40))];
    let d = next_cap(&round(90, &mine, &others));
    assert_eq!(d.target, 10);
    assert_eq!(d.step, Step::Lower { from: 50, to: 30 }, "half of 40");
    assert_eq!(d.publish.held, 30, "held is published after closing");
    let mine = published("a", 10, 11, 11);
    let d = next_cap(&round(90, &mine, &others));
    assert_eq!(d.step, Step::Lower { from: 11, to: 10 }, "at least one");
    assert_eq!(d.publish.held, 10, "held is published after closing");
}

#[test]
fn a_surplus_goes_back_at_once_to_a_member_that_waits() {
    let mine = published("a", 10, 50, 40);
    let b = published("b", 60, 40, 40);
    assert!(b.short);
    let d = next_cap(&round(90, &mine, &[b]));
    assert_eq!(d.target, 10);
    assert_eq!(d.step, Step::Lower { from: 50, to: 10 }, "all of 40");
    assert!(d.soon, "the lower cap is published next round, soon");
}

#[test]
fn rounds_come_soon_only_while_something_is_left_to_finish() {
    // Joining; newly short; lowering: soon. Steady, or still short: not.
    let mine = published("a", 10, 10, 10);
    let others = [published("b", 80, 80, 80)];
    let first = Round {
        rounds: 0,
        ..round(90, &mine, &others)
    };
    assert!(next_cap(&first).soon, "joined");
    assert!(!next_cap(&round(90, &mine, &others)).soon, "steady");
    let busy = Round {
        demand: 45,
        ..round(90, &mine, &others)
    };
    let d = next_cap(&busy);
    assert!(d.publish.short && d.soon, "newly short: {d:?}");
    let mut still = mine.clone();
    still.short = true;
    let d = next_cap(&Round {
        mine: &still,
        ..busy
    });
    assert!(d.publish.short && !d.soon, "still short: {d:?}");
}

#[test]
fn a_raise_is_bounded_by_the_slice_and_the_target() {
    // 30 free over 3 members: 10 each, but a needs only 4 more.
    let mine = published("a", 8, 4, 4);
    let others = [published("b", 50, 30, 30), published("c", 50, 26, 26)];
    let d = next_cap(&round(90, &mine, &others));
    assert_eq!(d.step, Step::Raise { from: 4, to: 8 });
    // Nothing free: keep, whatever the target.
    let others = [published("b", 50, 50, 50), published("c", 50, 36, 36)];
    let d = next_cap(&round(90, &mine, &others));
    assert_eq!(d.step, Step::Keep { cap: 4 });
}

#[test]
fn odd_units_go_first_to_members_short_with_the_smallest_caps() {
    // Budget 10, four members at 2, three of them short: 2 free units for
    // 3. The first two in the deal order take one each; acting on the same
    // snapshot at once, the caps add up to exactly the budget.
    let states = [
        published("a", 2, 2, 2),
        published("b", 9, 2, 2),
        published("c", 9, 2, 2),
        published("d", 9, 2, 2),
    ];
    let caps: Vec<u32> = (0..states.len())
        .map(|i| {
            let others: Vec<Published> = states
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, p)| p.clone())
                .collect();
            next_cap(&round(10, &states[i], &others)).step.cap()
        })
        .collect();
    assert_eq!(caps, [2, 3, 3, 2], "a is not short; b and c go first");
    assert_eq!(caps.iter().sum::<u32>(), 10);
}

#[test]
fn a_shared_instance_id_takes_no_odd_unit() {
    let mine = published("a", 9, 2, 2);
    let twin = [published("a", 9, 2, 2)];
    let d = next_cap(&round(5, &mine, &twin));
    assert_eq!(d.step, Step::Keep { cap: 2 }, "1 free unit, 2 members");
    let other = [published("b", 9, 2, 2)];
    let d = next_cap(&round(5, &mine, &other));
    assert_eq!(d.step, Step::Raise { from: 2, to: 3 });
}

#[test]
fn floors_give_every_member_one_while_the_budget_allows() {
    let idle = [published("b", 0, 0, 0), published("c", 0, 0, 0)];
    let mine = published("a", 1, 0, 0);
    let d = next_cap(&round(3, &mine, &idle));
    assert_eq!((d.target, d.step), (1, Step::Raise { from: 0, to: 1 }));
    let busy = [published("b", 40, 0, 0), published("c", 40, 0, 0)];
    let d = next_cap(&round(3, &mine, &busy));
    assert_eq!(d.target, 1, "the floor, even against busy members");
    // A budget below the fleet's size cannot give everyone one.
    let views: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let me = published(id, 0, 0, 0);
            let others: Vec<Published> = ["a", "b", "c"]
                .iter()
                .filter(|o| *o != id)
                .map(|o| published(o, 0, 0, 0))
                .collect();
            next_cap(&round(2, &me, &others)).target
        })
        .collect();
    assert_eq!(views.iter().sum::<u32>(), 2, "{views:?}");
}

#[test]
fn raises_expire_and_the_view_adds_up() {
    let t0 = Instant::now();
    let period = Duration::from_secs(1);
    assert!(raise_in_time(t0, t0 + RAISE_WITHIN, period));
    assert!(!raise_in_time(
        t0,
        t0 + RAISE_WITHIN + Duration::from_millis(1),
        period
    ));
    assert!(
        raise_in_time(t0 + Duration::from_secs(1), t0, period),
        "read after now"
    );
    let quick = Duration::from_millis(250);
    assert!(
        !raise_in_time(t0, t0 + Duration::from_millis(126), quick),
        "within half a short period"
    );

    let mine = published("b", 10, 20, 12);
    let others = [published("c", 60, 50, 50), published("a", 5, 5, 1)];
    let v = view(100, &mine, &others);
    let ids: Vec<&str> = v.members.iter().map(|m| m.instance.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(v.members[1].is_me && !v.members[0].is_me);
    assert_eq!((v.demand, v.caps, v.held, v.free), (75, 75, 63, 25));
    let targets: Vec<u32> = v.members.iter().map(|m| m.target).collect();
    assert_eq!(targets, [5, 10, 60]);
    assert_eq!((v.fleet.as_str(), v.budget), ("orders", 100));
}

#[test]
fn a_late_raise_is_given_up_for_the_old_cap() {
    let mine = published("a", 30, 10, 10);
    let others = [published("b", 10, 10, 10)];
    let d = next_cap(&round(100, &mine, &others));
    assert_eq!(d.step, Step::Raise { from: 10, to: 30 });
    let kept = d.without_raise();
    assert_eq!(kept.step, Step::Keep { cap: 10 });
    assert_eq!((kept.publish.cap, kept.publish.short), (10, true));
    assert_eq!(kept.publish.demand, 30);
    assert_eq!(kept.without_raise(), kept, "nothing else changes");
}

#[test]
fn an_overcommitted_fleet_only_hands_back() {
    // A member that lost its probe connection rejoined with the cap it
    // still held, after the other took its room: nobody raises, both lower.
    // Neither is short of its fair share (50), so each hands back half.
    let mine = published("a", 80, 60, 60);
    let b = not_short(published("b", 80, 60, 60));
    let d = next_cap(&round(100, &mine, &[b]));
    assert_eq!(d.target, 50);
    assert_eq!(d.step, Step::Lower { from: 60, to: 55 });
}

// ---- a simulated fleet ------------------------------------------------------

/// One simulated instance: what it has published and what its pool holds.
#[derive(Clone, Debug)]
struct Sim {
    state: Published,
    demand: u32,
    held: u32,
    rounds: u32,
}

struct Fleet {
    budget: u32,
    members: Vec<Sim>,
    joined: usize,
}

impl Fleet {
    fn new(budget: u32, demands: &[u32]) -> Fleet {
        let mut fleet = Fleet {
            budget,
            members: Vec::new(),
            joined: 0,
        };
        for &d in demands {
            fleet.join(d);
        }
        fleet
    }

    /// A new member appears, publishing zeros.
    fn join(&mut self, demand: u32) {
        self.members.push(Sim {
            state: published(&format!("m{}", self.joined), 0, 0, 0),
            demand,
            held: 0,
            rounds: 0,
        });
        self.joined += 1;
    }

    /// What `pg_stat_activity` shows now, by member slot.
    fn snapshot(&self) -> Vec<(usize, Published)> {
        let ids = self.members.iter().map(|m| self.slot_of(m));
        ids.zip(self.members.iter().map(|m| m.state.clone()))
            .collect()
    }

    fn slot_of(&self, m: &Sim) -> usize {
        m.state.instance[1..].parse().unwrap()
    }

    fn check(&self, when: &str) {
        let caps: u32 = self.members.iter().map(|m| m.state.cap).sum();
        let held: u32 = self.members.iter().map(|m| m.held).sum();
        assert!(caps <= self.budget, "{when}: caps {caps} > {}", self.budget);
        assert!(held <= self.budget, "{when}: held {held} > {}", self.budget);
        for m in &self.members {
            assert!(m.held <= m.state.cap, "{when}: {m:?} holds over its cap");
        }
    }

    /// Member `i` runs one round on `seen`, checking after each half-step.
    fn act(&mut self, i: usize, seen: &[(usize, Published)]) {
        let slot = self.slot_of(&self.members[i]);
        let others: Vec<Published> = seen
            .iter()
            .filter(|(s, _)| *s != slot)
            .map(|(_, p)| p.clone())
            .collect();
        let m = &self.members[i];
        let d = next_cap(&Round {
            budget: self.budget,
            mine: &m.state,
            demand: m.demand,
            held: m.held,
            members: &others,
            rounds: m.rounds,
        });
        let mut publish = d.publish;
        match d.step {
            Step::Raise { to, .. } => {
                self.members[i].state = publish;
                self.check("after publishing a raise");
                let m = &mut self.members[i];
                m.held = m.demand.min(to);
            }
            Step::Lower { to, .. } => {
                let m = &mut self.members[i];
                m.held = m.held.min(to);
                self.check("after closing down");
                publish.held = self.members[i].held;
                self.members[i].state = publish;
            }
            Step::Keep { cap } => {
                let m = &mut self.members[i];
                m.held = m.demand.min(cap);
                self.check("after a keep");
                publish.held = self.members[i].held;
                self.members[i].state = publish;
            }
        }
        self.members[i].rounds += 1;
        self.check("after a step");
    }

    /// One round: everyone acts once, in the order of `keys`, on the
    /// snapshot from the start of the round where `stale` says so and on a
    /// fresh one otherwise.
    fn round(&mut self, keys: &[u8], stale: &[bool], event: Event) {
        let start = self.snapshot();
        match event {
            Event::Kill(k) if self.members.len() > 1 => {
                self.members.remove(k % self.members.len());
            }
            Event::Join(demand) if self.members.len() < 6 => self.join(demand),
            _ => {}
        }
        let slots: Vec<usize> = self.members.iter().map(|m| self.slot_of(m)).collect();
        let mut order: Vec<usize> = (0..slots.len()).collect();
        order.sort_by_key(|&i| (keys[slots[i] % keys.len()], i));
        for slot in order.iter().map(|&i| slots[i]) {
            let Some(i) = self.members.iter().position(|m| self.slot_of(m) == slot) else {
                continue;
            };
            if stale[slot % stale.len()] {
                self.act(i, &start);
            } else {
                let now = self.snapshot();
                self.act(i, &now);
            }
        }
    }

    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.round(&[0], &[false], Event::None);
        }
    }

    /// Runs rounds until every cap is its fair share; the rounds it took.
    fn settle(&mut self, most: u32) -> u32 {
        for done in 0..=most {
            if self.caps() == self.targets() {
                return done;
            }
            self.run(1);
        }
        panic!(
            "not settled in {most} rounds: {:?} {:?}",
            self.caps(),
            self.targets()
        );
    }

    fn caps(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.state.cap).collect()
    }

    /// The water-filling of the budget over the demands, in member order.
    fn targets(&self) -> Vec<u32> {
        let wants: Vec<(&str, u32)> = self
            .members
            .iter()
            .map(|m| (m.state.instance.as_str(), m.demand))
            .collect();
        fair_shares(self.budget, &wants)
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    None,
    Kill(usize),
    Join(u32),
}

#[test]
fn a_new_fleet_starts_from_equal_shares() {
    let mut fleet = Fleet::new(90, &[0, 0, 0]);
    fleet.run(1);
    assert_eq!(fleet.caps(), [0, 0, 0], "the first round only joins");
    fleet.run(1);
    assert_eq!(fleet.caps(), [30, 30, 30]);
    // Idle, they come down to the floor once no longer new.
    assert!(fleet.settle(NEW_ROUNDS + 20) <= NEW_ROUNDS + 12);
    assert_eq!(fleet.caps(), [1, 1, 1]);
}

#[test]
fn a_new_instance_gets_an_equal_share_from_a_full_fleet() {
    let mut fleet = Fleet::new(100, &[80, 80]);
    fleet.run(2);
    assert_eq!(fleet.caps(), [50, 50]);
    fleet.join(80);
    fleet.run(1);
    assert_eq!(fleet.members[2].state.cap, 0, "joining takes nothing");
    assert!(fleet.settle(20) <= 12);
    assert_eq!(fleet.caps(), [34, 33, 33]);
    // An idle newcomer is equally welcome while new, then hands back.
    fleet.members.remove(2);
    fleet.run(NEW_ROUNDS as usize);
    fleet.join(0);
    fleet.run(NEW_ROUNDS as usize);
    assert!(fleet.members[2].state.cap >= 25, "{:?}", fleet.caps());
    assert!(fleet.settle(40) <= 30);
    assert_eq!(fleet.caps(), [50, 49, 1]);
}

#[test]
fn a_busy_instance_grows_while_the_others_hand_back() {
    let mut fleet = Fleet::new(100, &[10, 10, 10, 10]);
    fleet.run(NEW_ROUNDS as usize + 20);
    assert_eq!(fleet.caps(), [10, 10, 10, 10]);
    fleet.members[1].demand = 200;
    fleet.members[2].demand = 30;
    // A round to publish that they are short, then the free room goes.
    assert!(fleet.settle(10) <= 5);
    assert_eq!(fleet.caps(), [10, 50, 30, 10]);
    // Now another wants more: the busiest gives back a quarter of its
    // surplus a round, which the newly busy one takes.
    fleet.members[0].demand = 60;
    fleet.run(3);
    assert!(fleet.members[1].state.cap < 50 && fleet.members[0].state.cap > 10);
    assert!(fleet.settle(12) <= 10);
    assert_eq!(fleet.caps(), [30, 30, 30, 10]);
}

#[test]
fn a_killed_member_is_taken_over() {
    let mut fleet = Fleet::new(60, &[50, 50, 50]);
    fleet.run(NEW_ROUNDS as usize + 5);
    assert_eq!(fleet.caps(), [20, 20, 20]);
    fleet.members.remove(0);
    // One round to publish that they are short, one to take the room.
    assert_eq!(fleet.settle(5), 2);
    assert_eq!(fleet.caps(), [30, 30]);
}

fn keys() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 8)
}

fn stale() -> impl Strategy<Value = Vec<bool>> {
    prop::collection::vec(any::<bool>(), 8)
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => Just(Event::None),
        1 => (0..6usize).prop_map(Event::Kill),
        1 => (0..120u32).prop_map(Event::Join),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics(s in any::<String>(), tail in "[a-z0-9:dch+-]{0,40}") {
        let _ = decode(&s);
        let _ = decode(&format!("{PREFIX}{tail}"));
    }

    #[test]
    fn decode_inverts_encode(
        fleet in "[a-z0-9_-]{1,10}",
        instance in "[a-z0-9_-]{1,15}",
        demand in 0..=MAX_FIGURE,
        cap in 0..=MAX_FIGURE,
        held in 0..=MAX_FIGURE,
        short in any::<bool>(),
    ) {
        let p = Published { fleet, instance, demand, cap, held, short };
        let name = encode(&p);
        prop_assert!(name.len() <= APPLICATION_NAME_MAX);
        prop_assert_eq!(decode(&name), Some(p));
    }

    /// The budget holds after every step of every member, whatever the
    /// orders, staleness, demands, deaths and arrivals; and once demands
    /// stay put, every cap settles on its fair share (the spec asks for
    /// within one; it is exact) in a bounded number of rounds.
    #[test]
    fn a_fleet_keeps_its_budget_and_converges(
        budget in 1..200u32,
        demands in prop::collection::vec(0..150u32, 2..6),
        busy in prop::collection::vec(
            (keys(), stale(), event(), prop::collection::vec(0..150u32, 8)),
            30,
        ),
        settle in prop::collection::vec((keys(), stale()), 60),
        last in prop::collection::vec(0..150u32, 8),
    ) {
        let mut fleet = Fleet::new(budget, &demands);
        for (keys, stale, event, demands) in &busy {
            for (m, d) in fleet.members.iter_mut().zip(demands) {
                m.demand = *d;
            }
            fleet.round(keys, stale, *event);
        }
        for (m, d) in fleet.members.iter_mut().zip(&last) {
            m.demand = *d;
        }
        for (keys, stale) in &settle {
            fleet.round(keys, stale, Event::None);
        }
        let (caps, targets) = (fleet.caps(), fleet.targets());
        for (c, t) in caps.iter().zip(&targets) {
            prop_assert_eq!(c, t, "caps {:?}, targets {:?}", caps, targets);
        }
    }
}
