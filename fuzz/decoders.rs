// Every decoder that sees untrusted bytes, by fuzz target name. Shared by
// the `cargo fuzz` targets (fuzz/fuzz_targets/*.rs) and by the corpus
// replay and proptest mutation pass that `cargo test` runs
// (mserver/tests/fuzz_corpus.rs), so CI catches a regression without
// nightly. A decoder may refuse any input; it must never panic, hang or
// allocate without bound.

/// The fuzz targets, one per decoder family.
pub const TARGETS: &[&str] = &[
    "wire_packet",
    "wire_packet_keyed",
    "body_coreset",
    "body_rpc",
    "body_rmcast",
    "body_mcaster",
    "body_appgroup",
    "body_admin",
    "mi_frame",
    "config_file",
];

/// Runs the decoders of `target` on `data`.
pub fn run(target: &str, data: &[u8]) {
    use membership::wire::{decode_body, decode_message};
    match target {
        "wire_packet" => {
            let mut c = membership::wire::WireCodec::new();
            if let Ok(p) = c.open(data) {
                // A packet that opens re-seals to a datagram that opens.
                let mut out = Vec::new();
                let _ = c.seal(&p.header, &p.body, &mut out);
            }
        }
        "wire_packet_keyed" => {
            let ring = membership::wire::KeyRing::new(vec![
                membership::wire::ClusterKey::new(1, [1u8; 32]).expect("key"),
                membership::wire::ClusterKey::new(2, [2u8; 32]).expect("key"),
            ])
            .expect("ring");
            let mut c =
                membership::wire::WireCodec::with_auth(membership::wire::AuthConfig::new(ring));
            let _ = c.open(data);
            let _ = c.open(data);
        }
        "body_coreset" => {
            let _ = decode_body::<membership::coreset::msg::Envelope>(data);
        }
        "body_rpc" => {
            let _ = decode_body::<membership::rpc::BlastPacket>(data);
            let _ = decode_message::<membership::rpc::ChanMessage>(data);
        }
        "body_rmcast" => {
            let _ = membership::rmcast::Envelope::decode(data);
        }
        "body_mcaster" => {
            let _ = decode_body::<membership::mcaster_reg::McasterMsg>(data);
        }
        "body_appgroup" => {
            use membership::appgroup::link::*;
            let _ = decode_message::<AttachRequest>(data);
            let _ = decode_message::<AttachReply>(data);
            let _ = decode_message::<SubmitRequest>(data);
            let _ = decode_message::<ReadRequest>(data);
            let _ = decode_message::<QueryRequest>(data);
            let _ = decode_message::<QueryReply>(data);
            let _ = decode_message::<FetchRequest>(data);
            let _ = decode_message::<FetchReply>(data);
            let _ = membership::appgroup::AppOp::decode(data);
            let _ = membership::appgroup::Registry::decode(data);
        }
        "body_admin" => {
            use membership::mserver::admin::*;
            let _ = decode_body::<FaultRequest>(data);
            let _ = decode_body::<ViewReply>(data);
            let _ = decode_body::<StatsReply>(data);
            let _ = decode_body::<LeaveReply>(data);
            let _ = decode_body::<membership::mserver::keys::KeysRequest>(data);
            let _ = decode_body::<membership::mserver::keys::KeysReply>(data);
            let _ = membership::mserver::keys::KeyOp::from_payload(data);
        }
        "mi_frame" => {
            use member_interface::proto;
            if data.len() >= proto::LEN_PREFIX {
                let mut prefix = [0u8; proto::LEN_PREFIX];
                prefix.copy_from_slice(&data[..proto::LEN_PREFIX]);
                let _ = proto::frame_len(prefix);
            }
            let _ = proto::decode_body::<proto::ClientMsg>(data);
            let _ = proto::decode_body::<proto::ServerMsg>(data);
            let _ = proto::answer_hello(data, "mi");
        }
        "config_file" => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = daemon_shell::keys::parse_key_lines(text, "fuzz");
                let _ = daemon_shell::settings::from_toml_text::<mserver::settings::Settings>(text);
            }
        }
        _ => {}
    }
}
