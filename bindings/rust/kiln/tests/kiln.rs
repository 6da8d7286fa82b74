//! Tests of the safe Rust API against the tiny-qwen2 fixture and HF transformers' outputs.
use kiln::{
    ChatMessage, ChatOptions, ErrorKind, GenerateOptions, LogitsMode, Model, Runtime,
    RuntimeOptions, Sampling, SessionOptions, StopReason, Tokenizer, TrainOptions,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn source_dir() -> PathBuf {
    match std::env::var("KILN_SOURCE_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.."),
    }
}

fn tiny() -> PathBuf {
    source_dir().join("tests/fixtures/tiny-qwen2")
}

/// The reference file's fields this test needs (hf_ref.json is plain, flat JSON).
struct Reference {
    prompt_text: String,
    prompt_ids: Vec<i32>,
    greedy_ids: Vec<i32>,
    greedy_text: String,
}

fn json_value<'a>(json: &'a str, key: &str) -> &'a str {
    let at = json
        .find(&format!("\"{}\":", key))
        .unwrap_or_else(|| panic!("{} not in hf_ref.json", key));
    json[at + key.len() + 3..].trim_start()
}

fn json_ids(json: &str, key: &str) -> Vec<i32> {
    let v = json_value(json, key);
    v[1..v.find(']').unwrap()]
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

fn json_string(json: &str, key: &str) -> String {
    let v = &json_value(json, key)[1..];
    let s = &v[..v.find('"').unwrap()];
    assert!(!s.contains('\\'), "escapes are not handled by this reader");
    s.to_string()
}

fn reference() -> Reference {
    let json = std::fs::read_to_string(tiny().join("hf_ref.json")).unwrap();
    Reference {
        prompt_text: json_string(&json, "prompt_text"),
        prompt_ids: json_ids(&json, "token_ids"),
        greedy_ids: json_ids(&json, "greedy_continuation_ids"),
        greedy_text: json_string(&json, "greedy_continuation_text"),
    }
}

fn runtime() -> Runtime {
    // One thread: the CI machine has two cores shared with the rest of the test suite.
    Runtime::new(&RuntimeOptions::cpu(1)).unwrap()
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions {
        sampling: Sampling::greedy(),
        max_tokens: n as i32,
        ignore_eos: true,
        ..Default::default()
    }
}

#[test]
fn abi_and_info() {
    kiln::check_abi().unwrap();
    assert!(kiln::version().contains("0.1.0"));
    let rt = runtime();
    assert_eq!(rt.info().unwrap().backend, kiln::Backend::Cpu);
    let model = Model::load(&rt, tiny()).unwrap();
    let info = model.info().unwrap();
    assert_eq!(info.architecture, "Qwen2ForCausalLM");
    assert_eq!(info.vocab_size, 512);
    assert!(model
        .eos_ids()
        .unwrap()
        .contains(&info.eos_token_id.unwrap()));
}

// On the CPU: F32 is the CPU's own precision, BF16 (a CUDA precision) is Unsupported.
#[test]
fn precision_option() {
    let rt = runtime();
    let model = Model::load_with_precision(&rt, tiny(), kiln::Precision::F32).unwrap();
    assert_eq!(model.info().unwrap().vocab_size, 512);
    let e = Model::load_with_precision(&rt, tiny(), kiln::Precision::Bf16)
        .err()
        .expect("BF16 on the CPU loaded");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("KILN_PRECISION_BF16"), "{e}");
}

#[test]
fn tokenize_matches_transformers_and_round_trips() {
    let r = reference();
    let model = Model::load(&runtime(), tiny()).unwrap();
    let ids = model.tokenize(&r.prompt_text, true, false).unwrap();
    assert_eq!(ids[..r.prompt_ids.len()], r.prompt_ids[..]);
    assert_eq!(model.detokenize(&ids, false).unwrap(), r.prompt_text);
    let pieces: Vec<u8> = r
        .prompt_ids
        .iter()
        .flat_map(|&id| model.token_to_piece(id).unwrap())
        .collect();
    assert_eq!(
        pieces,
        model.detokenize_bytes(&r.prompt_ids, false).unwrap()
    );
}

/// hf_ref.json's token_ids are HF's ids of exactly this prefix of prompt_text (its prompt_decoded).
const PHRASE: &str = "The quick brown fox jumps over";

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn encode_batch_and_threaded_match_encode() {
    let r = reference();
    let tok = Tokenizer::load(tiny()).unwrap();
    let one = [
        PHRASE,
        "",
        "Hello, world!",
        "<|im_start|>user\nHi<|im_end|>",
        "Grüße 🙂",
    ];
    let texts: Vec<&str> = one.iter().cycle().take(one.len() * 50).copied().collect();
    for threads in [1, 2, 4] {
        let got = tok.encode_batch(&texts, false, true, threads).unwrap();
        assert_eq!(got[0], r.prompt_ids); // HF's ids
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(got[i], tok.encode(text, false, true).unwrap(), "text {i}");
        }
    }
    let long = texts.join("\n").repeat(300);
    let single = tok.encode(&long, false, true).unwrap();
    for threads in [1, 2, 4] {
        assert_eq!(
            tok.encode_threaded(&long, false, true, threads).unwrap(),
            single
        );
    }
    let bad: [&[u8]; 2] = [b"fine", b"bad \xff"];
    let e = tok.encode_batch(&bad, false, false, 2).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("texts[1]"), "{e}");
    assert_eq!(
        tok.encode_batch(&["a"], false, false, -1)
            .err()
            .unwrap()
            .kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn standalone_and_model_tokenizers_match_transformers() {
    assert_send_sync::<Tokenizer>();
    let r = reference();
    assert!(r.prompt_text.starts_with(PHRASE));
    let tok = Tokenizer::load(tiny()).unwrap();
    assert!(tok.is_owned());
    assert_eq!(tok.decode(&r.prompt_ids, false).unwrap(), PHRASE);
    let ids = tok.encode(PHRASE, false, false).unwrap();
    assert_eq!(ids, r.prompt_ids);
    assert_eq!(tok.decode(&ids, false).unwrap(), PHRASE);
    assert_eq!(tok.vocab_size().unwrap(), 512);
    drop(tok);

    let model = Model::load(&runtime(), tiny()).unwrap();
    let borrowed = model.tokenizer().unwrap();
    assert!(!borrowed.is_owned());
    assert_eq!(borrowed.encode(PHRASE, false, false).unwrap(), r.prompt_ids);
    assert_eq!(borrowed.vocab_size().unwrap(), 512);
    drop(borrowed); // frees nothing: the model's tokenizer is still there
    assert_eq!(
        model
            .tokenizer()
            .unwrap()
            .decode(&r.prompt_ids, false)
            .unwrap(),
        PHRASE
    );

    let e = Tokenizer::load(tiny().join("no-such-dir")).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn train_save_and_reload() {
    let dir = std::env::temp_dir().join(format!("kiln-rs-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = dir.join("corpus.txt");
    std::fs::write(
        &corpus,
        "low lower lowest newer newest wider widest\n".repeat(50),
    )
    .unwrap();
    let options = TrainOptions {
        vocab_size: 300,
        special_tokens: vec!["<|end|>".to_string()],
        ..Default::default()
    };
    let mut stages = Vec::new();
    let tok = Tokenizer::train_with_progress(&[&corpus], &options, |_, stage| {
        stages.push(stage.to_string());
        false
    })
    .unwrap();
    assert_eq!(stages.last().map(String::as_str), Some("done"));
    let text = "lowest wider \u{1F642} \u{65B0}";
    let ids = tok.encode(text, false, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    // "low", " lowest" and " wider" are training words seen 50 times: one token each.
    assert_eq!(
        tok.encode("low lowest wider", false, false).unwrap().len(),
        3
    );
    let size = tok.vocab_size().unwrap();
    assert_eq!(tok.encode("<|end|>", false, true).unwrap(), vec![size - 1]);
    tok.save(dir.join("out")).unwrap();
    let again = Tokenizer::load(dir.join("out")).unwrap();
    assert_eq!(again.encode(text, false, false).unwrap(), ids);
    let e = Tokenizer::train_with_progress(&[&corpus], &options, |_, _| true)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    let e = again.save(dir.join("copy")).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn greedy_generation_equals_transformers_and_pieces_concatenate() {
    let r = reference();
    let model = Model::load(&runtime(), tiny()).unwrap();
    let mut session = model.session(&SessionOptions::default()).unwrap();
    let mut pieces = Vec::new();
    let g = session
        .generate_ids(&r.prompt_ids, &greedy(r.greedy_ids.len()), |p, _| {
            pieces.push(p.to_string());
            false
        })
        .unwrap();
    assert_eq!(g.ids, r.greedy_ids);
    assert_eq!(g.stop_reason, StopReason::MaxTokens);
    assert_eq!(g.text, r.greedy_text);
    assert_eq!(pieces.concat(), model.detokenize(&g.ids, false).unwrap());
    assert!(pieces.len() > 1);
}

#[test]
fn forward_and_sample_agree_with_the_reference() {
    let r = reference();
    let model = Model::load(&runtime(), tiny()).unwrap();
    let mut s = model.session(&SessionOptions::default()).unwrap();
    let logits = s.forward(&r.prompt_ids, LogitsMode::Last).unwrap();
    assert_eq!(logits.len(), 512);
    let argmax = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap() as i32;
    assert_eq!(s.sample(&logits, &Sampling::greedy()).unwrap(), argmax);
    assert_eq!(argmax, r.greedy_ids[0]);
    assert_eq!(s.position().unwrap().0, r.prompt_ids.len() as i32);
    s.reset().unwrap();
    assert_eq!(s.position().unwrap().0, 0);
}

#[test]
fn a_closure_returning_true_stops_after_n_pieces() {
    let r = reference();
    let model = Model::load(&runtime(), tiny()).unwrap();
    let mut s = model.session(&SessionOptions::default()).unwrap();
    let mut n = 0;
    let g = s
        .generate_ids(&r.prompt_ids, &greedy(100), |_, _| {
            n += 1;
            n == 3
        })
        .unwrap();
    assert_eq!(g.stop_reason, StopReason::Callback);
    assert_eq!(g.n_generated, 3);
    assert_eq!(g.ids, r.greedy_ids[..3]);
}

#[test]
fn cancel_handle_stops_generation_from_the_callback() {
    let r = reference();
    let model = Model::load(&runtime(), tiny()).unwrap();
    let mut s = model.session(&SessionOptions::default()).unwrap();
    let cancel = s.cancel_handle();
    let mut n = 0;
    let e = s
        .generate_ids(&r.prompt_ids, &greedy(100), |_, _| {
            n += 1;
            if n == 2 {
                cancel.cancel().unwrap();
            }
            false
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(n < 100);
    s.reset().unwrap();
    let g = s
        .generate_ids(&r.prompt_ids, &greedy(2), |_, _| false)
        .unwrap();
    assert_eq!(g.ids, r.greedy_ids[..2]);
}

#[test]
fn a_panicking_closure_is_contained_and_resumed() {
    let r = reference();
    let model = Model::load(&runtime(), tiny()).unwrap();
    let mut s = model.session(&SessionOptions::default()).unwrap();
    let calls = AtomicUsize::new(0);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = s.generate_ids(&r.prompt_ids, &greedy(8), |_, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            panic!("from the callback")
        });
    }));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"from the callback"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "kiln must stop calling after the panic"
    );
    s.reset().unwrap();
    assert_eq!(
        s.generate_ids(&r.prompt_ids, &greedy(2), |_, _| false)
            .unwrap()
            .ids,
        r.greedy_ids[..2]
    );
}

#[test]
fn errors_carry_kiln_status_and_message() {
    let rt = runtime();
    let e = Model::load(&rt, "/no/such/model-dir").err().unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.status_name(), "KILN_ERR_NOT_FOUND");
    assert!(e.message().contains("/no/such/model-dir"), "{}", e);
    let model = Model::load(&rt, tiny()).unwrap();
    let mut s = model.session(&SessionOptions::default()).unwrap();
    assert_eq!(
        s.forward(&[100_000], LogitsMode::Last).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    let mut small = model
        .session(&SessionOptions {
            context_length: 4,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        small
            .forward(&[1, 2, 3, 4, 5], LogitsMode::Last)
            .unwrap_err()
            .kind(),
        ErrorKind::ContextFull
    );
    assert_eq!(
        Runtime::new(&RuntimeOptions::cpu(-3)).err().unwrap().kind(),
        ErrorKind::InvalidArgument
    );
    // Tensor parallelism splits models across CUDA GPUs only.
    let tp = RuntimeOptions {
        tensor_parallel: 2,
        ..RuntimeOptions::cpu(1)
    };
    assert_eq!(
        Runtime::new(&tp).err().unwrap().kind(),
        ErrorKind::Unsupported
    );
}

#[test]
fn progress_and_log_callbacks() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = log.clone();
    let opts = RuntimeOptions {
        log_level: kiln::LogLevel::Debug,
        ..RuntimeOptions::cpu(1)
    };
    let rt =
        Runtime::with_log(&opts, move |_, m| sink.lock().unwrap().push(m.to_string())).unwrap();
    let mut fractions = Vec::new();
    Model::load_with_progress(&rt, tiny(), |f, _| {
        fractions.push(f);
        false
    })
    .unwrap();
    assert_eq!(*fractions.last().unwrap(), 1.0);
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.contains("loaded Qwen2ForCausalLM")));
    let e = Model::load_with_progress(&rt, tiny(), |_, _| true)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
}

#[test]
fn two_threads_generate_on_two_sessions_of_one_model() {
    let r = reference();
    let model = Model::load(&runtime(), tiny()).unwrap();
    let results: Vec<Vec<i32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let model = model.clone();
                let r = &r;
                scope.spawn(move || {
                    let mut s = model.session(&SessionOptions::default()).unwrap();
                    s.generate_ids(&r.prompt_ids, &greedy(r.greedy_ids.len()), |_, _| false)
                        .unwrap()
                        .ids
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results, vec![r.greedy_ids.clone(), r.greedy_ids.clone()]);
}

#[repr(C)]
struct MallInfo2 {
    fields: [usize; 10],
}
extern "C" {
    fn mallinfo2() -> MallInfo2;
}

/// Bytes the C heap has handed out (glibc: arena in use + mmap chunks), untouched pages included.
fn malloc_in_use() -> usize {
    let m = unsafe { mallinfo2() };
    m.fields[7] + m.fields[4]
}

#[test]
fn many_handles_dropped_in_a_loop_do_not_leak() {
    let rt = runtime();
    let model = Model::load(&rt, tiny()).unwrap();
    drop(model.session(&SessionOptions::default()).unwrap());
    let before = malloc_in_use();
    for _ in 0..40 {
        let s = model.session(&SessionOptions::default()).unwrap();
        drop(s);
        drop(Model::load(&rt, tiny()).unwrap());
    }
    let growth = malloc_in_use().saturating_sub(before);
    // One leaked session alone holds its whole KV cache (megabytes for this model). Other tests
    // run on other threads meanwhile, so the bound leaves room for their live allocations.
    assert!(growth < 48 << 20, "C heap grew by {} bytes", growth);
}

fn chat_fixtures() -> PathBuf {
    source_dir().join("tests/fixtures/chat")
}

/// HF's apply_chat_template text for `conversation` under `template` in hf_renders.json (objects
/// nested renders → template → conversation → "text"; the one JSON string is unescaped here).
fn hf_chat_render(template: &str, conversation: &str) -> String {
    let json = std::fs::read_to_string(chat_fixtures().join("expected/hf_renders.json")).unwrap();
    let mut at = json.find("\"renders\":").unwrap();
    for key in [template, conversation, "text"] {
        at += json[at..]
            .find(&format!("\"{}\":", key))
            .unwrap_or_else(|| panic!("{} not in hf_renders.json", key));
    }
    let mut chars = json[at..].chars().skip_while(|&c| c != ':').skip(1);
    assert_eq!(chars.by_ref().find(|c| !c.is_whitespace()), Some('"'));
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return out,
            '\\' => match chars.next().unwrap() {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    panic!("unterminated string in hf_renders.json")
}

fn qwen3_template_options(add_generation_prompt: bool) -> ChatOptions {
    ChatOptions {
        add_generation_prompt,
        template_override: Some(
            std::fs::read_to_string(chat_fixtures().join("templates/qwen3.jinja")).unwrap(),
        ),
        ..Default::default()
    }
}

#[test]
fn chat_render_matches_transformers() {
    let rt = runtime();
    let model = Model::load(&rt, tiny()).unwrap();
    let messages = [
        ChatMessage::new("system", "You are a terse assistant."),
        ChatMessage::new("user", "What is 2+2?"),
    ];
    let text = model
        .chat_render(&messages, &qwen3_template_options(true))
        .unwrap();
    assert_eq!(text, hf_chat_render("qwen3", "system_user_gen"));
}

#[test]
fn chat_render_tokens_masks_the_assistant_reply() {
    let rt = runtime();
    let model = Model::load(&rt, tiny()).unwrap();
    let messages = [
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello there"),
    ];
    let (ids, mask) = model
        .chat_render_tokens(&messages, &qwen3_template_options(false))
        .unwrap();
    assert_eq!(ids.len(), mask.len());
    assert!(mask.contains(&1));
    let masked: Vec<i32> = ids
        .iter()
        .zip(&mask)
        .filter(|(_, &m)| m == 1)
        .map(|(&id, _)| id)
        .collect();
    // Qwen3's template writes an empty think block before the last reply; the mask covers what
    // the template writes for the reply, up to and including its end-of-turn token.
    assert_eq!(
        model.detokenize(&masked, false).unwrap(),
        "<think>\n\n</think>\n\nHello there<|im_end|>"
    );
}

#[test]
fn quantize_writes_a_gguf_that_reloads() {
    let rt = runtime();
    let dst = std::env::temp_dir().join(format!("kiln-rust-quant-{}.gguf", std::process::id()));
    let mut stages = Vec::new();
    rt.quantize_with_progress(tiny(), &dst, kiln::QuantizeType::Q8_0, 1, |_, stage| {
        stages.push(stage.to_string());
        false
    })
    .unwrap();
    assert!(stages.iter().any(|s| s == "writing"), "{stages:?}");
    let model = Model::load(&rt, &dst).unwrap();
    assert_eq!(model.info().unwrap().architecture, "Qwen2ForCausalLM");
    drop(model);
    std::fs::remove_file(&dst).unwrap();
    let err = rt
        .quantize(tiny().join("no-such-dir"), &dst, kiln::QuantizeType::F16, 0)
        .unwrap_err();
    assert_eq!(err.kind(), kiln::ErrorKind::NotFound);
}
