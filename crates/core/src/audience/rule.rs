//! An audience rule: CEL over `profile` and `now`, plus behaviour functions over the
//! person's event history (`events.count("Order Completed", "30d") >= 3`), other
//! audiences (`in_audience("vip")`) and the calendar in the person's time zone
//! (`calendar.month(profile.traits.birthday) == calendar.month()`).
//!
//! The behaviour calls are found in the parsed rule and replaced by plain variables
//! (`@b0`, `@a0`), so CEL only ever sees scalars: the engine computes each call natively
//! from the events and binds its value. Building CEL values for whole histories costs
//! tens of microseconds per person; a count costs nothing.

use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue, SourceInfo};

use crate::journey::parse_duration_ms;

/// Variables a rule may read besides its behaviour calls.
pub const VARIABLES: [&str; 2] = ["profile", "now"];

/// The longest rule accepted, in bytes.
pub const MAX_RULE_BYTES: usize = 16 * 1024;

/// The most behaviour calls and audience references one rule may make.
pub const MAX_CALLS: usize = 64;

/// What a behaviour call computes over the matching events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// How many (int).
    Count,
    /// Whether any (bool).
    Any,
    /// The sum of a numeric property (double; missing or non-numeric values count 0).
    Sum,
    /// The newest matching event (a map, or null when there is none).
    Last,
    /// The oldest matching event still kept (a map, or null).
    First,
}

impl Function {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "count" => Function::Count,
            "any" => Function::Any,
            "sum" => Function::Sum,
            "last" => Function::Last,
            "first" => Function::First,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Function::Count => "count",
            Function::Any => "any",
            Function::Sum => "sum",
            Function::Last => "last",
            Function::First => "first",
        }
    }

    /// Whether it takes a window: `last` and `first` look at the whole kept history.
    fn windowed(self) -> bool {
        matches!(self, Function::Count | Function::Any | Function::Sum)
    }

    fn usage(self) -> &'static str {
        match self {
            Function::Count => "events.count(\"Event\"[, \"30d\"[, e, e.properties.x > 1]])",
            Function::Any => "events.any(\"Event\"[, \"30d\"[, e, e.properties.x > 1]])",
            Function::Sum => {
                "events.sum(\"Event\", \"property\"[, \"30d\"[, e, e.properties.x > 1]])"
            }
            Function::Last => "events.last(\"Event\"[, e, e.properties.x > 1])",
            Function::First => "events.first(\"Event\"[, e, e.properties.x > 1])",
        }
    }
}

/// A field of a date in the person's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarField {
    /// 1 to 12.
    Month,
    /// Day of the month, 1 to 31.
    Day,
    /// 1 (Monday) to 7 (Sunday).
    Weekday,
    /// 0 to 23.
    Hour,
}

impl CalendarField {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "month" => CalendarField::Month,
            "day" => CalendarField::Day,
            "weekday" => CalendarField::Weekday,
            "hour" => CalendarField::Hour,
            _ => return None,
        })
    }
}

/// A calendar reading, computed natively and bound as a variable: a field of the current
/// time, or of a date the profile holds, in the person's time zone. Time alone changes the
/// current one at the next boundary of its field (the next month, day or hour there), and
/// the audience is decided again at that instant.
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarCall {
    pub field: CalendarField,
    /// The path under `profile` of the date read (`traits.birthday`); `None` reads now.
    pub of: Option<Vec<String>>,
    /// The call as written, for explanations.
    pub text: String,
}

/// A filter on the events a call looks at: a CEL expression over one event, named by the
/// rule (`e`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventFilter {
    pub variable: String,
    pub expression: IdedExpr,
}

/// One behaviour call of a rule, computed natively and bound as a variable.
#[derive(Debug, Clone, PartialEq)]
pub struct BehaviourCall {
    pub function: Function,
    /// The event name, exactly as sent (`Order Completed`).
    pub event: String,
    /// `sum`: the property path under `properties` (`total`, `items.price` reads nested).
    pub property: Option<Vec<String>>,
    /// Rolling window in milliseconds; `None` is every kept event.
    pub window_ms: Option<i64>,
    pub filter: Option<EventFilter>,
    /// The call as written, for explanations.
    pub text: String,
}

/// A parsed rule: the CEL with every behaviour call replaced by a variable, the calls, and
/// the audiences it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub expression: IdedExpr,
    /// Bound as `@b<i>`.
    pub calls: Vec<BehaviourCall>,
    /// Audience keys, bound as `@a<i>` (true while the person is a member).
    pub audiences: Vec<String>,
    /// Calendar readings, bound as `@c<i>`.
    pub calendar: Vec<CalendarCall>,
    /// Whether the rule reads `profile` (so profile changes can change it).
    pub reads_profile: bool,
}

/// A problem in a rule, with where it is (1-based line and column in the rule's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl From<RuleError> for crate::FieldError {
    /// A problem in the `rule` field of an audience document, placed in the rule's text.
    fn from(e: RuleError) -> Self {
        let mut p = crate::FieldError::new("invalid_rule", "rule", e.message);
        p.line = Some(e.line);
        p.column = Some(e.column);
        p
    }
}

/// The variable a behaviour call is bound to.
pub fn call_variable(index: usize) -> String {
    format!("@b{index}")
}

/// The variable a calendar reading is bound to.
pub fn calendar_variable(index: usize) -> String {
    format!("@c{index}")
}

/// The variable an audience reference is bound to.
pub fn audience_variable(index: usize) -> String {
    format!("@a{index}")
}

impl Rule {
    /// Parses and checks a rule; every problem found is returned.
    pub fn parse(source: &str) -> Result<Rule, Vec<RuleError>> {
        Self::parse_with(source, &[])
    }

    /// Parses and checks a rule that may also read the variables `extra` (an offer's
    /// eligibility reads the request's `context`, a ranking formula the `offer` too); the
    /// conditions inside behaviour calls still read only their event and `profile`.
    pub fn parse_with(source: &str, extra: &[&str]) -> Result<Rule, Vec<RuleError>> {
        if source.trim().is_empty() {
            return Err(vec![RuleError {
                message: "the rule is empty".into(),
                line: 1,
                column: 1,
            }]);
        }
        if source.len() > MAX_RULE_BYTES {
            return Err(vec![RuleError {
                message: format!("the rule is longer than {MAX_RULE_BYTES} bytes"),
                line: 1,
                column: 1,
            }]);
        }
        let (mut expression, info) = cel::parser::Parser::new()
            .parse_with_source_info(source)
            .map_err(|errors| {
                errors
                    .errors
                    .into_iter()
                    .map(|e| RuleError {
                        message: e.msg,
                        line: e.pos.0.max(1) as usize,
                        column: e.pos.1.max(1) as usize,
                    })
                    .collect::<Vec<_>>()
            })?;
        let mut walk = Walk::new(source, &info, Vec::new(), extra);
        walk.visit(&mut expression);
        if walk.rule.calls.len() + walk.rule.audiences.len() + walk.rule.calendar.len() > MAX_CALLS
        {
            walk.error(
                expression.id,
                format!(
                    "a rule may make at most {MAX_CALLS} behaviour calls and audience references"
                ),
            );
        }
        if !walk.errors.is_empty() {
            return Err(walk.errors);
        }
        walk.rule.expression = expression;
        Ok(walk.rule)
    }
}

struct Walk<'s> {
    source: &'s str,
    info: &'s SourceInfo,
    rule: Rule,
    errors: Vec<RuleError>,
    /// Variables bound by comprehensions (`exists(x, ...)`) around the node being visited.
    bound: Vec<String>,
    /// Variables the caller binds besides `profile` and `now`.
    extra: &'s [&'s str],
}

impl<'s> Walk<'s> {
    fn new(
        source: &'s str,
        info: &'s SourceInfo,
        bound: Vec<String>,
        extra: &'s [&'s str],
    ) -> Self {
        Walk {
            source,
            info,
            rule: Rule {
                expression: IdedExpr::default(),
                calls: Vec::new(),
                audiences: Vec::new(),
                calendar: Vec::new(),
                reads_profile: false,
            },
            errors: Vec::new(),
            bound,
            extra,
        }
    }

    /// Line and column (1-based) of a node.
    fn position(&self, id: u64) -> (usize, usize) {
        let Some((start, _)) = self.info.offset_for(id) else {
            return (1, 1);
        };
        line_column(self.source, start as usize)
    }

    fn error(&mut self, id: u64, message: impl Into<String>) {
        let (line, column) = self.position(id);
        self.errors.push(RuleError {
            message: message.into(),
            line,
            column,
        });
    }

    /// The source text of a call: from its first token to the closing parenthesis after
    /// its last one (offsets are byte offsets, the stop inclusive).
    fn text(&self, node: &IdedExpr) -> String {
        let mut start = usize::MAX;
        let mut stop = 0usize;
        spans(node, self.info, &mut start, &mut stop);
        let after_last = stop.saturating_add(1).min(self.source.len());
        let end = self
            .source
            .get(after_last..)
            .and_then(|rest| rest.find(')'))
            .map_or(self.source.len(), |close| after_last + close + 1);
        self.source
            .get(start.min(end)..end)
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    }

    fn visit(&mut self, node: &mut IdedExpr) {
        let id = node.id;
        let replacement = match &mut node.expr {
            Expr::Call(call) => {
                if is_events_call(call) {
                    let text = self.text(node);
                    let Expr::Call(call) = &node.expr else {
                        return;
                    };
                    self.behaviour(id, call, text).map(Expr::Ident)
                } else if is_calendar_call(call) {
                    let text = self.text(node);
                    let Expr::Call(call) = &node.expr else {
                        return;
                    };
                    self.calendar(id, call, text).map(Expr::Ident)
                } else if call.func_name == "in_audience" && call.target.is_none() {
                    self.audience(id, call).map(Expr::Ident)
                } else {
                    if let Some(target) = call.target.as_deref_mut() {
                        self.visit(target);
                    }
                    for arg in &mut call.args {
                        self.visit(arg);
                    }
                    None
                }
            }
            Expr::Ident(name) => {
                if !self.bound.iter().any(|b| b == name) {
                    match name.as_str() {
                        "profile" => self.rule.reads_profile = true,
                        "now" => {}
                        extra if self.extra.contains(&extra) => {}
                        "events" => self.error(
                            id,
                            "`events` is read through its functions: count, any, sum, last, first",
                        ),
                        "calendar" => self.error(
                            id,
                            "`calendar` is read through its functions: month, day, weekday, hour",
                        ),
                        other => {
                            let other = other.to_owned();
                            self.error(
                                id,
                                format!(
                                    "unknown variable `{other}`; a rule reads `profile`, `now`, `events.…(…)`, `calendar.…(…)` and `in_audience(…)`"
                                ),
                            );
                        }
                    }
                }
                None
            }
            Expr::Select(select) => {
                self.visit(&mut select.operand);
                None
            }
            Expr::List(list) => {
                for e in &mut list.elements {
                    self.visit(e);
                }
                None
            }
            Expr::Map(map) => {
                for entry in &mut map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(e) = &mut entry.expr {
                        self.visit(&mut e.key);
                        self.visit(&mut e.value);
                    }
                }
                None
            }
            Expr::Comprehension(c) => {
                self.visit(&mut c.iter_range);
                self.visit(&mut c.accu_init);
                let before = self.bound.len();
                self.bound.push(c.iter_var.clone());
                if let Some(v) = &c.iter_var2 {
                    self.bound.push(v.clone());
                }
                self.bound.push(c.accu_var.clone());
                self.visit(&mut c.loop_cond);
                self.visit(&mut c.loop_step);
                self.visit(&mut c.result);
                self.bound.truncate(before);
                None
            }
            Expr::Struct(_) => {
                self.error(id, "message literals are not supported in rules");
                None
            }
            Expr::Literal(_) | Expr::Unspecified => None,
        };
        if let Some(expr) = replacement {
            node.expr = expr;
        }
    }

    fn behaviour(&mut self, id: u64, call: &CallExpr, text: String) -> Option<String> {
        let Some(function) = Function::parse(&call.func_name) else {
            self.error(
                id,
                format!(
                    "events has no function `{}`; it has count, any, sum, last and first",
                    call.func_name
                ),
            );
            return None;
        };
        let usage = function.usage();
        let mut args = call.args.iter().peekable();
        let Some(event) = args.next().and_then(string_literal) else {
            self.error(
                id,
                format!("the event name comes first, as a string: {usage}"),
            );
            return None;
        };
        if event.is_empty() {
            self.error(id, "the event name is empty");
            return None;
        }
        let property = if function == Function::Sum {
            let Some(path) = args.next().and_then(string_literal) else {
                self.error(id, format!("sum names the property to add up: {usage}"));
                return None;
            };
            let path: Vec<String> = path.split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                self.error(id, format!("{:?} is not a property path", path.join(".")));
                return None;
            }
            Some(path)
        } else {
            None
        };
        let mut window_ms = None;
        if function.windowed()
            && let Some(arg) = args.peek()
            && !matches!(arg.expr, Expr::Ident(_))
        {
            let arg = args.next()?;
            let Some(text) = string_literal(arg) else {
                self.error(
                    arg.id,
                    format!("the window is a duration string such as \"30d\": {usage}"),
                );
                return None;
            };
            match parse_duration_ms(&text) {
                Ok(0) => {
                    self.error(arg.id, "a window is longer than 0s");
                    return None;
                }
                Ok(ms) => window_ms = Some(ms),
                Err(e) => {
                    self.error(arg.id, e);
                    return None;
                }
            }
        }
        let mut filter = None;
        if let Some(arg) = args.next() {
            let Expr::Ident(variable) = &arg.expr else {
                self.error(arg.id, format!("unexpected argument: {usage}"));
                return None;
            };
            let Some(predicate) = args.next() else {
                self.error(
                    arg.id,
                    format!("`{variable}` is followed by a condition on it: {usage}"),
                );
                return None;
            };
            let variable = variable.clone();
            let mut inner = Walk::new(self.source, self.info, vec![variable.clone()], &[]);
            let mut expression = predicate.clone();
            inner.visit(&mut expression);
            if !inner.rule.calls.is_empty() || !inner.rule.audiences.is_empty() {
                self.error(
                    predicate.id,
                    "an event condition reads the event (and profile, now), not events or audiences",
                );
                return None;
            }
            self.rule.reads_profile |= inner.rule.reads_profile;
            self.errors.append(&mut inner.errors);
            filter = Some(EventFilter {
                variable,
                expression,
            });
        }
        if let Some(extra) = args.next() {
            self.error(extra.id, format!("too many arguments: {usage}"));
            return None;
        }
        let index = self.rule.calls.len();
        self.rule.calls.push(BehaviourCall {
            function,
            event,
            property,
            window_ms,
            filter,
            text,
        });
        Some(call_variable(index))
    }

    fn calendar(&mut self, id: u64, call: &CallExpr, text: String) -> Option<String> {
        let usage = "calendar.month(), or calendar.month(profile.traits.birthday); also day, weekday and hour";
        let Some(field) = CalendarField::parse(&call.func_name) else {
            self.error(
                id,
                format!(
                    "calendar has no function `{}`; it has month, day, weekday and hour",
                    call.func_name
                ),
            );
            return None;
        };
        let of = match call.args.as_slice() {
            [] => None,
            [arg] => match profile_path(arg) {
                Some(path) if !path.is_empty() => Some(path),
                _ => {
                    self.error(
                        arg.id,
                        format!("a calendar function reads a date the profile holds: {usage}"),
                    );
                    return None;
                }
            },
            [_, extra, ..] => {
                self.error(extra.id, format!("too many arguments: {usage}"));
                return None;
            }
        };
        // The person's time zone is a trait, and so may be the date.
        self.rule.reads_profile = true;
        let index = self.rule.calendar.len();
        self.rule.calendar.push(CalendarCall { field, of, text });
        Some(calendar_variable(index))
    }

    fn audience(&mut self, id: u64, call: &CallExpr) -> Option<String> {
        let key = match call.args.as_slice() {
            [arg] => string_literal(arg),
            _ => None,
        };
        let Some(key) = key else {
            self.error(
                id,
                "in_audience takes one audience key, as a string: in_audience(\"vip\")",
            );
            return None;
        };
        let index = match self.rule.audiences.iter().position(|a| *a == key) {
            Some(i) => i,
            None => {
                self.rule.audiences.push(key);
                self.rule.audiences.len() - 1
            }
        };
        Some(audience_variable(index))
    }
}

fn is_events_call(call: &CallExpr) -> bool {
    matches!(call.target.as_deref(), Some(IdedExpr { expr: Expr::Ident(name), .. }) if name == "events")
}

fn is_calendar_call(call: &CallExpr) -> bool {
    matches!(call.target.as_deref(), Some(IdedExpr { expr: Expr::Ident(name), .. }) if name == "calendar")
}

/// `profile.a.b` as `["a", "b"]` (`profile` alone as no fields); `None` for anything
/// else.
pub fn profile_path(node: &IdedExpr) -> Option<Vec<String>> {
    variable_path(node, "profile")
}

/// The fields of a plain field chain on the variable `root` (`context.cart.total` for
/// `context`: `[cart, total]`), if the node is one.
pub fn variable_path(node: &IdedExpr, root: &str) -> Option<Vec<String>> {
    let mut path = Vec::new();
    let mut at = node;
    loop {
        match &at.expr {
            Expr::Select(s) if !s.test => {
                path.push(s.field.clone());
                at = &s.operand;
            }
            Expr::Ident(name) if name == root => break,
            _ => return None,
        }
    }
    path.reverse();
    Some(path)
}

fn string_literal(node: &IdedExpr) -> Option<String> {
    match &node.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_string()),
        _ => None,
    }
}

/// The smallest start and largest stop offset of a node and its descendants.
fn spans(node: &IdedExpr, info: &SourceInfo, start: &mut usize, stop: &mut usize) {
    if let Some((a, b)) = info.offset_for(node.id) {
        *start = (*start).min(a as usize);
        *stop = (*stop).max(b as usize);
    }
    match &node.expr {
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                spans(t, info, start, stop);
            }
            for a in &call.args {
                spans(a, info, start, stop);
            }
        }
        Expr::Select(s) => spans(&s.operand, info, start, stop),
        Expr::List(l) => {
            for e in &l.elements {
                spans(e, info, start, stop);
            }
        }
        _ => {}
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests;
