//! CHAN (seed 004, section 5.3.2) and SELECT (5.3.3) through the composed
//! [`Rpc`] endpoint on the test network of [`super`]: first contact and
//! incarnations, at-most-once under loss and duplication, probes, adaptive
//! retransmission (Jacobson/Karels, 5.2.6), restarts, unknown procedures,
//! size limits, `call_all`, unreachable reports and the server's bounds.

use super::*;

#[test]
fn first_contact_costs_one_round_trip_then_is_cached() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    let c1 = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 100), CallOptions::default());
    let (r, _) = w.await_call(1, c1);
    assert_eq!(r, Ok(expected_reply(&tagged(1, 100))));
    let kinds: Vec<_> = w.net.trace.iter().map(|t| t.3).collect();
    assert_eq!(kinds, vec!["Hello", "Iam", "Request", "Reply"]);
    assert_eq!(w.rpc(1).known_incarnation(node(2)), Some(inc(0, 2)));
    let now = w.now;
    let c2 = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(2, 100), CallOptions::default());
    assert!(w.await_call(1, c2).0.is_ok());
    let kinds: Vec<_> = w.net.trace.iter().map(|t| t.3).collect();
    assert_eq!(kinds[4..], ["Request", "Reply"], "no Hello the second time");
    assert_eq!(w.rpc(1).stats().chan.hellos_sent, 1);
    assert_eq!(executions(&log, 1), 1);
    assert_eq!(executions(&log, 2), 1);
    // The second request carried the first reply's acknowledgement, and the
    // second reply is acknowledged alone after ack_delay: nothing stays saved.
    w.run_for(ms(100));
    assert_eq!(w.net.sent("ReplyAck").len(), 1);
    assert_eq!(w.hosts[&node(2)].rpc.chan.saved_reply_bytes(), 0);
}

#[test]
fn learn_incarnation_skips_the_hello() {
    let (mut w, _) = world(2, RpcConfig::default());
    let now = w.now;
    w.rpc(1).learn_incarnation(now, node(2), inc(0, 2));
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    assert!(w.await_call(1, c).0.is_ok());
    assert!(w.net.sent("Hello").is_empty());
}

#[test]
fn lost_reply_is_answered_from_the_cache_and_the_handler_runs_once() {
    let (mut w, log) = world(2, RpcConfig::default());
    let mut dropped = false;
    w.net.filter = Some(Box::new(move |_, _, m| {
        if matches!(m, Some(ChanMessage::Reply { .. })) && !dropped {
            dropped = true;
            return false;
        }
        true
    }));
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(7, 50), CallOptions::default());
    let (r, _) = w.await_call(1, c);
    assert_eq!(r, Ok(expected_reply(&tagged(7, 50))));
    assert_eq!(executions(&log, 7), 1);
    assert_eq!(w.net.sent("Request").len(), 2, "one retransmission");
    let s = w.rpc(2).stats();
    assert_eq!(s.chan.duplicates_answered_from_cache, 1);
    assert_eq!(s.chan.executions, 1);
    assert_eq!(s.select.dispatched, 1);
    assert_eq!(w.rpc(1).stats().chan.retransmissions, 1);
    // The cached reply echoed the retransmission: a 2 ms sample (after the
    // Iam's), and the back-off the retransmission left is cleared.
    assert_eq!(w.rpc(1).stats().chan.rtt_samples, 2);
    assert_eq!(w.rpc(1).chan.backoff(node(2)), Some(0));
    assert_eq!(
        w.rpc(1).chan.rtt(node(2)).unwrap().estimated(),
        Some(ms(2)),
        "both samples 2 ms"
    );
}

#[test]
fn duplicated_and_reordered_datagrams_execute_each_call_once() {
    let (mut w, log) = world(2, RpcConfig::default());
    w.net.dup = 1.0;
    w.net.max_delay = ms(30);
    let now = w.now;
    let ids: Vec<_> = (0..30u64)
        .map(|t| {
            let len = if t % 7 == 0 { 40_000 } else { 30 };
            w.rpc(1)
                .call(now, node(2), ECHO, tagged(t, len), CallOptions::default())
        })
        .collect();
    for (t, id) in ids.into_iter().enumerate() {
        let len = if t % 7 == 0 { 40_000 } else { 30 };
        let (r, _) = w.await_call(1, id);
        assert_eq!(r, Ok(expected_reply(&tagged(t as u64, len))));
    }
    w.run_for(Duration::from_secs(5));
    for t in 0..30 {
        assert_eq!(executions(&log, t), 1, "tag {t}");
    }
    let s = w.rpc(2).stats();
    assert!(s.chan.requests_received > 30);
    assert!(s.blast.duplicate_fragments > 0);
    assert_eq!(s.chan.executions, 30);
}

#[test]
fn a_probe_keeps_a_long_deferred_call_alive() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    let opts = CallOptions::default()
        .with_timeout(Duration::from_secs(60))
        .with_max_retries(2);
    let c = w.rpc(1).call(now, node(2), SLOW, tagged(3, 10), opts);
    w.run_for(Duration::from_secs(10));
    assert!(w.completion(1, c).is_none(), "still running after 10 s");
    let reqs = w.take_requests(2);
    assert_eq!(reqs.len(), 1);
    let now = w.now;
    assert!(w.rpc(2).respond(now, reqs[0].0, b"done".to_vec()));
    assert!(
        !w.rpc(2).respond(now, reqs[0].0, b"again".to_vec()),
        "a token answers once"
    );
    let (r, _) = w.await_call(1, c);
    assert_eq!(r, Ok(b"done".to_vec()));
    assert_eq!(executions(&log, 3), 1);
    let probes = w.net.sent("Probe");
    assert!((9..=11).contains(&probes.len()), "{} probes", probes.len());
    assert_eq!(
        w.net.sent("Request").len(),
        1,
        "acked at once, never retransmitted"
    );
    assert!(w.net.sent("Ack").len() >= 10);
    // Samples came from Iam and the Acks to the request and the probes;
    // the reply, sent 10 s after its request, echoed nothing.
    let est = w.rpc(1).chan.rtt(node(2)).unwrap().estimated().unwrap();
    assert_eq!(est, ms(2));
}

#[test]
fn a_dead_server_times_out_with_exponential_backoff() {
    let (mut w, _) = world(2, RpcConfig::default());
    w.crash(2);
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::Timeout));
    let sent: Vec<u64> = w
        .net
        .sent("Hello")
        .iter()
        .map(|t| t.as_micros() / 1000)
        .collect();
    // Initial RTO 100 ms, doubling: 0, 100, 300, 700, 1500, 3100; the
    // fifth retransmission's timer (3.2 s, clamped to max_rto 2 s) expires
    // at 5.1 s.
    assert_eq!(sent, vec![0, 100, 300, 700, 1500, 3100]);
    assert_eq!(at, Instant::from_millis(5100));
    let s = w.rpc(1).stats().chan;
    assert_eq!((s.retransmissions, s.timeouts, s.rtt_samples), (5, 1, 0));
    // The back-off is remembered for the peer until a valid sample, but a
    // new call inherits at most two doublings of it: 4 × the base RTO.
    assert_eq!(w.rpc(1).rto(node(2)), ms(100));
    assert_eq!(w.rpc(1).chan.backoff(node(2)), Some(5));
    assert_eq!(w.rpc(1).chan.initial_call_rto(node(2)), ms(400));
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(2, 10), CallOptions::default());
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::Timeout));
    let later: Vec<u64> = w.net.sent("Hello")[6..]
        .iter()
        .map(|t| t.as_micros() / 1000 - 5100)
        .collect();
    // 400, 800, 1600 ms, then clamped at 2 s: still exponential per call.
    assert_eq!(later, [0, 400, 1200, 2800, 4800, 6800]);
    assert_eq!(at, Instant::from_millis(5100 + 8800));
}

#[test]
fn after_a_loss_streak_the_next_call_starts_at_most_four_times_the_base_rto() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    w.rpc(1).learn_incarnation(now, node(2), inc(0, 2));
    // Every request is lost for 10 s: the first call times out.
    w.net.filter = Some(Box::new(|at, _, m| {
        !(matches!(m, Some(ChanMessage::Request(_))) && at < Instant::from_millis(10_000))
    }));
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    assert_eq!(w.await_call(1, c).0, Err(CallError::Timeout));
    assert_eq!(w.rpc(1).chan.backoff(node(2)), Some(5));
    // The next call's first request is lost too; its retransmission goes
    // after 4 × the base RTO (100 ms, no sample yet), not after 2^5 × it.
    w.run_until(Instant::from_millis(9_900));
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(2, 10), CallOptions::default());
    let (r, _) = w.await_call(1, c);
    assert_eq!(r, Ok(expected_reply(&tagged(2, 10))));
    let reqs = w.net.sent("Request");
    let n = reqs.len();
    assert_eq!(reqs[n - 2], Instant::from_millis(9_900));
    assert_eq!(reqs[n - 1], Instant::from_millis(10_300));
    // Its reply answered the retransmission: a sample, and the back-off
    // is gone for the call after.
    assert_eq!(w.rpc(1).stats().chan.rtt_samples, 1);
    assert_eq!(w.rpc(1).chan.backoff(node(2)), Some(0));
    assert_eq!(
        w.rpc(1).chan.initial_call_rto(node(2)),
        w.rpc(1).rto(node(2))
    );
    assert_eq!(executions(&log, 2), 1);
}

#[test]
fn the_overall_deadline_fires() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w.rpc(1).call(
        now,
        node(2),
        SLOW,
        tagged(5, 10),
        CallOptions::default().with_timeout(ms(500)),
    );
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::Timeout));
    assert_eq!(at, Instant::from_millis(500));
    assert_eq!(executions(&log, 5), 1);
    // An absolute deadline earlier than the timeout wins.
    let now = w.now;
    let c = w.rpc(1).call(
        now,
        node(2),
        SLOW,
        tagged(6, 10),
        CallOptions::default().with_deadline(now + ms(200)),
    );
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::Timeout));
    assert_eq!(at, now + ms(200));
}

#[test]
fn rtt_estimator_follows_jacobson_karels() {
    let mut e = RttEstimator::new();
    assert_eq!(e.timeout(), None);
    e.sample(ms(100));
    assert_eq!(e.estimated(), Some(ms(100)));
    assert_eq!(e.deviation(), Some(ms(50)));
    assert_eq!(e.timeout(), Some(ms(300)));
    e.sample(ms(200));
    // Difference 100: Est += 100/8 -> 112.5; Dev += (100 - 50)/8 -> 56.25;
    // TimeOut = 112.5 + 4 * 56.25 = 337.5 ms.
    assert_eq!(e.estimated(), Some(Duration::from_micros(112_500)));
    assert_eq!(e.deviation(), Some(Duration::from_micros(56_250)));
    assert_eq!(e.timeout(), Some(Duration::from_micros(337_500)));
    e.sample(ms(50));
    // Difference -62.5: Est 104.6875; Dev += (62.5 - 56.25)/8 -> 57.03125.
    assert_eq!(e.estimated(), Some(Duration::from_micros(104_687)));
    assert_eq!(e.deviation(), Some(Duration::from_micros(57_031)));
    for _ in 0..200 {
        e.sample(ms(40));
    }
    let t = e.timeout().unwrap();
    assert!(t >= ms(40) && t < ms(41), "{t:?}");
    assert_eq!(e.samples(), 203);
}

#[test]
fn rto_adapts_to_the_measured_rtt_and_a_retransmission_is_sampled_by_its_echo() {
    let (mut w, _) = world(2, RpcConfig::default());
    w.net.min_delay = ms(20);
    w.net.max_delay = ms(20);
    assert_eq!(w.rpc(1).rto(node(2)), ms(100), "initial RTO");
    for t in 0..20 {
        let now = w.now;
        let c = w
            .rpc(1)
            .call(now, node(2), ECHO, tagged(t, 10), CallOptions::default());
        assert!(w.await_call(1, c).0.is_ok());
    }
    let rto = w.rpc(1).rto(node(2));
    assert!(rto >= ms(40) && rto < ms(60), "{rto:?}");
    let samples = w.rpc(1).stats().chan.rtt_samples;
    assert_eq!(samples, 21, "Iam + 20 replies");
    let est = w.rpc(1).chan.rtt(node(2)).unwrap().estimated().unwrap();
    assert!(est >= ms(40) && est < ms(41), "{est:?}");
    // Lose the next request once: the reply echoes the retransmission, so
    // it is a sample of 40 ms (not of the RTO plus 40 ms, as it would be if
    // matched to the first transmission), and it clears the back-off.
    let mut dropped = false;
    w.net.filter = Some(Box::new(move |_, _, m| {
        if matches!(m, Some(ChanMessage::Request(_))) && !dropped {
            dropped = true;
            return false;
        }
        true
    }));
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(99, 10), CallOptions::default());
    assert!(w.await_call(1, c).0.is_ok());
    assert_eq!(w.rpc(1).stats().chan.rtt_samples, samples + 1);
    assert_eq!(w.rpc(1).stats().chan.retransmissions, 1);
    let est = w.rpc(1).chan.rtt(node(2)).unwrap().estimated().unwrap();
    assert!(est >= ms(40) && est < ms(41), "{est:?}");
    assert_eq!(w.rpc(1).chan.backoff(node(2)), Some(0));
}

/// Drives `rpc` (client node 1, calling node 2 whose incarnation it knows)
/// through `retransmissions` timer expiries; returns the call's mid.
fn client_with_retransmissions(rpc: &mut Rpc, retransmissions: u32) -> (u64, Instant) {
    let mut now = Instant::ZERO;
    rpc.learn_incarnation(now, node(2), inc(0, 2));
    rpc.call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    let mut attempts = Vec::new();
    loop {
        while let Some(t) = rpc.poll_transmit() {
            if let Some(ChanMessage::Request(r)) = chan_of(&t.body) {
                attempts.push((r.mid, r.attempt));
            }
        }
        if attempts.len() as u32 > retransmissions {
            break;
        }
        now = rpc.poll_timeout().unwrap();
        rpc.handle_timeout(now);
    }
    let want: Vec<u32> = (1..=retransmissions + 1).collect();
    assert_eq!(attempts.iter().map(|a| a.1).collect::<Vec<_>>(), want);
    (attempts[0].0, now)
}

#[test]
fn an_answer_to_any_recent_attempt_is_a_sample_and_clears_the_backoff() {
    let mut rpc = Rpc::new(node(1), inc(0, 1), RpcConfig::default(), 3);
    let (mid, sent) = client_with_retransmissions(&mut rpc, 3);
    assert_eq!(rpc.chan.backoff(node(2)), Some(3));
    // The Ack answers attempt 3 (sent 300 ms ago), not the last one.
    let now = sent + ms(300);
    let ack = |echo| ChanMessage::Ack {
        mid,
        server: inc(0, 2),
        echo,
    };
    feed_mid(&mut rpc, now, 2, &ack(3), 10);
    assert_eq!(rpc.stats().chan.rtt_samples, 1);
    assert_eq!(rpc.chan.backoff(node(2)), Some(0));
    // Attempt 3 was sent at 300 ms, the Ack came at 700 + 300 ms.
    assert_eq!(rpc.chan.rtt(node(2)).unwrap().estimated(), Some(ms(700)));
    // A duplicate of the same answer is no second sample.
    feed_mid(&mut rpc, now + ms(5), 2, &ack(3), 11);
    assert_eq!(rpc.stats().chan.rtt_samples, 1);
}

#[test]
fn a_stale_or_unknown_echo_is_no_sample() {
    let mut rpc = Rpc::new(node(1), inc(0, 1), RpcConfig::default(), 3);
    // Attempts 1..=6: only the last SENT_HISTORY (3..=6) are kept.
    let (mid, sent) = client_with_retransmissions(&mut rpc, 5);
    assert_eq!(crate::rpc::chan::SENT_HISTORY, 4);
    let now = sent + ms(1);
    let reply = |echo| ChanMessage::Reply {
        mid,
        server: inc(0, 2),
        echo,
        outcome: Outcome::Ok(Bytes(b"x".to_vec())),
    };
    let ack = |echo| ChanMessage::Ack {
        mid,
        server: inc(0, 2),
        echo,
    };
    let mut blast_mid = 100;
    for (from, m) in [
        (2, ack(0)),        // echoes nothing
        (2, ack(1)),        // too old: evicted
        (2, ack(2)),        // too old: evicted
        (2, ack(7)),        // never sent
        (2, ack(u32::MAX)), // never sent
        (3, ack(6)),        // from another node
        (3, reply(6)),      // from another node
    ] {
        blast_mid += 1;
        feed_mid(&mut rpc, now, from, &m, blast_mid);
        assert_eq!(rpc.stats().chan.rtt_samples, 0, "{m:?} from {from}");
        assert_eq!(rpc.chan.backoff(node(2)), Some(5));
    }
    // The newest attempt still counts (sent at `sent`, answered 1 ms later).
    feed_mid(&mut rpc, now, 2, &reply(6), 200);
    assert_eq!(rpc.stats().chan.rtt_samples, 1);
    assert_eq!(rpc.chan.rtt(node(2)).unwrap().estimated(), Some(ms(1)));
    assert_eq!(rpc.chan.backoff(node(2)), Some(0));
    assert_eq!(rpc.pending_calls(), 0);
}

#[test]
fn a_restarted_server_fails_pending_calls_with_peer_restarted() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), SLOW, tagged(4, 10), CallOptions::default());
    w.run_for(Duration::from_millis(500));
    assert_eq!(executions(&log, 4), 1);
    w.crash(2);
    w.restart(2, 77);
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::PeerRestarted));
    assert!(
        at < Instant::from_millis(1600),
        "the first probe found out: {at:?}"
    );
    assert_eq!(executions(&log, 4), 1, "never executed again");
    assert_eq!(w.rpc(1).known_incarnation(node(2)), Some(inc(1, 2)));
    // The next call goes to the new life without another Hello.
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(8, 10), CallOptions::default());
    assert!(w.await_call(1, c).0.is_ok());
    assert_eq!(w.net.sent("Hello").len(), 1);
}

#[test]
fn a_request_for_an_old_incarnation_is_never_executed() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    // The client believes life 0; the server already runs life 1.
    w.rpc(1).learn_incarnation(now, node(2), inc(0, 2));
    w.crash(2);
    w.restart(2, 5);
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(9, 10), CallOptions::default());
    let (r, _) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::PeerRestarted));
    assert_eq!(executions(&log, 9), 0);
    assert_eq!(w.rpc(2).stats().chan.restarted_answers, 1);
    // Learning an older incarnation afterwards changes nothing.
    let now = w.now;
    w.rpc(1).learn_incarnation(now, node(2), inc(0, 2));
    assert_eq!(w.rpc(1).known_incarnation(node(2)), Some(inc(1, 2)));
}

#[test]
fn learning_a_newer_incarnation_fails_calls_pinned_to_the_old_one() {
    let (mut w, _) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), SLOW, tagged(1, 10), CallOptions::default());
    w.run_for(ms(50));
    let now = w.now;
    w.rpc(1).learn_incarnation(now, node(2), inc(9, 2));
    assert_eq!(
        w.completion(1, c),
        None,
        "events are drained on the next step"
    );
    w.flush();
    assert_eq!(w.completion(1, c), Some((Err(CallError::PeerRestarted), 1)));
}

#[test]
fn a_restarted_client_gets_a_fresh_table_and_its_old_life_is_ignored() {
    let (mut w, log) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    assert!(w.await_call(1, c).0.is_ok());
    // Capture a request of the old life, restart the client, replay it.
    let old_request = {
        let now = w.now;
        w.rpc(1)
            .call(now, node(2), ECHO, tagged(2, 10), CallOptions::default());
        let mut t = None;
        while let Some(x) = w.rpc(1).poll_transmit() {
            t = Some(x);
        }
        t.unwrap()
    };
    w.crash(1);
    w.restart(1, 3);
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(3, 10), CallOptions::default());
    assert!(w.await_call(1, c).0.is_ok());
    let now = w.now;
    w.rpc(2).handle_packet(
        now,
        Incoming {
            source: node(1),
            source_incarnation: inc(0, 1),
            destination: node(2),
            protocol: ProtocolId::Rpc,
            relayed: false,
            body: &old_request.body,
            peer: node(1),
            datagram: &[],
        },
    );
    assert_eq!(executions(&log, 2), 0, "the old life's request is dropped");
    assert_eq!(w.rpc(2).stats().chan.drops.get("stale_client"), 1);
}

#[test]
fn an_unknown_procedure_fails_fast_with_no_such_procedure() {
    let (mut w, _) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), 999u16, vec![1, 2, 3], CallOptions::default());
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Err(CallError::NoSuchProcedure));
    assert!(at <= Instant::from_millis(10));
    assert_eq!(w.rpc(2).stats().select.no_such_procedure, 1);
}

#[test]
fn too_large_requests_and_replies_fail_with_too_large() {
    let config = RpcConfig {
        blast: BlastConfig {
            max_message: 100_000,
            ..BlastConfig::default()
        },
        ..RpcConfig::default()
    };
    let (mut w, _) = world(2, config);
    w.rpc(2)
        .register(10u16, |_, _| HandlerResult::Reply(vec![0; 200_000]));
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), ECHO, vec![0; 100_000], CallOptions::default());
    assert_eq!(
        w.rpc(1).poll_event(),
        Some(RpcEvent::CallCompleted {
            id: c,
            node: node(2),
            result: Err(CallError::TooLarge)
        }),
        "at once"
    );
    let c = w
        .rpc(1)
        .call(now, node(2), 10u16, vec![], CallOptions::default());
    assert_eq!(w.await_call(1, c).0, Err(CallError::TooLarge));
}

#[test]
fn cancel_completes_once() {
    let (mut w, _) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), SLOW, tagged(1, 10), CallOptions::default());
    w.run_for(ms(10));
    assert!(w.rpc(1).cancel(c));
    assert!(!w.rpc(1).cancel(c));
    w.flush();
    let reqs = w.take_requests(2);
    let now = w.now;
    w.rpc(2).respond(now, reqs[0].0, b"late".to_vec());
    w.run_for(Duration::from_secs(2));
    assert_eq!(w.completion(1, c), Some((Err(CallError::Cancelled), 1)));
    assert_eq!(w.rpc(1).pending_calls(), 0);
}

#[test]
fn call_all_reports_replies_and_non_responders() {
    let (mut w, _) = world(4, RpcConfig::default());
    w.crash(4);
    let now = w.now;
    let body = tagged(1, 20);
    let g = w.rpc(1).call_all(
        now,
        [node(2), node(3), node(4), node(2)],
        ECHO,
        body.clone(),
        CallOptions::default().with_max_retries(2),
    );
    let limit = Instant::from_millis(60_000);
    assert!(w.run_until_event(1, limit, |e| e
        .iter()
        .any(|e| matches!(e, RpcEvent::CallAllCompleted { .. }))));
    let ev = w.hosts[&node(1)]
        .events
        .iter()
        .find(|e| matches!(e, RpcEvent::CallAllCompleted { .. }))
        .cloned()
        .unwrap();
    assert_eq!(
        ev,
        RpcEvent::CallAllCompleted {
            id: g,
            replies: vec![
                (node(2), expected_reply(&body)),
                (node(3), expected_reply(&body))
            ],
            unanswered: vec![node(4)],
            errors: vec![(node(4), CallError::Timeout)],
        }
    );
    assert!(
        !w.hosts[&node(1)]
            .events
            .iter()
            .any(|e| matches!(e, RpcEvent::CallCompleted { .. })),
        "members of a call_all complete only as a set"
    );
    // An empty set completes at once; cancel_all cancels the rest.
    let now = w.now;
    let g2 = w
        .rpc(1)
        .call_all(now, [], ECHO, vec![], CallOptions::default());
    assert!(matches!(
        w.rpc(1).poll_event(),
        Some(RpcEvent::CallAllCompleted { id, ref replies, ref unanswered, .. })
            if id == g2 && replies.is_empty() && unanswered.is_empty()
    ));
    let g3 = w
        .rpc(1)
        .call_all(now, [node(4)], ECHO, vec![], CallOptions::default());
    assert!(w.rpc(1).cancel_all(g3));
    assert!(matches!(
        w.rpc(1).poll_event(),
        Some(RpcEvent::CallAllCompleted { id, ref errors, .. })
            if id == g3 && errors == &vec![(node(4), CallError::Cancelled)]
    ));
    assert!(!w.rpc(1).cancel_all(g3));
}

#[test]
fn unreachable_retransmits_once_then_fails_fast() {
    let (mut w, _) = world(2, RpcConfig::default());
    w.crash(2);
    let now = w.now;
    let c1 = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(1, 10), CallOptions::default());
    let c2 = w
        .rpc(1)
        .call(now, node(2), ECHO, tagged(2, 10), CallOptions::default());
    w.flush();
    assert_eq!(w.net.sent("Hello").len(), 2);
    w.rpc(1).handle_unreachable(now, node(2));
    w.flush();
    assert_eq!(w.net.sent("Hello").len(), 4, "retransmitted at once");
    assert_eq!(w.completion(1, c1), None);
    w.rpc(1).handle_unreachable(now, node(2));
    w.flush();
    assert_eq!(w.completion(1, c1), Some((Err(CallError::Unreachable), 1)));
    assert_eq!(w.completion(1, c2), Some((Err(CallError::Unreachable), 1)));
    // An answer in between resets the count.
    let (mut w, _) = world(2, RpcConfig::default());
    let now = w.now;
    let c = w
        .rpc(1)
        .call(now, node(2), SLOW, tagged(3, 10), CallOptions::default());
    w.run_for(ms(10));
    let now = w.now;
    w.rpc(1).handle_unreachable(now, node(2));
    w.run_for(ms(10));
    let now = w.now;
    w.rpc(1).handle_unreachable(now, node(2));
    w.flush();
    assert_eq!(
        w.completion(1, c),
        None,
        "the probe's answer came in between"
    );
    // Unreachable for an unrelated node is ignored.
    w.rpc(1).handle_unreachable(now, node(9));
}

#[test]
fn saved_replies_stay_within_their_bounds() {
    let config = RpcConfig {
        chan: ChanConfig {
            max_saved_reply_bytes: 20_000,
            max_saved_replies_per_client: 8,
            ..ChanConfig::default()
        },
        ..RpcConfig::default()
    };
    let (mut w, log) = world(2, config);
    // No acknowledgement ever reaches the server.
    w.net.filter = Some(Box::new(|_, _, m| {
        !matches!(m, Some(ChanMessage::ReplyAck { .. }))
    }));
    let mut max_saved = 0;
    let now = w.now;
    let ids: Vec<_> = (0..40u64)
        .map(|t| {
            w.rpc(1).call(
                now,
                node(2),
                ECHO,
                tagged(t * 10 + 1, 30),
                CallOptions::default(),
            )
        })
        .collect();
    while w.step(now + Duration::from_secs(5)) {
        max_saved = max_saved.max(w.hosts[&node(2)].rpc.chan.saved_reply_bytes());
        assert!(w.hosts[&node(2)].rpc.chan.saved_reply_bytes() <= 20_000);
    }
    for id in ids {
        let c = w.completion(1, id);
        assert!(
            c.as_ref().is_some_and(|(r, n)| r.is_ok() && *n == 1),
            "{c:?} {:?}",
            w.net
                .trace
                .iter()
                .map(|t| (t.0, t.3))
                .filter(|t| t.1 != "Hello" && t.1 != "Iam")
                .collect::<Vec<_>>()
        );
    }
    assert!(max_saved > 0);
    assert!(w.rpc(2).stats().chan.saved_replies_evicted > 0);
    assert!(log.borrow().values().all(|&n| n == 1));
    // The retention time frees the rest.
    w.run_for(Duration::from_secs(60));
    assert_eq!(w.hosts[&node(2)].rpc.chan.saved_reply_bytes(), 0);
}

#[test]
fn one_mebibyte_each_way_over_a_lossy_link() {
    let (mut w, log) = world(2, RpcConfig::default());
    w.net.loss = 0.3;
    w.net.dup = 0.1;
    w.net.max_delay = ms(10);
    let body = tagged(1, 1 << 20);
    w.rpc(2).register(20u16, |_, b| {
        HandlerResult::Reply(b.iter().rev().copied().collect())
    });
    let now = w.now;
    let opts = CallOptions::default().with_max_retries(10);
    let c = w.rpc(1).call(now, node(2), 20u16, body.clone(), opts);
    let (r, _) = w.await_call(1, c);
    let mut rev = body.clone();
    rev.reverse();
    assert_eq!(r, Ok(rev));
    assert!(log.borrow().is_empty());
    let s = w.rpc(1).stats();
    assert!(s.blast.fragments_retransmitted > 0);
}

#[test]
fn a_full_client_table_drops_new_clients_until_one_expires() {
    let config = RpcConfig {
        chan: ChanConfig {
            max_clients: 2,
            client_retention: Duration::from_secs(20),
            ..ChanConfig::default()
        },
        ..RpcConfig::default()
    };
    let (mut w, log) = world(4, config);
    let opts = CallOptions::default().with_max_retries(2);
    for (client, tag) in [(2u8, 2u64), (3, 3)] {
        let now = w.now;
        let c = w
            .rpc(client)
            .call(now, node(1), ECHO, tagged(tag, 10), opts);
        assert!(w.await_call(client, c).0.is_ok());
    }
    let now = w.now;
    let c = w.rpc(4).call(now, node(1), ECHO, tagged(4, 10), opts);
    assert_eq!(w.await_call(4, c).0, Err(CallError::Timeout));
    assert_eq!(executions(&log, 4), 0);
    assert!(w.rpc(1).stats().chan.drops.get("client_table_full") >= 1);
    // After client_retention of silence the old tables go.
    w.run_for(Duration::from_secs(30));
    let now = w.now;
    let c = w.rpc(4).call(now, node(1), ECHO, tagged(5, 10), opts);
    assert!(w.await_call(4, c).0.is_ok());
    assert!(w.rpc(1).stats().chan.clients_expired >= 1);
}

#[test]
fn too_many_running_requests_are_dropped_until_one_ends() {
    let config = RpcConfig {
        chan: ChanConfig {
            max_executing: 1,
            ..ChanConfig::default()
        },
        ..RpcConfig::default()
    };
    let (mut w, log) = world(2, config);
    let now = w.now;
    let opts = CallOptions::default().with_max_retries(10);
    let c1 = w.rpc(1).call(now, node(2), SLOW, tagged(1, 10), opts);
    let c2 = w.rpc(1).call(now, node(2), SLOW, tagged(2, 10), opts);
    w.run_for(ms(300));
    assert_eq!(executions(&log, 1) + executions(&log, 2), 1);
    assert!(w.rpc(2).stats().chan.drops.get("server_busy") >= 1);
    let reqs = w.take_requests(2);
    let now = w.now;
    w.rpc(2).respond(now, reqs[0].0, b"one".to_vec());
    w.run_for(Duration::from_secs(3));
    let reqs = w.take_requests(2);
    assert_eq!(reqs.len(), 1, "the other one ran once the first ended");
    let now = w.now;
    w.rpc(2).respond(now, reqs[0].0, b"two".to_vec());
    assert!(w.await_call(1, c1).0.is_ok());
    assert!(w.await_call(1, c2).0.is_ok());
    assert_eq!(executions(&log, 1), 1);
    assert_eq!(executions(&log, 2), 1);
}

#[test]
fn same_seed_same_trace() {
    let trace = |seed: u64| {
        let log: ExecLog = Rc::default();
        let mut w = World::new(3, RpcConfig::default(), seed, standard_setup(log));
        w.net.loss = 0.3;
        w.net.dup = 0.1;
        w.net.max_delay = ms(20);
        let now = w.now;
        for t in 0..10u64 {
            let from = (t % 3) as u8 + 1;
            let to = from % 3 + 1;
            let len = if t == 3 { 200_000 } else { 100 + t as usize };
            w.rpc(from)
                .call(now, node(to), ECHO, tagged(t, len), CallOptions::default());
        }
        w.run_for(Duration::from_secs(60));
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for (at, from, to, kind) in &w.net.trace {
            let line = format!("{at:?}{from}{to}{kind}");
            h = fnv(line.as_bytes()) ^ h.rotate_left(7);
        }
        (h, w.net.trace.len())
    };
    assert_eq!(trace(5), trace(5));
    assert_ne!(trace(5), trace(6));
}

#[test]
fn a_long_lossless_path_causes_no_spurious_retransmissions() {
    let (mut w, _) = world(2, RpcConfig::default());
    w.net.min_delay = ms(80);
    w.net.max_delay = ms(80);
    w.rpc(2)
        .register(20u16, |_, b| HandlerResult::Reply(b.to_vec()));
    let now = w.now;
    let body = tagged(1, 1 << 20);
    let c = w
        .rpc(1)
        .call(now, node(2), 20u16, body.clone(), CallOptions::default());
    let (r, at) = w.await_call(1, c);
    assert_eq!(r, Ok(body));
    // Hello/Iam, then about 7 windows of 128 fragments each way.
    assert!(at < Instant::from_millis(2500), "{at:?}");
    let (s1, s2) = (w.rpc(1).stats(), w.rpc(2).stats());
    assert_eq!(s1.blast.fragments_retransmitted, 0);
    assert_eq!(s2.blast.fragments_retransmitted, 0);
    assert_eq!(s1.blast.polls_sent + s2.blast.polls_sent, 0);
    // Only the first Hello, whose initial RTO (100 ms) is below this
    // path's round trip (160 ms).
    assert_eq!(s1.chan.retransmissions, 1);
    assert_eq!(w.net.sent("Hello").len(), 2);
    // Both Iams are samples of 160 ms (the echo tells which Hello each
    // answers); the multi-fragment transfers are none.
    assert_eq!(s1.chan.rtt_samples, 2);
    assert_eq!(
        w.rpc(1).chan.rtt(node(2)).unwrap().estimated(),
        Some(ms(160))
    );
}

#[test]
fn a_path_longer_than_the_blast_timers_still_carries_a_mebibyte() {
    // One-way 400 ms: the receiver waits 800 ms between windows, more than
    // LAST_FRAG plus three RETRYs (350 ms) with the default timers.
    let (mut w, _) = world(2, RpcConfig::default());
    w.net.min_delay = ms(400);
    w.net.max_delay = ms(400);
    w.rpc(2)
        .register(20u16, |_, b| HandlerResult::Reply(b.to_vec()));
    let now = w.now;
    let body = tagged(1, 1 << 20);
    let c = w
        .rpc(1)
        .call(now, node(2), 20u16, body.clone(), CallOptions::default());
    let (r, _) = w.await_call(1, c);
    assert_eq!(r, Ok(body));
    let (s1, s2) = (w.rpc(1).stats(), w.rpc(2).stats());
    for s in [&s1, &s2] {
        assert_eq!(s.blast.reassemblies_given_up, 0);
        assert_eq!(s.blast.reassemblies_started, 1);
        assert_eq!(s.blast.fragments_retransmitted, 0);
    }
}
