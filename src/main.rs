use std::process::ExitCode;

use clap::{Parser, Subcommand};
use siliconflow_proxy::commands;
use siliconflow_proxy::config::Config;
use siliconflow_proxy::startup::Application;

/// A gateway that puts a pool of SiliconFlow API keys behind one
/// OpenAI/Anthropic-compatible endpoint. Without a command, it serves.
/// Configuration comes from the environment and `.env` (see the README).
#[derive(Parser)]
#[command(name = "siliconflow-proxy", bin_name = "siliconflow-proxy", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default)
    Serve,
    /// The admin's credentials
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The pool keys' encryption at rest
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print what a coding agent needs to work through this proxy, with the
    /// model's window from the catalog: codex's config.toml, opencode's
    /// opencode.json, or export lines (claude-code, qwen-code), e.g.
    /// `connect codex > ~/.codex/config.toml`,
    /// `eval "$(siliconflow-proxy connect claude-code --key sk-...)"`
    Connect {
        /// codex, claude-code, opencode, qwen-code or gemini-cli
        agent: String,
        /// The model to call (a SiliconFlow id or an alias); default deepseek-ai/DeepSeek-V3.2
        #[arg(long)]
        model: Option<String>,
        /// The proxy's address (default from HOST and PORT: http://127.0.0.1:7898)
        #[arg(long)]
        url: Option<String>,
        /// The client key (default: a placeholder to replace)
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Set the admin password, read from standard input (asked twice on a
    /// terminal), stored as an argon2 hash; every admin session ends.
    /// Refused while ADMIN_PASSWORD is set.
    SetPassword,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-encrypt every stored pool key with KEY_ENCRYPTION_KEY_NEW (in one
    /// transaction). Stop every instance first.
    Reencrypt,
    /// Print a new random key for KEY_ENCRYPTION_KEY (base64 of 32 bytes)
    NewEncryptionKey,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A missing .env is normal; a malformed one is worth saying.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("warning: could not read .env: {e}");
        }
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Some(Command::Keys(KeysCommand::NewEncryptionKey)) = cli.command {
        return finish(commands::new_encryption_key());
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        None | Some(Command::Serve) => serve(config),
        Some(Command::Admin(AdminCommand::SetPassword)) => finish(commands::set_password(&config)),
        Some(Command::Keys(KeysCommand::Reencrypt)) => {
            finish(commands::reencrypt(&config, std::env::var("KEY_ENCRYPTION_KEY_NEW").ok()))
        }
        Some(Command::Keys(KeysCommand::NewEncryptionKey)) => finish(commands::new_encryption_key()),
        Some(Command::Connect { agent, model, url, key }) => {
            match commands::connect(&config, &agent, model, url, key) {
                // The file's content as it is (no extra line end).
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => finish(Err(e)),
            }
        }
    }
}

fn finish(result: Result<String, commands::Failed>) -> ExitCode {
    match result {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(if e.refused { 2 } else { 1 })
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config).await?;
        app.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
