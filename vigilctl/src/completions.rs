//! `vigilctl completions SHELL`: a completion script on stdout.

use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  vigilctl completions bash > /etc/bash_completion.d/vigilctl
  vigilctl completions zsh > \"${fpath[1]}/_vigilctl\"
  vigilctl completions fish > ~/.config/fish/completions/vigilctl.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes the completion script for `command` (the whole CLI) to stdout.
pub fn run(args: CompletionsArgs, mut command: clap::Command) {
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
}
