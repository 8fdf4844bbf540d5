//! Random runs (seed 004, section 5.3): many seeds, three endpoints, heavy
//! loss, duplication, reordering, crashes and restarts, on the test network
//! of [`super`]. Set `RPC_SEEDS` and `RPC_SEED` to run more or other seeds.

use super::*;

/// Many seeds, three endpoints, 30% loss, 10% duplication, reordering,
/// random crashes and restarts: every call completes exactly once; a
/// success carries the right reply and its handler ran exactly once; a
/// failure is a timeout or a restart; no handler runs twice for one call.
#[test]
fn random_lossy_runs_keep_at_most_once() {
    let seeds: u64 = std::env::var("RPC_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let first: u64 = std::env::var("RPC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut totals = (0u64, 0u64, 0u64);
    for seed in first..first + seeds {
        let (ok, failed, restarts) = random_run(seed);
        totals.0 += ok;
        totals.1 += failed;
        totals.2 += restarts;
    }
    let (ok, failed, restarts) = totals;
    eprintln!("random runs: {ok} ok, {failed} failed, {restarts} restarts");
    assert!(
        ok * 10 >= (ok + failed) * 8,
        "too many failures: {ok} ok, {failed} failed"
    );
}

/// A call in a random run: the calling host, its life, the call id.
type CallKey = (u8, u64, CallId);

fn random_run(seed: u64) -> (u64, u64, u64) {
    let config = RpcConfig {
        blast: BlastConfig {
            window: 64,
            ..BlastConfig::default()
        },
        chan: ChanConfig {
            initial_rto: ms(60),
            max_retries: 8,
            call_timeout: Duration::from_secs(120),
            probe_interval: ms(500),
            ..ChanConfig::default()
        },
    };
    let log: ExecLog = Rc::default();
    let mut w = World::new(3, config, seed, standard_setup(log.clone()));
    w.net.loss = 0.3;
    w.net.dup = 0.1;
    w.net.min_delay = ms(1);
    w.net.max_delay = ms(20);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabcd);

    #[derive(Debug)]
    enum Action {
        Call {
            from: u8,
            to: u8,
            procedure: u16,
            tag: u64,
            len: usize,
        },
        Respond {
            host: u8,
            life: u64,
            token: RequestToken,
            body: Vec<u8>,
        },
        Crash(u8),
        Restart(u8),
    }
    let mut actions: BTreeMap<(Instant, u64), Action> = BTreeMap::new();
    let mut seq = 0u64;
    let mut schedule = |actions: &mut BTreeMap<(Instant, u64), Action>, at: Instant, a: Action| {
        seq += 1;
        actions.insert((at, seq), a);
    };
    for k in 0..6u64 {
        let from = rng.random_range(1..=3u8);
        let to = (from % 3) + 1 + u8::from(rng.random_bool(0.5)) % 2;
        let to = if to > 3 { to - 3 } else { to };
        let to = if to == from { (from % 3) + 1 } else { to };
        let size_class = rng.random_range(0..10);
        let len = match size_class {
            0..=5 => rng.random_range(8..2_000),
            6..=8 => rng.random_range(2_000..65_536),
            _ => rng.random_range(65_536..=(1 << 20)),
        };
        let procedure = if rng.random_bool(0.3) { DEFER } else { ECHO };
        let at = Instant::from_micros(rng.random_range(0..3_000_000));
        let tag = seed * 1000 + k;
        schedule(
            &mut actions,
            at,
            Action::Call {
                from,
                to,
                procedure,
                tag,
                len,
            },
        );
    }
    let mut restarts = 0;
    if rng.random_bool(0.5) {
        let victim = rng.random_range(1..=3u8);
        let at = Instant::from_micros(rng.random_range(200_000..4_000_000));
        let down = Duration::from_micros(rng.random_range(0..2_000_000));
        schedule(&mut actions, at, Action::Crash(victim));
        schedule(&mut actions, at + down, Action::Restart(victim));
        restarts = 1;
    }

    // Calls we expect a completion for: (host, life, id) -> (tag, body).
    let mut expected: BTreeMap<CallKey, (u64, Vec<u8>, u16)> = BTreeMap::new();
    let mut completed: BTreeSet<(u8, u64, CallId)> = BTreeSet::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let limit = Instant::from_millis(900_000);
    loop {
        // Harvest events.
        for n in 1..=3u8 {
            let h = w.hosts.get_mut(&node(n)).unwrap();
            let life = h.life;
            for e in std::mem::take(&mut h.events) {
                match e {
                    RpcEvent::CallCompleted { id, result, .. } => {
                        let key = (n, life, id);
                        assert!(
                            completed.insert(key),
                            "seed {seed}: {key:?} completed twice"
                        );
                        let (tag, body, procedure) = expected
                            .remove(&key)
                            .expect("completion of an unknown call");
                        match result {
                            Ok(reply) => {
                                let want = if procedure == ECHO {
                                    expected_reply(&body)
                                } else {
                                    expected_reply(&tagged(tag, 20))
                                };
                                assert_eq!(reply, want, "seed {seed}: wrong reply for {tag}");
                                assert_eq!(executions(&log, tag), 1, "seed {seed}: tag {tag}");
                                ok += 1;
                            }
                            Err(CallError::Timeout | CallError::PeerRestarted) => failed += 1,
                            Err(e) => {
                                for t in &w.net.debug {
                                    eprintln!("{t}");
                                }
                                panic!("seed {seed}: unexpected error {e:?} for {key:?} tag {tag}")
                            }
                        }
                    }
                    RpcEvent::Request { token, body, .. } => {
                        let delay = Duration::from_micros(rng.random_range(0..3_000_000));
                        let reply = expected_reply(&tagged(tag_of(&body), 20));
                        let at = w.now + delay;
                        schedule(
                            &mut actions,
                            at,
                            Action::Respond {
                                host: n,
                                life,
                                token,
                                body: reply,
                            },
                        );
                    }
                    RpcEvent::CallAllCompleted { .. } => panic!("no call_all here"),
                }
            }
        }
        for (_, &n) in log.borrow().iter() {
            assert!(n <= 1, "seed {seed}: a handler ran twice");
        }
        if expected.is_empty() && actions.is_empty() {
            break;
        }
        let next_action = actions.keys().next().map(|k| k.0);
        let next_net = w.next_time();
        let act_first = match (next_action, next_net) {
            (Some(a), Some(n)) => a <= n,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if act_first {
            let ((at, _), a) = actions.pop_first().unwrap();
            w.now = w.now.max(at);
            let now = w.now;
            match a {
                Action::Call {
                    from,
                    to,
                    procedure,
                    tag,
                    len,
                } => {
                    let h = w.hosts.get_mut(&node(from)).unwrap();
                    if h.up {
                        let body = tagged(tag, len);
                        let id = h.rpc.call(
                            now,
                            node(to),
                            procedure,
                            body.clone(),
                            CallOptions::default(),
                        );
                        expected.insert((from, h.life, id), (tag, body, procedure));
                    }
                }
                Action::Respond {
                    host,
                    life,
                    token,
                    body,
                } => {
                    let h = w.hosts.get_mut(&node(host)).unwrap();
                    if h.up && h.life == life {
                        h.rpc.respond(now, token, body);
                    }
                }
                Action::Crash(n) => {
                    let life = w.hosts[&node(n)].life;
                    // The crashed life's own calls will never complete.
                    expected.retain(|k, _| !(k.0 == n && k.1 == life));
                    w.crash(n);
                }
                Action::Restart(n) => w.restart(n, seed * 7 + 1000),
            }
            w.flush();
        } else if !w.step(limit) {
            break;
        }
    }
    assert!(
        expected.is_empty(),
        "seed {seed}: calls never completed: {expected:?}"
    );
    for n in 1..=3u8 {
        assert_eq!(w.hosts[&node(n)].rpc.pending_calls(), 0);
    }
    (ok, failed, restarts)
}
