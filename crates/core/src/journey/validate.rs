//! Everything that can be known wrong about a journey before it runs. Every problem is
//! reported (not just the first), each with the document path of the field to fix.

use std::collections::{HashMap, HashSet, VecDeque};

use super::{Journey, NodeKind, Reentry, cel_check, parse_duration_ms};
use crate::FieldError;

/// A resource key (journeys, templates): 1 to 64 of a-z, 0-9, - and _.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

struct Report(Vec<FieldError>);

/// Pinned templates must compile, with the partials pinned beside them.
fn check_templates(journey: &Journey, r: &mut Report) {
    let partials = partial_sources(&journey.templates);
    for (key, pinned) in &journey.templates {
        if let Err(problems) = crate::content::compile(&pinned.document, &partials) {
            for p in problems {
                r.add(
                    p.code,
                    format!("templates.{key}.document.{}", p.field),
                    p.message,
                );
            }
        }
    }
}

/// The body of every pinned partial, by key.
pub fn partial_sources(
    templates: &std::collections::BTreeMap<String, super::PinnedTemplate>,
) -> std::collections::BTreeMap<String, String> {
    templates
        .iter()
        .filter(|(_, t)| t.document.channel == "partial")
        .filter_map(|(k, t)| Some((k.clone(), t.document.body.clone()?)))
        .collect()
}

impl Report {
    fn add(&mut self, code: &'static str, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(code, field, message));
    }

    fn cel(&mut self, field: &str, source: &str) {
        if let Err(m) = cel_check::check(source) {
            self.add("invalid_expression", field, m);
        }
    }

    fn duration(&mut self, field: &str, text: &str) {
        if let Err(m) = parse_duration_ms(text) {
            self.add("invalid_duration", field, m);
        }
    }
}

/// The longest a webhook call may take. The dispatcher's claim on a call lasts longer than
/// this, so no other dispatcher takes the row while the call may still answer.
pub const MAX_WEBHOOK_TIMEOUT_MS: i64 = 60_000;

/// Checks a parsed journey. An empty result means it can run.
pub fn validate(journey: &Journey) -> Vec<FieldError> {
    let mut r = Report(Vec::new());
    if !valid_key(&journey.key) {
        r.add(
            "invalid_value",
            "key",
            format!(
                "key {:?} must be 1 to 64 characters of a-z, 0-9, - and _",
                journey.key
            ),
        );
    }
    match (
        &journey.entry.audience,
        journey.entry.event.trim().is_empty(),
    ) {
        (None, true) => r.add(
            "missing_field",
            "entry.event",
            "entry.event names the event that starts the journey (or entry.audience an audience)",
        ),
        (Some(_), false) => r.add(
            "invalid_value",
            "entry.audience",
            "a journey starts on an event or on an audience, not both",
        ),
        (Some(key), true) if !valid_key(key) => r.add(
            "invalid_key",
            "entry.audience",
            format!("{key:?} is not an audience key (a-z, 0-9, - and _)"),
        ),
        _ => {}
    }
    if journey.entry.on.is_some() && journey.entry.audience.is_none() {
        r.add(
            "invalid_value",
            "entry.on",
            "entry.on goes with entry.audience",
        );
    }
    if !journey.entry.except.is_empty() && journey.entry.read_audience().is_none() {
        r.add(
            "invalid_value",
            "entry.except",
            "entry.except goes with entry.on: read (a journey that reads an audience)",
        );
    }
    for (i, key) in journey.entry.except.iter().enumerate() {
        if !valid_key(key) {
            r.add(
                "invalid_key",
                format!("entry.except[{i}]"),
                format!("{key:?} is not an audience key (a-z, 0-9, - and _)"),
            );
        }
    }
    if let Some(schedule) = &journey.entry.schedule {
        if journey.entry.read_audience().is_none() {
            r.add(
                "invalid_value",
                "entry.schedule",
                "entry.schedule goes with entry.on: read (a journey that reads an audience)",
            );
        }
        if let Err(e) = crate::schedule::next_run(schedule, 0) {
            r.add(e.code, format!("entry.{}", e.field), e.message);
        }
    }
    if let Some(when) = &journey.entry.when {
        r.cel("entry.when", when);
    }
    check_properties(journey, &mut r);
    check_templates(journey, &mut r);

    if journey.nodes.is_empty() {
        r.add(
            "missing_field",
            "nodes",
            "a journey needs at least one node",
        );
        return r.0;
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, node) in journey.nodes.iter().enumerate() {
        if !valid_key(&node.id) {
            r.add(
                "invalid_value",
                format!("nodes[{i}].id"),
                format!(
                    "node id {:?} must be 1 to 64 characters of a-z, 0-9, - and _",
                    node.id
                ),
            );
        }
        if let Some(first) = index.insert(node.id.as_str(), i) {
            r.add(
                "duplicate_id",
                format!("nodes[{i}].id"),
                format!("node id {:?} is also used by nodes[{first}]", node.id),
            );
            index.insert(node.id.as_str(), first);
        }
    }
    let start = journey
        .start
        .as_deref()
        .unwrap_or(journey.nodes[0].id.as_str());
    if !index.contains_key(start) {
        r.add(
            "unknown_node",
            "start",
            format!("start names unknown node {start:?}"),
        );
    }
    for (i, node) in journey.nodes.iter().enumerate() {
        let at = |field: &str| format!("nodes[{i}].{field}");
        for (field, target) in node.kind.edges() {
            if !index.contains_key(target) {
                r.add(
                    "unknown_node",
                    at(&field),
                    format!("no node has the id {target:?}"),
                );
            }
        }
        check_node(journey, &node.kind, &at, &mut r);
    }
    if r.0
        .iter()
        .any(|e| e.code == "unknown_node" || e.code == "duplicate_id")
    {
        return r.0; // the graph checks below need a well-formed graph
    }
    check_reachability(journey, start, &index, &mut r);
    check_cycles(journey, &index, &mut r);
    r.0
}

fn check_properties(journey: &Journey, r: &mut Report) {
    let p = &journey.properties;
    if let Reentry::After { after } = &p.reentry {
        r.duration("properties.reentry.after", &after.0);
    }
    if let Some(exit) = &p.exit {
        if exit.events.is_empty() && exit.when.is_none() {
            r.add(
                "missing_field",
                "properties.exit",
                "exit needs events, when, or both",
            );
        }
        for (i, e) in exit.events.iter().enumerate() {
            if e.trim().is_empty() {
                r.add(
                    "invalid_value",
                    format!("properties.exit.events[{i}]"),
                    "event name must not be empty",
                );
            }
        }
        if let Some(when) = &exit.when {
            r.cel("properties.exit.when", when);
        }
    }
    if let Some(t) = &p.timeout {
        r.duration("properties.timeout", &t.0);
    }
    if let Some(zone) = &p.fallback_timezone
        && jiff::tz::TimeZone::get(zone).is_err()
    {
        r.add(
            "invalid_value",
            "properties.fallback_timezone",
            format!("{zone:?} is not an IANA time zone such as Europe/Oslo"),
        );
    }
    if let Some(zone) = &p.timezone
        && zone != "profile"
        && jiff::tz::TimeZone::get(zone).is_err()
    {
        r.add(
            "invalid_value",
            "properties.timezone",
            format!("{zone:?} is neither `profile` nor an IANA time zone such as Europe/Oslo"),
        );
    }
    let instant = |field: &str, text: &Option<String>, r: &mut Report| {
        let t = text.as_deref()?;
        let parsed = crate::time::parse_iso8601(t);
        if parsed.is_none() {
            r.add(
                "invalid_value",
                field,
                format!("{t:?} is not an RFC 3339 instant such as 2026-12-01T00:00:00Z"),
            );
        }
        parsed
    };
    let start = instant("properties.start_at", &p.start_at, r);
    let end = instant("properties.end_at", &p.end_at, r);
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        r.add(
            "invalid_value",
            "properties.end_at",
            "end_at must be after start_at",
        );
    }
    if let Some(goal) = &p.conversion {
        if goal.event.trim().is_empty() {
            r.add(
                "missing_field",
                "properties.conversion.event",
                "a conversion names the event that counts",
            );
        }
        if let Some(within) = &goal.within {
            r.duration("properties.conversion.within", &within.0);
        }
        if let Some(when) = &goal.when {
            r.cel("properties.conversion.when", when);
        }
    }
    if p.entry_rate_limit == Some(0) {
        r.add(
            "invalid_value",
            "properties.entry_rate_limit",
            "entry_rate_limit must be at least 1 per second",
        );
    }
}

fn check_node(journey: &Journey, kind: &NodeKind, at: &dyn Fn(&str) -> String, r: &mut Report) {
    match kind {
        NodeKind::Condition { branches, .. } => {
            if branches.is_empty() {
                r.add(
                    "missing_field",
                    at("branches"),
                    "a condition needs at least one branch",
                );
            }
            for (b, branch) in branches.iter().enumerate() {
                r.cel(&at(&format!("branches[{b}].when")), &branch.when);
            }
        }
        NodeKind::Wait {
            duration,
            until,
            event,
            ..
        } => {
            let set = usize::from(duration.is_some())
                + usize::from(until.is_some())
                + usize::from(event.is_some());
            if set != 1 {
                r.add(
                    "invalid_value",
                    at("type"),
                    "a wait needs exactly one of duration, until or event",
                );
            }
            if let Some(d) = duration {
                r.duration(&at("duration"), &d.0);
            }
            if let Some(u) = until {
                let ok = u.len() == 5
                    && u.as_bytes()[2] == b':'
                    && u[..2].parse::<u8>().is_ok_and(|h| h < 24)
                    && u[3..].parse::<u8>().is_ok_and(|m| m < 60);
                if !ok {
                    r.add(
                        "invalid_value",
                        at("until"),
                        format!("{u:?} is not a local time HH:MM such as 09:00"),
                    );
                }
            }
            if let Some(e) = event {
                if e.name.trim().is_empty() {
                    r.add(
                        "missing_field",
                        at("event.name"),
                        "the event to wait for needs a name",
                    );
                }
                if let Some(when) = &e.when {
                    r.cel(&at("event.when"), when);
                }
                r.duration(&at("event.timeout"), &e.timeout.0);
            }
        }
        NodeKind::Message {
            channel,
            template,
            expires,
            subscription,
            surface,
            ..
        } => {
            if let Some(list) = subscription
                && !valid_key(list)
            {
                r.add(
                    "invalid_value",
                    at("subscription"),
                    format!("subscription list {list:?} must be 1 to 64 of a-z, 0-9, - and _"),
                );
            }
            if let Some(e) = expires {
                if channel != "in_app" && channel != "code_based" {
                    r.add(
                        "invalid_value",
                        at("expires"),
                        "only in_app messages (in an inbox) and code_based content (on a surface) expire",
                    );
                }
                r.duration(&at("expires"), &e.0);
            }
            match (channel == "code_based", surface) {
                (true, None) => r.add(
                    "missing_field",
                    at("surface"),
                    "code_based content goes on a surface: a placement's key or surface URI",
                ),
                (true, Some(s)) if !valid_key(s) && !crate::surface::is_uri(s) => r.add(
                    "invalid_value",
                    at("surface"),
                    format!("{s:?} is neither a placement key nor a surface URI such as web://shop.example/home#hero"),
                ),
                (false, Some(_)) => r.add(
                    "invalid_value",
                    at("surface"),
                    "only code_based content goes on a surface",
                ),
                _ => {}
            }
            if crate::channel::Channel::parse(channel).is_none() {
                r.add(
                    "invalid_value",
                    at("channel"),
                    format!(
                        "channel {channel:?} is not available; available: {}",
                        crate::channel::Channel::names()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            if template.trim().is_empty() {
                r.add(
                    "missing_field",
                    at("template"),
                    "a message needs a template key",
                );
            }
            if let Some(pinned) = journey.templates.get(template) {
                let sent_as = pinned.document.channel.as_str();
                if sent_as == "partial" {
                    r.add(
                        "invalid_value",
                        at("template"),
                        format!("template {template:?} is a partial; it can only be included"),
                    );
                } else if channel != "log" && sent_as != channel {
                    r.add(
                        "invalid_value",
                        at("template"),
                        format!("template {template:?} is for {sent_as}, not {channel}"),
                    );
                }
            }
        }
        NodeKind::Webhook {
            method,
            url,
            headers,
            body,
            timeout,
            retries,
            ..
        } => {
            let mut templates = crate::template::Templates::default();
            for (name, value) in headers {
                if let Err(e) = crate::template::check(value) {
                    r.add(
                        "invalid_template",
                        at(&format!("headers.{name}")),
                        format!("does not compile: {e}"),
                    );
                }
            }
            if let Some(body) = body
                && let Err((inside, e)) = templates.json("body", body)
            {
                r.add(
                    "invalid_template",
                    at(&format!("body{inside}")),
                    format!("does not compile: {e}"),
                );
            }
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                r.add(
                    "invalid_value",
                    at("method"),
                    format!("method {method:?} must be GET, POST, PUT, PATCH or DELETE"),
                );
            }
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if !host.is_some_and(|h| {
                !h.is_empty() && !h.starts_with('/') && !url.contains(char::is_whitespace)
            }) {
                r.add(
                    "invalid_value",
                    at("url"),
                    format!("url {url:?} must be an http:// or https:// URL"),
                );
            }
            if let Some(t) = timeout {
                r.duration(&at("timeout"), &t.0);
                if parse_duration_ms(&t.0).is_ok_and(|ms| ms > MAX_WEBHOOK_TIMEOUT_MS) {
                    r.add(
                        "invalid_value",
                        at("timeout"),
                        format!(
                            "timeout {:?} is longer than the {}s a webhook may take",
                            t.0,
                            MAX_WEBHOOK_TIMEOUT_MS / 1000
                        ),
                    );
                }
            }
            if retries.is_some_and(|n| n > 20) {
                r.add(
                    "invalid_value",
                    at("retries"),
                    "retries must be 20 or fewer",
                );
            }
        }
        NodeKind::UpdateProfile { set, unset, .. } => {
            if set.is_empty() && unset.is_empty() {
                r.add(
                    "missing_field",
                    at("set"),
                    "update_profile needs set, unset, or both",
                );
            }
            for (u, name) in unset.iter().enumerate() {
                if set.contains_key(name) {
                    r.add(
                        "invalid_value",
                        at(&format!("unset[{u}]")),
                        format!("trait {name:?} is both set and unset"),
                    );
                }
            }
        }
        NodeKind::RandomSplit { paths } => {
            if paths.len() < 2 {
                r.add(
                    "invalid_value",
                    at("paths"),
                    "a random split needs at least two paths",
                );
            }
            let total: u64 = paths.iter().map(|p| u64::from(p.percent)).sum();
            if total != 100 {
                r.add(
                    "invalid_value",
                    at("paths"),
                    format!("percents add up to {total}, not 100"),
                );
            }
            for (p, path) in paths.iter().enumerate() {
                if path.percent == 0 {
                    r.add(
                        "invalid_value",
                        at(&format!("paths[{p}].percent")),
                        "a path of 0 percent is never taken",
                    );
                }
            }
        }
        NodeKind::Winner {
            paths,
            metric,
            at: time,
            ..
        } => {
            if paths.len() < 2 {
                r.add(
                    "invalid_value",
                    at("paths"),
                    "a winner compares at least two paths",
                );
            }
            for (p, path) in paths.iter().enumerate() {
                if paths[..p].contains(path) {
                    r.add(
                        "invalid_value",
                        at(&format!("paths[{p}]")),
                        format!("{path:?} is listed twice"),
                    );
                }
                let kind = journey
                    .nodes
                    .iter()
                    .find(|n| &n.id == path)
                    .map(|n| &n.kind);
                if kind.is_some_and(|k| !matches!(k, NodeKind::Message { .. })) {
                    r.add(
                        "invalid_value",
                        at(&format!("paths[{p}]")),
                        format!("{path:?} is not a message node; a winner compares messages"),
                    );
                }
            }
            if crate::time::parse_iso8601(time).is_none() {
                r.add(
                    "invalid_value",
                    at("at"),
                    format!("{time:?} is not an RFC 3339 time"),
                );
            }
            if *metric == super::WinnerMetric::Converted && journey.properties.conversion.is_none()
            {
                r.add(
                    "missing_field",
                    at("metric"),
                    "a winner on conversions needs properties.conversion",
                );
            }
        }
        NodeKind::Jump { journey: target } => {
            if !valid_key(target) {
                r.add(
                    "invalid_value",
                    at("journey"),
                    format!("{target:?} is not a journey key"),
                );
            } else if *target == journey.key {
                r.add(
                    "invalid_value",
                    at("journey"),
                    "a journey cannot jump to itself; use a wait and an edge instead",
                );
            }
        }
        NodeKind::End {} => {}
    }
}

fn check_reachability(
    journey: &Journey,
    start: &str,
    index: &HashMap<&str, usize>,
    r: &mut Report,
) {
    let mut seen = HashSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(id) = queue.pop_front() {
        for (_, next) in journey.nodes[index[id]].kind.edges() {
            if seen.insert(next) {
                queue.push_back(next);
            }
        }
    }
    for (i, node) in journey.nodes.iter().enumerate() {
        if !seen.contains(node.id.as_str()) {
            r.add(
                "unreachable_node",
                format!("nodes[{i}]"),
                format!("node {:?} cannot be reached from {start:?}", node.id),
            );
        }
    }
}

/// A cycle that passes through no wait would loop forever within one step. Found as the
/// strongly connected components of the graph without its wait nodes (Tarjan's algorithm).
fn check_cycles(journey: &Journey, index: &HashMap<&str, usize>, r: &mut Report) {
    let n = journey.nodes.len();
    let is_wait = |i: usize| matches!(journey.nodes[i].kind, NodeKind::Wait { .. });
    let succ: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            if is_wait(i) {
                return Vec::new();
            }
            journey.nodes[i]
                .kind
                .edges()
                .into_iter()
                .map(|(_, t)| index[t])
                .filter(|&j| !is_wait(j))
                .collect()
        })
        .collect();
    struct Tarjan<'a> {
        succ: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        /// Tarjan's algorithm with an explicit stack of (node, next edge) in place of
        /// recursion, so a journey of any length cannot overflow the thread's stack.
        fn visit(&mut self, root: usize) {
            let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
            self.enter(root);
            while let Some(&mut (v, ref mut edge)) = calls.last_mut() {
                if let Some(&w) = self.succ[v].get(*edge) {
                    *edge += 1;
                    match self.index[w] {
                        None => {
                            self.enter(w);
                            calls.push((w, 0));
                        }
                        Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                        Some(_) => {}
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    self.low[parent] = self.low[parent].min(self.low[v]);
                }
                if Some(self.low[v]) == self.index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = self.stack.pop() {
                        self.on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    self.components.push(component);
                }
            }
        }

        fn enter(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
        }
    }
    let mut t = Tarjan {
        succ: &succ,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    for mut component in t.components {
        let self_loop = component.len() == 1 && succ[component[0]].contains(&component[0]);
        if component.len() > 1 || self_loop {
            component.sort_unstable();
            let names: Vec<&str> = component
                .iter()
                .map(|&i| journey.nodes[i].id.as_str())
                .collect();
            r.add(
                "cycle_without_wait",
                format!("nodes[{}]", component[0]),
                format!(
                    "nodes {} form a loop with no wait in it; it would never yield",
                    names.join(" -> ")
                ),
            );
        }
    }
}
