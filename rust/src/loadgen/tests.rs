//! The generator against the echo server, over real gRPC on 127.0.0.1.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::server::proto::model_infer_request::InferInputTensor;
use crate::server::proto::ModelInferRequest;
use crate::tensor::DataType;

fn echo(fail_every: u64) -> EchoServer {
    EchoServer::start(EchoOptions {
        fail_every,
        ..EchoOptions::default()
    })
    .expect("the echo server starts")
}

fn request(rows: i64) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "echo".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![rows, 16],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(vec![0u8; 64 * rows as usize])],
        ..Default::default()
    }
}

fn class(name: &str, weight: f64, shape: Vec<i64>) -> Class {
    Class {
        name: name.into(),
        requests: vec![request(1)],
        weight,
        expected: vec![ExpectedOutput {
            name: "y".into(),
            datatype: "FP32".into(),
            shape,
        }],
        expected_count: 1,
        repeat_fraction: None,
        int_range: (0, 9),
    }
}

fn config(server: &EchoServer, load: Load, api: Api) -> LoadConfig {
    LoadConfig {
        target: format!("127.0.0.1:{}", server.port),
        classes: vec![class("all", 1.0, vec![1, 16])],
        load,
        api,
        connections: 2,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(5),
        seed: 1,
        max_requests: None,
    }
}

fn percentile(values: &mut [Duration], q: f64) -> Duration {
    values.sort();
    values[((values.len() - 1) as f64 * q) as usize]
}

#[test]
fn open_loop_sends_on_schedule_and_records_every_answer() {
    let server = echo(0);
    let load = Load::Open {
        arrivals: Arrivals::Poisson { rate: 2000.0 },
    };
    let mut report = run(config(&server, load, Api::Unary)).unwrap();
    // 2,000 expected in the 1 s window; the standard deviation is about 45.
    assert!(
        (1_800..2_200).contains(&report.intended),
        "{}",
        report.intended
    );
    assert_eq!(report.sent.iter().sum::<u64>(), report.intended);
    assert_eq!(report.samples.len() as u64, report.intended);
    assert_eq!(report.unanswered, 0);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.malformed, 0);
    assert!(report.samples.iter().all(|s| s.code == 0));
    // Every intended send time falls in the window.
    assert!(report.samples.iter().all(|s| s.intended < report.window));
    // Timed from the intended send time, a latency includes the send lag,
    // and an answer's bytes arrive after its request was sent.
    assert!(report.samples.iter().all(|s| s.latency >= s.send_lag));
    for s in &report.samples {
        assert!(
            s.receive_lag <= s.latency - s.send_lag,
            "waited {:?} unread in a call of {:?} sent {:?} late",
            s.receive_lag,
            s.latency,
            s.send_lag
        );
    }
    // Unoptimized, beside other tests on a shared machine, the generator
    // can run late; its timing is checked on release builds by the Python
    // tests. Here: the lag is measured, and bounded by the drain.
    let max = percentile(&mut report.send_lag, 1.0);
    assert!(max < Duration::from_secs(5), "send lag {max:?}");
}

#[test]
fn failures_are_counted_by_code() {
    let server = echo(4);
    let mut cfg = config(&server, Load::Closed { concurrency: 4 }, Api::Unary);
    // Without warm-up every call falls in the window, so the count is exact.
    cfg.warmup = Duration::ZERO;
    cfg.duration = Duration::from_millis(500);
    let report = run(cfg).unwrap();
    let calls = server.calls();
    assert_eq!(report.samples.len() as u64, calls);
    assert_eq!(report.errors.get("UNAVAILABLE").copied(), Some(calls / 4));
    assert_eq!(report.errors.len(), 1);
    assert!(report.error_examples["UNAVAILABLE"].contains("on purpose"));
    let failed = report.samples.iter().filter(|s| s.code == 14).count() as u64;
    assert_eq!(failed, calls / 4);
}

#[test]
fn closed_loop_keeps_its_calls_in_flight() {
    let server = echo(0);
    let report = run(config(&server, Load::Closed { concurrency: 8 }, Api::Unary)).unwrap();
    assert!(report.samples.len() > 100);
    // Little's law's L, counted by the generator: the 8 clients are busy
    // all the time but for the few microseconds between answer and next call.
    assert!(
        (6.5..=8.0).contains(&report.mean_in_flight),
        "{}",
        report.mean_in_flight
    );
    assert!(report.send_lag.iter().all(Duration::is_zero));
}

#[test]
fn streams_carry_many_requests_each() {
    let server = echo(0);
    let load = Load::Open {
        arrivals: Arrivals::Uniform { rate: 1000.0 },
    };
    let report = run(config(&server, load, Api::Stream)).unwrap();
    assert_eq!(report.intended, 1000);
    assert_eq!(report.samples.len(), 1000);
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    let server = echo(5);
    let mut cfg = config(&server, Load::Closed { concurrency: 4 }, Api::Stream);
    cfg.warmup = Duration::ZERO;
    let report = run(cfg).unwrap();
    // The echo server, like most KServe v2 servers, streams an error's
    // message and no code.
    let failed = report.errors.get("UNKNOWN").copied().unwrap_or(0);
    assert_eq!(failed, server.calls() / 5);
}

#[test]
fn classes_share_the_load_and_answers_are_checked() {
    let server = echo(0);
    let mut cfg = config(
        &server,
        Load::Open {
            arrivals: Arrivals::Poisson { rate: 2000.0 },
        },
        Api::Unary,
    );
    // The second class expects a shape the server does not answer with.
    cfg.classes = vec![
        class("online", 3.0, vec![1, 16]),
        class("wrong", 1.0, vec![1, 8]),
    ];
    let report = run(cfg).unwrap();
    let (online, wrong) = (report.sent[0] as f64, report.sent[1] as f64);
    let share = wrong / (online + wrong);
    assert!((share - 0.25).abs() < 0.04, "{share}");
    assert_eq!(report.malformed, report.sent[1]);
    assert!(report
        .malformed_example
        .as_deref()
        .unwrap()
        .contains("expected [1, 8]"));
    assert!(report
        .samples
        .iter()
        .all(|s| (s.class == 1) == (s.code == MALFORMED)));
}

#[test]
fn bursts_follow_their_phases() {
    let server = echo(0);
    let mut cfg = config(
        &server,
        Load::Open {
            arrivals: Arrivals::OnOff {
                on_rate: 4000.0,
                off_rate: 0.0,
                on: Duration::from_millis(100),
                off: Duration::from_millis(100),
            },
        },
        Api::Unary,
    );
    cfg.warmup = Duration::ZERO;
    let report = run(cfg).unwrap();
    // Nothing is meant to be sent in an off phase.
    assert!(report
        .samples
        .iter()
        .all(|s| s.intended.as_secs_f64() % 0.2 < 0.1));
    assert!(
        (1_700..2_300).contains(&report.intended),
        "{}",
        report.intended
    );
}

#[test]
fn a_stop_ends_the_window_early() {
    let server = echo(0);
    let mut cfg = config(&server, Load::Closed { concurrency: 2 }, Api::Unary);
    cfg.warmup = Duration::ZERO;
    cfg.duration = Duration::from_secs(30);
    let handle = LoadRun::start(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let live = handle.progress().snapshot();
    assert_eq!(live.phase, Phase::Measuring);
    assert!(live.answered > 0 && live.recent_p99_ms > 0.0);
    handle.stop();
    let report = handle.join().unwrap();
    assert!(report.stopped);
    assert!(
        report.window < Duration::from_secs(5),
        "{:?}",
        report.window
    );
    assert!(handle.join().is_err());
}

#[test]
fn an_unreachable_target_is_an_error() {
    let server = echo(0);
    let mut cfg = config(&server, Load::Closed { concurrency: 1 }, Api::Unary);
    // A port nothing listens on: one the system just gave and took back.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.target = format!("127.0.0.1:{port}");
    match run(cfg) {
        Err(err) => assert!(err.contains("cannot connect"), "{err}"),
        Ok(report) => panic!("connected to a closed port: {:?}", report.errors),
    }
}

#[test]
fn the_echo_server_describes_its_model() {
    let server = EchoServer::start(EchoOptions {
        datatype: DataType::Int64,
        shape: vec![4],
        max_batch_size: 8,
        ..EchoOptions::default()
    })
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use crate::server::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
        use crate::server::proto::{ModelConfigRequest, ModelMetadataRequest};
        let mut client =
            GrpcInferenceServiceClient::connect(format!("http://127.0.0.1:{}", server.port))
                .await
                .unwrap();
        let metadata = client
            .model_metadata(ModelMetadataRequest {
                name: "echo".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(metadata.inputs[0].datatype, "INT64");
        assert_eq!(metadata.inputs[0].shape, vec![-1, 4]);
        let config = client
            .model_config(ModelConfigRequest {
                name: "echo".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .config
            .unwrap();
        assert_eq!(config.max_batch_size, 8);
        let missing = client
            .model_metadata(ModelMetadataRequest {
                name: "other".into(),
                version: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
    });
}

#[test]
fn a_request_budget_ends_the_run() {
    let server = echo(0);
    for (load, api) in [
        (Load::Closed { concurrency: 3 }, Api::Unary),
        (Load::Closed { concurrency: 3 }, Api::Stream),
        (
            Load::Open {
                arrivals: Arrivals::Poisson { rate: 5000.0 },
            },
            Api::Unary,
        ),
    ] {
        let mut cfg = config(&server, load, api);
        cfg.warmup = Duration::ZERO;
        cfg.duration = Duration::from_secs(60);
        cfg.max_requests = Some(500);
        let report = run(cfg).unwrap();
        assert_eq!(report.samples.len(), 500, "{api:?}");
        assert!(report.stopped);
        assert!(report.window < Duration::from_secs(10));
    }
}

#[test]
fn the_last_arrivals_of_a_trace_are_sent_and_answered() {
    let server = echo(0);
    // The trace ends, and the sender with it, while calls it spawned have
    // yet to start: the drain must wait for them too.
    for count in [1u64, 2000] {
        let offsets = (0..count).map(|i| Duration::from_micros(i * 100)).collect();
        let mut cfg = config(
            &server,
            Load::Open {
                arrivals: Arrivals::Trace { offsets },
            },
            Api::Unary,
        );
        cfg.warmup = Duration::ZERO;
        let report = run(cfg).unwrap();
        assert_eq!(report.intended, count);
        assert_eq!(report.sent.iter().sum::<u64>(), count);
        assert_eq!(report.samples.len() as u64, count);
        assert_eq!(report.unanswered, 0);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn an_answer_left_unread_in_the_generators_socket_is_dated_by_its_arrival() {
    use super::connection::Connection;

    let server = echo(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut connection = Connection::open(&format!("127.0.0.1:{}", server.port))
            .await
            .unwrap();
        let stall = Duration::from_millis(50);
        // The kernel turns receive stamps on a moment after the first socket
        // asks (a deferred switch): the first reads may come without one.
        let mut waits = Vec::new();
        for _ in 0..20 {
            let before = server.calls();
            let mut client = connection.client.clone();
            let call = tokio::spawn(async move { client.model_infer(request(1)).await });
            // Let the request go out, then keep the generator's one thread
            // from reading while the echo answers.
            while server.calls() == before {
                tokio::task::yield_now().await;
            }
            std::thread::sleep(stall);
            call.await.unwrap().expect("the echo answers");
            let waited = connection.received().elapsed();
            waits.push(waited);
            if waited >= stall * 4 / 5 {
                return;
            }
            connection = Connection::open(&format!("127.0.0.1:{}", server.port))
                .await
                .unwrap();
        }
        panic!("answers unread for {stall:?} were dated {waits:?} before they were taken");
    });
}
