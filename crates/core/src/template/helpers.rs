//! The helpers every template gets (messages and webhook bodies alike), besides
//! Handlebars' own: text case, defaults, lists, numbers, currencies, dates, arithmetic.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonRender, Output, RenderContext,
    RenderError, RenderErrorReason, handlebars_helper,
};
use serde_json::Value;

fn helper_error(helper: &str, message: impl Into<String>) -> RenderError {
    RenderErrorReason::Other(format!("{helper}: {}", message.into())).into()
}

fn is_missing(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

// Case helpers take any value: a missing one renders empty, like a plain `{{x}}`.
handlebars_helper!(upper: |v: Json| v.render().to_uppercase());
handlebars_helper!(lower: |v: Json| v.render().to_lowercase());
handlebars_helper!(title: |v: Json| title_case(&v.render()));
// `{{default profile.traits.first_name "there"}}`: the fallback when the value is missing
// or empty.
handlebars_helper!(default_helper: |v: Json, fallback: Json| if is_missing(v) { fallback.clone() } else { v.clone() });
handlebars_helper!(first: |a: array| a.first().cloned().unwrap_or(Value::Null));
handlebars_helper!(last: |a: array| a.last().cloned().unwrap_or(Value::Null));
handlebars_helper!(join: |a: array, sep: str| a.iter().map(|v| v.render()).collect::<Vec<_>>().join(sep));
handlebars_helper!(includes: |a: array, v: Json| a.contains(v));

fn title_case(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f
                    .to_uppercase()
                    .chain(c.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn number_param(h: &Helper<'_>, i: usize, helper: &str) -> Result<f64, RenderError> {
    let v = h
        .param(i)
        .map(|p| p.value())
        .ok_or_else(|| helper_error(helper, format!("needs argument {}", i + 1)))?;
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| helper_error(helper, format!("{v} is not a number")))
}

/// `1234567.891` with 2 decimals → `1,234,567.89`.
pub fn group_thousands(n: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, n.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if n < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// `{{format_number value decimals}}` (decimals default 0).
fn format_number(h: &Helper<'_>) -> Result<String, RenderError> {
    let n = number_param(h, 0, "format_number")?;
    let decimals = h
        .param(1)
        .and_then(|p| p.value().as_u64())
        .unwrap_or(0)
        .min(12) as usize;
    Ok(group_thousands(n, decimals))
}

/// `{{format_currency value "EUR"}}` → `€1,234.50` (JPY and KRW without decimals).
fn format_currency(h: &Helper<'_>) -> Result<String, RenderError> {
    let n = number_param(h, 0, "format_currency")?;
    let code = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .unwrap_or("USD")
        .to_ascii_uppercase();
    let (symbol, decimals) = match code.as_str() {
        "USD" => ("$", 2),
        "EUR" => ("€", 2),
        "GBP" => ("£", 2),
        "JPY" => ("¥", 0),
        "KRW" => ("₩", 0),
        "INR" => ("₹", 2),
        _ => ("", 2),
    };
    let amount = group_thousands(n, decimals);
    let (sign, digits) = amount
        .strip_prefix('-')
        .map_or(("", amount.as_str()), |d| ("-", d));
    Ok(if symbol.is_empty() {
        format!("{sign}{digits} {code}")
    } else {
        format!("{sign}{symbol}{digits}")
    })
}

/// `{{math a "+" b}}` with `+ - * / %`.
fn math(h: &Helper<'_>) -> Result<String, RenderError> {
    let a = number_param(h, 0, "math")?;
    let op = h.param(1).and_then(|p| p.value().as_str()).unwrap_or("");
    let b = number_param(h, 2, "math")?;
    let v = match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" if b != 0.0 => a / b,
        "%" if b != 0.0 => a % b,
        "/" | "%" => return Err(helper_error("math", "division by zero")),
        other => return Err(helper_error("math", format!("unknown operator {other:?}"))),
    };
    Ok(if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    })
}

/// A helper whose output depends on its parameters alone.
struct FromParams(fn(&Helper<'_>) -> Result<String, RenderError>);

impl HelperDef for FromParams {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        out.write(&(self.0)(h)?)?;
        Ok(())
    }
}

/// `{{format_date value "%B %-d, %Y" "Europe/Paris"}}`: an ISO 8601 time or epoch
/// milliseconds, in the given zone, else the person's `timezone` trait, else UTC.
fn format_date(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    ctx: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h
        .param(0)
        .map(|p| p.value())
        .ok_or_else(|| helper_error("format_date", "needs a time"))?;
    let ms = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => crate::time::parse_iso8601(s),
        _ => None,
    }
    .ok_or_else(|| helper_error("format_date", format!("{value} is not a time")))?;
    let format = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .unwrap_or("%Y-%m-%d");
    let zone_name = h
        .param(2)
        .and_then(|p| p.value().as_str())
        .map(str::to_owned)
        .or_else(|| {
            ctx.data()["profile"]["traits"]["timezone"]
                .as_str()
                .map(str::to_owned)
        });
    let zone = zone_name
        .as_deref()
        .and_then(|z| jiff::tz::TimeZone::get(z).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let ts = jiff::Timestamp::from_millisecond(ms)
        .map_err(|e| helper_error("format_date", e.to_string()))?;
    let text = jiff::fmt::strtime::format(format, &ts.to_zoned_datetime(zone))
        .map_err(|e| helper_error("format_date", e.to_string()))?;
    out.write(&text)?;
    Ok(())
}

/// The helpers [`register`] adds, by name: a template calling any other (besides
/// Handlebars' own) is refused when it is stored.
pub const HELPERS: [&str; 12] = [
    "upper",
    "lower",
    "title",
    "default",
    "first",
    "last",
    "join",
    "includes",
    "format_number",
    "format_currency",
    "format_date",
    "math",
];

/// The helpers every template gets (messages and webhook bodies alike).
pub(crate) fn register(r: &mut Handlebars<'static>) {
    r.register_helper("upper", Box::new(upper));
    r.register_helper("lower", Box::new(lower));
    r.register_helper("title", Box::new(title));
    r.register_helper("default", Box::new(default_helper));
    r.register_helper("first", Box::new(first));
    r.register_helper("last", Box::new(last));
    r.register_helper("join", Box::new(join));
    r.register_helper("includes", Box::new(includes));
    r.register_helper("format_number", Box::new(FromParams(format_number)));
    r.register_helper("format_currency", Box::new(FromParams(format_currency)));
    r.register_helper("format_date", Box::new(format_date));
    r.register_helper("math", Box::new(FromParams(math)));
}
