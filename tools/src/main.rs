//! `mlagent`: every stage of ML-Agent (arXiv 2505.23723) from one binary.
//!
//! A thin layer over the library crates: parse arguments (clap derive; the `///` comments are the
//! help text), call into the libraries, print results, and map errors to a one-line message and a
//! non-zero exit code.

mod commands;

use clap::{Parser, Subcommand};

/// ML-Agent in Rust: a Qwen2 engine on burn (CPU, WGPU, CUDA), an ML-engineering environment, and
/// the SFT + step-wise RL pipeline of "Reinforcing LLM Agents for Autonomous Machine Learning
/// Engineering" (arXiv 2505.23723).
///
/// Start with `mlagent demo`, or `mlagent init-model --preset tiny --out models/tiny`.
#[derive(Parser)]
#[command(name = "mlagent", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Variants carry no doc comments: each command's help (with its example) is its Args' doc.
enum Command {
    Demo(commands::demo::Args),
    InitModel(commands::init_model::Args),
    Info(commands::info::Args),
    Logits(commands::logits::Args),
    Generate(commands::generate::Args),
    ChatTemplate(commands::chat_template::Args),
    Bench(commands::bench::Args),
    Tasks(commands::tasks::Args),
    Grade(commands::grade::Args),
    Env(commands::env::Args),
    /// Check and time the fused kernels (flash attention, PPO loss from logits).
    Kernels(commands::kernels::Args),
    Sft(commands::sft::Args),
    Collect(commands::collect::Args),
    Rl(commands::rl::Args),
    Eval(commands::eval::Args),
}

/// Keeps freed tensor buffers in the heap for reuse instead of handing them back to the kernel.
///
/// glibc serves blocks over 128 KiB (its dynamic threshold, up to 32 MiB) with a fresh `mmap` and
/// `munmap`s them on free, and trims the heap top above 128 KiB: every forward pass then faults in
/// its activations page by page again. `perf` on the tiny prefill (512 tokens, burn-flex) put ~10 %
/// of samples in page-fault handling; with these settings none: the prefill ran 1.2–1.6× faster
/// on the tiny shape and 1.2× on the 0.5B shape (BENCHMARKS.md, "Allocator"). `MLAGENT_MALLOC=default` keeps glibc's defaults (for A/B runs).
fn keep_freed_memory() {
    if std::env::var("MLAGENT_MALLOC").is_ok_and(|v| v == "default") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum on 64-bit
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Silences Mesa's Vulkan device-select layer on headless machines. While listing devices it
/// connects to a Wayland display, and with no session (`XDG_RUNTIME_DIR` unset: servers, CI,
/// containers) libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set in the environment."
/// once per listing, which reads like our own errors. With no display there is nothing for the
/// layer to choose by; `NODEVICE_SELECT=1` is its documented switch. A set variable is left alone.
fn quiet_headless_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: called at the start of main, before any other thread starts.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

fn main() {
    // Die quietly on a closed pipe (`mlagent ... | head`) instead of panicking in println!.
    // SAFETY: called before any thread starts; restores the default disposition of SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    quiet_headless_vulkan();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MLAGENT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => commands::demo::run(a),
        Command::InitModel(a) => commands::init_model::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Logits(a) => commands::logits::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::ChatTemplate(a) => commands::chat_template::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Tasks(a) => commands::tasks::run(a),
        Command::Grade(a) => commands::grade::run(a),
        Command::Env(a) => commands::env::run(a),
        Command::Kernels(a) => commands::kernels::run(a),
        Command::Sft(a) => commands::sft::run(a),
        Command::Collect(a) => commands::collect::run(a),
        Command::Rl(a) => commands::rl::run(a),
        Command::Eval(a) => commands::eval::run(a),
    };
    if let Err(e) = result {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
