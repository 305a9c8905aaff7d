//! `tokengate completions <shell>` and `tokengate man`: shell completion
//! scripts and a man page generated from the clap definitions in `cli.rs`,
//! so they never drift from the real flags.

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// The completion script for `shell`.
pub(super) fn completions(shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "tokengate", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The man page (roff): `tokengate(1)` with its options and the list of
/// commands, then a section for each command and subcommand with its own
/// options, so that one page covers the whole CLI.
pub(super) fn man_page() -> Result<String, String> {
    let command = Cli::command();
    let mut out = Vec::new();
    let fail = |e: std::io::Error| format!("cannot render the man page: {e}");
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .map_err(fail)?;
    // Its list of commands names a page per command (`tokengate-serve(1)`);
    // they are sections of this page instead.
    for line in String::from_utf8_lossy(&page).lines() {
        let line = match line
            .strip_prefix("tokengate\\-")
            .and_then(|l| l.strip_suffix("(1)"))
        {
            Some(name) => format!("\\fBtokengate {name}\\fR (below)"),
            None => line.to_owned(),
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    let mut pending: Vec<(String, clap::Command)> = command
        .get_subcommands()
        .map(|sub| (format!("tokengate {}", sub.get_name()), sub.clone()))
        .collect();
    while !pending.is_empty() {
        let (path, sub) = pending.remove(0);
        if path.ends_with(" help") {
            continue;
        }
        out.extend_from_slice(format!(".SH \"{}\"\n", path.to_uppercase()).as_bytes());
        // Its synopsis, description and options as subsections (`.SS`) of
        // that section.
        let man = clap_mangen::Man::new(sub.clone().bin_name(&path));
        let mut section = Vec::new();
        man.render_synopsis_section(&mut section).map_err(fail)?;
        man.render_description_section(&mut section).map_err(fail)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut section).map_err(fail)?;
        }
        for line in String::from_utf8_lossy(&section).lines() {
            let line = line
                .strip_prefix(".SH ")
                .map_or_else(|| line.to_owned(), |h| format!(".SS {h}"));
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        let children: Vec<_> = sub
            .get_subcommands()
            .map(|child| (format!("{path} {}", child.get_name()), child.clone()))
            .collect();
        pending.splice(0..0, children);
    }
    String::from_utf8(out).map_err(|e| format!("cannot render the man page: {e}"))
}
