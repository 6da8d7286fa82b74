//! Loads a model and streams a completion of "In the beginning" to stdout through kiln's Rust
//! binding: the same task as samples/generate.c and the Python, Go, C# and F# samples (a fixed
//! seed, 40 tokens, the text on stdout and the speed on stderr).
use std::io::Write;
use std::process::ExitCode;

const PROMPT: &str = "In the beginning";
const MAX_TOKENS: i32 = 40;
/// The C sample's default seed: the same seed and options give the same text.
const SEED: u64 = 0xC0FFEE;

fn usage() -> String {
    format!(
        "usage: generate [MODEL]\n\
         Stream a {}-token completion of {:?} from MODEL (default: $KILN_MODEL, else\n\
         models/kjv-tiny relative to the current directory).\n\
         The text goes to stdout, the speed (tok/s) to stderr.",
        MAX_TOKENS, PROMPT
    )
}

fn generate(model_path: &str) -> Result<(), kiln::Error> {
    let runtime = kiln::Runtime::new(&kiln::RuntimeOptions::cpu(0))?;
    let model = kiln::Model::load(&runtime, model_path)?;
    let mut session = model.session(&kiln::SessionOptions {
        seed: SEED,
        ..Default::default()
    })?;
    let options = kiln::GenerateOptions {
        max_tokens: MAX_TOKENS,
        ..Default::default()
    };
    let mut stdout = std::io::stdout();
    let generation = session.generate(PROMPT, &options, |piece, _id| {
        // A closed stdout (`generate | head`) stops generation instead of failing every token.
        write!(stdout, "{}", piece)
            .and_then(|_| stdout.flush())
            .is_err()
    })?;
    println!();
    let tokens_per_second = if generation.decode_seconds > 0.0 {
        f64::from(generation.n_generated) / generation.decode_seconds
    } else {
        0.0
    };
    eprintln!(
        "{} tokens, {:.1} tok/s",
        generation.n_generated, tokens_per_second
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", usage());
        return ExitCode::SUCCESS;
    }
    if args.len() > 1 {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    }
    let model = args
        .first()
        .cloned()
        .or_else(|| std::env::var("KILN_MODEL").ok().filter(|m| !m.is_empty()))
        .unwrap_or_else(|| "models/kjv-tiny".to_string());
    match generate(&model) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate: {}", e);
            ExitCode::FAILURE
        }
    }
}
