//! Tests of the training API (Model::create, Trainer). `create_model_errors`,
//! `trainer_option_defaults_are_those_of_kiln_h` and `thread_rules` run against any libkiln; the
//! others need the training engine: they train a fresh tiny Llama (hidden 32, 2 layers, 4 heads, the
//! vocabulary of models/kjv-tiny's tokenizer) on fixed text, against references independent of kiln
//! (ln(vocab) for a fresh model's loss, the Llama parameter count from the config, and kiln's
//! inference path for the trainer's forward pass).
use kiln::{
    Batch, ErrorKind, LogitsMode, Model, ModelCreateOptions, Optimizer, ParamGroup, ParamRole,
    Runtime, RuntimeOptions, SessionOptions, Tokenizer, Trainer, TrainerCancelHandle,
    TrainerOptions, TrainerOutput,
};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const TEXT: &str = "In the beginning God created the heaven and the earth. And the earth was \
                    without form, and void; and darkness was upon the face of the deep.";
const B: usize = 2;
const T: usize = 8;

fn source_dir() -> PathBuf {
    match std::env::var("KILN_SOURCE_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.."),
    }
}

fn kjv_tiny() -> PathBuf {
    source_dir().join("models/kjv-tiny")
}

fn runtime() -> Runtime {
    // One thread: the CI machine has two cores shared with the rest of the test suite.
    Runtime::new(&RuntimeOptions::cpu(1)).unwrap()
}

fn config(architecture: &str, vocab: i32) -> String {
    format!(
        "{{\"architectures\":[\"{}\"],\"vocab_size\":{},\"hidden_size\":32,\
         \"intermediate_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\
         \"num_key_value_heads\":4,\"max_position_embeddings\":64,\"rms_norm_eps\":1e-5,\
         \"rope_theta\":10000.0,\"tie_word_embeddings\":true,\"bos_token_id\":1,\"eos_token_id\":0}}",
        architecture, vocab
    )
}

/// The tokenizer's vocabulary and a fixed [B, T] batch cut from TEXT (targets shifted by one).
struct Data {
    vocab: i32,
    inputs: Vec<i32>,
    targets: Vec<i32>,
}

fn data() -> Data {
    let tok = Tokenizer::load(kjv_tiny()).unwrap();
    let ids = tok.encode(TEXT, false, false).unwrap();
    assert!(ids.len() > B * T, "TEXT tokenizes to {} ids", ids.len());
    Data {
        vocab: tok.vocab_size().unwrap(),
        inputs: ids[..B * T].to_vec(),
        targets: ids[1..B * T + 1].to_vec(),
    }
}

impl Data {
    fn batch(&self) -> Batch<'_> {
        Batch::new(B, T, &self.inputs, &self.targets)
    }

    fn model(&self, rt: &Runtime) -> Model {
        let options = ModelCreateOptions {
            seed: 7,
            tokenizer_path: Some(kjv_tiny()),
        };
        Model::create(rt, &config("LlamaForCausalLM", self.vocab), &options).unwrap()
    }

    fn trainer(&self, rt: &Runtime, edit: impl FnOnce(&mut TrainerOptions)) -> Trainer {
        let mut options = TrainerOptions {
            learning_rate: 3e-3,
            ..Default::default()
        };
        edit(&mut options);
        Trainer::new(&self.model(rt), &options).unwrap() // the model may go: the trainer has a copy
    }
}

#[test]
fn create_model_errors() {
    let d = data();
    let rt = runtime();
    let e = Model::create(&rt, "{not json", &ModelCreateOptions::default())
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Format, "{}", e);
    let e = Model::create(
        &rt,
        &config("BertForMaskedLM", d.vocab),
        &Default::default(),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{}", e);
    assert!(e.message().contains("BertForMaskedLM"), "{}", e);
    let missing = ModelCreateOptions {
        tokenizer_path: Some(kjv_tiny().join("no-such-dir")),
        ..Default::default()
    };
    let e = Model::create(&rt, &config("LlamaForCausalLM", d.vocab), &missing)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{}", e);
    assert!(e.message().contains("no-such-dir"), "{}", e);
}

#[test]
fn trainer_option_defaults_are_those_of_kiln_h() {
    let o = TrainerOptions::default();
    assert_eq!(o.optimizer, Optimizer::AdamW);
    assert_eq!(
        (o.learning_rate, o.beta1, o.beta2, o.epsilon, o.weight_decay),
        (3e-4, 0.9, 0.95, 1e-8, 0.1)
    );
    assert_eq!(
        (o.muon_learning_rate, o.muon_momentum, o.muon_ns_steps),
        (0.02, 0.95, 5)
    );
    assert_eq!(
        (o.grad_accum_steps, o.max_grad_norm, o.seed, o.n_mtp_heads),
        (1, 1.0, 1337, 0)
    );
    assert_eq!(
        (o.decay_fraction, o.mtp_loss_weights),
        (0.2, [1.0; kiln::MAX_MTP_HEADS])
    );
    assert_eq!(o.residual_dropout, 0.0);
    assert_eq!(ModelCreateOptions::default().seed, 1337);
}

fn assert_send<X: Send>() {}
fn assert_send_sync<X: Send + Sync>() {}

#[test]
fn thread_rules() {
    // A trainer moves between threads (and is not Sync: a compile_fail doctest shows it); its
    // cancel handle is shared between them.
    assert_send::<Trainer>();
    assert_send_sync::<TrainerCancelHandle>();
}

#[test]
fn batches_are_checked_before_kiln_reads_them() {
    let d = data();
    let rt = runtime();
    let mut t = d.trainer(&rt, |_| {});
    let short = Batch::new(B, T, &d.inputs, &d.targets[1..]);
    let e = t.step(&short).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("targets holds 15"), "{}", e);
    let mask = [1u8; 3];
    let e = t.eval_loss(&d.batch().with_mask(&mask)).err().unwrap();
    assert!(e.message().contains("loss_mask holds 3"), "{}", e);
    assert_eq!(t.info().unwrap().step, 0);
}

/// A tied-embedding Llama's parameter count, from the architecture.
fn llama_parameter_count(vocab: i64) -> i64 {
    let (h, f, kv, layers) = (32i64, 64i64, 32i64, 2i64);
    vocab * h + layers * (2 * h * h + 2 * h * kv + 3 * h * f + 2 * h) + h
}

#[test]
fn a_fresh_model_has_the_configured_shape() {
    let d = data();
    let rt = runtime();
    let info = d.model(&rt).info().unwrap();
    assert_eq!(info.architecture, "LlamaForCausalLM");
    assert_eq!(
        (
            info.vocab_size,
            info.hidden_size,
            info.n_layers,
            info.n_heads
        ),
        (d.vocab, 32, 2, 4)
    );
    assert_eq!(info.n_parameters, llama_parameter_count(d.vocab as i64));
}

#[test]
fn loss_decreases_and_eval_loss_changes_nothing() {
    let d = data();
    let rt = runtime();
    let mut t = d.trainer(&rt, |_| {});
    let mut losses = Vec::new();
    for i in 1..=6 {
        let r = t.step(&d.batch()).unwrap();
        assert_eq!(
            (r.step, r.n_tokens, r.weight_sum),
            (i, (B * T) as i64, (B * T) as f64)
        );
        assert!(r.grad_norm > 0.0 && r.mtp_losses.is_empty());
        losses.push(r.loss);
    }
    let ln_vocab = (d.vocab as f64).ln();
    assert!(
        (losses[0] - ln_vocab).abs() < 0.3,
        "{:?} vs ln(vocab) {}",
        losses,
        ln_vocab
    );
    assert!(losses[5] < losses[0] - 0.5, "{:?}", losses);
    let a = t.eval_loss(&d.batch()).unwrap();
    let b = t.eval_loss(&d.batch()).unwrap();
    assert_eq!((a.loss, a.step, a.grad_norm), (b.loss, 6, 0.0));
    assert_eq!(t.info().unwrap().step, 6);
}

#[test]
fn checkpoint_resume_is_exact_and_data_state_round_trips() {
    let d = data();
    let rt = runtime();
    let mut a = d.trainer(&rt, |_| {});
    assert!(a.data_state().unwrap().is_empty());
    a.step(&d.batch()).unwrap();
    a.step(&d.batch()).unwrap();
    let state = b"cursor=2\x00\xff".to_vec();
    a.set_data_state(&state).unwrap();
    assert_eq!(a.data_state().unwrap(), state);
    let e = a.set_data_state(&vec![0u8; (1 << 20) + 1]).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let dir = std::env::temp_dir().join(format!("kiln-rs-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.ckpt");
    a.save(&path).unwrap();
    let uninterrupted = a.step(&d.batch()).unwrap();
    let mut b = Trainer::load(&rt, &path).unwrap();
    assert_eq!(b.info().unwrap().step, 2);
    assert_eq!(b.data_state().unwrap(), state);
    let resumed = b.step(&d.batch()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(resumed.step, 3);
    assert_eq!(
        resumed.loss, uninterrupted.loss,
        "resuming must be bit-identical"
    );
}

#[test]
fn an_all_zero_mask_is_invalid_argument() {
    let d = data();
    let rt = runtime();
    let mut t = d.trainer(&rt, |_| {});
    let mask = vec![0u8; B * T];
    let e = t.step(&d.batch().with_mask(&mask)).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(e.status_name(), "KILN_ERR_INVALID_ARGUMENT");
    assert!(!e.message().is_empty());
    assert_eq!(t.info().unwrap().step, 0);
}

#[test]
fn progress_closures_and_the_cancel_handle_cancel_a_step() {
    let d = data();
    let rt = runtime();
    // Two micro-batches: kiln.h promises "forward" before each one's forward + backward pass
    // (fraction = the share done) and "optimizer" before the update (fraction 1).
    let mut t = d.trainer(&rt, |o| o.grad_accum_steps = 2);
    let stages = Arc::new(Mutex::new(Vec::new()));
    let seen = stages.clone();
    t.set_progress(move |fraction, stage| {
        seen.lock().unwrap().push((stage.to_string(), fraction));
        false
    })
    .unwrap();
    t.step(&d.batch()).unwrap();
    assert_eq!(
        *stages.lock().unwrap(),
        vec![
            ("forward".to_string(), 0.0),
            ("forward".to_string(), 0.5),
            ("optimizer".to_string(), 1.0)
        ]
    );
    let before = t.eval_loss(&d.batch()).unwrap().loss;

    t.set_progress(|_, stage| stage == "optimizer").unwrap();
    let e = t.step(&d.batch()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_eq!(t.info().unwrap().step, 1);

    let cancel = t.cancel_handle();
    t.set_progress(move |_, _| {
        cancel.cancel().unwrap();
        false
    })
    .unwrap();
    assert_eq!(
        t.step(&d.batch()).err().unwrap().kind(),
        ErrorKind::Cancelled
    );

    t.set_progress(|_, _| panic!("progress boom")).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.step(&d.batch())));
    assert!(panicked.is_err(), "the closure's panic is resumed by step");

    t.clear_progress().unwrap();
    assert_eq!(t.info().unwrap().step, 1);
    assert_eq!(
        t.eval_loss(&d.batch()).unwrap().loss,
        before,
        "cancelled steps change nothing"
    );
    let other_thread = t.cancel_handle();
    std::thread::spawn(move || other_thread.cancel().unwrap())
        .join()
        .unwrap();
    assert_eq!(
        t.step(&d.batch()).err().unwrap().kind(),
        ErrorKind::Cancelled
    );
    assert_eq!(t.step(&d.batch()).unwrap().step, 2);
}

const ROLES: [ParamRole; 6] = [
    ParamRole::Matrix,
    ParamRole::Embedding,
    ParamRole::Position,
    ParamRole::Head,
    ParamRole::Norm,
    ParamRole::Bias,
];

#[test]
fn param_groups_freeze_and_train_roles() {
    let d = data();
    let rt = runtime();
    // A learning rate of 0 freezes a role (kiln.h): with every role frozen a step sees a gradient
    // but changes no weight, decay included.
    let mut frozen = d.trainer(&rt, |o| {
        o.param_groups = ROLES.iter().map(|r| ParamGroup::frozen(*r)).collect();
        o.weight_decay = 0.5;
    });
    let before = frozen.eval_loss(&d.batch()).unwrap().loss;
    let r = frozen.step(&d.batch()).unwrap();
    assert!(r.grad_norm > 0.0);
    assert_eq!(frozen.eval_loss(&d.batch()).unwrap().loss, before);
    // Thawing the norms alone (a later group for a role replaces an earlier one) trains them.
    let mut norms = d.trainer(&rt, |o| {
        o.param_groups = ROLES.iter().map(|r| ParamGroup::frozen(*r)).collect();
        o.param_groups.push(ParamGroup {
            learning_rate: Some(1e-2),
            ..ParamGroup::new(ParamRole::Norm)
        });
    });
    norms.step(&d.batch()).unwrap();
    let after = norms.eval_loss(&d.batch()).unwrap().loss;
    assert!(after < before, "{} !< {}", after, before);
    // kiln reads a negative number as "not set"; here that is None, so Some(-x) is an error.
    let negative = TrainerOptions {
        param_groups: vec![ParamGroup {
            weight_decay: Some(-0.1),
            ..ParamGroup::new(ParamRole::Bias)
        }],
        ..Default::default()
    };
    let e = Trainer::new(&d.model(&rt), &negative).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.message().contains("param_groups[0].weight_decay is -0.1"),
        "{}",
        e
    );
}

#[test]
fn forward_sizes_and_mtp_losses() {
    let d = data();
    let rt = runtime();
    let mut t = d.trainer(&rt, |o| o.n_mtp_heads = 1);
    let logits = t.forward(&d.inputs, B, T, TrainerOutput::Logits).unwrap();
    assert_eq!(logits.len(), (1 + 1) * B * T * d.vocab as usize);
    let hidden = t.forward(&d.inputs, B, T, TrainerOutput::Hidden).unwrap();
    assert_eq!(hidden.len(), B * T * 32);
    let e = t
        .forward(&d.inputs[..3], B, T, TrainerOutput::Logits)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let r = t.step(&d.batch()).unwrap();
    assert_eq!(r.mtp_losses.len(), 1);
    assert!((r.objective - (r.loss + r.mtp_losses[0])).abs() <= 1e-6 * r.objective);
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| (*w as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn snapshot_and_export_run_the_trained_weights() {
    let d = data();
    let rt = runtime();
    let mut t = d.trainer(&rt, |_| {});
    for _ in 0..3 {
        t.step(&d.batch()).unwrap();
    }
    let row = &d.inputs[..T];
    let want = t.forward(row, 1, T, TrainerOutput::Logits).unwrap();
    let logits_of = |m: &Model| {
        let mut s = m.session(&SessionOptions::default()).unwrap();
        s.forward(row, LogitsMode::All).unwrap()
    };
    let snapshot = t.snapshot().unwrap();
    assert!(rel_l2(&logits_of(&snapshot), &want) < 1e-4);
    let dir = std::env::temp_dir().join(format!("kiln-rs-export-{}", std::process::id()));
    t.export_hf(&dir).unwrap();
    let exported = Model::load(&rt, &dir).unwrap();
    let got = logits_of(&exported);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(rel_l2(&got, &want) < 1e-4);
}

#[test]
fn data_parallel_reaches_kiln() {
    // A CPU runtime has no NCCL group ids and its trainer cannot join a group; a bad rank is named
    // first, and the trainer keeps working after the refusals.
    let d = data();
    let rt = runtime();
    let e = rt.nccl_id().err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("CUDA runtime"), "{}", e);
    let mut t = d.trainer(&rt, |_| {});
    let e = t.join_data_parallel(2, 5, &[0u8; 128]).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("world_size 2 and rank 5"), "{}", e);
    let e = t.join_data_parallel(1, 0, &[7u8; 128]).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("CUDA trainer"), "{}", e);
    // shard_optimizer_state reaches kiln: with Muon it is refused by name, before the engine.
    let mut muon = d.trainer(&rt, |o| o.optimizer = Optimizer::Muon);
    let e = muon.join_data_parallel_sharded(1, 0, &[7u8; 128], true).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("Muon"), "{}", e);
    assert!(t.step(&d.batch()).unwrap().loss.is_finite());
}
