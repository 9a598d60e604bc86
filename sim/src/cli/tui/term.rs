//! Terminal setup and restore: raw mode, alternate screen, hidden cursor — and their undoing,
//! always: when the guard drops (normal exit, `?` errors) and from a panic hook (a panic
//! anywhere, including another thread, restores the terminal before the message prints).
//!
//! Not here: drawing or input decoding.

use std::io::{Stdout, Write, stdout};
use std::sync::Once;

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// The terminal in TUI mode; restored when dropped.
pub struct TerminalGuard {
    /// The ratatui terminal on stdout.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

/// Put the terminal back: leave the alternate screen, show the cursor, leave raw mode.
/// Safe to call more than once.
pub fn restore() {
    let mut out = stdout();
    let _ = execute!(out, LeaveAlternateScreen, Show);
    let _ = disable_raw_mode();
    let _ = out.flush();
}

/// Install (once per process) a panic hook that restores the terminal, then runs the
/// previous hook so the panic message is readable.
pub fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

impl TerminalGuard {
    /// Enter TUI mode on stdout.
    pub fn enter() -> anyhow::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        let mut out = stdout();
        if let Err(error) = execute!(out, EnterAlternateScreen, Hide) {
            restore();
            return Err(error.into());
        }
        let terminal = match Terminal::new(CrosstermBackend::new(out)) {
            Ok(terminal) => terminal,
            Err(error) => {
                restore();
                return Err(error.into());
            }
        };
        Ok(Self { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}
