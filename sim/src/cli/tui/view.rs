//! Drawing: turns the model ([`App`]) into ratatui widgets. Wide terminals (at least
//! [`GRID_MIN_WIDTH`] × [`GRID_MIN_HEIGHT`]) show every panel at once; smaller ones (such as
//! 80×24) show a tab bar and the focused panel. Tab moves the focus in both layouts.
//!
//! Nothing here changes the model or reads input; every figure comes from [`App`].

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Sparkline, Table, TableState, Tabs};

use super::app::{
    App, MODE_BITS, Panel, Source, VERDICTS, mode_bits_at, mode_names, rate_text, seconds, share,
};

/// Narrowest terminal that shows every panel at once.
pub const GRID_MIN_WIDTH: u16 = 120;
/// Lowest terminal that shows every panel at once.
pub const GRID_MIN_HEIGHT: u16 = 32;

const KEYS: &str = "space pause  s step  +/- speed  tab panel  o sort  / filter  ? help  q quit";

const HELP: [(&str, &str); 11] = [
    ("space", "pause / resume"),
    ("s  .", "step one interval (pauses)"),
    ("+  -", "faster / slower (x2, /2)"),
    ("tab", "next panel (shift-tab: previous)"),
    ("o", "sort the focused table"),
    ("/", "filter flows by name (enter keeps, esc clears)"),
    ("up down", "select a flow (also k j)"),
    ("enter", "show / hide the selected flow's rules"),
    ("esc", "clear the filter"),
    ("?", "this help (any key closes it)"),
    ("q", "quit"),
];

/// Draw the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let header_style = Style::new().add_modifier(Modifier::BOLD);
    frame.render_widget(Paragraph::new(app.header()).style(header_style), header);
    if body.width >= GRID_MIN_WIDTH && body.height + 2 >= GRID_MIN_HEIGHT {
        draw_grid(frame, app, body);
    } else {
        draw_tabbed(frame, app, body);
    }
    frame.render_widget(footer_line(app), footer);
    if app.help {
        draw_help(frame, frame.area());
    }
}

fn footer_line(app: &App) -> Paragraph<'static> {
    if let Some(error) = &app.error {
        return Paragraph::new(format!("error: {error}")).style(Style::new().fg(Color::Red));
    }
    if app.editing_filter {
        return Paragraph::new(format!(
            "filter flows: {}_  (enter keep, esc clear)",
            app.filter
        ));
    }
    Paragraph::new(KEYS).style(Style::new().fg(Color::DarkGray))
}

fn draw_grid(frame: &mut Frame, app: &App, area: Rect) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(area);
    let [flows, director, clients] = Layout::vertical([
        Constraint::Percentage(50),
        Constraint::Min(6),
        Constraint::Length(7),
    ])
    .areas(left);
    let [shield, rates] =
        Layout::vertical([Constraint::Min(8), Constraint::Length(10)]).areas(right);
    draw_panel(frame, app, Panel::Flows, flows);
    draw_panel(frame, app, Panel::Director, director);
    draw_panel(frame, app, Panel::Shield, shield);
    draw_panel(frame, app, Panel::Rates, rates);
    draw_panel(frame, app, Panel::Clients, clients);
}

fn draw_tabbed(frame: &mut Frame, app: &App, area: Rect) {
    let [tabs, panel] = Layout::vertical([Constraint::Length(1), Constraint::Min(2)]).areas(area);
    let titles: Vec<&str> = Panel::ALL.iter().map(|p| p.title()).collect();
    let selected = Panel::ALL.iter().position(|p| *p == app.focus);
    let widget = Tabs::new(titles)
        .select(selected)
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_widget(widget, tabs);
    draw_panel(frame, app, app.focus, panel);
}

fn panel_block(app: &App, panel: Panel) -> Block<'static> {
    let mut title = format!(" {} ", panel.title());
    match panel {
        Panel::Flows => {
            title += &format!("sort {:?} ", app.flow_sort).to_lowercase();
            if !app.filter.is_empty() {
                title += &format!("filter \"{}\" ", app.filter);
            }
        }
        Panel::Shield => title += &format!("sort {:?} ", app.decision_sort).to_lowercase(),
        _ => {}
    }
    let end_state = matches!(panel, Panel::Flows | Panel::Director | Panel::Clients);
    if app.source == Source::Replay && end_state {
        title += "(end of run) ";
    }
    let focused = app.focus == panel;
    if focused {
        title = format!(">{title}<");
    }
    let style = if focused {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    };
    Block::new()
        .borders(Borders::ALL)
        .title(title)
        .border_style(style)
}

fn draw_panel(frame: &mut Frame, app: &App, panel: Panel, area: Rect) {
    let block = panel_block(app, panel);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if app.frames == 0 {
        let text = format!("waiting for the first frame ({})", seconds(app.interval_ns));
        frame.render_widget(Paragraph::new(text), inner);
        return;
    }
    match panel {
        Panel::Flows => draw_flows(frame, app, inner),
        Panel::Shield => draw_shield(frame, app, inner),
        Panel::Director => draw_director(frame, app, inner),
        Panel::Rates => draw_rates(frame, app, inner),
        Panel::Clients => {
            frame.render_widget(Paragraph::new(app.clients_text()), inner);
        }
    }
}

fn draw_flows(frame: &mut Frame, app: &App, area: Rect) {
    let lines = app.flow_lines();
    if app.view.appliance.flows.is_empty() {
        let text = "no flowmgr file in this appliance";
        frame.render_widget(Paragraph::new(text), area);
        return;
    }
    // The table scrolls to keep the selected flow in view at small sizes.
    let selected = lines.iter().position(|line| line.selected);
    let rows = lines.into_iter().map(|line| {
        let name = if line.is_rule {
            format!("  └ {}", line.name)
        } else {
            line.name
        };
        let style = if line.selected {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        Row::new(vec![
            name,
            line.policy,
            line.hits.to_string(),
            rate_text(line.rate),
            format!("{:5.1}%", line.share * 100.0),
        ])
        .style(style)
    });
    let widths = [
        Constraint::Fill(2),
        Constraint::Fill(1),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(6),
    ];
    let header = Row::new(["flow", "policy", "hits", "rate/s", "share"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let footer = format!("unclassified {}", app.view.appliance.unclassified);
    let [table, note] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(Table::new(rows, widths).header(header), table, &mut state);
    frame.render_widget(Paragraph::new(footer), note);
}

fn draw_shield(frame: &mut Frame, app: &App, area: Rect) {
    let contexts = app.view.appliance.shield.len().min(2) as u16;
    let modes_height = (contexts * (1 + MODE_BITS.len() as u16)).min(area.height / 2);
    let [table_area, modes_area] =
        Layout::vertical([Constraint::Min(2), Constraint::Length(modes_height)]).areas(area);
    let rows = app.decision_lines().into_iter().map(|line| {
        Row::new(vec![
            line.stage,
            line.verdict,
            line.reason,
            line.packets.to_string(),
            rate_text(line.rate),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Fill(1),
        Constraint::Length(9),
        Constraint::Length(7),
    ];
    let header = Row::new(["stage", "verdict", "reason", "packets", "pps"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    frame.render_widget(Table::new(rows, widths).header(header), table_area);
    frame.render_widget(
        Paragraph::new(mode_lines(app, modes_area.width)),
        modes_area,
    );
}

fn mode_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    let label_width = 15;
    let strip_width = usize::from(width).saturating_sub(label_width + 1);
    let mut lines = Vec::new();
    for (index, context) in app.view.appliance.shield.iter().enumerate().take(2) {
        let bits = mode_bits_at(&app.view, index, app.data_ns);
        lines.push(Line::from(format!(
            "{} mode {bits:#x} {}",
            context.name,
            mode_names(bits)
        )));
        for (bit, name) in MODE_BITS {
            let strip = app.mode_strip(index, bit, strip_width);
            let color = if bits & bit != 0 {
                Color::Red
            } else {
                Color::Green
            };
            lines.push(Line::from(vec![
                Span::raw(format!("{name:<width$} ", width = label_width)),
                Span::styled(strip, Style::new().fg(color)),
            ]));
        }
    }
    lines
}

fn director_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    let services = &app.view.appliance.directors;
    let address_width = services
        .iter()
        .flat_map(|s| s.reals.iter().map(|r| r.address.len()))
        .fold(18, usize::max);
    let mut lines = vec![
        Line::from("Prot LocalAddress:Port Scheduler"),
        Line::from(format!(
            "  -> {:<address_width$} Forward Weight ActiveConn InActConn  Share",
            "RemoteAddress:Port"
        )),
    ];
    let fixed = 49 + address_width;
    let room = usize::from(width).saturating_sub(fixed);
    let bar_width = if room >= 5 { room.min(30) } else { 0 };
    for service in services {
        lines.push(Line::from(format!(
            "{} {} ({})",
            service.key, service.scheduler, service.name
        )));
        let total: u64 = service.reals.iter().map(|r| r.packets_in).sum();
        for real in &service.reals {
            let part = share(real.packets_in, total);
            let filled = ((part * bar_width as f64).round() as usize).min(bar_width);
            let bar = "█".repeat(filled) + &"░".repeat(bar_width - filled);
            lines.push(Line::from(vec![
                Span::raw(format!(
                    "  -> {:<address_width$} {:<7} {:<6} {:<10} {:<9} {:>5.1}% ",
                    real.address,
                    real.forward,
                    real.weight,
                    real.active,
                    real.inactive,
                    part * 100.0
                )),
                Span::styled(bar, Style::new().fg(Color::Cyan)),
            ]));
        }
    }
    if services.is_empty() {
        lines.push(Line::from("no director in this appliance"));
    }
    lines
}

fn draw_director(frame: &mut Frame, app: &App, area: Rect) {
    frame.render_widget(Paragraph::new(director_lines(app, area.width)), area);
}

fn draw_rates(frame: &mut Frame, app: &App, area: Rect) {
    let rows = Layout::vertical([Constraint::Ratio(1, 4); 4]).split(area);
    let label_width = 15u16;
    for (index, verdict) in VERDICTS.iter().enumerate() {
        let [label, spark] =
            Layout::horizontal([Constraint::Length(label_width), Constraint::Min(1)])
                .areas(rows[index]);
        let history = app.history(index);
        let current = history.back().copied();
        let text = format!("{verdict:<7} {:>6}", rate_text(current.map(|v| v as f64)));
        frame.render_widget(Paragraph::new(text), label);
        let shown = usize::from(spark.width);
        let data: Vec<u64> = history
            .iter()
            .skip(history.len().saturating_sub(shown))
            .copied()
            .collect();
        let color = [Color::Green, Color::Red, Color::Blue, Color::Cyan][index];
        let widget = Sparkline::default()
            .data(&data)
            .style(Style::new().fg(color));
        frame.render_widget(widget, spark);
    }
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = area.width.min(60);
    let height = area.height.min(HELP.len() as u16 + 2);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(key, what)| Line::from(format!("{key:<9} {what}")))
        .collect();
    frame.render_widget(Clear, popup);
    let block = Block::new().borders(Borders::ALL).title(" Keys ");
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}
